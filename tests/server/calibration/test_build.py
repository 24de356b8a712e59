"""The offline catalog: certified patterns that hold on data the catalog never saw."""
import shutil

import numpy as np
import pytest

from qpart.common.errors import FailedPrecondition
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.server.planning import catalog as catalog_mod
from qpart.testbed import catalog_report as reports
from qpart.server.models.heads import HeadStore
from qpart.server.planning.planner import Planner, PlanRequest
from qpart.server.models.repository import ModelRepository, load_model, save_model
from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb
from tests.conftest import TEST_CATALOG, TEST_IMAGES, ZOO_NAMES


def test_catalog_structure(repo, catalogs):
    store = HeadStore()
    for name in ZOO_NAMES:
        model, built = repo.get(name), catalogs[name]
        assert built.model_version == model.version and len(built.budgets) >= 5
        assert "confidence bound" in built.certification and "test set is never used" in built.certification
        L = model.num_layers
        for p in range(1, L + 2):
            kinds = {e.kind for e in built.entries if e.split.partition_point == p}
            assert {"float", "uniform8"} <= kinds, (name, p)
        qpart = [e for e in built.entries if e.kind == "qpart"]
        assert {e.budget for e in qpart} == set(built.budgets), name
        for e in qpart:
            assert e.certified_drop <= e.budget + 1e-9
            assert e.certification["samples"] >= TEST_CATALOG["certification_samples"]
            assert e.search["samples"] >= TEST_CATALOG["search_samples"]
            assert len(e.split.weight_bits) == e.split.partition_point - 1
            assert all(2 <= b <= 12 for b in e.split.weight_bits)
        for e in qpart[::7]:   # the catalog's sizes and hashes are the heads the server ships
            head = store.get(model, e.split)
            assert (head.size, head.content_hash) == (e.head_bytes, e.head_hash) if head else e.head_bytes == 0


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_budget_holds_on_the_test_set(name, repo, catalogs, test_evaluators):
    """Every catalog entry's top-1 drop on the test images is at most its budget + 0.3 points
    (bench/catalog_report.py checks all 10,000 for every model)."""
    rows = reports.test_set_table(repo.get(name), catalogs[name], test_evaluators[name])
    assert len(rows) == len(catalogs[name].entries) and test_evaluators[name].labels.numel() == TEST_IMAGES[name]
    for row in rows:
        limit = row.entry.budget if row.entry.budget is not None else row.entry.certified_drop
        assert row.test.drop <= limit + 0.3, (name, row.entry, row.test)


def test_mixed_precision_pays(repo, catalogs, test_evaluators):
    """At equal measured accuracy the QPART head is at least 20 % below the best uniform width (2+ models)."""
    savings = {}
    for name in ZOO_NAMES:
        rows = reports.mixed_precision(repo.get(name), catalogs[name], test_evaluators[name], widths=range(2, 10))
        at_one = [r for r in rows if r.budget == 1.0 and r.saving is not None]
        savings[name] = at_one[0].saving if at_one else None
    assert sum(1 for s in savings.values() if s is not None and s >= 0.20) >= 2, savings


def test_head_weights_at_a_one_point_budget(repo, catalogs):
    """Heads holding 100k+ weights ship at most 15 % of their float32 size (paper Table IV: 11.9-18.1 %)."""
    checked = 0
    for name in ZOO_NAMES:
        model = repo.get(name)
        for p in range(2, model.num_layers + 2):
            weights = sum(layer.weight_count for layer in model.profile.device_layers(p))
            if weights < 100_000:
                continue
            within = [e for e in catalogs[name].entries if e.kind == "qpart" and e.split.partition_point == p
                      and e.certified_drop <= 1.0]
            assert within, (name, p)
            cheapest = min(e.head_bytes for e in within)
            assert cheapest <= 0.15 * 4 * weights, (name, p, cheapest / (4 * weights))
            checked += 1
    assert checked >= 3


def test_catalog_is_dropped_when_the_weights_change(repo, catalogs, tmp_path):
    source = repo.get("lenet")
    shutil.copytree(source.directory, tmp_path / "lenet")
    copy = load_model(tmp_path / "lenet")
    assert catalog_mod.load(copy) is not None            # same weights: the catalog applies
    params = dict(copy.params)
    params["0.bias"] = params["0.bias"] + 0.01
    retrained = save_model(tmp_path, "lenet", copy.spec, params, copy.card)
    assert retrained.version != source.version and catalog_mod.load(retrained) is None
    with pytest.raises(FailedPrecondition, match="qpart catalog lenet"):
        Planner(ModelRepository(tmp_path), HeadStore()).plan(PlanRequest("lenet"))


@pytest.mark.parametrize("name", ["lenet", "vgg8"])
def test_catalog_accuracy_is_what_the_runtime_delivers(name, repo, catalogs, client, test_set, tmp_path):
    """The evaluator that certifies patterns predicts exactly what device and server compute over gRPC."""
    model = repo.get(name)
    x, labels = test_set
    evaluator = reports.test_evaluator(model, limit=len(x))
    agent = DeviceAgent(client, HeadCache(tmp_path))
    entries = [e for e in catalogs[name].entries if e.kind == "qpart" and 1 < e.split.partition_point <= model.num_layers]
    for entry in entries[:: max(len(entries) // 3, 1)]:
        request = spb.PlanRequest(model=name, policy=spb.FIXED, fixed=spb.FixedPlan(
            partition_point=entry.split.partition_point, weight_bits=entry.split.weight_bits,
            activation_bits=entry.split.activation_bits, weight_granularity=npb.PER_CHANNEL))
        report = agent.run(request, x, labels, batch_size=100, window=2)
        predicted = evaluator.logits(entry.split).argmax(1).numpy()
        agreement = float(np.mean(np.array(report.predictions) == predicted))
        assert agreement >= 0.999, (entry, agreement)

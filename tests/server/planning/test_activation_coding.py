"""zlib-coded activations: sizes measured offline on validation data, offered by the planner as twins of the
raw splits and priced with those bytes, and sent coded by a device over gRPC with the same answers. Runs on
a copy of resnet8-96 (3x96x96, Fashion-MNIST resized: mostly black background), so that the shared test
repository's plans stay raw."""
import shutil

import numpy as np
import pytest

from qpart.common import profiles, tensors
from qpart.common.costmodel import LinkProfile
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.calibration import activation_coding as measuring
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import activation_coding
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels
from qpart.v1 import service_pb2 as spb


@pytest.fixture(scope="module")
def coded_repo(models_dir, catalogs, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("coded")
    shutil.copytree(models_dir / "resnet8-96", root / "resnet8-96")
    repo = ModelRepository(root)
    model = repo.get("resnet8-96")
    activation_coding.save(model, measuring.measure(model, catalog_mod.require(model), data_dir, images=32))
    return repo


def test_sizes_are_measured_for_every_split_that_sends_and_read_back(coded_repo):
    model = coded_repo.get("resnet8-96")
    found = activation_coding.load(model)
    sends = {e.split for e in catalog_mod.require(model).entries
             if e.kind == "qpart" and model.profile.cut(e.split.cut).runs_tail}
    assert sends and set(found.sizes) == sends and found.images == 32 and found.level == tensors.ZLIB_LEVEL
    inputs = [s for s in sends if s.cut == 0]
    raw, coded = found.sizes[inputs[0]]
    assert raw == 3 * 96 * 96 * inputs[0].activation_bits[0] / 8 and coded < raw / 3     # black background
    model.directory.joinpath(activation_coding.CODING_FILE).write_text("{not json")
    with pytest.raises(Exception, match="cannot be read"):
        activation_coding.load(model)
    activation_coding.save(model, found)


def test_the_planner_offers_coded_twins_priced_with_their_bytes(coded_repo):
    planner = ServedModels(coded_repo)
    request = PlanRequest(model="resnet8-96", device=profiles.load_device("rpi4"),
                          link=LinkProfile(rate_bps=1e6, rtt_s=0.01), accuracy_budget=2.0, inferences_per_head=100,
                          explain=True)
    plan = planner.plan(request)
    found = activation_coding.load(coded_repo.get("resnet8-96"))
    twins = [c for c in plan.candidates if c.coding == tensors.ZLIB]
    assert twins
    for c in twins:
        raw = next(r for r in plan.candidates if r.spec.split == c.spec.split and r.coding == tensors.RAW)
        assert c.work.uplink_bytes == pytest.approx(found.coded_bytes(c.spec.split) + 16)
        assert c.work.uplink_bytes < raw.work.uplink_bytes and c.costs.uplink_time_s < raw.costs.uplink_time_s
        assert (c.head_hash, c.work.head_bytes) == (raw.head_hash, raw.work.head_bytes)       # the same head ships
    baseline = planner.plan(PlanRequest(**{**request.__dict__, "policy": "server_only", "explain": False}))
    assert baseline.chosen.coding == tensors.RAW                                         # baselines send raw


def test_a_device_sends_coded_activations_and_gets_the_same_answers(coded_repo, model_inputs):
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    server = RunningServer(ServerSettings(models=coded_repo.root, port=0, measure_speed=False, load_window_s=0))
    x, y = model_inputs("resnet8-96", 24)
    try:
        client = ServerClient(f"127.0.0.1:{server.port}", timeout_s=60)
        agent = DeviceAgent(client, HeadCache(None))
        plan = agent.plan(spb.PlanRequest(model="resnet8-96", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=3, weight_bits=[8], activation_bits=[8])))
        executor, _ = agent.obtain_head(plan)
        raw = agent.classify(plan, executor, x, RunReport.for_plan(plan), batch_size=4)
        before = client.bytes["Infer"].sent
        for a in plan.activations:
            a.coding = spb.CODING_ZLIB                # the server accepts either coding, whatever the plan said
        coded = agent.classify(plan, executor, x, RunReport.for_plan(plan), batch_size=4)
        coded_bytes = client.bytes["Infer"].sent - before
        client.close()
    finally:
        server.stop(0, notice=0)
    assert np.array_equal(raw, coded)
    assert coded_bytes < 24 * 8 * 24 * 24          # 24 inputs of 8x24x24 at 8 bits, raw; far less coded

import math

import numpy as np
import pytest

from qpart.common import tensors
from qpart.server.models.heads import HeadStore, build_head, serialize
from qpart.server.models.split import Split, uniform
from qpart.v1 import network_pb2 as pb


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 16])
def test_head_size_is_the_packed_weights_plus_small_headers(repo, bits):
    model = repo.get("fc6")
    split = uniform(model.profile, model.num_nodes, bits)          # every node: 576,810 parameters
    head = build_head(model, split, coded=False)
    weights = sum(n.weight_count for n in model.profile.nodes)
    bound = math.ceil(weights * bits / 8)
    packed = sum(len(t.data) for t in head.parameters)
    assert bound <= packed <= bound + len(head.parameters)          # only per-tensor rounding to whole bytes
    scales_and_headers = len(serialize(head).data) - packed
    assert scales_and_headers < 2000
    assert len(serialize(head).data) <= 1.01 * bound + scales_and_headers


def test_heads_are_deterministic_and_cached(repo):
    model = repo.get("lenet")
    split = Split(7, (6, 5), (8,))
    store = HeadStore()
    first = store.get(model, split)
    assert first.content_hash == serialize(build_head(model, split)).content_hash
    assert store.get(model, Split(7, (6, 5), (4,))) is first   # activation bits don't matter
    assert store.get(model, Split(0, (), (8,))) is None          # cut 0 ships nothing


def test_a_head_holds_the_nodes_before_the_cut_and_outputs_what_crosses(repo):
    model = repo.get("resnet8")
    cut = next(c for c in model.cuts() if len(c.tensors) == 2)
    head = build_head(model, uniform(model.profile, cut.cut, 8))
    assert len(head.network.nodes) == cut.cut and list(head.network.outputs) == list(cut.tensors)
    assert {t.name.rsplit(".", 1)[0] for t in head.parameters} == {model.profile.nodes[i].name for i in cut.weight_nodes}


def test_the_head_cache_is_bounded(repo):
    model = repo.get("fc6")
    size = HeadStore().get(model, Split(3, (4,), (4,))).size
    store = HeadStore(max_bytes=int(2.5 * size))
    heads = [store.get(model, Split(3, (b,), (4,))) for b in (2, 3, 4, 5, 6)]
    assert len(store._cache) <= 3 and store._size <= store.max_bytes
    assert store.get(model, Split(3, (6,), (4,))) is heads[-1]                 # the newest stayed
    assert store.get(model, Split(3, (2,), (4,))) is not heads[0]              # the oldest was rebuilt


def test_coded_heads_are_smaller_and_run_exactly_like_dense_ones(repo, test_set):
    from qpart.device.head import HeadExecutor
    model = repo.get("fc6")
    split = Split(5, (3, 4), (8,))
    dense, coded = build_head(model, split, coded=False), build_head(model, split)
    assert {t.coding for t in dense.parameters} == {0} and any(t.coding for t in coded.parameters)
    assert serialize(coded).size < 0.95 * serialize(dense).size
    for d, c in zip(dense.parameters, coded.parameters):         # the same weights, to the bit
        assert d.name == c.name and np.array_equal(tensors.decode(d), tensors.decode(c))
    x = test_set[0][:32]
    (a,), (b,) = HeadExecutor(dense).run(x), HeadExecutor(coded).run(x)
    # the same head runs the same arithmetic; BLAS may round the last bit differently for buffers that sit
    # at other addresses (seen once: 1 ulp), so the outputs are compared to a few ulps
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(a).max()))


def test_catalog_heads_are_stored_and_read_back_only_when_their_hash_holds(models_dir, catalogs, tmp_path):
    import shutil
    from qpart.server.models import heads as heads_mod
    from qpart.server.models.repository import ModelRepository
    from qpart.server.planning import catalog as catalog_mod
    shutil.copytree(models_dir / "lenet", tmp_path / "lenet")
    model = ModelRepository(tmp_path).get("lenet")
    entry = next(e for e in catalogs["lenet"].entries if e.head_hash)
    path = heads_mod.head_path(model, entry.head_hash)
    shutil.rmtree(path.parent, ignore_errors=True)
    catalog_mod.current(model)                                           # writes what is missing
    stored = path.read_bytes()
    assert heads_mod.read_head(model, entry.head_hash).data == stored
    store = HeadStore()
    built = store.get(model, entry.split, pin=True, stored=entry.head_hash)
    assert built.content_hash == entry.head_hash and built.data == stored
    path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))               # altered on disk: not trusted
    assert heads_mod.read_head(model, entry.head_hash) is None
    rebuilt = HeadStore().get(model, entry.split, pin=True, stored=entry.head_hash)
    assert rebuilt.content_hash == entry.head_hash and rebuilt.data == stored
    (path.parent / ("0" * 64 + ".head")).write_bytes(b"stale")
    catalog_mod.save(model, catalog_mod.load(model))                     # rewrites the altered one, drops the stale
    assert path.read_bytes() == stored and not (path.parent / ("0" * 64 + ".head")).exists()


def test_a_head_is_the_same_from_checkouts_in_two_directories(tmp_path):
    """One module in files under two directories of different lengths (two checkouts of a user's code), traced,
    stored and split: the same description, model version and head bytes, and no head holds a path."""
    import pathlib
    import torch
    from qpart.common.preprocess import Preprocessing
    from qpart.server.models import importer, repository, tracing
    source = (pathlib.Path(__file__).parent / "custom_net.py").read_text()
    card = {"task": "classification", "preprocessing": Preprocessing(channels=3, resize=(32, 32)).to_dict()}
    built = []
    for i, where in enumerate(("a", "a-much/longer/checkout/directory/of/the/same/code")):
        folder = tmp_path / where
        folder.mkdir(parents=True)
        (folder / "usernet.py").write_text(source)
        torch.manual_seed(0)
        module = importer.load_factory(f"{folder / 'usernet.py'}:build")().eval()
        spec, params = tracing.trace(module, torch.zeros(2, 3, 32, 32))
        assert all(node.source and str(tmp_path) not in node.source for node in spec.nodes)   # module:line, no path
        model = repository.save_model(tmp_path / f"repo{i}", "custom", spec, params, card)
        built.append((model.version, [serialize(build_head(model, uniform(model.profile, c, 6))) for c in (3, 7)]))
    (version_a, heads_a), (version_b, heads_b) = built
    assert version_a == version_b
    assert [h.content_hash for h in heads_a] == [h.content_hash for h in heads_b]
    for head in heads_a:
        assert str(tmp_path).encode() not in head.data and b".py" not in head.data
        parsed = pb.Head()
        parsed.ParseFromString(head.data)
        assert not any(node.source for node in parsed.network.nodes)     # provenance stays on the server

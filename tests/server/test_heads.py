import math

import pytest

from qpart.server.heads import HeadStore, build_head, serialize
from qpart.server.plans import PlanSpec


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 16])
def test_head_size_is_the_packed_weights_plus_small_headers(repo, bits):
    model = repo.get("fc6")
    p = model.num_layers + 1                       # every layer: 576,810 parameters
    plan = PlanSpec(model.name, model.version, p, (bits,) * (p - 1), 0)
    head = build_head(model, plan)
    weights = sum(layer.weight_count for layer in model.profile.layers)
    bound = math.ceil(weights * bits / 8)
    packed = sum(len(t.data) for t in head.parameters)
    assert bound <= packed <= bound + len(head.parameters)          # only per-tensor rounding to whole bytes
    scales_and_headers = len(serialize(head).data) - packed
    assert scales_and_headers < 1500
    assert len(serialize(head).data) <= 1.01 * bound + scales_and_headers


def test_heads_are_deterministic_and_cached(repo):
    model = repo.get("lenet")
    plan = PlanSpec(model.name, model.version, 3, (6, 5), 8)
    store = HeadStore()
    first = store.get(model, plan)
    assert first.content_hash == serialize(build_head(model, plan)).content_hash
    assert store.get(model, PlanSpec(model.name, model.version, 3, (6, 5), 4)) is first   # activation bits don't matter
    assert store.describe(model, plan).size == len(first.data)
    assert store.get(model, PlanSpec(model.name, model.version, 1, (), 8)) is None          # p = 1 ships nothing

"""A device says which head codings it decodes (DeviceCapabilities.head_codings): its heads use only those,
and the plan prices the bytes those heads take."""
import dataclasses

import grpc
import pytest

from qpart.common import lossless, profiles
from qpart.common.costmodel import LinkProfile
from qpart.common.errors import InvalidArgument
from qpart.server.models.heads import HeadStore
from qpart.server.models.split import Split
from qpart.server.planning import planner
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.plans import PlanSpec
from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb
from tests.server.planning import synthetic

ZLIB_ONLY = frozenset({lossless.DENSE, lossless.ZLIB})


def request(codings, **kw) -> PlanRequest:
    device = dataclasses.replace(profiles.load_device("rpi4"), head_codings=codings)
    return PlanRequest(synthetic.NAME, device, LinkProfile(rate_bps=1e5, rtt_s=0.01), 1.0, explain=True, **kw)


@pytest.mark.parametrize("codings", [ZLIB_ONLY, frozenset({lossless.DENSE})])
def test_a_restricted_device_gets_heads_in_its_codings_priced_at_their_size(codings):
    served, heads = synthetic.served(synthetic.model(zeros=0.9)), HeadStore()
    split = Split(synthetic.model().num_nodes, (4,), ())
    full = planner.plan(served, request(None, policy="fixed", fixed=split), heads=heads).chosen
    plan = planner.plan(served, request(codings, policy="fixed", fixed=split), heads=heads)
    assert plan.spec.head_codings == codings and PlanSpec.parse(plan.spec.token()) == plan.spec
    built = heads.get(served.model, plan.spec.split, codings=codings)
    assert plan.chosen.head_hash == built.content_hash and plan.chosen.work.head_bytes == built.size
    head = npb.Head()
    head.ParseFromString(built.data)
    assert {p.coding for p in head.parameters} <= codings
    assert full.head_hash != plan.chosen.head_hash
    if codings == {lossless.DENSE}:
        assert plan.chosen.work.head_bytes > full.work.head_bytes       # uncoded heads cost more bytes
    chosen = planner.plan(served, request(codings), heads=heads)        # the catalog's splits, priced again
    assert chosen.spec.head_codings == codings
    for c in chosen.candidates:
        if c.spec.split.ships_head:
            again = heads.get(served.model, c.spec.split, codings=codings)
            assert (c.head_hash, c.work.head_bytes) == (again.content_hash, again.size)


def test_every_coding_listed_is_the_same_as_none_and_unknown_ones_are_refused():
    assert lossless.allowed(sorted(lossless.ALL)) is None
    assert lossless.allowed([lossless.ZLIB]) == ZLIB_ONLY                   # dense is always read
    with pytest.raises(InvalidArgument, match="head codings"):
        lossless.allowed([7])
    for token in ("h", "h10", "h0123", "h1", "h00", "hx"):
        with pytest.raises(InvalidArgument):
            PlanSpec.parse(f"{PlanSpec(synthetic.NAME, 'v', synthetic.catalog(synthetic.model()).entries[0].split).token()}:{token}")


def test_over_grpc_the_head_fetched_is_the_one_planned(client, catalogs):
    capabilities = spb.DeviceCapabilities(macs_per_second=1e9, head_codings=[npb.TENSOR_CODING_DENSE,
                                                                              npb.TENSOR_CODING_ZLIB])
    plan = client.plan(spb.PlanRequest(model="lenet", device=capabilities, policy=spb.DEVICE_ONLY,
                                       inferences_per_head=10))
    data = client.fetch_head(plan, 1 << 30)
    head = npb.Head()
    head.ParseFromString(data)
    assert {p.coding for p in head.parameters} <= {npb.TENSOR_CODING_DENSE, npb.TENSOR_CODING_ZLIB}
    assert len(data) == plan.head_bytes == plan.predicted.head_bytes
    capabilities.head_codings.append(9)
    with pytest.raises(grpc.RpcError) as refused:
        client.stub.Plan(spb.PlanRequest(model="lenet", device=capabilities), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

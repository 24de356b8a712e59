"""Hostile clients: forged plan ids, head-cache flooding, idle streams and batches that would expand past
their memory bound. Each case failed (or cost the server dearly) before its fix."""
import grpc
import pytest

from qpart.common.errors import InvalidArgument
from qpart.server.models.heads import HeadStore
from qpart.server.models.split import Split
from qpart.server.planning.plans import PlanSigner
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc
from tests.server.serving.test_bad_input import assert_still_serving, expect


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield service_pb2_grpc.SplitInferenceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def plan(stub):
    return stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=7, weight_bits=[8], activation_bits=[8])), timeout=30)


def test_made_up_plan_ids_are_refused_before_anything_is_built(stub, plan, server):
    token, _, mac = plan.plan_id.rpartition(":")
    forged = [token.replace(":7:8,8:8:", ":7:7,7:8:") + ":" + mac,       # another split under a real plan's signature
              token.replace(":7:8,8:8:", ":7:7,7:8:"),                   # no signature at all
              token + ":" + "0" * len(mac)]                      # a wrong one
    assert forged[0] != plan.plan_id and forged[1].count(":") == 6
    heads_before = len(server.core.heads._cache) + len(server.core.heads._pinned)
    for plan_id in forged:
        expect(grpc.StatusCode.INVALID_ARGUMENT, "not issued by this server",
               lambda: list(stub.FetchHead(spb.FetchHeadRequest(plan_id=plan_id), timeout=30)))
        expect(grpc.StatusCode.INVALID_ARGUMENT, "not issued by this server", lambda: list(stub.Infer(
            iter([spb.InferRequest(plan_id=plan_id, batch=spb.ActivationBatch(request_ids=[0]))]), timeout=30)))
    assert len(server.core.heads._cache) + len(server.core.heads._pinned) == heads_before
    assert_still_serving(stub, plan)


def test_replicas_sharing_the_repository_share_the_plan_key(tmp_path):
    a, b = PlanSigner.for_repository(tmp_path), PlanSigner.for_repository(tmp_path)
    assert b.verify(a.sign("p3:lenet:v:7:8:8:t")) == "p3:lenet:v:7:8:8:t"
    assert (tmp_path / ".qpart-plan-key").stat().st_mode & 0o077 == 0          # readable by the server's user only
    (tmp_path / "elsewhere").mkdir()
    other = PlanSigner.for_repository(tmp_path / "elsewhere")
    with pytest.raises(InvalidArgument, match="not issued"):
        other.verify(a.sign("p3:lenet:v:7:8:8:t"))


def test_fixed_plan_heads_cannot_push_the_catalogs_out(repo):
    model = repo.get("lenet")
    store = HeadStore(max_bytes=64 << 10)
    pinned = store.get(model, Split(7, (8, 8), (8,)), pin=True)
    for bits in range(2, 17):                          # more fixed-plan heads than the budget holds
        store.get(model, Split(7, (bits, bits), (8,)))
    assert len(store._cache) < 15 and store._size <= max(64 << 10, max(h.size for h in store._cache.values()))
    assert store.get(model, Split(7, (8, 8), (8,))) is pinned

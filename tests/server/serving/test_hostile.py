"""Hostile clients: forged plan ids, head-cache flooding, idle streams and batches that would expand past
their memory bound. Each case failed (or cost the server dearly) before its fix."""
import time

import grpc
import pytest

from qpart.common import packing
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.models.heads import HeadStore
from qpart.server.models.split import Split
from qpart.server.planning.plans import PlanSigner
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc
from tests.server.serving.test_bad_input import assert_still_serving, expect, plan, stub  # noqa: F401 (fixtures)


def test_made_up_plan_ids_are_refused_before_anything_is_built(stub, plan, server):
    assert abs(plan.plan_id_expires_at - (time.time() + 86400)) < 600     # the default lifetime, published
    token, _, mac = plan.plan_id.rpartition(":")
    forged = [token.replace(":7:8,8:8:", ":7:7,7:8:") + ":" + mac,       # another split under a real plan's signature
              token.replace(":7:8,8:8:", ":7:7,7:8:"),                   # no signature at all
              token + ":" + "0" * len(mac)]                      # a wrong one
    assert forged[0] != plan.plan_id and forged[1].count(":") == 7
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


def test_plan_ids_expire_and_their_expiry_cannot_be_extended(tmp_path):
    now = [1_000_000.0]
    signer = PlanSigner(b"k" * 32, ttl_s=60, clock=lambda: now[0])
    plan_id = signer.sign("p3:lenet:v:7:8:8:t")
    assert PlanSigner.expiry(plan_id) == 1_000_060
    now[0] += 59
    assert signer.verify(plan_id) == "p3:lenet:v:7:8:8:t"
    now[0] += 2
    with pytest.raises(FailedPrecondition, match="expired 1 s ago.*call Plan again"):
        signer.verify(plan_id)
    token, expires, mac = plan_id.rsplit(":", 2)
    with pytest.raises(InvalidArgument, match="not issued"):            # a later expiry under the old signature
        signer.verify(f"{token}:{int(expires) + 3600}:{mac}")
    with pytest.raises(InvalidArgument, match="lifetime"):
        PlanSigner(b"k" * 32, ttl_s=0)


def test_fixed_plan_heads_cannot_push_the_catalogs_out(repo):
    model = repo.get("lenet")
    store = HeadStore(max_bytes=64 << 10)
    pinned = store.get(model, Split(7, (8, 8), (8,)), pin=True)
    for bits in range(2, 17):                          # more fixed-plan heads than the budget holds
        store.get(model, Split(7, (bits, bits), (8,)))
    assert len(store._cache) < 15 and store._size <= max(64 << 10, max(h.size for h in store._cache.values()))
    assert store.get(model, Split(7, (8, 8), (8,))) is pinned


def test_a_batch_is_bounded_by_what_it_expands_to_in_the_tail(stub, server, repo):
    """1,024 inputs into vgg8 at its second node once added 66 MB: the tail's peak bounds the batch now."""
    model = repo.get("vgg8")
    cut = next(c for c in model.cuts() if 0 < c.cut < 4 and c.runs_tail)
    plan = stub.Plan(spb.PlanRequest(model="vgg8", policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=cut.cut, weight_bits=[8], activation_bits=[2])), timeout=30)
    most = plan.max_batch_inputs
    assert most == server.settings.max_tail_elements // cut.tail_peak_elements < server.settings.max_batch
    a = plan.activations[0]

    def batch(n):
        return spb.ActivationBatch(request_ids=range(n), tensors=[spb.TensorBatch(
            name=a.name, sample_shape=a.sample_shape, bits=2, data=bytes(packing.packed_size(n * cut.elements, 2)))])
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, f"holds at most {most} at once", lambda: list(stub.Infer(
        iter([spb.InferRequest(plan_id=plan.plan_id, batch=batch(most + 1))]), timeout=60)))
    (answer,) = stub.Infer(iter([spb.InferRequest(plan_id=plan.plan_id, batch=batch(most))]), timeout=60)
    assert len(answer.results) == most


def test_idle_streams_cannot_deny_service(models_dir):
    """125 idle Infer streams from one client once made every other call fail for as long as it stayed: now one
    connection holds at most its share, and idle streams are cancelled."""
    import threading
    import time
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    running = RunningServer(ServerSettings(models=models_dir, port=0, workers=24, max_streams_per_connection=4,
                                           stream_idle_s=1.0, measure_speed=False, warm_heads=False))
    target = f"127.0.0.1:{running.port}"
    hostile = grpc.insecure_channel(target)
    try:
        stub = service_pb2_grpc.SplitInferenceStub(hostile)
        stop = threading.Event()

        def idle():                       # a request iterator that never sends
            stop.wait(30)
            return
            yield
        calls = [stub.Infer(idle(), timeout=30) for _ in range(6)]
        time.sleep(0.5)
        refused = [c for c in calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) == 2 and "limit is 4 per connection" in refused[0].details()
        with grpc.insecure_channel(target) as other:     # another client is served meanwhile
            plan = service_pb2_grpc.SplitInferenceStub(other).Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED,
                fixed=spb.FixedPlan(cut=7, weight_bits=[8], activation_bits=[8])), timeout=10)
            assert plan.plan_id
        deadline = time.monotonic() + 10                 # the idle streams are cancelled after ~1 s
        while time.monotonic() < deadline and not all(c.done() for c in calls):
            time.sleep(0.1)
        assert all(c.done() for c in calls) and running.core.streams.expired == 4
        assert not running.core.streams._streams
        stop.set()
    finally:
        hostile.close()
        running.stop(0, notice=0)


def test_the_pools_streams_end_idle_or_cancelled_and_free_their_slots(models_dir):
    """ProbeStream and Generate run in the server's thread pool beside the event loop (qpart.server.serving.aio):
    an idle one is cancelled by the watchdog with CANCELLED and the reason, one the client cancels ends too, and
    either way its stream slot is let go."""
    import threading
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    running = RunningServer(ServerSettings(models=models_dir, port=0, workers=24, stream_idle_s=1.0,
                                           measure_speed=False, warm_heads=False))
    stop = threading.Event()

    def idle():                       # one probe, then nothing
        yield spb.ProbeRequest(payload=b"x", reply_bytes=8)
        stop.wait(30)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = service_pb2_grpc.SplitInferenceStub(channel)
            probes = stub.ProbeStream(idle(), timeout=30)
            assert len(next(probes).payload) == 8
            for call in (probes, stub.Generate(_idle_generate(stop), timeout=30)):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not call.done():
                    time.sleep(0.1)
                assert call.done() and call.code() == grpc.StatusCode.CANCELLED
                assert "idle" in call.details(), call.details()
            assert running.core.streams.expired == 2
            cancelled = stub.ProbeStream(idle(), timeout=30)
            assert len(next(cancelled).payload) == 8
            cancelled.cancel()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and running.core.streams._streams:
                time.sleep(0.05)
            assert not running.core.streams._streams and running.core.streams.expired == 2
            assert len(stub.Probe(spb.ProbeRequest(reply_bytes=4), timeout=10).payload) == 4     # still serving
    finally:
        stop.set()
        running.stop(0, notice=0)


def _idle_generate(stop):
    stop.wait(30)
    return
    yield


@pytest.mark.parametrize("call", [
    lambda stub: stub.Plan(spb.PlanRequest(model="A" * 20480), timeout=30),
    lambda stub: stub.ListModels(spb.ListModelsRequest(name="B" * 10240), timeout=30),
    lambda stub: stub.Plan(spb.PlanRequest(model="lenet", held_heads=["C" * 5000]), timeout=30),
    lambda stub: list(stub.FetchHead(spb.FetchHeadRequest(plan_id="D" * 1000), timeout=30)),
])
def test_errors_echo_a_bounded_part_of_what_was_sent(stub, call, plan):
    """A 20 KB model name once came back as RESOURCE_EXHAUSTED 'metadata size exceeds hard limit'."""
    with pytest.raises(grpc.RpcError) as info:
        call(stub)
    assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), info.value.details()
    assert len(info.value.details()) < 400
    assert_still_serving(stub, plan)


def test_tiny_chunks_are_not_honoured(stub, plan, server):
    """max_chunk_bytes = 1 once sent a head in one-byte messages (83x its size on the wire)."""
    chunks = list(stub.FetchHead(spb.FetchHeadRequest(plan_id=plan.plan_id, max_chunk_bytes=1), timeout=30))
    smallest = server.settings.min_chunk_bytes
    assert sum(len(c.data) for c in chunks) == plan.head_bytes
    assert len(chunks) == -(-plan.head_bytes // smallest) and all(len(c.data) >= min(smallest, plan.head_bytes)
                                                                   for c in chunks[:-1])

"""Plan ids signed with the server's real key but malformed, and ids that expire while their Infer stream is open.

An audit signed 'soon' and 10**400 expiries with the plan key and got INTERNAL; an Infer stream opened before
its id expired was answered after it. No request, however signed, may get INTERNAL; no message of an open
stream is answered once its plan id has expired.
"""
import queue
import time

import grpc
import pytest

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.planning.plans import PlanSigner
from qpart.v1 import service_pb2 as spb
from tests.server.planning.test_plans import signed
from tests.server.serving.test_bad_input import assert_still_serving, good_batch, plan, stub  # noqa: F401 (fixtures)

REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
FUTURE = str(int(time.time()) + 3600)       # a valid expiry


@pytest.fixture(scope="module")
def signer(server, models_dir):
    """A signer holding the server's real key (the repository's .qpart-plan-key)."""
    return PlanSigner.for_repository(models_dir)


def fetch(stub, plan_id):
    return list(stub.FetchHead(spb.FetchHeadRequest(plan_id=plan_id), timeout=30))


def infer(stub, plan_id, batch):
    return list(stub.Infer(iter([spb.InferRequest(plan_id=plan_id, batch=batch)]), timeout=30))


def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.mark.parametrize("expires", ["soon", "", "1e9", "+99999999999", " 99999999999", "-1", "1_000", "9" * 400,
                                     str(10 ** 400)[:900], "\u0661\u0662\u0663", "0x7fffffff", "999999999999",
                                     "0"])
def test_signed_ids_with_malformed_expiries_are_refused(stub, plan, signer, expires):
    token = PlanSigner.unverified_token(plan.plan_id)
    plan_id = signed(signer, token, expires)
    for call in (lambda: fetch(stub, plan_id), lambda: infer(stub, plan_id, good_batch(plan))):
        code, details = refused(call)
        assert code in REFUSED, (expires[:20], code, details)
        assert "not issued" not in details             # the signature held: the expiry itself was refused
    assert_still_serving(stub, plan)


@pytest.mark.parametrize("body", [
    "p3:../../etc:{v}:7:8,8:8:t", "p3::{v}:7:8,8:8:t", "p3:" + "a" * 70 + ":{v}:7:8,8:8:t", "p3:LENET\n:{v}:7:8,8:8:t",
    "p3:lenet:{v}:-1:8,8:8:t", "p3:lenet:{v}:99:8,8:8:t", "p3:lenet:{v}:x:8,8:8:t", "p3:lenet:{v}::8,8:8:t",
    "p3:lenet:{v}:" + "9" * 40 + ":8,8:8:t", "p3:lenet:{v}:+7:8,8:8:t", "p3:lenet:{v}:0:-:8:t",
    "p3:lenet:{v}:7:8:8:t", "p3:lenet:{v}:7:8,8,8:8:t", "p3:lenet:{v}:7:0,8:8:t", "p3:lenet:{v}:7:17,8:8:t",
    "p3:lenet:{v}:7:999,8:8:t", "p3:lenet:{v}:7:-:8:t", "p3:lenet:{v}:7:8,8:-:t", "p3:lenet:{v}:7:8,8:8,8:t",
    "p3:lenet:{v}:7:8,8:0:t", "p3:lenet:{v}:7:8,8:33:t", "p3:lenet:{v}:7:8,8:" + "8," * 150 + "8:t",
    "p3:lenet:{v}:7:8,,8:8:t", "p3:lenet:{v}:7:8,8:8:q", "p3:lenet:{v}:7:8,8:8:", "p3:lenet:{v}:7:8,8:8",
    "p3:lenet:{v}:7:8,8:8:t:more", "p2:lenet:{v}:7:8,8:8:t", "p3:lenet:not-the-version:7:8,8:8:t",
    "p3:lenet:" + "v" * 600 + ":7:8,8:8:t",
])
def test_signed_ids_with_malformed_bodies_are_refused(stub, plan, signer, repo, body):
    """Bad model names, cuts, widths (count, range, syntax) and granularity under a valid MAC: refused by name."""
    plan_id = signed(signer, body.format(v=repo.get("lenet").version), FUTURE)
    for call in (lambda: fetch(stub, plan_id), lambda: infer(stub, plan_id, good_batch(plan))):
        code, details = refused(call)
        assert code in REFUSED, (body[:40], code, details)
        assert "not issued" not in details and "expir" not in details     # refused for its body
        assert len(details) < 400
    assert_still_serving(stub, plan)


def test_a_signed_id_for_a_model_the_server_does_not_hold_is_not_found(stub, plan, signer, repo):
    plan_id = signed(signer, f"p3:nope:{repo.get('lenet').version}:7:8,8:8:t", FUTURE)
    for call in (lambda: fetch(stub, plan_id), lambda: infer(stub, plan_id, good_batch(plan))):
        code, details = refused(call)
        assert code == grpc.StatusCode.NOT_FOUND, details


class Sender:
    """An Infer stream whose messages the test sends one at a time."""

    def __init__(self, stub):
        self.messages: queue.Queue = queue.Queue()
        self.responses = stub.Infer(iter(self.messages.get, None), timeout=60)

    def send(self, request: spb.InferRequest):
        self.messages.put(request)
        return next(self.responses)

    def close(self):
        self.messages.put(None)


def test_an_open_stream_stops_being_answered_when_its_plan_id_expires(stub, server, models_dir):
    """A stubbed clock: the stream is answered up to the id's last second and refused from the next one on,
    FAILED_PRECONDITION with 'call Plan again', so that the device plans again."""
    now = [2_000_000_000.0]
    real = server.core.signer
    server.core.signer = PlanSigner(PlanSigner.for_repository(models_dir)._key, ttl_s=60, clock=lambda: now[0])
    try:
        plan = stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=7, weight_bits=[8], activation_bits=[8])), timeout=30)
        assert plan.plan_id_expires_at == 2_000_000_060
        sender = Sender(stub)
        first = sender.send(spb.InferRequest(plan_id=plan.plan_id, batch=good_batch(plan)))
        assert [r.request_id for r in first.results] == [0, 1]
        now[0] += 60                                      # the id's last second: still served
        assert len(sender.send(spb.InferRequest(batch=good_batch(plan))).results) == 2
        now[0] += 1
        with pytest.raises(grpc.RpcError) as info:
            sender.send(spb.InferRequest(batch=good_batch(plan)))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "expired 1 s ago" in info.value.details() and "call Plan again" in info.value.details()
        sender.close()
        with pytest.raises(grpc.RpcError) as info:        # a new stream on the expired id: refused at once
            infer(stub, plan.plan_id, good_batch(plan))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        fresh = stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=7, weight_bits=[8], activation_bits=[8])), timeout=30)
        assert len(infer(stub, fresh.plan_id, good_batch(fresh))[0].results) == 2   # planning again helps
    finally:
        server.core.signer = real


def test_a_device_plans_again_when_its_plan_id_expires_mid_stream(server, models_dir, test_set, monkeypatch):
    """The server's clock jumps two hours after the stream's first answer: the id expires mid-stream and the
    device should plan again and resend exactly the inputs without an answer."""
    offset = [0.0]
    signer = PlanSigner(PlanSigner.for_repository(models_dir)._key, ttl_s=3600, clock=lambda: time.time() + offset[0])
    monkeypatch.setattr(server.core, "signer", signer)
    real_infer = server.core.infer

    def infer_then_jump(*args, **kwargs):
        result = real_infer(*args, **kwargs)
        offset[0] = 7200.0
        return result
    monkeypatch.setattr(server.core, "infer", infer_then_jump)
    client = ServerClient(f"127.0.0.1:{server.port}", timeout_s=30, retries=0)
    try:
        x, labels = test_set
        request = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=7, weight_bits=[8], activation_bits=[8]))
        report = DeviceAgent(client, HeadCache(None)).run(request, x[:40], labels[:40], batch_size=10)
        assert report.inputs == 40 and report.duplicates_dropped == 0 and report.replans == 1
        assert report.accuracy > 50                        # every input answered, in order
    finally:
        client.close()

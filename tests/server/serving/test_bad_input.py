"""Bad input gets INVALID_ARGUMENT or NOT_FOUND with a message saying what was wrong, allocates nothing
large, and the server keeps serving."""
import tracemalloc

import grpc
import pytest

from qpart.common import packing
from qpart.v1 import service_pb2 as spb
from qpart.server.planning.plans import PlanSigner
from qpart.v1 import service_pb2_grpc


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield service_pb2_grpc.SplitInferenceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def plan(stub):
    """A valid plan for lenet cut after its conv part (cut 7: activation "flatten1" [400] at 8 bits)."""
    return stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=7, weight_bits=[8], activation_bits=[8])), timeout=30)


def infer_once(stub, plan_id: str, batch: spb.ActivationBatch):
    return list(stub.Infer(iter([spb.InferRequest(plan_id=plan_id, batch=batch)]), timeout=30))


def good_batch(plan, n: int = 2) -> spb.ActivationBatch:
    size = packing.packed_size(n * 400, 8)
    a = plan.activations[0]
    return spb.ActivationBatch(request_ids=range(n), tensors=[spb.TensorBatch(
        name=a.name, sample_shape=a.sample_shape, bits=8, data=bytes(size))])


def assert_still_serving(stub, plan):
    answer = infer_once(stub, plan.plan_id, good_batch(plan))
    assert [r.request_id for r in answer[0].results] == [0, 1]


def expect(status: grpc.StatusCode, match: str, call):
    tracemalloc.start()
    with pytest.raises(grpc.RpcError) as info:
        call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.code() == status, info.value.details()
    assert match in info.value.details()
    assert peak < 4 << 20, f"handling the bad request allocated {peak} bytes in Python"


def fixed(stub, model="lenet", cut=7, weight_bits=(8,), activation_bits=(8,)):
    return stub.Plan(spb.PlanRequest(model=model, policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=cut, weight_bits=weight_bits, activation_bits=activation_bits)), timeout=30)


def test_unknown_model(stub, plan):
    expect(grpc.StatusCode.NOT_FOUND, "unknown model 'nope'", lambda: fixed(stub, model="nope"))
    expect(grpc.StatusCode.NOT_FOUND, "unknown model", lambda: stub.ListModels(spb.ListModelsRequest(name="nope")))
    assert_still_serving(stub, plan)


@pytest.mark.parametrize("kwargs, match", [
    ({"weight_bits": (0,)}, "weight bit width of node 'conv1' must be 1..16 or 32 (float32), got 0"),
    ({"weight_bits": (17,)}, "weight bit width of node 'conv1' must be 1..16 or 32 (float32), got 17"),
    ({"activation_bits": (0,)}, "activation bit width of tensor 'flatten1' must be 1..16 or 32 (float32), got 0"),
    ({"activation_bits": (17,)}, "activation bit width of tensor 'flatten1' must be 1..16 or 32 (float32), got 17"),
    ({"cut": 99}, "cut 99 is out of range"),
    ({"weight_bits": (8, 8, 8)}, "cut 7 has 2 weight node(s) on the device, the plan gives 3"),
    ({"activation_bits": (8, 8)}, "1 tensor(s) cross cut 7, the plan gives 2"),
])
def test_bad_fixed_plans(stub, plan, kwargs, match):
    expect(grpc.StatusCode.INVALID_ARGUMENT, match, lambda: fixed(stub, **kwargs))
    assert_still_serving(stub, plan)


def test_bad_plan_requests(stub, plan):
    expect(grpc.StatusCode.INVALID_ARGUMENT, "accuracy budget", lambda: stub.Plan(
        spb.PlanRequest(model="lenet", accuracy_budget=-1), timeout=30))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "rate", lambda: stub.Plan(spb.PlanRequest(
        model="lenet", policy=spb.FLOAT_SPLIT, link=spb.LinkCapabilities(rate_bps=0)), timeout=30))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "unknown policy", lambda: stub.Plan(
        spb.PlanRequest(model="lenet", policy=42), timeout=30))
    assert_still_serving(stub, plan)


@pytest.mark.parametrize("request_, match", [
    (spb.PlanRequest(model="lenet", device=spb.DeviceCapabilities(clock_hz=1e200, cycles_per_mac=5)),
     "DeviceProfile.clock_hz must be at most 1e+12, got 1e+200"),
    (spb.PlanRequest(model="lenet", device=spb.DeviceCapabilities(clock_hz=1e9, cycles_per_mac=1e-300)),
     "MAC rate of inf/s is beyond 1e+16"),
    (spb.PlanRequest(model="lenet", device=spb.DeviceCapabilities(macs_per_second=1e-300)), "at least 1/s"),
    (spb.PlanRequest(model="lenet", device=spb.DeviceCapabilities(macs_per_second=1e9, energy_coefficient=1e300)),
     "energy_coefficient must be at most"),
    (spb.PlanRequest(model="lenet", link=spb.LinkCapabilities(rate_bps=1e300)), "rate_bps must be at most"),
    (spb.PlanRequest(model="lenet", link=spb.LinkCapabilities(rate_bps=1e-300)), "at least 1 bit/s"),
    (spb.PlanRequest(model="lenet", link=spb.LinkCapabilities(rate_bps=1e6, rtt_s=1e300)), "rtt_s must be at most"),
    (spb.PlanRequest(model="lenet", weights=spb.ObjectiveWeights(time=1e300)), "Objective.time must be at most"),
    (spb.PlanRequest(model="lenet", accuracy_budget=1e300), "accuracy budget must be 0 to 100"),
    (spb.PlanRequest(model="lenet", held_heads=[f"{i:064x}" for i in range(5000)]), "at most 4096"),
])
def test_extreme_finite_numbers_are_refused_by_name(stub, plan, request_, match):
    """Every number of a PlanRequest has a range, checked before use (1e200 once overflowed clock_hz ** 2)."""
    expect(grpc.StatusCode.INVALID_ARGUMENT, match, lambda: stub.Plan(request_, timeout=30))
    assert_still_serving(stub, plan)


def test_bad_shape(stub, plan):
    batch = good_batch(plan)
    batch.tensors[0].sample_shape[:] = [20, 20]
    expect(grpc.StatusCode.INVALID_ARGUMENT, "tensor 'flatten1' [20, 20] at 8 bits does not match the plan's "
           "'flatten1' [400] at 8 bits", lambda: infer_once(stub, plan.plan_id, batch))
    assert_still_serving(stub, plan)


def test_tensors_must_be_the_plans(stub, plan):
    batch = good_batch(plan)
    batch.tensors[0].name = "relu4"
    expect(grpc.StatusCode.INVALID_ARGUMENT, "does not match the plan's 'flatten1'",
           lambda: infer_once(stub, plan.plan_id, batch))
    batch = good_batch(plan)
    batch.tensors.add().CopyFrom(batch.tensors[0])
    expect(grpc.StatusCode.INVALID_ARGUMENT, "the plan sends 1 tensor(s) across the cut (flatten1), the batch holds 2",
           lambda: infer_once(stub, plan.plan_id, batch))
    assert_still_serving(stub, plan)


def test_truncated_bytes(stub, plan):
    batch = good_batch(plan)
    batch.tensors[0].data = batch.tensors[0].data[:-1]
    expect(grpc.StatusCode.INVALID_ARGUMENT, "take 800 bytes, got 799", lambda: infer_once(stub, plan.plan_id, batch))
    assert_still_serving(stub, plan)


def test_declared_shape_of_2_to_the_40_elements(stub, plan):
    batch = good_batch(plan)
    batch.request_ids[:] = [0]
    batch.tensors[0].sample_shape[:] = [1 << 20, 1 << 20]
    expect(grpc.StatusCode.INVALID_ARGUMENT, "[1048576, 1048576]", lambda: infer_once(stub, plan.plan_id, batch))
    assert_still_serving(stub, plan)


@pytest.mark.parametrize("bits", [0, 17, 4])
def test_activation_bit_width_must_match_the_plan(stub, plan, bits):
    batch = good_batch(plan)
    batch.tensors[0].bits = bits
    expect(grpc.StatusCode.INVALID_ARGUMENT, f"at {bits} bits does not match the plan's 'flatten1' [400] at 8 bits",
           lambda: infer_once(stub, plan.plan_id, batch))
    assert_still_serving(stub, plan)


def test_bad_plan_ids(stub, plan, server):
    sign = server.core.signer.sign                        # ids this server could have issued, to reach later checks
    token = PlanSigner.unverified_token(plan.plan_id)      # without the expiry and the signature
    expect(grpc.StatusCode.INVALID_ARGUMENT, "not issued by this server", lambda: infer_once(stub, "garbage", good_batch(plan)))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "plan id is malformed", lambda: infer_once(stub, sign("garbage"), good_batch(plan)))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "plan id is empty", lambda: infer_once(stub, "", good_batch(plan)))
    other_model = sign(token.replace(":lenet:", ":nope:"))
    expect(grpc.StatusCode.NOT_FOUND, "unknown model 'nope'", lambda: infer_once(stub, other_model, good_batch(plan)))
    stale = sign(token.replace(plan.model_version, "0" * 16))
    expect(grpc.StatusCode.FAILED_PRECONDITION, "ask for a new plan", lambda: infer_once(stub, stale, good_batch(plan)))
    expect(grpc.StatusCode.INVALID_ARGUMENT, "plan id is malformed",
           lambda: list(stub.FetchHead(spb.FetchHeadRequest(plan_id=sign("p2:x")), timeout=30)))
    assert_still_serving(stub, plan)


def test_empty_and_oversized_batches(stub, plan):
    batch = good_batch(plan)
    batch.ClearField("request_ids")
    expect(grpc.StatusCode.INVALID_ARGUMENT, "no inputs", lambda: infer_once(stub, plan.plan_id, batch))
    too_many = good_batch(plan)
    too_many.request_ids[:] = range(5000)
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 1024", lambda: infer_once(stub, plan.plan_id, too_many))
    assert_still_serving(stub, plan)


def test_head_offsets(stub, plan):
    chunks = list(stub.FetchHead(spb.FetchHeadRequest(plan_id=plan.plan_id, offset=plan.head_bytes - 10), timeout=30))
    assert sum(len(c.data) for c in chunks) == 10
    expect(grpc.StatusCode.OUT_OF_RANGE, "past the end",
           lambda: list(stub.FetchHead(spb.FetchHeadRequest(plan_id=plan.plan_id, offset=1 << 40), timeout=30)))
    raw_input_plan = fixed(stub, cut=0, weight_bits=())
    expect(grpc.StatusCode.FAILED_PRECONDITION, "no head",
           lambda: list(stub.FetchHead(spb.FetchHeadRequest(plan_id=raw_input_plan.plan_id), timeout=30)))


def test_probe_reply_is_bounded(stub):
    assert stub.Probe(spb.ProbeRequest(payload=b"x" * 1000, reply_bytes=2000), timeout=30).received_bytes == 1000
    expect(grpc.StatusCode.INVALID_ARGUMENT, "exceeds the message limit",
           lambda: stub.Probe(spb.ProbeRequest(reply_bytes=1 << 30), timeout=30))

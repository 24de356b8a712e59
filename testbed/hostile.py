"""Hypothesis strategies for hostile qpart messages: random, truncated, oversized and inconsistent.
Used by the fuzz tests and the reliability report (hypothesis is a development dependency)."""
from hypothesis import strategies as st

from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb

u32 = st.one_of(st.integers(0, 16), st.integers(0, 2**32 - 1))
u64 = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
dims = st.lists(st.one_of(st.integers(0, 32), st.integers(0, 2**40)), max_size=5)


@st.composite
def packed_tensors(draw):
    return npb.PackedTensor(name=draw(st.text(max_size=20)), shape=draw(dims), bits=draw(u32),
                            granularity=draw(st.integers(0, 3)), scale=draw(st.lists(floats, max_size=6)),
                            zero_point=draw(st.lists(u32, max_size=6)), data=draw(st.binary(max_size=256)))


@st.composite
def layers(draw):
    kind = draw(st.sampled_from(["linear", "conv2d", "relu", "max_pool2d", "avg_pool2d", "flatten", "dropout", None]))
    layer = npb.Layer(name=draw(st.text(max_size=8)))
    small = st.integers(0, 40)
    if kind == "linear":
        layer.linear.CopyFrom(npb.LinearOp(in_features=draw(u32), out_features=draw(u32), bias=draw(st.booleans())))
    elif kind == "conv2d":
        layer.conv2d.CopyFrom(npb.Conv2dOp(**{f: draw(small) for f in (
            "in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w",
            "dilation_h", "dilation_w", "groups")}, bias=draw(st.booleans())))
    elif kind in ("max_pool2d", "avg_pool2d"):
        getattr(layer, kind).CopyFrom(npb.Pool2dOp(**{f: draw(small) for f in (
            "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w")}))
    elif kind is not None:
        getattr(layer, kind).SetInParent()
    return layer


@st.composite
def network_specs(draw):
    return npb.NetworkSpec(format_version=draw(st.sampled_from([0, 1, 1, 1, 2])), input_shape=draw(dims),
                           layers=draw(st.lists(layers(), max_size=6)))


def plan_ids(valid: list[str]):
    mutated = st.builds(lambda v, i, c: v[:i] + c + v[i + 1:], st.sampled_from(valid), st.integers(0, 60),
                        st.text(max_size=2))
    return st.one_of(st.sampled_from(valid), mutated, st.text(max_size=80), st.just(""),
                     st.just("p1:" + "x" * 2000))


@st.composite
def plan_requests(draw, models):
    request = spb.PlanRequest(model=draw(st.one_of(st.sampled_from(models), st.text(max_size=30))),
                              accuracy_budget=draw(floats), policy=draw(st.integers(0, 9)),
                              inferences_per_head=draw(u32), explain=draw(st.booleans()),
                              held_heads=draw(st.lists(st.text(max_size=70), max_size=3)))
    if draw(st.booleans()):
        request.device.CopyFrom(spb.DeviceCapabilities(clock_hz=draw(floats), cycles_per_mac=draw(floats),
                                                       macs_per_second=draw(floats), memory_bytes=draw(u64)))
    if draw(st.booleans()):
        request.link.CopyFrom(spb.LinkCapabilities(rate_bps=draw(floats), rtt_s=draw(floats),
                                                   bandwidth_hz=draw(floats), snr_db=draw(floats)))
    if draw(st.booleans()):
        request.fixed.CopyFrom(spb.FixedPlan(partition_point=draw(u32), weight_bits=draw(st.lists(u32, max_size=12)),
                                             activation_bits=draw(u32), weight_granularity=draw(st.integers(0, 3))))
    return request


@st.composite
def infer_requests(draw, valid_plan_ids):
    ids = draw(st.one_of(st.lists(u64, max_size=8), st.builds(lambda n: list(range(n)), st.integers(0, 5000))))
    return spb.InferRequest(plan_id=draw(plan_ids(valid_plan_ids)), batch=spb.ActivationBatch(
        request_ids=ids, sample_shape=draw(dims), bits=draw(u32), data=draw(st.binary(max_size=2048))))

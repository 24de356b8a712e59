"""Hypothesis strategies for hostile qpart messages: random, truncated, oversized and inconsistent.
Used by the fuzz tests and the reliability report (hypothesis is a development dependency)."""
from hypothesis import strategies as st

from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb

u32 = st.one_of(st.integers(0, 16), st.integers(0, 2**32 - 1))
u64 = st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.floats(allow_nan=True, allow_infinity=True),          # float64: beyond float32's range
                   st.sampled_from([1e308, -1e308, 1e200, 1.4e154, 1e-300, 5e-324, -5e-324, 0.0]))   # extremes
dims = st.lists(st.one_of(st.integers(0, 32), st.integers(0, 2**40)), max_size=5)


@st.composite
def packed_tensors(draw):
    return npb.PackedTensor(name=draw(st.text(max_size=20)), shape=draw(dims), bits=draw(u32),
                            granularity=draw(st.integers(0, 3)), scale=draw(st.lists(floats, max_size=6)),
                            zero_point=draw(st.lists(u32, max_size=6)), data=draw(st.binary(max_size=256)))


OPS = ["linear", "conv2d", "batch_norm", "activation", "add", "mul", "concat", "max_pool2d", "avg_pool2d",
       "adaptive_avg_pool2d", "flatten", "reshape", "identity", None]


@st.composite
def nodes(draw, names):
    """A node with random fields, reading random names (earlier ones, the input, or names that do not exist)."""
    kind = draw(st.sampled_from(OPS))
    node = npb.Node(name=draw(st.one_of(st.text(max_size=8), st.sampled_from(names))),
                    inputs=draw(st.lists(st.one_of(st.sampled_from(names), st.text(max_size=4)), max_size=3)))
    small = st.integers(0, 40)
    if kind == "linear":
        node.linear.CopyFrom(npb.LinearOp(in_features=draw(u32), out_features=draw(u32), bias=draw(st.booleans())))
    elif kind == "conv2d":
        node.conv2d.CopyFrom(npb.Conv2dOp(**{f: draw(small) for f in (
            "in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w",
            "dilation_h", "dilation_w", "groups")}, bias=draw(st.booleans())))
    elif kind in ("max_pool2d", "avg_pool2d"):
        getattr(node, kind).CopyFrom(npb.Pool2dOp(**{f: draw(small) for f in (
            "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w")}))
    elif kind == "batch_norm":
        node.batch_norm.channels = draw(u32)
    elif kind == "activation":
        node.activation.function = draw(st.integers(0, 12))
    elif kind == "concat":
        node.concat.axis = draw(st.integers(0, 5))
    elif kind == "adaptive_avg_pool2d":
        node.adaptive_avg_pool2d.CopyFrom(npb.AdaptiveAvgPool2dOp(out_h=draw(small), out_w=draw(small)))
    elif kind == "reshape":
        node.reshape.shape.extend(draw(dims))
    elif kind is not None:
        getattr(node, kind).SetInParent()
    return node


@st.composite
def network_specs(draw):
    names = ["input"]
    spec = npb.NetworkSpec(format_version=draw(st.sampled_from([0, 1, 2, 2, 2, 3])), input_shape=draw(dims),
                           input=draw(st.sampled_from(["input", "", "x" * 200])))
    for _ in range(draw(st.integers(0, 6))):
        node = draw(nodes(names))
        spec.nodes.append(node)
        names.append(node.name or "n")
    spec.outputs.extend(draw(st.lists(st.sampled_from(names), max_size=2)))
    return spec


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
    if draw(st.booleans()):      # every numeric field of the request
        request.device.CopyFrom(spb.DeviceCapabilities(
            clock_hz=draw(floats), cycles_per_mac=draw(floats), macs_per_second=draw(floats),
            energy_coefficient=draw(floats), tx_power_w=draw(floats), memory_bytes=draw(u64)))
    if draw(st.booleans()):
        request.link.CopyFrom(spb.LinkCapabilities(
            rate_bps=draw(floats), downlink_rate_bps=draw(floats), rtt_s=draw(floats), bandwidth_hz=draw(floats),
            snr_db=draw(floats), rayleigh_fading=draw(st.booleans())))
    if draw(st.booleans()):
        request.weights.CopyFrom(spb.ObjectiveWeights(time=draw(floats), energy=draw(floats), cost=draw(floats)))
    if draw(st.booleans()):
        request.fixed.CopyFrom(spb.FixedPlan(cut=draw(u32), weight_bits=draw(st.lists(u32, max_size=12)),
                                             activation_bits=draw(st.lists(u32, max_size=4)),
                                             weight_granularity=draw(st.integers(0, 3))))
    return request


@st.composite
def infer_requests(draw, valid_plan_ids):
    ids = draw(st.one_of(st.lists(u64, max_size=8), st.builds(lambda n: list(range(n)), st.integers(0, 5000))))
    tensors = draw(st.lists(st.builds(lambda name, shape, bits, data: spb.TensorBatch(
        name=name, sample_shape=shape, bits=bits, data=data), st.one_of(st.text(max_size=12), st.just("flatten")),
        dims, u32, st.binary(max_size=2048)), max_size=3))
    return spb.InferRequest(plan_id=draw(plan_ids(valid_plan_ids)), batch=spb.ActivationBatch(
        request_ids=ids, tensors=tensors))

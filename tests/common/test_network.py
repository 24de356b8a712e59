"""The network description: validation before allocation, shapes, MACs, cuts and what crosses them."""
import numpy as np
import pytest
import torch

from qpart.common import network, npexec
from qpart.common.errors import InvalidArgument, ResourceExhausted
from qpart.common.torchnet import GraphModule, max_pool2d
from qpart.common.torchnet import run_node as torch_run_node
from qpart.v1 import network_pb2 as pb

A = pb.Activation


def conv(name, inputs, c_in, c_out, k=3, stride=1, groups=1, bias=True):
    return pb.Node(name=name, inputs=inputs, conv2d=pb.Conv2dOp(
        in_channels=c_in, out_channels=c_out, kernel_h=k, kernel_w=k, stride_h=stride, stride_w=stride,
        padding_h=k // 2, padding_w=k // 2, dilation_h=1, dilation_w=1, groups=groups, bias=bias))


def act(name, inputs, function=A.RELU):
    return pb.Node(name=name, inputs=inputs, activation=pb.ActivationOp(function=function))


def residual() -> pb.NetworkSpec:
    """conv-relu, a block (conv, relu, depthwise conv) added to its input, SE gate, concat, pool, flatten, fc."""
    nodes = [conv("c1", ["x"], 2, 4), act("r1", ["c1"]), conv("c2", ["r1"], 4, 4), act("r2", ["c2"], A.RELU6),
             conv("dw", ["r2"], 4, 4, groups=4), pb.Node(name="add", inputs=["dw", "r1"], add=pb.AddOp()),
             pb.Node(name="gap", inputs=["add"], adaptive_avg_pool2d=pb.AdaptiveAvgPool2dOp(out_h=1, out_w=1)),
             act("gate", ["gap"], A.HARDSIGMOID), pb.Node(name="se", inputs=["add", "gate"], mul=pb.MulOp()),
             pb.Node(name="cat", inputs=["se", "r1"], concat=pb.ConcatOp(axis=0)),
             pb.Node(name="pool", inputs=["cat"], max_pool2d=pb.Pool2dOp(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2)),
             pb.Node(name="flat", inputs=["pool"], flatten=pb.FlattenOp()),
             pb.Node(name="fc", inputs=["flat"], linear=pb.LinearOp(in_features=128, out_features=3, bias=True))]
    return pb.NetworkSpec(format_version=2, input_shape=[2, 8, 8], input="x", nodes=nodes, outputs=["fc"])


def test_shapes_macs_and_cuts():
    profile = network.analyze(residual())
    assert profile.shapes["add"] == (4, 8, 8) and profile.shapes["se"] == (4, 8, 8) and profile.shapes["cat"] == (8, 8, 8)
    assert profile.nodes[0].macs == 4 * 2 * 9 * 64 and profile.nodes[4].macs == 4 * 1 * 9 * 64   # eq 2; depthwise
    assert profile.nodes[-1].macs == 128 * 3 and profile.nodes[0].weight_count == 4 * 2 * 9 + 4
    cut = profile.cut(3)                      # c1, r1, c2 on the device: the branch and the skip cross
    assert cut.tensors == ("r1", "c2") and cut.weight_nodes == (0, 2) and cut.elements == 2 * 256
    assert profile.cut(0).tensors == ("x",) and profile.cut(profile.num_nodes).tensors == ()
    assert profile.cut(7).tensors == ("r1", "add", "gap")        # three tensors: not offered with at most two
    offered = [c.cut for c in profile.cuts(2)]
    assert 7 not in offered and 3 in offered and 0 in offered and profile.num_nodes in offered
    assert profile.cut(3).peak_elements == 2 * 256                # r1 and c2 alive while c2 runs (x is freed)
    for bad in (-1, profile.num_nodes + 1, 2.0, True):
        with pytest.raises(InvalidArgument, match="cut"):
            profile.check_cut(bad)


def test_graph_module_runs_ranges_of_nodes():
    spec = residual()
    profile = network.analyze(spec)
    rng = np.random.default_rng(0)
    params = {f"{n.name}.{p}": rng.normal(size=s).astype(np.float32) for n in profile.nodes
              for p, s in n.param_shapes.items()}
    x = torch.from_numpy(rng.normal(size=(5, 2, 8, 8)).astype(np.float32))
    (whole,) = GraphModule(spec, profile, params)(x)
    for c in (0, 3, 5, 9, profile.num_nodes):
        crossing = GraphModule(spec, profile, params, 0, c)(x)
        assert len(crossing) == max(len(profile.cut(c).tensors), 1)
        if c < profile.num_nodes:
            (tail,) = GraphModule(spec, profile, params, c)(*crossing)
            assert torch.allclose(tail, whole, atol=1e-5)


def _with(**changes) -> pb.NetworkSpec:
    spec = residual()
    for path, value in changes.items():
        index, field = path.split("__")
        node = spec.nodes[int(index)]
        if field == "inputs":
            node.ClearField("inputs")
            node.inputs.extend(value)
        else:
            setattr(node, field, value)
    return spec


@pytest.mark.parametrize("spec, message", [
    (_with(**{"2__inputs": ["r9"]}), "reads 'r9', which is not the input or an earlier node"),
    (_with(**{"1__inputs": ["r2"]}), "not the input or an earlier node"),                # a cycle
    (_with(**{"3__name": "c1"}), "used twice"),
    (_with(**{"3__name": ""}), "1-128 characters"),
    (_with(**{"5__inputs": ["dw"]}), "takes 2..2 input"),
    (_with(**{"9__inputs": ["se", "flat_x"]}), "not the input"),
    (pb.NetworkSpec(format_version=1, input_shape=[1], input="x"), "version 1 is not supported"),
    (pb.NetworkSpec(format_version=2, input_shape=[1 << 20, 1 << 20], input="x"), "elements"),
    (pb.NetworkSpec(format_version=2, input_shape=[], input="x"), "empty shape"),
    (pb.NetworkSpec(format_version=2, input_shape=[1, 4, 4], input="x", nodes=[act("a", ["x"]), act("b", ["x"])],
                    outputs=["a"]), "'b' is not used by any output"),
    (pb.NetworkSpec(format_version=2, input_shape=[1, 4, 4], input="x", nodes=[act("a", ["x"], 99)], outputs=["a"]),
     "unknown activation"),
    (pb.NetworkSpec(format_version=2, input_shape=[1, 4, 4], input="x", nodes=[
        pb.Node(name="p", inputs=["x"], max_pool2d=pb.Pool2dOp(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2,
                                                               padding_h=2))], outputs=["p"]), "half the window"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[conv("c", ["x"], 2, 1)],
                    outputs=["c"]), "expects a \\[2, height, width\\] input"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[
        pb.Node(name="m", inputs=["x", "x"], mul=pb.MulOp()), pb.Node(name="r", inputs=["m"], reshape=pb.ReshapeOp(
            shape=[5, 10]))], outputs=["r"]), "cannot reshape"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[
        pb.Node(name="p", inputs=["x"], permute=pb.PermuteOp(dims=[0, 0, 2]))], outputs=["p"]), "not a permutation"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[
        pb.Node(name="p", inputs=["x"], permute=pb.PermuteOp(dims=[1, 0]))], outputs=["p"]), "not a permutation"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[
        pb.Node(name="s", inputs=["x"], slice=pb.SliceOp(axis=0, start=2, stop=2))], outputs=["s"]), "cannot take 2..2"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[
        pb.Node(name="s", inputs=["x"], slice=pb.SliceOp(axis=1, start=0, stop=5))], outputs=["s"]), "cannot take"),
    (pb.NetworkSpec(format_version=2, input_shape=[3, 4, 4], input="x", nodes=[
        pb.Node(name="s", inputs=["x"], slice=pb.SliceOp(axis=3, start=0, stop=1))], outputs=["s"]), "axis 3"),
])
def test_invalid_descriptions_are_refused_naming_the_node(spec, message):
    with pytest.raises(InvalidArgument, match=message):
        network.analyze(spec)


def test_too_many_nodes_is_refused_before_anything_else():
    spec = pb.NetworkSpec(format_version=2, input_shape=[1], input="x",
                          nodes=[act(f"a{i}", ["x"]) for i in range(network.MAX_NODES + 1)])
    with pytest.raises(ResourceExhausted, match="nodes"):
        network.analyze(spec)


@pytest.mark.parametrize("kernel, stride, size", [(2, 2, 28), (2, 2, 7), (3, 2, 9), (3, 1, 5), (2, 3, 8)])
def test_fast_max_pool_equals_torch(kernel, stride, size):
    x = torch.randn(3, 4, size, size)
    expected = torch.nn.functional.max_pool2d(x, kernel, stride)
    assert torch.equal(max_pool2d(x, kernel, kernel, stride, stride), expected)


def test_permute_and_slice_shapes_and_both_executors():
    """A channel shuffle (reshape, permute, reshape), channels moved last, and two slices: the torch and numpy
    executors compute what torch's own ops do, in the shapes the description gives; no MACs."""
    nodes = [pb.Node(name="g", inputs=["x"], reshape=pb.ReshapeOp(shape=[2, 3, 4, 5])),
             pb.Node(name="t", inputs=["g"], permute=pb.PermuteOp(dims=[1, 0, 2, 3])),
             pb.Node(name="shuffled", inputs=["t"], reshape=pb.ReshapeOp(shape=[6, 4, 5])),
             pb.Node(name="hwc", inputs=["shuffled"], permute=pb.PermuteOp(dims=[1, 2, 0])),
             pb.Node(name="a", inputs=["hwc"], slice=pb.SliceOp(axis=2, start=0, stop=3)),
             pb.Node(name="b", inputs=["hwc"], slice=pb.SliceOp(axis=1, start=1, stop=4))]
    spec = pb.NetworkSpec(format_version=2, input_shape=[6, 4, 5], input="x", nodes=nodes, outputs=["a", "b"])
    profile = network.analyze(spec)
    assert profile.shapes["t"] == (3, 2, 4, 5) and profile.shapes["hwc"] == (4, 5, 6)
    assert profile.shapes["a"] == (4, 5, 3) and profile.shapes["b"] == (4, 3, 6)
    assert all(n.macs == 0 for n in profile.nodes)
    x = torch.randn(3, 6, 4, 5)
    hwc = x.view(3, 2, 3, 4, 5).transpose(1, 2).reshape(3, 6, 4, 5).permute(0, 2, 3, 1)
    expected = {"hwc": hwc, "a": hwc[..., :3], "b": hwc[:, :, 1:4]}
    env_t, env_n = {"x": x}, {"x": x.numpy()}
    for node in spec.nodes:
        env_t[node.name] = torch_run_node(node, [env_t[i] for i in node.inputs], {})
        env_n[node.name] = npexec.run_node(node, [env_n[i] for i in node.inputs], {})
    for name, value in expected.items():
        assert tuple(value.shape[1:]) == profile.shapes[name]
        assert torch.equal(env_t[name], value) and np.array_equal(env_n[name], value.numpy())
        assert env_n[name].flags.c_contiguous and env_t[name].is_contiguous()

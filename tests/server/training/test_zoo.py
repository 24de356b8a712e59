"""The zoo's models as the network description sees them: nodes, MACs (eqs 1-2), cuts."""
import pytest
import torch

from qpart.common import network
from qpart.server.models import tracing
from qpart.server.training import zoo


@pytest.fixture(scope="module")
def profiles():
    out = {}
    for name, entry in zoo.ZOO.items():
        shape = entry.preprocessing.output_shape(28, 28)
        spec, _ = tracing.trace(entry.build().eval(), torch.rand(2, *shape))
        out[name] = network.analyze(spec)
    return out


def test_chains(profiles):
    fc6 = profiles["fc6"]
    assert [n.macs for n in fc6.weight_nodes] == [784 * 512, 512 * 256, 256 * 128, 128 * 64, 64 * 32, 32 * 10]
    assert fc6.weight_nodes[0].weight_count == 784 * 512 + 512 and fc6.output_shapes == ((10,),)
    lenet = profiles["lenet"]
    conv2 = lenet.weight_nodes[1]   # eq 2 with the output size: 16 * 6 * 5 * 5 * 10 * 10
    assert conv2.macs == 16 * 6 * 25 * 100 and conv2.shape == (16, 10, 10)
    assert [c.tensors for c in lenet.cuts() if c.cut == 7] == [("flatten1",)]       # conv part on the device
    assert len(profiles["vgg8"].weight_nodes) == 8


def test_residual_and_inverted_residual_networks(profiles):
    for name in ("resnet8", "resnet8-96", "mobilenetv2", "mobilenetv2-96"):
        p = profiles[name]
        ops = {n.op for n in p.nodes}
        assert "add" in ops and "adaptive_avg_pool2d" in ops, name
        assert any(len(c.tensors) == 2 for c in p.cuts()), name      # inside a block: branch and skip
    mobile = profiles["mobilenetv2-96"]
    assert any(n.op == "conv2d" and n.param_shapes["weight"][1] == 1 for n in mobile.nodes)   # depthwise
    assert any(n.op == "activation" for n in mobile.nodes)
    for name in ("resnet8-96", "mobilenetv2-96"):
        p = profiles[name]
        assert p.input_shape == (3, 96, 96)
        stem = next(c for c in p.cuts() if c.elements == 8 * 24 * 24)   # the stride-4 stem: a sixth of the input
        assert stem.device_macs < 0.05 * sum(n.macs for n in p.nodes)

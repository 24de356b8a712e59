"""Tracing a module's real forward: every op mapped or refused by name and place, BatchNorm folded,
the result checked against the module."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qpart.common import network
from qpart.common.torchnet import GraphModule
from qpart.server.models import importer, tracing
from qpart.server.training import zoo


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_traced_zoo_models_compute_what_torch_computes(name):
    torch.manual_seed(0)
    model = randomize_batchnorm(zoo.ZOO[name].build())
    x = torch.rand(8, *zoo.ZOO[name].preprocessing.output_shape(28, 28))
    spec, params = tracing.trace(model, x[:2])
    modules = [m for m in model.modules() if not list(m.children())]
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in modules)
    convs = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in modules)
    ops = [n.WhichOneof("op") for n in spec.nodes]
    assert "batch_norm" not in ops and ops.count("conv2d") + ops.count("linear") == convs   # every BN folded
    if norms:
        assert all(n.conv2d.bias for n in spec.nodes if n.WhichOneof("op") == "conv2d")
    (got,) = GraphModule(spec, network.analyze(spec), params)(x)
    with torch.no_grad():
        np.testing.assert_allclose(got.numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


class Functional(nn.Module):
    """F.relu, F.hardswish, torch.cat and x.view in forward: calls a module list would never show."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(5 * 16, 4)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.hardswish(self.b(x))], dim=1)      # [5, 4, 4]
        return self.fc(y.view(y.size(0), -1))


def test_functional_calls_are_traced_not_dropped():
    model = Functional().eval()
    x = torch.rand(4, 1, 4, 4)
    spec, params = tracing.trace(model, x[:2])
    functions = [n.activation.function for n in spec.nodes if n.WhichOneof("op") == "activation"]
    assert len(functions) == 2 and any(n.WhichOneof("op") == "concat" for n in spec.nodes)
    assert importer.check(model, spec, params, x.numpy())["max_difference"] < 1e-5


class Unsupported(nn.Module):
    def __init__(self, tail: nn.Module):
        super().__init__()
        self.conv, self.tail = nn.Conv2d(1, 2, 3), tail

    def forward(self, x):
        return self.tail(self.conv(x))


class Tanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x) + 1.0


@pytest.mark.parametrize("model, message", [
    (Unsupported(nn.Tanh()), "module 'tail' .* is not supported: type Tanh"),
    (Unsupported(nn.Upsample(scale_factor=2)), "module 'tail' .*type Upsample"),
    (Unsupported(Tanh()), "function 'tanh' \\(traced node 'tanh', .*test_tracing:\\d+ in forward\\)"),
    (Unsupported(nn.MaxPool2d(2, ceil_mode=True)), "floor mode"),
    (Unsupported(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")), "only nn.Conv2d with zero padding"),
])
def test_unsupported_ops_are_refused_with_name_and_place(model, message):
    with pytest.raises(tracing.UnsupportedOp, match=message):
        tracing.trace(model.eval(), torch.rand(2, 1, 8, 8))


class DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Stateful(nn.Module):
    """A forward that keeps state between calls: traced once, it cannot reproduce later calls."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) * self.calls


def test_untraceable_and_mismatching_modules_are_refused():
    with pytest.raises(tracing.UnsupportedOp, match="cannot be traced with torch.fx"):
        tracing.trace(DataDependent(), torch.rand(2, 4))
    model = Stateful().eval()
    with pytest.raises(tracing.UnsupportedOp, match="constants are not supported"):
        tracing.trace(model, torch.rand(2, 4))


class Mismatch(nn.Module):
    """Traced in eval mode, but its forward reads a flag that changes what it computes afterwards."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.scale = 1.0

    def forward(self, x):
        return self.fc(x) if self.scale == 1.0 else self.fc(x) * 0


def test_a_graph_that_disagrees_with_its_module_is_refused():
    model = Mismatch().eval()
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    spec, params = tracing.trace(model, torch.from_numpy(x[:2]))
    model.scale = 2.0                     # what the module computes now is not what was traced
    with pytest.raises(importer.TraceMismatch, match="disagrees with the module"):
        importer.check(model, spec, params, x)

"""Tracing a module's real forward: every op mapped or refused by name and place, BatchNorm folded,
the result checked against the module."""
import inspect
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qpart.common import network, npexec
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


class Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("model, message", [
    (Unsupported(nn.Tanh()), "module 'tail' .* is not supported: type Tanh"),
    (Unsupported(Call(lambda x: x.permute(1, 0, 2, 3))), "method 'permute' .*test_tracing:\\d+ in <lambda>\\) .*batch"),
    (Unsupported(Call(lambda x: x.transpose(0, 1))), "not a per-sample axis"),
    (Unsupported(Call(lambda x: x[:1])), "take the batch whole"),
    (Unsupported(Call(lambda x: x[:, :, ::2])), "step 1"),
    (Unsupported(Call(lambda x: x * x.size(1))), "constants are not supported"),
    (Unsupported(Call(lambda x: F.dropout(x, 0.5))), "training=True is random at inference"),
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


def numpy_run(spec, params: dict, x: np.ndarray) -> list[np.ndarray]:
    """The description run by the device's numpy executor, node by node."""
    env = {spec.input: x}
    for node in spec.nodes:
        weights = {p: params[network.parameter_name(node.name, p)] for p in network.parameter_shapes(node)}
        env[node.name] = npexec.run_node(node, [env[i] for i in node.inputs], weights)
    return [env[o] for o in spec.outputs]


class Shapes(nn.Module):
    """Shape queries evaluated at trace time, torch.split, a channel shuffle, permute, slicing and chunk."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        x = self.conv(x)                                                        # [6, 4, 6]
        n, c, h, w = x.shape
        torch._assert(c % 2 == 0, "channels come in pairs")
        a, b = torch.split(x, [2, c - 2], dim=1)                                # [2, 4, 6], [4, 4, 6]
        b = b.view(n, 2, (c - 2) // 2, h, w).transpose(1, 2).reshape(n, c - 2, h, w)   # channels shuffled
        u = torch.cat([b, a], dim=1).permute(0, 2, 3, 1)                        # [4, 6, 6]: H, W, C
        v = u[:, 1:3, ..., 0]                                                   # [2, 6]
        top = x.chunk(3, dim=2)[-1]                                             # [6, 2, 6]: the last of two pieces
        return self.fc(torch.cat([v.reshape(v.size(0), -1), top.mean((2, 3))], dim=1))   # [12 + 6]


def test_static_shapes_permutes_and_slices_run_in_both_executors():
    model = Shapes().eval()
    x = torch.rand(5, 2, 4, 6)
    spec, params = tracing.trace(model, x[:2])
    ops = [n.WhichOneof("op") for n in spec.nodes]
    assert ops.count("slice") == 5 and ops.count("permute") == 2 and "identity" not in ops
    assert importer.check(model, spec, params, x.numpy())["max_difference"] < 1e-5
    with torch.no_grad():
        np.testing.assert_allclose(numpy_run(spec, params, x.numpy())[0], model(x).numpy(), rtol=1e-5, atol=1e-5)


def drop_path(x, p: float, training: bool):
    """A drop path of one's own, wrapped for fx as torchvision wraps stochastic_depth: the identity in eval."""
    if not training or p == 0.0:
        return x
    return x * (torch.rand(x.shape[0], 1, 1, 1) > p) / (1 - p)


torch.fx.wrap("drop_path")


class Identities(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.drops = nn.Sequential(nn.Dropout2d(0.3), nn.AlphaDropout(0.2), nn.Identity())

    def forward(self, x):
        x = F.dropout(self.conv(x), 0.5, self.training)
        x = drop_path(self.drops(x), 0.2, self.training)
        return F.relu(F.dropout2d(x, 0.0)).contiguous().clone()


def test_eval_mode_identities_are_aliases():
    model = Identities().eval()
    spec, params = tracing.trace(model, torch.rand(2, 1, 6, 6))
    assert [n.WhichOneof("op") for n in spec.nodes] == ["conv2d", "activation"]
    with pytest.raises(tracing.UnsupportedOp, match="function 'drop_path'"):     # training: not an identity
        tracing.trace(Unsupported(Call(lambda x: drop_path(x, 0.2, True))), torch.rand(2, 1, 8, 8))


class TwoInputs(nn.Module):
    def forward(self, x, scale: float = 2.0):
        return x * scale


def test_places_are_the_models_module_and_line_never_a_path():
    torch_dir = os.path.dirname(torch.__file__)
    assert tracing._skipped(torch.nn.modules.module.__file__) and tracing._skipped(importer.__file__)
    assert not tracing._skipped(os.path.join(torch_dir + "vision", "models", "resnet.py"))   # torch's neighbour
    assert not tracing._skipped(__file__)
    line = inspect.getsourcelines(DataDependent.forward)[1] + 1
    with pytest.raises(tracing.UnsupportedOp) as refusal:
        tracing.trace(DataDependent(), torch.rand(2, 4))
    assert f"torch.fx (tests.server.models.test_tracing:{line} in forward): TraceError" in str(refusal.value)
    line = inspect.getsourcelines(TwoInputs.forward)[1]        # an input: where forward is defined, not the caller
    place = f"input 'scale' \\(traced node 'scale', tests.server.models.test_tracing:{line} in forward\\)"
    with pytest.raises(tracing.UnsupportedOp, match=place + " .*one input"):
        tracing.trace(TwoInputs(), torch.rand(2, 4))
    spec, _ = tracing.trace(Functional().eval(), torch.rand(2, 1, 4, 4))
    assert all("tests.server.models.test_tracing:" in n.source and os.sep + "tests" not in n.source for n in spec.nodes)

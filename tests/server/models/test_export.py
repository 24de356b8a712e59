import numpy as np
import pytest
import torch
from torch import nn

from qpart.common.torchnet import build
from qpart.server.models import export
from qpart.server.training import zoo


def _randomize_batchnorm(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_exported_model_computes_what_torch_computes(name):
    torch.manual_seed(0)
    model = zoo.ZOO[name].build()
    _randomize_batchnorm(model)
    model.eval()
    spec, params = export.export(model, (1, 28, 28))
    modules = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in modules)
    assert len(spec.layers) == len(modules) - norms          # each BatchNorm2d folded away, nothing else dropped
    for i, m in enumerate(modules[:-1]):
        if isinstance(m, nn.Conv2d) and isinstance(modules[i + 1], nn.BatchNorm2d):   # folded: new weight and bias
            position = [layer.name for layer in spec.layers].index(next(n for n, c in model.named_modules() if c is m))
            assert spec.layers[position].conv2d.bias
            assert not np.allclose(params[f"{position}.weight"], m.weight.detach().numpy())
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(build(spec, params)(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_nested_sequentials_are_flattened():
    model = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), nn.ReLU(), nn.Linear(3, 2)).eval()
    spec, params = export.export(model, (1, 2, 2))
    assert [layer.WhichOneof("op") for layer in spec.layers] == ["flatten", "linear", "relu", "linear"]
    assert set(params) == {"1.weight", "1.bias", "3.weight", "3.bias"}


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.GELU()), "'2' of type GELU is not supported"),
    (nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.BatchNorm2d(2)), "must directly follow a Conv2d"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), "floor mode"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")), "numeric zero padding"),
])
def test_unsupported_modules_are_named(model, message):
    with pytest.raises(export.UnsupportedLayer, match=message):
        export.export(model.eval(), (1, 4, 4))

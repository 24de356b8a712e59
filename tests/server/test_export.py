import numpy as np
import pytest
import torch
from torch import nn

from qpart.common.torchnet import build
from qpart.server import export, zoo


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
    assert not any(layer.WhichOneof("op") == "batchnorm" for layer in spec.layers)   # BN folded into the convs
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

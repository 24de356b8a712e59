"""Models no one here wrote: small models with the layouts of torchvision's (torchvision's own code, its
channels and depths cut down), defined here because torchvision's wheel does not import against this
torch. Each is a package module imported by name, as a library's model is."""
import torch
from torch import nn


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters (fresh ones fold to the identity), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()

"""Rebuild torch modules from a layer description and float parameters (device head, server tail)."""
import numpy as np
import torch
from torch import nn

from qpart.common.errors import InvalidArgument
from qpart.common.network import kind, parameter_name, parameter_shapes
from qpart.v1 import network_pb2 as pb


class MaxPool2d(nn.MaxPool2d):
    """Max pooling; windows without padding take the maximum of strided slices, which is exact and
    several times faster than torch's CPU kernel for small images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.stride)
        if _pair(self.padding) != (0, 0):
            return super().forward(x)
        h_out, w_out = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1   # [n, c, h_out, w_out]
        out = None
        for i in range(kh):
            for j in range(kw):
                window = x[..., i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw]
                out = window if out is None else torch.maximum(out, window)
        return out


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _module(layer: pb.Layer) -> nn.Module:
    op = kind(layer)
    if op == "linear":
        lin = layer.linear
        return nn.utils.skip_init(nn.Linear, lin.in_features, lin.out_features, bias=lin.bias)
    if op == "conv2d":
        c = layer.conv2d
        return nn.utils.skip_init(
            nn.Conv2d, c.in_channels, c.out_channels, (c.kernel_h, c.kernel_w), stride=(c.stride_h, c.stride_w),
            padding=(c.padding_h, c.padding_w), dilation=(c.dilation_h, c.dilation_w), groups=c.groups, bias=c.bias)
    if op == "relu":
        return nn.ReLU()
    if op in ("max_pool2d", "avg_pool2d"):
        pool = getattr(layer, op)
        cls = MaxPool2d if op == "max_pool2d" else nn.AvgPool2d
        return cls((pool.kernel_h, pool.kernel_w), stride=(pool.stride_h, pool.stride_w),
                   padding=(pool.padding_h, pool.padding_w))
    if op == "flatten":
        return nn.Flatten()
    if op == "dropout":
        return nn.Identity()
    raise InvalidArgument(f"layer {layer.name!r}: unknown operation {op!r}")


def build(spec: pb.NetworkSpec, params: dict, start: int = 0, stop: int | None = None) -> nn.Sequential:
    """nn.Sequential of spec.layers[start:stop] in eval mode; params maps "<position>.<name>" to arrays.

    Shapes must already be validated (network.analyze); each parameter's shape is checked here.
    """
    stop = len(spec.layers) if stop is None else stop
    modules = []
    for position in range(start, stop):
        layer = spec.layers[position]
        module = _module(layer)
        for pname, shape in parameter_shapes(layer).items():
            key = parameter_name(position, pname)
            if key not in params:
                raise InvalidArgument(f"parameter {key!r} of layer {layer.name!r} is missing")
            value = torch.as_tensor(np.asarray(params[key], np.float32))
            if tuple(value.shape) != shape:
                raise InvalidArgument(f"parameter {key!r} has shape {tuple(value.shape)}, expected {shape}")
            getattr(module, pname).data = value.clone()
        modules.append(module)
    model = nn.Sequential(*modules).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model

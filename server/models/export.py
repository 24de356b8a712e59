"""Convert a torch nn.Sequential into the layer description plus float32 parameters.

BatchNorm2d directly after a Conv2d is folded into that convolution's weight and bias.
"""
import numpy as np
import torch
from torch import nn

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb

SUPPORTED = "Linear, Conv2d, BatchNorm2d (right after a Conv2d), ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout"


class UnsupportedLayer(InvalidArgument):
    pass


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _unsupported(name: str, module: nn.Module, why: str = "") -> UnsupportedLayer:
    detail = f" ({why})" if why else ""
    return UnsupportedLayer(f"module {name!r} of type {type(module).__name__} is not supported{detail}; "
                            f"supported: {SUPPORTED}")


def _flat_modules(module: nn.Module, prefix: str = ""):
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _flat_modules(child, f"{full}.")
        else:
            yield full, child


def _pool(module, name: str) -> pb.Pool2dOp:
    if module.ceil_mode or getattr(module, "dilation", 1) not in (1, (1, 1)) or getattr(module, "return_indices", False):
        raise _unsupported(name, module, "only floor mode, no dilation, no indices")
    if isinstance(module, nn.AvgPool2d) and (not module.count_include_pad or module.divisor_override):
        raise _unsupported(name, module, "only count_include_pad=True without divisor_override")
    (kh, kw), (sh, sw), (ph, pw) = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
    return pb.Pool2dOp(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, padding_h=ph, padding_w=pw)


def export(model: nn.Sequential, input_shape) -> tuple[pb.NetworkSpec, dict[str, np.ndarray]]:
    """(NetworkSpec, {"<position>.weight"/"<position>.bias": float32 array}) of an eval-mode copy of model."""
    spec = pb.NetworkSpec(format_version=network.FORMAT_VERSION, input_shape=list(input_shape))
    params: dict[str, np.ndarray] = {}
    for name, module in _flat_modules(model):
        position = len(spec.layers)
        layer = pb.Layer(name=name)
        if isinstance(module, nn.Linear):
            layer.linear.CopyFrom(pb.LinearOp(in_features=module.in_features, out_features=module.out_features,
                                               bias=module.bias is not None))
        elif isinstance(module, nn.Conv2d):
            if isinstance(module.padding, str) or module.padding_mode != "zeros" or type(module) is not nn.Conv2d:
                raise _unsupported(name, module, "only numeric zero padding")
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (_pair(module.kernel_size), _pair(module.stride),
                                                      _pair(module.padding), _pair(module.dilation))
            layer.conv2d.CopyFrom(pb.Conv2dOp(
                in_channels=module.in_channels, out_channels=module.out_channels, kernel_h=kh, kernel_w=kw,
                stride_h=sh, stride_w=sw, padding_h=ph, padding_w=pw, dilation_h=dh, dilation_w=dw,
                groups=module.groups, bias=module.bias is not None))
        elif isinstance(module, nn.BatchNorm2d):
            _fold_batchnorm(spec, params, name, module)
            continue
        elif isinstance(module, nn.ReLU):
            layer.relu.SetInParent()
        elif isinstance(module, nn.MaxPool2d):
            layer.max_pool2d.CopyFrom(_pool(module, name))
        elif isinstance(module, nn.AvgPool2d):
            layer.avg_pool2d.CopyFrom(_pool(module, name))
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise _unsupported(name, module, "only Flatten(start_dim=1, end_dim=-1)")
            layer.flatten.SetInParent()
        elif isinstance(module, nn.Dropout):
            layer.dropout.CopyFrom(pb.DropoutOp(p=module.p))
        else:
            raise _unsupported(name, module)
        spec.layers.append(layer)
        for pname in ("weight", "bias"):
            tensor = getattr(module, pname, None) if network.kind(layer) in network.LEARNABLE_KINDS else None
            if tensor is not None:
                params[network.parameter_name(position, pname)] = tensor.detach().cpu().float().numpy().copy()
    network.analyze(spec)
    return spec, params


def _fold_batchnorm(spec: pb.NetworkSpec, params: dict, name: str, bn: nn.BatchNorm2d) -> None:
    """W' = W * γ/σ per output channel, b' = (b - μ) γ/σ + β, with σ = sqrt(var + eps)."""
    position = len(spec.layers) - 1
    if position < 0 or network.kind(spec.layers[position]) != "conv2d" \
            or spec.layers[position].conv2d.out_channels != bn.num_features:
        raise _unsupported(name, bn, "BatchNorm2d must directly follow a Conv2d with as many channels")
    if bn.running_mean is None or bn.running_var is None:
        raise _unsupported(name, bn, "BatchNorm2d without running statistics")
    with torch.no_grad():
        inv_std = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
        factor = gamma * inv_std
        w_key, b_key = network.parameter_name(position, "weight"), network.parameter_name(position, "bias")
        weight = torch.from_numpy(params[w_key]).double() * factor[:, None, None, None]
        bias = torch.from_numpy(params[b_key]).double() if b_key in params else torch.zeros_like(factor)
        params[w_key] = weight.float().numpy()
        params[b_key] = ((bias - bn.running_mean.double()) * factor + beta).float().numpy()
    spec.layers[position].conv2d.bias = True

"""Trace any nn.Module's real forward with torch.fx and map it onto the network description.

Why torch.fx (symbolic_trace) and not torch.export: fx keeps every call of a module as one node named
by its module path, so a refused op is reported where the user wrote it (`layer2.0.se.fc1`, or the
file and line of a function call), and a BatchNorm module stays whole for folding. torch.export
lowers to ATen operators (batch norm decomposed, modules flattened away) that would have to be mapped
back to the user's code. Data-dependent control flow cannot be traced by fx: that is refused with
torch's own reason.

Every traced node maps to a node of the description, to an alias of its input (identity, dropout,
contiguous: nothing to compute), or is refused with its name and place. A BatchNorm whose input is
a conv2d or linear read by nothing else is folded into it; any other BatchNorm stays a batch_norm
node. Nothing is dropped silently.
"""
import operator
import os
import sys

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb

A = pb.Activation
SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d, ReLU, ReLU6, Hardtanh(0, 6), Hardswish, Hardsigmoid, Sigmoid, SiLU, "
             "GELU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, Identity; +, *, torch.cat, flatten, "
             "view/reshape/squeeze/unsqueeze, mean over (H, W), and the functional forms of the activations and pools")
ACTIVATION_MODULES = {nn.ReLU: A.RELU, nn.ReLU6: A.RELU6, nn.Hardswish: A.HARDSWISH, nn.Hardsigmoid: A.HARDSIGMOID,
                      nn.Sigmoid: A.SIGMOID, nn.SiLU: A.SILU}
ACTIVATION_FUNCTIONS = {F.relu: A.RELU, torch.relu: A.RELU, torch.relu_: A.RELU, F.relu6: A.RELU6,
                        F.hardswish: A.HARDSWISH, F.hardsigmoid: A.HARDSIGMOID, torch.sigmoid: A.SIGMOID,
                        F.sigmoid: A.SIGMOID, F.silu: A.SILU}
ACTIVATION_METHODS = {"relu": A.RELU, "relu_": A.RELU, "sigmoid": A.SIGMOID, "sigmoid_": A.SIGMOID}
BINARY = {operator.add: "add", operator.iadd: "add", torch.add: "add", "add": "add", "add_": "add",
          operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", "mul": "mul", "mul_": "mul"}
RESHAPES = {torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, "view", "reshape", "flatten", "squeeze",
            "unsqueeze"}
ALIASES = {nn.Dropout, nn.Dropout2d, nn.Identity, F.dropout, F.dropout2d, "contiguous"}
_TORCH_DIR = os.path.dirname(torch.__file__)
_SKIP_DIRS = (_TORCH_DIR, os.path.dirname(os.path.abspath(__file__)))   # torch, and qpart's tracing and import


class UnsupportedOp(InvalidArgument):
    """A module or function the network description cannot express; the message names it and its place."""


def model_frame(frame) -> str | None:
    """'module:line in function' of the innermost frame (from `frame` outwards) of the model's own code: not
    torch's, not qpart's import machinery. Named by the Python module, never by a path on this machine."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIP_DIRS) and not filename.startswith("<"):
            module = frame.f_globals.get("__name__") or ""
            if not module or module == "__main__":
                module = os.path.basename(filename)
            return f"{module}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return None


class _Tracer(fx.Tracer):
    """fx's tracer, noting for every node the first frame of the model's code that made it."""

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest, **more):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest, **more)
        found = model_frame(sys._getframe(1))
        if found:
            proxy.node.meta["qpart_source"] = found
        return proxy


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _target(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{'method' if node.op == 'call_method' else 'function'} {name!r}"


class _Builder:
    """Emits description nodes and parameters while walking the fx graph in order."""

    def __init__(self, gm: fx.GraphModule, batch: int):
        self.gm, self.batch = gm, batch
        self.modules = dict(gm.named_modules())
        self.spec = pb.NetworkSpec(format_version=network.FORMAT_VERSION)
        self.params: dict[str, np.ndarray] = {}
        self.names: dict[fx.Node, str] = {}
        self.made: dict[str, pb.Node] = {}

    def where(self, node: fx.Node) -> str:
        return f"{_target(node)} (traced node {node.name!r}, {node.meta.get('qpart_source', 'source unknown')})"

    def refuse(self, node: fx.Node, why: str = "") -> UnsupportedOp:
        detail = f": {why}" if why else ""
        return UnsupportedOp(f"{self.where(node)} is not supported{detail}. Supported: {SUPPORTED}")

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise self.refuse(node, "it does not produce one tensor")
        shape = tuple(int(d) for d in meta.shape)
        if not shape or shape[0] != self.batch:
            raise self.refuse(node, f"its output {list(shape)} does not keep the batch dimension first")
        return shape[1:]

    def tensor_inputs(self, node: fx.Node, args) -> list[fx.Node]:
        inputs = []
        for arg in args:
            if not isinstance(arg, fx.Node) or arg not in self.names:
                raise self.refuse(node, f"argument {arg!r} is not a tensor of the network (constants are not supported)")
            inputs.append(arg)
        return inputs

    def emit(self, node: fx.Node, op: str, message, inputs: list[fx.Node], params: dict | None = None,
             name: str | None = None) -> pb.Node:
        out = pb.Node(name=name or node.name, inputs=[self.names[i] for i in inputs], source=self.where(node)[:512])
        getattr(out, op).CopyFrom(message)
        self.spec.nodes.append(out)
        out = self.spec.nodes[-1]          # the stored message (append copies)
        for pname, value in (params or {}).items():
            self.params[network.parameter_name(out.name, pname)] = value.detach().cpu().double().numpy()
        self.names[node] = out.name
        self.made[out.name] = out
        return out

    def alias(self, node: fx.Node, source: fx.Node) -> None:
        self.names[node] = self.names[source]


def _conv(b: _Builder, node: fx.Node, m: nn.Conv2d) -> None:
    if type(m) is not nn.Conv2d or m.padding_mode != "zeros":
        raise b.refuse(node, f"only nn.Conv2d with zero padding (got {type(m).__name__}, {m.padding_mode!r})")
    padding = m.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif all(s == 1 for s in _pair(m.stride)) and all(d * (k - 1) % 2 == 0 for d, k in
                                                          zip(_pair(m.dilation), _pair(m.kernel_size))):
            padding = tuple(d * (k - 1) // 2 for d, k in zip(_pair(m.dilation), _pair(m.kernel_size)))
        else:
            raise b.refuse(node, "padding='same' needs stride 1 and an odd (dilated) kernel")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(m.kernel_size), _pair(m.stride), _pair(padding), _pair(m.dilation)
    op = pb.Conv2dOp(in_channels=m.in_channels, out_channels=m.out_channels, kernel_h=kh, kernel_w=kw, stride_h=sh,
                     stride_w=sw, padding_h=ph, padding_w=pw, dilation_h=dh, dilation_w=dw, groups=m.groups,
                     bias=m.bias is not None)
    b.emit(node, "conv2d", op, b.tensor_inputs(node, node.args[:1]),
           {"weight": m.weight} | ({"bias": m.bias} if m.bias is not None else {}))


def _batch_norm(b: _Builder, node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold into the conv2d or linear before it when nothing else reads that layer; else a batch_norm node."""
    if m.running_mean is None or m.running_var is None:
        raise b.refuse(node, "BatchNorm without running statistics (track_running_stats=False)")
    source = b.tensor_inputs(node, node.args[:1])[0]
    with torch.no_grad():
        scale = (m.weight.double() if m.weight is not None else 1.0) / torch.sqrt(m.running_var.double() + m.eps)
        shift = (m.bias.double() if m.bias is not None else 0.0) - m.running_mean.double() * scale
    producer = b.made.get(b.names[source])
    op = network.op_of(producer) if producer is not None else ""
    channels = producer.conv2d.out_channels if op == "conv2d" else producer.linear.out_features if op == "linear" else 0
    if op in network.WEIGHT_OPS and len(source.users) == 1 and channels == m.num_features:
        # W' = W * scale per output channel, b' = b * scale + shift
        w_key, b_key = network.parameter_name(producer.name, "weight"), network.parameter_name(producer.name, "bias")
        factor = scale.numpy().reshape((-1,) + (1,) * (b.params[w_key].ndim - 1))
        b.params[w_key] = b.params[w_key] * factor
        b.params[b_key] = b.params.get(b_key, np.zeros(channels)) * scale.numpy() + shift.numpy()
        getattr(producer, op).bias = True
        b.alias(node, source)
        return
    b.emit(node, "batch_norm", pb.BatchNormOp(channels=m.num_features), [source], {"scale": scale, "shift": shift})


def _pool(b: _Builder, node: fx.Node, op: str, kernel, stride, padding, ceil_mode=False, dilation=1,
          count_include_pad=True, divisor_override=None, return_indices=False) -> None:
    if ceil_mode or _pair(dilation) != (1, 1) or return_indices:
        raise b.refuse(node, "pooling only in floor mode, without dilation or indices")
    if op == "avg_pool2d" and (not count_include_pad or divisor_override):
        raise b.refuse(node, "average pooling only with count_include_pad=True and no divisor_override")
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride or kernel), _pair(padding)
    b.emit(node, op, pb.Pool2dOp(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, padding_h=ph, padding_w=pw),
           b.tensor_inputs(node, node.args[:1]))


def _module(b: _Builder, node: fx.Node) -> None:
    m = b.modules[node.target]
    if isinstance(m, nn.Conv2d):
        return _conv(b, node, m)
    if isinstance(m, nn.Linear):
        op = pb.LinearOp(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)
        return b.emit(node, "linear", op, b.tensor_inputs(node, node.args[:1]),
                      {"weight": m.weight} | ({"bias": m.bias} if m.bias is not None else {}))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _batch_norm(b, node, m)
    kind = type(m)
    if kind in ACTIVATION_MODULES or kind is nn.GELU or (kind is nn.Hardtanh and (m.min_val, m.max_val) == (0, 6)):
        function = A.RELU6 if kind is nn.Hardtanh else ACTIVATION_MODULES.get(kind) or (
            A.GELU_TANH if m.approximate == "tanh" else A.GELU)
        return b.emit(node, "activation", pb.ActivationOp(function=function), b.tensor_inputs(node, node.args[:1]))
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        op = "max_pool2d" if kind is nn.MaxPool2d else "avg_pool2d"
        extra = dict(dilation=m.dilation, return_indices=m.return_indices) if op == "max_pool2d" else dict(
            count_include_pad=m.count_include_pad, divisor_override=m.divisor_override)
        return _pool(b, node, op, m.kernel_size, m.stride, m.padding, m.ceil_mode, **extra)
    if kind is nn.AdaptiveAvgPool2d:
        return _adaptive(b, node, node.args[0])
    if kind is nn.Flatten:
        return _reshape(b, node, node.args[0])
    if kind in ALIASES:
        return b.alias(node, b.tensor_inputs(node, node.args[:1])[0])
    raise b.refuse(node, f"type {kind.__name__}")


def _adaptive(b: _Builder, node: fx.Node, source) -> None:
    _, oh, ow = b.shape(node)
    b.emit(node, "adaptive_avg_pool2d", pb.AdaptiveAvgPool2dOp(out_h=oh, out_w=ow), b.tensor_inputs(node, [source]))


def _reshape(b: _Builder, node: fx.Node, source) -> None:
    """Any reshape that keeps the batch first: its static per-sample shape comes from the traced run."""
    (src,) = b.tensor_inputs(node, [source])
    shape, before = b.shape(node), b.shape(src)
    if shape == before:
        return b.alias(node, src)
    if len(shape) == 1:
        return b.emit(node, "flatten", pb.FlattenOp(), [src])
    b.emit(node, "reshape", pb.ReshapeOp(shape=shape), [src])


def _mean(b: _Builder, node: fx.Node, args: dict) -> None:
    (src,) = b.tensor_inputs(node, [args["input"]])
    dims = args.get("dim")
    dims = sorted(d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])) if dims is not None else None
    if len(b.shape(src)) != 3 or dims != [2, 3] or args.get("dtype") is not None:
        raise b.refuse(node, "mean only over the two spatial dimensions of a [N, C, H, W] tensor")
    pooled = b.emit(node, "adaptive_avg_pool2d", pb.AdaptiveAvgPool2dOp(out_h=1, out_w=1), [src],
                    name=f"{node.name}_pool" if not args.get("keepdim") else None)
    if not args.get("keepdim"):
        out = pb.Node(name=node.name, inputs=[pooled.name], source=pooled.source)
        out.flatten.SetInParent()
        b.spec.nodes.append(out)
        b.names[node] = out.name
        b.made[out.name] = b.spec.nodes[-1]


def _arguments(b: _Builder, node: fx.Node) -> dict:
    """The call's arguments by parameter name (torch's own signatures), positional ones for methods."""
    if node.op == "call_function":
        normalized = node.normalized_arguments(b.gm, normalize_to_only_use_kwargs=True)
        if normalized is not None:
            return dict(normalized.kwargs)
        return {"input": node.args[0] if node.args else None, **node.kwargs}
    names = {"mean": ("input", "dim", "keepdim"), "flatten": ("input", "start_dim", "end_dim")}.get(node.target, ("input",))
    return dict(zip(names, node.args)) | dict(node.kwargs)


def _call(b: _Builder, node: fx.Node) -> None:
    """call_function and call_method nodes."""
    target = node.target
    if target in ACTIVATION_FUNCTIONS or target in ACTIVATION_METHODS or target in (F.gelu, F.hardtanh):
        args = _arguments(b, node)
        function = ACTIVATION_FUNCTIONS.get(target) or ACTIVATION_METHODS.get(target)
        if target is F.gelu:
            function = A.GELU_TANH if args.get("approximate", "none") == "tanh" else A.GELU
        elif target is F.hardtanh:
            if (args.get("min_val", -1.0), args.get("max_val", 1.0)) != (0.0, 6.0):
                raise b.refuse(node, "hardtanh only as relu6 (min 0, max 6)")
            function = A.RELU6
        return b.emit(node, "activation", pb.ActivationOp(function=function), b.tensor_inputs(node, node.args[:1]))
    if target in BINARY:
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise b.refuse(node, "only the plain sum or product of two tensors")
        op = BINARY[target]
        return b.emit(node, op, pb.AddOp() if op == "add" else pb.MulOp(), b.tensor_inputs(node, node.args))
    if target in (torch.cat, torch.concat):
        args = _arguments(b, node)
        tensors, dim = args.get("tensors"), args.get("dim", 0)
        rank = len(b.shape(node)) + 1
        if not isinstance(tensors, (list, tuple)) or dim % rank == 0:
            raise b.refuse(node, "concatenation only of a list of tensors, along a per-sample axis")
        return b.emit(node, "concat", pb.ConcatOp(axis=dim % rank - 1), b.tensor_inputs(node, tensors))
    if target in RESHAPES:
        return _reshape(b, node, node.args[0])
    if target in (torch.mean, "mean"):
        return _mean(b, node, _arguments(b, node))
    if target is F.adaptive_avg_pool2d:
        return _adaptive(b, node, node.args[0])
    if target in (F.max_pool2d, F.avg_pool2d):
        args = _arguments(b, node)
        args.pop("input")
        op = "max_pool2d" if target is F.max_pool2d else "avg_pool2d"
        return _pool(b, node, op, args.pop("kernel_size"), args.pop("stride", None), args.pop("padding", 0), **args)
    if target in ALIASES:
        return b.alias(node, b.tensor_inputs(node, node.args[:1])[0])
    raise b.refuse(node)


def _feeds_only_reshapes(node: fx.Node) -> bool:
    """x.size(0), x.shape[0]: integers that only shape a view/reshape, whose shape comes from the traced run."""
    for user in node.users:
        if user.target in RESHAPES:
            continue
        if not (user.target in (getattr, operator.getitem) and _feeds_only_reshapes(user)):
            return False
    return True


def _check_shapes(b: _Builder) -> None:
    """The description's shapes are the traced run's, tensor by tensor."""
    profile = network.analyze(b.spec)
    for node, name in b.names.items():
        if profile.shapes[name] != b.shape(node):
            raise UnsupportedOp(f"{b.where(node)}: the description gives shape {list(profile.shapes[name])}, "
                                f"the traced run {list(b.shape(node))}")


def trace(module: nn.Module, sample: torch.Tensor) -> tuple[pb.NetworkSpec, dict[str, np.ndarray]]:
    """(NetworkSpec, float32 parameters) of an eval-mode module, traced on `sample` [n, *input_shape]."""
    module = module.eval()
    try:
        gm = fx.GraphModule(module, _Tracer().trace(module))
        with torch.no_grad():
            ShapeProp(gm).propagate(sample)
    except Exception as e:   # noqa: BLE001 - torch raises many kinds; the user needs torch's reason
        raise UnsupportedOp(f"{type(module).__name__}.forward cannot be traced with torch.fx: "
                            f"{type(e).__name__}: {str(e)[:500]}") from None
    b = _Builder(gm, len(sample))
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if b.spec.input:
                raise b.refuse(node, "the network must take exactly one input tensor")
            b.spec.input = node.name
            b.spec.input_shape.extend(b.shape(node))
            b.names[node] = node.name
        elif node.op == "output":
            outputs = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
            b.spec.outputs.extend(b.names[n] for n in b.tensor_inputs(node, outputs))
        elif node.op == "get_attr":
            raise b.refuse(node, "a parameter or buffer used outside a module; wrap it in an nn.Module")
        elif node.meta.get("tensor_meta") is None and node.op in ("call_method", "call_function") \
                and _feeds_only_reshapes(node):
            continue
        elif node.op == "call_module":
            _module(b, node)
        else:
            _call(b, node)
    _check_shapes(b)
    return b.spec, {k: v.astype(np.float32) for k, v in b.params.items()}

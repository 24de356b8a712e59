"""The torch.fx mapping: each traced module, function or method onto nodes of the network description.

`map_module` takes call_module nodes (a module type), `map_call` call_function and call_method nodes,
`constant` the shape queries whose values the traced run fixed. Each either emits through the builder
(qpart.server.models.tracing._Builder), makes an alias of its input, or raises `b.refuse(node, why)`.

Eval-mode identities are aliases: Identity and the dropout modules; dropout functions called with
training=False (or p=0); and any function with a `training` parameter called with training=False that
returned its input itself in the traced run (torchvision's stochastic_depth, a drop path of your own).
Shapes are static: x.size(), x.shape, x.dim() and integer arithmetic on them are evaluated at trace time,
and a reshape takes the shape the traced run gave it.
"""
import inspect
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from qpart.common import network
from qpart.v1 import network_pb2 as pb

A = pb.Activation
SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d, ReLU, ReLU6, Hardtanh(0, 6), Hardswish, Hardsigmoid, Sigmoid, SiLU, "
             "GELU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout*, Identity; +, *, torch.cat, flatten, "
             "view/reshape/squeeze/unsqueeze, permute/transpose, chunk/split and slicing x[:, a:b], mean over (H, W), "
             "size()/shape/dim() and integer arithmetic on them, stochastic depth and dropout in eval mode, and the "
             "functional forms of the activations and pools")
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
PERMUTES = {torch.permute, "permute"}
TRANSPOSES = {torch.transpose, torch.swapaxes, torch.swapdims, "transpose", "swapaxes", "swapdims"}
PIECES = {torch.chunk, torch.split, torch.tensor_split, "chunk", "split", "tensor_split"}   # pieces along one axis
ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)                                   # identities in eval mode
ALIAS_METHODS = {"contiguous", "clone", "detach"}
DROPOUTS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
            torch.dropout, torch.alpha_dropout, torch.feature_dropout, torch.feature_alpha_dropout}
# shape queries on a network tensor, and integer arithmetic on their values: constants of the trace
SHAPE_METHODS = {"size", "dim", "numel"}
SHAPE_ATTRIBUTES = {"shape", "ndim"}
INTEGER_OPS = {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod,
               operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge}
# positional parameter names of the methods (and the torch functions fx cannot normalize) read here
POSITIONAL = {"mean": ("input", "dim", "keepdim"), "flatten": ("input", "start_dim", "end_dim"),
              "transpose": ("input", "dim0", "dim1"), "swapaxes": ("input", "axis0", "axis1"),
              "swapdims": ("input", "dim0", "dim1"), "chunk": ("input", "chunks", "dim"),
              "split": ("input", "split_size", "dim"), "tensor_split": ("input", "indices_or_sections", "dim"),
              torch.transpose: ("input", "dim0", "dim1"), torch.swapaxes: ("input", "axis0", "axis1"),
              torch.swapdims: ("input", "dim0", "dim1"), torch.permute: ("input", "dims"),
              torch.chunk: ("input", "chunks", "dim"), torch.split: ("tensor", "split_size_or_sections", "dim"),
              torch.tensor_split: ("input", "indices_or_sections", "dim"), torch.dropout: ("input", "p", "train"),
              torch.alpha_dropout: ("input", "p", "train"), torch.feature_dropout: ("input", "p", "train"),
              torch.feature_alpha_dropout: ("input", "p", "train")}


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _nodes_in(args) -> list[fx.Node]:
    found = []
    fx.node.map_arg(args, found.append)
    return found


def constant(b, node: fx.Node) -> bool:
    """True, noting its value in b.consts, for a node the traced run fixed: a shape query of a network tensor
    (x.size(), x.shape, x.dim()), integer arithmetic or a comparison on such values, or torch._assert on one."""
    if node.target is torch._assert and node.args and isinstance(node.args[0], fx.Node):
        return node.args[0] in b.consts            # a check of static shapes that held when traced
    if "qpart_value" not in node.meta:
        return False
    if (node.op == "call_method" and node.target in SHAPE_METHODS) or (
            node.op == "call_function" and node.target is getattr and node.args[1:2] in (("shape",), ("ndim",))):
        static = node.args[0] in b.names
    else:
        static = node.op == "call_function" and node.target in INTEGER_OPS and all(
            a in b.consts for a in _nodes_in((node.args, node.kwargs)))
    if static:
        b.consts[node] = node.meta["qpart_value"]
    return static


def _arguments(b, node: fx.Node) -> dict:
    """The call's arguments by parameter name (torch's own signatures where fx finds them)."""
    if node.target in POSITIONAL:
        return dict(zip(POSITIONAL[node.target], node.args)) | dict(node.kwargs)
    if node.op == "call_function":
        normalized = node.normalized_arguments(b.gm, normalize_to_only_use_kwargs=True)
        if normalized is not None:
            return dict(normalized.kwargs)
    return {"input": node.args[0] if node.args else None, **node.kwargs}


def _conv(b, node: fx.Node, m: nn.Conv2d) -> None:
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


def _batch_norm(b, node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> None:
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


def _pool(b, node: fx.Node, op: str, kernel, stride, padding, ceil_mode=False, dilation=1,
          count_include_pad=True, divisor_override=None, return_indices=False) -> None:
    if ceil_mode or _pair(dilation) != (1, 1) or return_indices:
        raise b.refuse(node, "pooling only in floor mode, without dilation or indices")
    if op == "avg_pool2d" and (not count_include_pad or divisor_override):
        raise b.refuse(node, "average pooling only with count_include_pad=True and no divisor_override")
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride or kernel), _pair(padding)
    b.emit(node, op, pb.Pool2dOp(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, padding_h=ph, padding_w=pw),
           b.tensor_inputs(node, node.args[:1]))


def map_module(b, node: fx.Node) -> None:
    """A call_module node, by the module's type."""
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
    if kind in ALIAS_MODULES and not m.training:
        return b.alias(node, b.tensor_inputs(node, node.args[:1])[0])
    raise b.refuse(node, f"type {kind.__name__}")


def _adaptive(b, node: fx.Node, source) -> None:
    _, oh, ow = b.shape(node)
    b.emit(node, "adaptive_avg_pool2d", pb.AdaptiveAvgPool2dOp(out_h=oh, out_w=ow), b.tensor_inputs(node, [source]))


def _reshape(b, node: fx.Node, source) -> None:
    """Any reshape that keeps the batch first: its static per-sample shape comes from the traced run."""
    (src,) = b.tensor_inputs(node, [source])
    shape, before = b.shape(node), b.shape(src)
    if shape == before:
        return b.alias(node, src)
    if len(shape) == 1:
        return b.emit(node, "flatten", pb.FlattenOp(), [src])
    b.emit(node, "reshape", pb.ReshapeOp(shape=shape), [src])


def _mean(b, node: fx.Node, args: dict) -> None:
    (src,) = b.tensor_inputs(node, [args["input"]])
    dims = b.value(node, args.get("dim"))
    dims = sorted(d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])) if dims is not None else None
    if len(b.shape(src)) != 3 or dims != [2, 3] or args.get("dtype") is not None:
        raise b.refuse(node, "mean only over the two spatial dimensions of a [N, C, H, W] tensor")
    keep = b.value(node, args.get("keepdim", False))
    pooled = b.add(node, "adaptive_avg_pool2d", pb.AdaptiveAvgPool2dOp(out_h=1, out_w=1), [b.names[src]],
                   name=None if keep else b.fresh(f"{node.name}_pool"))             # [C, 1, 1]
    if not keep:
        pooled = b.add(node, "flatten", pb.FlattenOp(), [pooled.name])             # [C]
    b.names[node] = pooled.name


def _axis(b, node: fx.Node, dim, rank: int) -> int:
    """A per-sample axis (0-based, without the batch) from a torch dim of a rank-`rank` tensor."""
    dim = b.value(node, dim)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -rank <= dim < rank or dim % rank == 0:
        raise b.refuse(node, f"dim {dim!r} is not a per-sample axis of a rank-{rank} tensor (the batch stays whole)")
    return dim % rank - 1


def _permute(b, node: fx.Node, args: dict) -> None:
    """permute, transpose, swapaxes: the batch stays first, the per-sample axes are reordered."""
    (src,) = b.tensor_inputs(node, [args.pop("input")])
    rank = len(b.shape(src)) + 1
    if node.target in TRANSPOSES:
        first, second = (_axis(b, node, args.get(k), rank) + 1 for k in list(args)[:2])
        order = list(range(rank))
        order[first], order[second] = order[second], order[first]
    else:
        dims = b.value(node, args.get("dims", node.args[1:]))
        order = list(dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)
        if not all(isinstance(d, int) and -rank <= d < rank for d in order):
            raise b.refuse(node, f"dims {order} are not axes of a rank-{rank} tensor")
        order = [d % rank for d in order]
        if sorted(order) != list(range(rank)) or order[0] != 0:
            raise b.refuse(node, f"dims {order} do not keep the batch first (or are not a permutation)")
    dims = [d - 1 for d in order[1:]]
    if dims == sorted(dims):
        return b.alias(node, src)
    b.emit(node, "permute", pb.PermuteOp(dims=dims), [src])                        # [shape[d] for d in dims]


def _pieces(b, node: fx.Node, args: dict) -> None:
    """chunk, split, tensor_split: nothing yet; each piece taken (x1, x2 = ...) becomes a slice node."""
    (src,) = b.tensor_inputs(node, [args.get("input", args.get("tensor"))])
    rank = len(b.shape(src)) + 1
    axis = _axis(b, node, args.get("dim", 0), rank)
    metas = node.meta.get("tensor_meta")
    if not isinstance(metas, (tuple, list)):
        raise b.refuse(node, "it does not produce a sequence of tensors")
    start, ranges = 0, []
    for meta in metas:
        size = int(meta.shape[axis + 1])
        ranges.append((start, start + size))
        start += size
    b.pieces[node] = (src, axis, ranges)


def _slices(b, node: fx.Node, src: fx.Node, cuts: list[tuple[int, int, int]]) -> None:
    """One slice node per (axis, start, stop) in cuts, then a reshape to the traced shape if they drop or add
    axes (an integer index, None); the last node is named like the fx node."""
    shape = list(b.shape(src))
    steps = []
    for axis, start, stop in cuts:
        steps.append(("slice", pb.SliceOp(axis=axis, start=start, stop=stop)))
        shape[axis] = stop - start                                                  # the axis shortened
    if tuple(shape) != b.shape(node):
        steps.append(("reshape", pb.ReshapeOp(shape=b.shape(node))))              # an axis dropped or added
    if not steps:
        return b.alias(node, src)
    current = b.names[src]
    for i, (op, message) in enumerate(steps):
        last = i == len(steps) - 1
        current = b.add(node, op, message, [current], name=None if last else b.fresh(f"{node.name}_{op}{i}")).name
    b.names[node] = current


def _index(b, node: fx.Node, src: fx.Node, index) -> None:
    """x[:, a:b, ...]: slices with step 1, integers and None on the per-sample axes; the batch taken whole."""
    shape = (b.batch,) + b.shape(src)
    items = list(b.value(node, index) if isinstance(index, tuple) else (b.value(node, index),))
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items[k:k + 1] = [slice(None)] * (len(shape) - (len(items) - 1 - items.count(None)))
    kept = [i for i in items if i is not None]
    if not kept or kept[0] != slice(None) or len(kept) > len(shape):
        raise b.refuse(node, "indexing must take the batch whole (x[:, ...]) and index at most every axis")
    cuts = []
    for axis, item in enumerate(kept[1:], start=1):
        if isinstance(item, int) and not isinstance(item, bool) and -shape[axis] <= item < shape[axis]:
            start, stop, step = item % shape[axis], item % shape[axis] + 1, 1
        elif isinstance(item, slice):
            start, stop, step = item.indices(shape[axis])
        else:
            raise b.refuse(node, f"index {item!r}: only slices, integers in range and None")
        if step != 1 or stop <= start:
            raise b.refuse(node, f"index {item!r}: only non-empty slices with step 1")
        if (start, stop) != (0, shape[axis]) or isinstance(item, int):
            cuts.append((axis - 1, start, stop))
    _slices(b, node, src, cuts)


def _getitem(b, node: fx.Node) -> None:
    source, index = node.args
    if source in b.pieces:                       # one piece of a chunk or split
        src, axis, ranges = b.pieces[source]
        piece = b.value(node, index)
        if not isinstance(piece, int) or not -len(ranges) <= piece < len(ranges):
            raise b.refuse(node, f"piece {piece!r} of {len(ranges)}")
        start, stop = ranges[piece]
        return _slices(b, node, src, [(axis, start, stop)] if (start, stop) != (0, b.shape(src)[axis]) else [])
    (src,) = b.tensor_inputs(node, [source])
    _index(b, node, src, index)


def _eval_identity(b, node: fx.Node) -> bool:
    """A dropout function with training=False or p=0; or any function with a `training` parameter, called with
    training=False, that returned its input itself in the traced run (torchvision.ops.stochastic_depth)."""
    if node.target in DROPOUTS:
        args = _arguments(b, node)
        training, p = b.value(node, args.get("training", args.get("train", True))), b.value(node, args.get("p", 0.5))
        if training and p:
            raise b.refuse(node, "dropout with training=True is random at inference; pass training=self.training")
        return True
    if node.op != "call_function" or not node.meta.get("qpart_returns_input"):
        return False
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    bound.apply_defaults()
    return bound.arguments.get("training", True) is False


def map_call(b, node: fx.Node) -> None:
    """call_function and call_method nodes, by their target."""
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
        tensors = args.get("tensors")
        if not isinstance(tensors, (list, tuple)):
            raise b.refuse(node, "concatenation only of a list of tensors")
        axis = _axis(b, node, args.get("dim", 0), len(b.shape(node)) + 1)
        return b.emit(node, "concat", pb.ConcatOp(axis=axis), b.tensor_inputs(node, tensors))
    if target in RESHAPES:
        return _reshape(b, node, node.args[0])
    if target in PERMUTES or target in TRANSPOSES:
        return _permute(b, node, _arguments(b, node) if target != "permute" else
                        {"input": node.args[0], "dims": node.kwargs.get("dims", node.args[1:])})
    if target in PIECES:
        return _pieces(b, node, _arguments(b, node))
    if target is operator.getitem:
        return _getitem(b, node)
    if target in (torch.mean, "mean"):
        return _mean(b, node, _arguments(b, node))
    if target is F.adaptive_avg_pool2d:
        return _adaptive(b, node, node.args[0])
    if target in (F.max_pool2d, F.avg_pool2d):
        args = _arguments(b, node)
        args.pop("input")
        op = "max_pool2d" if target is F.max_pool2d else "avg_pool2d"
        return _pool(b, node, op, args.pop("kernel_size"), args.pop("stride", None), args.pop("padding", 0), **args)
    if target in ALIAS_METHODS or _eval_identity(b, node):
        return b.alias(node, b.tensor_inputs(node, node.args[:1])[0])
    raise b.refuse(node)

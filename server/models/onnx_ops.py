"""ONNX nodes onto torch: each supported op becomes an nn.Conv2d, nn.BatchNorm2d, nn.Linear or pool module, or a
torch function, in an fx graph the tracer (qpart.server.models.tracing) then reads like any PyTorch model's; shape
arithmetic on constants is folded here. An op outside SUPPORTED is refused by its op type and node name."""
import collections
import operator
import re

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from qpart.server.models.tracing import UnsupportedOp

BATCH = -(1 << 40)                 # the batch dimension inside folded shape constants
SUPPORTED = ("Conv (2-D, symmetric pads), BatchNormalization, Gemm, MatMul by a constant (+ Add of its bias), "
             "Relu, Clip(0, 6), Sigmoid, HardSigmoid(1/6, 1/2), HardSwish, Add, Mul, GlobalAveragePool, "
             "AveragePool, MaxPool, Flatten(axis 1), Reshape/Squeeze/Unsqueeze keeping the batch first, Transpose, "
             "ReduceMean over H and W, Concat, Identity, Dropout, and Constant/Shape/Gather/Cast arithmetic on "
             "constants")


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _assign(*pairs) -> None:
    """Each (parameter or buffer, numpy value) pair: the value copied in as float32 (None: nothing to copy)."""
    with torch.no_grad():
        for target, value in pairs:
            if value is not None:
                target.copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))


def _name(text: str) -> str:
    return re.sub(r"\W", "_", text).strip("_") or "node"


class Converter:
    def __init__(self, shapes: dict, consts: dict):
        self.shapes, self.consts = shapes, dict(consts)
        self.root, self.graph = nn.Module(), fx.Graph()
        self.values: dict[str, fx.Node] = {}
        self.biasless: dict[fx.Node, nn.Linear] = {}     # MatMul outputs whose bias an Add may bring

    def convert(self, model, input_name: str) -> fx.GraphModule:
        self.readers = collections.Counter([n for node in model.graph.node for n in node.input] +
                                           [o.name for o in model.graph.output])
        self.values[input_name] = self.graph.placeholder(_name(input_name))
        for node in model.graph.node:
            self.node = node
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise self.refuse(f"is not supported; supported: {SUPPORTED}")
            handler(_attrs(node))
        outs = [self.tensor(o.name) for o in model.graph.output]
        self.graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        return fx.GraphModule(self.root, self.graph)

    # --- plumbing ----------------------------------------------------------------------------------------------
    def refuse(self, why: str) -> UnsupportedOp:
        return UnsupportedOp(f"ONNX op {self.node.op_type} (node {self.node.name!r}) {why}")

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, i: int):
        name = self.node.input[i] if i < len(self.node.input) else ""
        if not name:
            return None
        if name not in self.consts:
            raise self.refuse(f"needs input {i} ({name!r}) to be a constant")
        return self.consts[name]

    def tensor(self, name: str) -> fx.Node:
        if name not in self.values:
            raise self.refuse(f"takes {name!r}, a constant tensor, where a network tensor is supported")
        return self.values[name]

    def rank(self, name: str) -> int:
        return len(self.shapes.get(name) or [])

    def module(self, module: nn.Module, source: fx.Node) -> fx.Node:
        key = _name(self.node.name or f"{self.node.op_type}_{len(self.graph.nodes)}")
        while hasattr(self.root, key):
            key += "_"
        self.root.add_module(key, module.eval())
        return self.graph.call_module(key, (source,))

    def call(self, function, *args, **kwargs) -> fx.Node:
        return self.graph.call_function(function, args, kwargs)

    def out(self, value) -> None:
        target = self.node.output[0]
        if isinstance(value, fx.Node):
            self.values[target] = value
        else:
            self.consts[target] = np.asarray(value)

    def folds(self) -> bool:
        return all(not n or n in self.consts for n in self.node.input)

    # --- network ops -------------------------------------------------------------------------------------------
    def op_Conv(self, a: dict) -> None:
        w, b = self.const(1), self.const(2)
        if w.ndim != 4:
            raise self.refuse(f"is {w.ndim - 2}-D; 2-D convolutions are supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise self.refuse(f"has auto_pad {a['auto_pad']!r}; explicit pads are supported")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            raise self.refuse(f"pads {pads} are not symmetric")
        groups = a.get("group", 1)
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), tuple(a.get("strides", (1, 1))),
                         tuple(pads[:2]), tuple(a.get("dilations", (1, 1))), groups, bias=b is not None)
        _assign((conv.weight, w), (conv.bias, b))
        self.out(self.module(conv, self.tensor(self.node.input[0])))

    def op_BatchNormalization(self, a: dict) -> None:
        if a.get("training_mode", 0):
            raise self.refuse("is in training mode")
        scale, shift, mean, var = (self.const(i) for i in range(1, 5))
        kind = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d}.get(self.rank(self.node.input[0]))
        if kind is None:
            raise self.refuse("normalises a tensor that is neither [N, C, H, W] nor [N, C]")
        bn = kind(len(scale), eps=a.get("epsilon", 1e-5))
        _assign((bn.weight, scale), (bn.bias, shift), (bn.running_mean, mean), (bn.running_var, var))
        self.out(self.module(bn, self.tensor(self.node.input[0])))

    def linear(self, weight: np.ndarray, bias) -> fx.Node:
        """weight [out, in]."""
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        _assign((layer.weight, weight),
                (layer.bias, None if bias is None else np.broadcast_to(bias.reshape(-1), (weight.shape[0],))))
        made = self.module(layer, self.tensor(self.node.input[0]))
        if bias is None:
            self.biasless[made] = layer
        return made

    def op_Gemm(self, a: dict) -> None:
        if a.get("transA", 0):
            raise self.refuse("transposes its input (transA)")
        w, c = self.const(1), self.const(2)
        w = (w if a.get("transB", 0) else w.T) * a.get("alpha", 1.0)
        self.out(self.linear(w, None if c is None else c * a.get("beta", 1.0)))

    def op_MatMul(self, a: dict) -> None:
        w = self.const(1)
        if w.ndim != 2:
            raise self.refuse("multiplies by a constant that is not a matrix")
        self.out(self.linear(w.T, None))

    def unary(self, function, *args) -> None:
        self.out(self.call(function, self.tensor(self.node.input[0]), *args))

    def op_Relu(self, a: dict) -> None:
        self.unary(F.relu)

    def op_Sigmoid(self, a: dict) -> None:
        self.unary(torch.sigmoid)

    def op_HardSwish(self, a: dict) -> None:
        self.unary(F.hardswish)

    def op_HardSigmoid(self, a: dict) -> None:
        if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
            raise self.refuse(f"has alpha {a.get('alpha', 0.2):g}, beta {a.get('beta', 0.5):g}; (1/6, 1/2) "
                              f"(torch's hardsigmoid) is supported")
        self.unary(F.hardsigmoid)

    def op_Clip(self, a: dict) -> None:
        low, high = self.const(1), self.const(2)
        low = -np.inf if low is None else float(low)
        high = np.inf if high is None else float(high)
        if (low, high) == (0.0, 6.0):
            return self.unary(F.relu6)
        if (low, high) == (0.0, np.inf):
            return self.unary(F.relu)
        raise self.refuse(f"clips to [{low:g}, {high:g}]; [0, 6] and [0, inf) are supported")

    def binary(self, function) -> None:
        left, right = self.node.input[:2]
        if self.folds():
            return self.out(function(self.consts[left], self.consts[right]))
        if function is operator.add and (self.is_const(left) or self.is_const(right)):
            tensor, bias = (right, left) if self.is_const(left) else (left, right)
            made = self.values.get(tensor)
            layer = self.biasless.pop(made, None)
            shape = self.consts[bias].shape
            if layer is not None and self.readers[tensor] == 1 and shape[-1:] == (layer.out_features,) and \
                    self.consts[bias].size == layer.out_features:
                layer.bias = nn.Parameter(torch.from_numpy(self.consts[bias].reshape(-1).astype(np.float32)))
                return self.out(made)
        self.out(self.call(function, self.tensor(left), self.tensor(right)))

    def op_Add(self, a: dict) -> None:
        self.binary(operator.add)

    def op_Mul(self, a: dict) -> None:
        self.binary(operator.mul)

    def op_GlobalAveragePool(self, a: dict) -> None:
        if self.rank(self.node.input[0]) != 4:
            raise self.refuse("pools a tensor that is not [N, C, H, W]")
        self.out(self.module(nn.AdaptiveAvgPool2d(1), self.tensor(self.node.input[0])))

    def pool(self, a: dict, kind) -> None:
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or a.get("ceil_mode", 0) or len(self.node.output) > 1 or \
                tuple(a.get("dilations", (1, 1))) != (1, 1) or len(a["kernel_shape"]) != 2:
            raise self.refuse("is supported 2-D, with symmetric pads, no ceil_mode, no dilation and no indices")
        extra = {}
        if kind is nn.AvgPool2d:
            if any(pads) and not a.get("count_include_pad", 0):
                raise self.refuse("averages over padding without counting it (count_include_pad 0)")
            extra = {"count_include_pad": True}
        self.out(self.module(kind(tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                  tuple(pads[:2]), **extra), self.tensor(self.node.input[0])))

    def op_AveragePool(self, a: dict) -> None:
        self.pool(a, nn.AvgPool2d)

    def op_MaxPool(self, a: dict) -> None:
        self.pool(a, nn.MaxPool2d)

    def op_ReduceMean(self, a: dict) -> None:
        axes = a.get("axes")
        if axes is None and len(self.node.input) > 1:
            axes = self.const(1)
        rank = self.rank(self.node.input[0])
        if rank != 4 or axes is None or sorted(int(x) % rank for x in axes) != [2, 3]:
            raise self.refuse("averages over other axes than H and W of [N, C, H, W]")
        self.unary(torch.mean, (2, 3), bool(a.get("keepdims", 1)))

    def op_Concat(self, a: dict) -> None:
        if self.folds():
            return self.out(np.concatenate([self.consts[n] for n in self.node.input], a["axis"]))
        if a["axis"] == 0 or a["axis"] == -self.rank(self.node.input[0]):
            raise self.refuse("concatenates along the batch")
        self.out(self.call(torch.cat, [self.tensor(n) for n in self.node.input], a["axis"]))

    def op_Flatten(self, a: dict) -> None:
        if a.get("axis", 1) != 1:
            raise self.refuse(f"flattens from axis {a.get('axis')}; axis 1 (keeping the batch) is supported")
        self.unary(torch.flatten, 1)

    def per_sample(self, name: str) -> list[int]:
        shape = self.shapes.get(name)
        if not shape or any(d is None for d in shape[1:]):
            raise self.refuse(f"needs the static shape of {name!r}, which shape inference did not give")
        return shape[1:]

    def op_Reshape(self, a: dict) -> None:
        source = self.node.input[0]
        if self.folds():
            return self.out(self.consts[source].reshape(self.consts[self.node.input[1]]))
        target = [int(d) for d in self.const(1)]
        have = self.per_sample(source)
        if a.get("allowzero", 0) and 0 in target:
            raise self.refuse("has allowzero with a zero dimension")
        target = [([-1] + have)[i] if d == 0 and i < len(have) + 1 else d for i, d in enumerate(target)]
        if not target or target[0] not in (BATCH, -1):
            raise self.refuse(f"reshapes to {target}, which does not keep the batch first")
        rest = target[1:]
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1]))
            rest[rest.index(-1)] = int(np.prod(have)) // max(known, 1)
        if int(np.prod(rest)) != int(np.prod(have)):
            raise self.refuse(f"reshapes [N, {', '.join(map(str, have))}] to [N, {', '.join(map(str, rest))}]")
        self.unary(torch.reshape, (-1, *rest))

    def axes(self, a: dict) -> list[int]:
        axes = a.get("axes")
        return list(axes) if axes is not None else [int(x) for x in self.const(1)]

    def op_Squeeze(self, a: dict) -> None:
        if self.folds():
            return self.out(np.squeeze(self.consts[self.node.input[0]], tuple(self.axes(a))))
        have = self.per_sample(self.node.input[0])
        axes = [x % (len(have) + 1) for x in self.axes(a)]
        if 0 in axes:
            raise self.refuse("squeezes the batch")
        self.unary(torch.reshape, (-1, *[d for i, d in enumerate(have, 1) if i not in axes]))

    def op_Unsqueeze(self, a: dict) -> None:
        if self.folds():
            value = self.consts[self.node.input[0]]
            for x in sorted(self.axes(a)):
                value = np.expand_dims(value, x)
            return self.out(value)
        shape = self.per_sample(self.node.input[0])
        full = [None] + shape
        for x in sorted(x % (len(full) + len(self.axes(a))) for x in self.axes(a)):
            if x == 0:
                raise self.refuse("adds a dimension before the batch")
            full.insert(x, 1)
        self.unary(torch.reshape, (-1, *full[1:]))

    def op_Transpose(self, a: dict) -> None:
        perm = list(a.get("perm", []))
        if self.folds():
            return self.out(np.transpose(self.consts[self.node.input[0]], perm or None))
        if not perm or perm[0] != 0:
            raise self.refuse(f"permutes {perm}, moving the batch")
        self.unary(torch.permute, tuple(perm))

    def op_Identity(self, a: dict) -> None:
        source = self.node.input[0]
        self.out(self.consts[source] if self.is_const(source) else self.tensor(source))

    def op_Dropout(self, a: dict) -> None:
        if len(self.node.input) > 2 and self.node.input[2] and bool(self.const(2)):
            raise self.refuse("is in training mode")
        self.op_Identity(a)

    # --- constants (folded) ------------------------------------------------------------------------------------
    def op_Constant(self, a: dict) -> None:
        from onnx import numpy_helper
        if "value" not in a:
            raise self.refuse(f"holds {', '.join(a)}; a tensor value is supported")
        self.out(numpy_helper.to_array(a["value"]))

    def op_Shape(self, a: dict) -> None:
        shape = [BATCH] + self.per_sample(self.node.input[0])
        self.out(np.array(shape, np.int64)[a.get("start", 0):a.get("end", len(shape))])

    def folded(self, function) -> None:
        if not self.folds():
            raise self.refuse("is supported on constants and shapes only")
        self.out(function(*[self.consts[n] if n else None for n in self.node.input]))

    def op_Gather(self, a: dict) -> None:
        self.folded(lambda x, i: np.take(x, i, axis=a.get("axis", 0)))

    def op_Cast(self, a: dict) -> None:
        from onnx import helper
        self.folded(lambda x: x.astype(helper.tensor_dtype_to_np_dtype(a["to"])))

    def op_Sub(self, a: dict) -> None:
        self.folded(np.subtract)

    def op_Div(self, a: dict) -> None:
        self.folded(lambda x, y: x // y if x.dtype.kind == "i" else x / y)

"""Trace any nn.Module's real forward with torch.fx and map it onto the network description.

Why torch.fx (symbolic_trace) and not torch.export: fx keeps every call of a module as one node named
by its module path, so a refused op is reported where the user wrote it (`layer2.0.se.fc1`, or the
module and line of a function call), and a BatchNorm module stays whole for folding. torch.export
lowers to ATen operators (batch norm decomposed, modules flattened away) that would have to be mapped
back to the user's code. Data-dependent control flow cannot be traced by fx: that is refused with
torch's own reason and the line that did it.

Every traced node maps to a node of the description, to an alias of its input (identity, dropout and
stochastic depth in eval mode, contiguous: nothing to compute), to a constant of the trace (x.size(),
x.shape and integer arithmetic on them: the traced shapes are static), or is refused with its name and
place: `module:line in function` of the first frame outside torch and qpart (model_frame), never a path
of this machine. A BatchNorm whose input is a conv2d or linear read by nothing else is folded into it;
any other BatchNorm stays a batch_norm node. Nothing is dropped silently. The mapping itself, op by op,
is qpart.server.models.trace_ops.
"""
import os
import sys

import numpy as np
import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.server.models import trace_ops
from qpart.v1 import network_pb2 as pb

SUPPORTED = trace_ops.SUPPORTED
# torch's frames, and qpart's tracing and import code (this folder); a separator ends each, so that torchvision's
# files (next to torch's in site-packages) are not taken for torch's
_SKIP_DIRS = tuple(os.path.join(os.path.dirname(os.path.abspath(d)), "") for d in (torch.__file__, __file__))


class UnsupportedOp(InvalidArgument):
    """A module or function the network description cannot express; the message names it and its place."""


def _skipped(filename: str) -> bool:
    return filename.startswith(_SKIP_DIRS) or filename.startswith("<")


def model_frame(frame) -> str | None:
    """'module:line in function' of the innermost frame (from `frame` outwards) of the model's own code: not
    torch's, not qpart's import machinery, and inside the traced forward (None past `trace`). Named by the
    Python module (`torchvision.models.shufflenetv2`, `nets`), never by a path on this machine."""
    while frame is not None and frame.f_code is not _TRACE_CODE:
        if not _skipped(frame.f_code.co_filename):
            module = frame.f_globals.get("__name__") or ""
            if not module or module == "__main__":
                module = os.path.basename(frame.f_code.co_filename)
            return f"{module}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return None


def _raised_at(error: BaseException) -> str | None:
    """model_frame of the innermost frame an exception passed through."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return model_frame(tb.tb_frame) if tb is not None else None


def _defined_at(module: nn.Module) -> str:
    """'module:line in forward' where the module's forward is defined (the place of its inputs)."""
    code = getattr(type(module).forward, "__code__", None)
    return f"{type(module).__module__}:{code.co_firstlineno} in forward" if code else "source unknown"


class _Tracer(fx.Tracer):
    """fx's tracer, noting for every node the first frame of the model's code that made it."""

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest, **more):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest, **more)
        found = model_frame(sys._getframe(1))
        if found:
            proxy.node.meta["qpart_source"] = found
        return proxy


def _static(value):
    """An integer, a bool or a tuple of integers (torch.Size) as a plain Python value; None for anything else."""
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    return None


class _Propagate(ShapeProp):
    """ShapeProp that also keeps each integer result (shape queries: `qpart_value`) and notes a call that
    returned its first argument itself (`qpart_returns_input`: an identity in eval mode)."""

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if _static(result) is not None:
            n.meta["qpart_value"] = _static(result)
        first = n.args[0] if n.args else None
        if isinstance(first, fx.Node) and isinstance(result, torch.Tensor) and result is self.env.get(first):
            n.meta["qpart_returns_input"] = True
        return result


def _target(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "get_attr":
        return f"parameter {node.target!r}"
    if node.op == "placeholder":
        return f"input {node.target!r}"
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{'method' if node.op == 'call_method' else 'function'} {name!r}"


class _Builder:
    """Emits description nodes and parameters while walking the fx graph in order."""

    def __init__(self, gm: fx.GraphModule, batch: int):
        self.gm, self.batch = gm, batch
        self.modules = dict(gm.named_modules())
        self.spec = pb.NetworkSpec(format_version=network.FORMAT_VERSION)
        self.params: dict[str, np.ndarray] = {}
        self.names: dict[fx.Node, str] = {}        # fx node -> the description tensor that holds its value
        self.made: dict[str, pb.Node] = {}
        self.consts: dict[fx.Node, object] = {}    # fx node -> its value, fixed by the traced run
        self.pieces: dict[fx.Node, tuple] = {}     # a chunk/split -> (source, axis, [(start, stop), ...])
        self.taken = {n.name for n in gm.graph.nodes}

    def where(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        inside = list(stack.values())[-1][0] if stack and node.op != "call_module" else ""
        inside = f"in module {inside!r}, " if inside else ""
        return f"{_target(node)} (traced node {node.name!r}, {inside}{node.meta.get('qpart_source', 'source unknown')})"

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
                raise self.refuse(node, f"argument {arg!r} is not a tensor of the network "
                                        "(constants are not supported)")
            inputs.append(arg)
        return inputs

    def value(self, node: fx.Node, arg):
        """arg with each constant of the trace (a shape query, arithmetic on one) replaced by its traced value."""
        if isinstance(arg, fx.Node):
            if arg not in self.consts:
                raise self.refuse(node, f"argument {arg.name!r} must be a number or come from the traced shape")
            return self.consts[arg]
        if isinstance(arg, (tuple, list)):
            return (tuple if isinstance(arg, tuple) else list)(self.value(node, a) for a in arg)
        if isinstance(arg, slice):
            return slice(*(self.value(node, v) for v in (arg.start, arg.stop, arg.step)))
        return arg

    def fresh(self, name: str) -> str:
        """A node name no fx node and no emitted node has."""
        candidate, i = name, 1
        while candidate in self.taken or candidate in self.made:
            candidate, i = f"{name}_{i}", i + 1
        return candidate

    def add(self, node: fx.Node, op: str, message, inputs: list[str], params: dict | None = None,
            name: str | None = None) -> pb.Node:
        """Append a description node made for fx node `node` that reads the tensors named `inputs`."""
        out = pb.Node(name=name or node.name, inputs=inputs, source=self.where(node)[:512])
        getattr(out, op).CopyFrom(message)
        self.spec.nodes.append(out)
        out = self.spec.nodes[-1]          # the stored message (append copies)
        for pname, value in (params or {}).items():
            self.params[network.parameter_name(out.name, pname)] = value.detach().cpu().double().numpy()
        self.made[out.name] = out
        return out

    def emit(self, node: fx.Node, op: str, message, inputs: list[fx.Node], params: dict | None = None,
             name: str | None = None) -> pb.Node:
        out = self.add(node, op, message, [self.names[i] for i in inputs], params, name)
        self.names[node] = out.name
        return out

    def alias(self, node: fx.Node, source: fx.Node) -> None:
        self.names[node] = self.names[source]


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
            _Propagate(gm).propagate(sample)
    except Exception as e:   # noqa: BLE001 - torch raises many kinds; the user needs torch's reason
        cause = e.__cause__ if str(e).startswith("ShapeProp error") and e.__cause__ is not None else e
        place = _raised_at(cause)
        raise UnsupportedOp(f"{type(module).__name__}.forward cannot be traced with torch.fx"
                            f"{f' ({place})' if place else ''}: {type(cause).__name__}: {str(cause)[:500]}") from None
    b = _Builder(gm, len(sample))
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            node.meta.setdefault("qpart_source", _defined_at(module))
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
        elif trace_ops.constant(b, node):
            continue
        elif node.op == "call_module":
            trace_ops.map_module(b, node)
        else:
            trace_ops.map_call(b, node)
    _check_shapes(b)
    return b.spec, {k: v.astype(np.float32) for k, v in b.params.items()}


_TRACE_CODE = trace.__code__     # model_frame looks no further out than the trace it serves

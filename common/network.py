"""The network description (qpart.v1.NetworkSpec, versions 2 and 3): a graph of nodes in topological order.

Pure Python: a peer's description is checked here, with every name, shape and size bounded, before
any tensor is allocated for it. A cut c puts nodes[0:c] on the device; the tensors that cross it are
those made on the device side (the input included) that a server node reads or that are outputs.
MACs count conv2d and linear (eqs 1-2) and attention's products; other ops are priced at zero. Version 3
adds the language-model ops and SequenceSpec (qpart.common.sequence); a network that needs neither is
written as version 2, which older readers read.
"""
import math
from dataclasses import dataclass, field

from qpart.common import sequence
from qpart.common.errors import InvalidArgument, ResourceExhausted
from qpart.common.names import shown
from qpart.common.tensors import DEFAULT_MAX_ELEMENTS, element_count
from qpart.v1 import network_pb2 as pb

FORMAT_VERSION = 2                           # what a network without format-3 ops is written as
SEQUENCE_FORMAT_VERSION = 3                  # 3: language-model ops (qpart.common.sequence) and SequenceSpec
FORMATS_READ = (FORMAT_VERSION, SEQUENCE_FORMAT_VERSION)
HEAD_FORMAT_VERSION = 3                      # 3: parameters may be coded (PackedTensor.coding)
HEAD_FORMATS_READ = (2, 3)                   # 2: every parameter dense
# quantized per plan: the learnable layers of the paper, and a language model's embedding tables
WEIGHT_OPS = ("conv2d", "linear", "embedding", "position_embedding")
PARAMETER_OPS = WEIGHT_OPS + ("batch_norm", "layer_norm", "rms_norm")     # the others' travel as float32
MAX_NODES = 4096
MAX_NAME = 128
MAX_INPUTS = 64
MAX_CUT_TENSORS = 2                          # default: cuts that carry at most this many tensors are offered
ARITY = {"add": (2, 2), "mul": (2, 2), "concat": (2, MAX_INPUTS), "attention": (3, 3)}   # (min, max) inputs; every other op: (1, 1)

ACTIVATIONS = {value: name.lower() for name, value in pb.Activation.items() if value}   # 1 -> "relu", ...

Shape = tuple[int, ...]


def op_of(node: pb.Node) -> str:
    op = node.WhichOneof("op")
    if op is None:
        raise InvalidArgument(f"node {shown(node.name)} has no operation")
    return op


def parameter_name(node: str, pname: str) -> str:
    return f"{node}.{pname}"


def _positive(what: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise InvalidArgument(f"{what}: {key} must be at least 1, got {value}")


def _window_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _spatial(what: str, shape: Shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1) -> tuple[int, int]:
    _, h, w = shape
    ho, wo = _window_out(h, kh, sh, ph, dh), _window_out(w, kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise InvalidArgument(f"{what}: a {kh}x{kw} window does not fit the {h}x{w} input")
    return ho, wo


def parameter_shapes(node: pb.Node) -> dict[str, Shape]:
    """Shapes of a node's parameters ("weight", "bias"; "scale", "shift" for batch_norm), {} for other ops."""
    op = op_of(node)
    if op == "linear":
        lin = node.linear
        return {"weight": (lin.out_features, lin.in_features)} | ({"bias": (lin.out_features,)} if lin.bias else {})
    if op == "conv2d":
        c = node.conv2d
        shapes = {"weight": (c.out_channels, c.in_channels // max(c.groups, 1), c.kernel_h, c.kernel_w)}
        return shapes | ({"bias": (c.out_channels,)} if c.bias else {})
    if op == "batch_norm":
        return {"scale": (node.batch_norm.channels,), "shift": (node.batch_norm.channels,)}
    return sequence.parameter_shapes(node, op)


def _broadcast(what: str, a: Shape, b: Shape) -> Shape:
    """Broadcasting of two per-sample shapes of the same rank (so that the batch dimensions line up), where
    the result must be one of them."""
    if len(a) != len(b):
        raise InvalidArgument(f"{what}: shapes {list(a)} and {list(b)} differ in rank")
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            raise InvalidArgument(f"{what}: shapes {list(a)} and {list(b)} do not broadcast")
        out.append(max(x, y))
    result = tuple(out)
    if result not in (a, b):
        raise InvalidArgument(f"{what}: shapes {list(a)} and {list(b)} broadcast to {list(result)}, "
                              "which is neither input's shape")
    return result


def _conv(what: str, c: pb.Conv2dOp, shape: Shape) -> Shape:
    _positive(what, in_channels=c.in_channels, out_channels=c.out_channels, kernel_h=c.kernel_h, kernel_w=c.kernel_w,
              stride_h=c.stride_h, stride_w=c.stride_w, dilation_h=c.dilation_h, dilation_w=c.dilation_w,
              groups=c.groups)
    if c.in_channels % c.groups or c.out_channels % c.groups:
        raise InvalidArgument(f"{what}: channels {c.in_channels}->{c.out_channels} not divisible by groups {c.groups}")
    if len(shape) != 3 or shape[0] != c.in_channels:
        raise InvalidArgument(f"{what} expects a [{c.in_channels}, height, width] input, gets {list(shape)}")
    return (c.out_channels,) + _spatial(what, shape, c.kernel_h, c.kernel_w, c.stride_h, c.stride_w, c.padding_h,
                                        c.padding_w, c.dilation_h, c.dilation_w)


def _pool(what: str, pool: pb.Pool2dOp, shape: Shape) -> Shape:
    _positive(what, kernel_h=pool.kernel_h, kernel_w=pool.kernel_w, stride_h=pool.stride_h, stride_w=pool.stride_w)
    if 2 * pool.padding_h > pool.kernel_h or 2 * pool.padding_w > pool.kernel_w:
        raise InvalidArgument(f"{what}: padding must be at most half the window")
    if len(shape) != 3:
        raise InvalidArgument(f"{what} expects a [channels, height, width] input, gets {list(shape)}")
    return (shape[0],) + _spatial(what, shape, pool.kernel_h, pool.kernel_w, pool.stride_h, pool.stride_w,
                                  pool.padding_h, pool.padding_w)


def output_shape(node: pb.Node, shapes: list[Shape]) -> Shape:
    """Per-sample shape of a node's output given its inputs' shapes; raises naming the node on any mismatch."""
    op = op_of(node)
    what = f"node {shown(node.name)} ({op})"
    shape = shapes[0]
    if op in sequence.OPS:
        return sequence.output_shape(node, op, what, shapes)
    if op in ("activation", "identity"):
        if op == "activation" and node.activation.function not in ACTIVATIONS:
            raise InvalidArgument(f"{what}: unknown activation function {node.activation.function}")
        return shape
    if op in ("add", "mul"):
        return _broadcast(what, shapes[0], shapes[1])
    if op == "concat":
        axis = node.concat.axis
        if any(len(s) != len(shape) for s in shapes) or axis >= len(shape):
            raise InvalidArgument(f"{what}: inputs {[list(s) for s in shapes]} cannot be joined on axis {axis}")
        if any(s[:axis] + s[axis + 1:] != shape[:axis] + shape[axis + 1:] for s in shapes):
            raise InvalidArgument(f"{what}: inputs {[list(s) for s in shapes]} differ off axis {axis}")
        return shape[:axis] + (sum(s[axis] for s in shapes),) + shape[axis + 1:]
    if op == "flatten":
        return (math.prod(shape),)
    if op == "reshape":
        new = tuple(int(d) for d in node.reshape.shape)
        if not new or any(d < 1 for d in new) or math.prod(new) != math.prod(shape):
            raise InvalidArgument(f"{what}: cannot reshape {list(shape)} to {list(new)}")
        return new
    if op == "permute":
        dims = [int(d) for d in node.permute.dims]
        if len(dims) != len(shape) or sorted(dims) != list(range(len(shape))):
            raise InvalidArgument(f"{what}: dims {dims[:8]} are not a permutation of the axes of {list(shape)}")
        return tuple(shape[d] for d in dims)                                  # [shape[dims[0]], ...]
    if op == "slice":
        s = node.slice
        if s.axis >= len(shape) or not s.start < s.stop <= shape[s.axis]:
            raise InvalidArgument(f"{what}: cannot take {s.start}..{s.stop} of axis {s.axis} of {list(shape)}")
        return shape[:s.axis] + (s.stop - s.start,) + shape[s.axis + 1:]     # the axis shortened to stop - start
    if op == "linear":
        lin = node.linear
        _positive(what, in_features=lin.in_features, out_features=lin.out_features)
        if shape[-1] != lin.in_features:
            raise InvalidArgument(f"{what} expects a last dimension of {lin.in_features}, gets {list(shape)}")
        return shape[:-1] + (lin.out_features,)
    if op == "batch_norm":
        if shape[0] != node.batch_norm.channels:
            raise InvalidArgument(f"{what} expects {node.batch_norm.channels} channels, gets {list(shape)}")
        return shape
    if op == "conv2d":
        return _conv(what, node.conv2d, shape)
    if op == "adaptive_avg_pool2d":
        a = node.adaptive_avg_pool2d
        _positive(what, out_h=a.out_h, out_w=a.out_w)
        if len(shape) != 3:
            raise InvalidArgument(f"{what} expects a [channels, height, width] input, gets {list(shape)}")
        return shape[0], a.out_h, a.out_w
    return _pool(what, getattr(node, op), shape)


def macs(node: pb.Node, in_shape: Shape, out_shape: Shape) -> int:
    """Multiply-accumulates per sample (eqs 1-2, with the output spatial size); 0 for ops without weights."""
    op = op_of(node)
    if op == "linear":
        return math.prod(in_shape[:-1]) * node.linear.in_features * node.linear.out_features
    if op == "conv2d":
        c = node.conv2d
        return c.out_channels * (c.in_channels // c.groups) * c.kernel_h * c.kernel_w * out_shape[1] * out_shape[2]
    return sequence.macs(node, op, out_shape)


@dataclass(frozen=True)
class NodeProfile:
    index: int                  # position in the node list
    name: str
    op: str
    inputs: tuple[str, ...]
    shape: Shape                # its output, per sample
    macs: int                   # per sample
    param_shapes: dict          # {"weight": shape, ...}
    weight_count: int           # parameter elements

    @property
    def quantized(self) -> bool:
        """A learnable layer whose weights get a plan's bit width."""
        return self.op in WEIGHT_OPS


@dataclass(frozen=True)
class Cut:
    cut: int                          # nodes[0:cut] run on the device
    tensors: tuple[str, ...]          # what crosses, in production order (empty when everything runs on the device)
    shapes: tuple[Shape, ...]         # their per-sample shapes
    weight_nodes: tuple[int, ...]     # indices of the device side's quantized nodes (WEIGHT_OPS)
    device_macs: int                  # per sample
    device_parameters: int            # parameter elements of the device side
    elements: int                     # elements crossing, per sample
    peak_elements: int                # most activation elements alive at once while the device side runs
    tail_peak_elements: int           # most activation elements alive at once while the server side runs (0: none)

    @property
    def runs_tail(self) -> bool:
        return bool(self.tensors)


@dataclass
class NetworkProfile:
    input_name: str
    input_shape: Shape
    nodes: tuple[NodeProfile, ...]
    outputs: tuple[str, ...]
    shapes: dict                                   # tensor name -> per-sample shape
    last_use: dict                                 # tensor name -> index of its last reader (len(nodes) for outputs)
    made: dict                                     # tensor name -> index of the node making it (-1: the input)
    sequence: tuple[int, int] | None = None        # a language model's (vocab_size, max_positions); None otherwise
    live: tuple[int, ...] = ()                     # live[i]: activation elements alive while node i runs
    _cuts: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        elements = {t: math.prod(s) for t, s in self.shapes.items()}
        self.live = tuple(sum(e for t, e in elements.items() if self.made[t] <= i <= self.last_use[t])
                          for i in range(self.num_nodes))

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def weight_nodes(self) -> tuple[NodeProfile, ...]:
        return tuple(n for n in self.nodes if n.quantized)

    @property
    def output_shapes(self) -> tuple[Shape, ...]:
        return tuple(self.shapes[o] for o in self.outputs)

    def check_cut(self, c) -> int:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= self.num_nodes:
            raise InvalidArgument(f"cut {c!r} is out of range; this model takes 0..{self.num_nodes}")
        return c

    def cut(self, c: int) -> Cut:
        c = self.check_cut(c)
        if c not in self._cuts:
            self._cuts[c] = self._make_cut(c)
        return self._cuts[c]

    def _make_cut(self, c: int) -> Cut:
        made = [self.input_name] + [n.name for n in self.nodes[:c]]
        tensors = tuple(t for t in made if self.last_use[t] >= c) if c < self.num_nodes else ()
        device = self.nodes[:c]
        return Cut(c, tensors, tuple(self.shapes[t] for t in tensors), tuple(n.index for n in device if n.quantized),
                   sum(n.macs for n in device), sum(n.weight_count for n in device),
                   sum(math.prod(self.shapes[t]) for t in tensors),
                   max((math.prod(self.input_shape),) + self.live[:c]), max(self.live[c:], default=0))

    def cuts(self, max_tensors: int = MAX_CUT_TENSORS) -> list[Cut]:
        """Every cut across which at most max_tensors tensors travel (everything on the device included)."""
        return [cut for cut in (self.cut(c) for c in range(self.num_nodes + 1)) if len(cut.tensors) <= max_tensors]


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > MAX_NAME:
        raise InvalidArgument(f"{what} {shown(name)} must be 1-{MAX_NAME} characters")


def format_for(spec: pb.NetworkSpec) -> int:
    """The version a description is written as: 3 when it is a language model or uses a format-3 op, else 2."""
    needs = spec.HasField("sequence") or any(node.WhichOneof("op") in sequence.OPS for node in spec.nodes)
    return SEQUENCE_FORMAT_VERSION if needs else FORMAT_VERSION


def analyze(spec: pb.NetworkSpec, max_elements: int = DEFAULT_MAX_ELEMENTS, length: int | None = None) -> NetworkProfile:
    """Validate a network description and compute every shape, parameter count, MAC count and reader. A
    language model is analysed for one run of `length` positions (default: its max_positions)."""
    if spec.format_version not in FORMATS_READ:
        raise InvalidArgument(f"network format version {spec.format_version} is not supported; expected one of "
                              f"{list(FORMATS_READ)} (a version-1 model must be rebuilt: `qpart train` or `qpart import`)")
    if len(spec.nodes) > MAX_NODES:
        raise ResourceExhausted(f"network has {len(spec.nodes)} nodes; the limit is {MAX_NODES}")
    ops = [op_of(node) for node in spec.nodes]
    if spec.format_version < SEQUENCE_FORMAT_VERSION and format_for(spec) > spec.format_version:
        used = next((op for op in ops if op in sequence.OPS), "sequence")
        raise InvalidArgument(f"{used} needs network format {SEQUENCE_FORMAT_VERSION}; this one says "
                              f"{spec.format_version}")
    _check_name(spec.input, "the network input name")
    input_shape = tuple(int(d) for d in spec.input_shape)
    if spec.HasField("sequence"):
        sequence.check_network(spec, ops)
        length = spec.sequence.max_positions if length is None else length
        if not 1 <= length <= spec.sequence.max_positions:
            raise InvalidArgument(f"a run of {length} positions; this model takes 1 .. {spec.sequence.max_positions}")
        input_shape = (length,)
    element_count(input_shape, "network input", max_elements)
    shapes: dict[str, Shape] = {spec.input: input_shape}
    last_use, made = {spec.input: -1}, {spec.input: -1}
    nodes = []
    for index, node in enumerate(spec.nodes):
        nodes.append(_node(index, node, shapes, last_use, max_elements))
        made[node.name] = index
    if not spec.outputs or len(set(spec.outputs)) != len(spec.outputs):
        raise InvalidArgument("the network needs one or more distinct outputs")
    for out in spec.outputs:
        if out not in shapes:
            raise InvalidArgument(f"output {shown(out)} is not the input or a node")
        last_use[out] = len(nodes)
    unused = [n.name for n in nodes if last_use[n.name] < 0]
    if unused:
        raise InvalidArgument(f"node {shown(unused[0])} is not used by any output ({len(unused)} unused node(s))")
    seq = (spec.sequence.vocab_size, spec.sequence.max_positions) if spec.HasField("sequence") else None
    return NetworkProfile(spec.input, input_shape, tuple(nodes), tuple(spec.outputs), shapes, last_use, made,
                          sequence=seq)


def _node(index: int, node: pb.Node, shapes: dict, last_use: dict, max_elements: int) -> NodeProfile:
    _check_name(node.name, "node name")
    if node.name in shapes:
        raise InvalidArgument(f"node name {shown(node.name)} is used twice (or is the input's name)")
    op = op_of(node)
    lo, hi = ARITY.get(op, (1, 1))
    if not lo <= len(node.inputs) <= hi:
        raise InvalidArgument(f"node {shown(node.name)} ({op}) takes {lo}..{hi} input(s), got {len(node.inputs)}")
    for name in node.inputs:
        if name not in shapes:
            raise InvalidArgument(f"node {shown(node.name)} reads {shown(name)}, which is not the input or an earlier "
                                  "node (a dangling name, or a cycle)")
        last_use[name] = index
    in_shapes = [shapes[name] for name in node.inputs]
    out = output_shape(node, in_shapes)
    element_count(out, f"output of node {shown(node.name)}", max_elements)
    params = parameter_shapes(node)
    for pname, pshape in params.items():
        element_count(pshape, f"{pname} of node {shown(node.name)}", max_elements)
    shapes[node.name] = out
    last_use[node.name] = -1
    return NodeProfile(index, node.name, op, tuple(node.inputs), out, macs(node, in_shapes[0], out), params,
                       sum(math.prod(s) for s in params.values()))


def head_spec(spec: pb.NetworkSpec, profile: NetworkProfile, c: int) -> pb.NetworkSpec:
    """The description of the device's side of cut c: nodes[0:c], whose outputs are the crossing tensors. The
    nodes' `source` (where the importer found them) stays on the server: a head holds what the device needs to
    run it and nothing of the machine that built it, so the same split gives the same bytes everywhere."""
    cut = profile.cut(c)
    head = pb.NetworkSpec(format_version=spec.format_version, input_shape=spec.input_shape, input=spec.input,
                          outputs=cut.tensors if cut.runs_tail else spec.outputs)
    if spec.HasField("sequence"):
        head.sequence.CopyFrom(spec.sequence)
    head.nodes.extend(spec.nodes[:c])
    for node in head.nodes:
        node.ClearField("source")
    return head

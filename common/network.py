"""The layer description (qpart.v1.NetworkSpec): validation, shape inference and per-layer profile.

Pure Python: a peer's description is checked here, with every shape and size bounded, before any
tensor is allocated for it. Learnable layers (linear, conv2d) are numbered 1..L; partition point p
cuts right before learnable layer p (p = L+1: the whole network runs on the device).
"""
import math
from dataclasses import dataclass

from qpart.common.errors import InvalidArgument, ResourceExhausted
from qpart.common.tensors import DEFAULT_MAX_ELEMENTS, element_count
from qpart.v1 import network_pb2 as pb

FORMAT_VERSION = 1
HEAD_FORMAT_VERSION = 1
LEARNABLE_KINDS = ("linear", "conv2d")
MAX_LAYERS = 4096

Shape = tuple[int, ...]


def kind(layer: pb.Layer) -> str:
    op = layer.WhichOneof("op")
    if op is None:
        raise InvalidArgument(f"layer {layer.name!r} has no operation")
    return op


def _positive(what: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise InvalidArgument(f"{what}: {key} must be at least 1, got {value}")


def _window_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _spatial_out(what: str, shape: Shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1) -> tuple[int, int]:
    _, h, w = shape
    ho, wo = _window_out(h, kh, sh, ph, dh), _window_out(w, kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise InvalidArgument(f"{what}: a {kh}x{kw} window does not fit the {h}x{w} input")
    return ho, wo


def parameter_shapes(layer: pb.Layer) -> dict[str, Shape]:
    """Shapes of a layer's parameters: {"weight": ..., "bias": ...} for learnable layers, else {}."""
    op = kind(layer)
    if op == "linear":
        lin = layer.linear
        shapes = {"weight": (lin.out_features, lin.in_features)}
        return shapes | ({"bias": (lin.out_features,)} if lin.bias else {})
    if op == "conv2d":
        c = layer.conv2d
        groups = max(c.groups, 1)
        shapes = {"weight": (c.out_channels, c.in_channels // groups, c.kernel_h, c.kernel_w)}
        return shapes | ({"bias": (c.out_channels,)} if c.bias else {})
    return {}


def output_shape(layer: pb.Layer, shape: Shape) -> Shape:
    """Shape of a layer's output for one sample whose input has `shape`; raises on any mismatch."""
    op = kind(layer)
    what = f"layer {layer.name!r} ({op})"
    if op in ("relu", "dropout"):
        return shape
    if op == "flatten":
        return (math.prod(shape),)
    if op == "linear":
        lin = layer.linear
        _positive(what, in_features=lin.in_features, out_features=lin.out_features)
        if shape != (lin.in_features,):
            raise InvalidArgument(f"{what} expects input ({lin.in_features},), gets {shape}")
        return (lin.out_features,)
    if len(shape) != 3:
        raise InvalidArgument(f"{what} expects a [channels, height, width] input, gets {shape}")
    if op == "conv2d":
        c = layer.conv2d
        _positive(what, in_channels=c.in_channels, out_channels=c.out_channels, kernel_h=c.kernel_h,
                  kernel_w=c.kernel_w, stride_h=c.stride_h, stride_w=c.stride_w, dilation_h=c.dilation_h,
                  dilation_w=c.dilation_w, groups=c.groups)
        if c.in_channels % c.groups or c.out_channels % c.groups:
            raise InvalidArgument(f"{what}: channels {c.in_channels}->{c.out_channels} not divisible by groups {c.groups}")
        if shape[0] != c.in_channels:
            raise InvalidArgument(f"{what} expects {c.in_channels} input channels, gets {shape[0]}")
        ho, wo = _spatial_out(what, shape, c.kernel_h, c.kernel_w, c.stride_h, c.stride_w, c.padding_h,
                              c.padding_w, c.dilation_h, c.dilation_w)
        return (c.out_channels, ho, wo)
    pool = getattr(layer, op)
    _positive(what, kernel_h=pool.kernel_h, kernel_w=pool.kernel_w, stride_h=pool.stride_h, stride_w=pool.stride_w)
    if 2 * pool.padding_h > pool.kernel_h or 2 * pool.padding_w > pool.kernel_w:
        raise InvalidArgument(f"{what}: padding must be at most half the window")
    return (shape[0],) + _spatial_out(what, shape, pool.kernel_h, pool.kernel_w, pool.stride_h, pool.stride_w,
                                      pool.padding_h, pool.padding_w)


def macs(layer: pb.Layer, out_shape: Shape) -> int:
    """Multiply-accumulates per sample (eqs 1-2, with the output spatial size)."""
    op = kind(layer)
    if op == "linear":
        return layer.linear.in_features * layer.linear.out_features
    if op == "conv2d":
        c = layer.conv2d
        return c.out_channels * (c.in_channels // c.groups) * c.kernel_h * c.kernel_w * out_shape[1] * out_shape[2]
    return 0


@dataclass(frozen=True)
class LayerProfile:
    index: int           # 1-based number among learnable layers
    position: int        # index into NetworkSpec.layers
    name: str
    kind: str            # "linear" or "conv2d"
    weight_count: int    # weight plus bias elements
    macs: int            # multiply-accumulates per sample
    input_shape: Shape   # activation entering the layer, per sample
    output_shape: Shape  # the layer's own output, per sample
    param_shapes: dict   # {"weight": shape, "bias": shape}


@dataclass(frozen=True)
class NetworkProfile:
    input_shape: Shape
    shapes: tuple[Shape, ...]          # shapes[i]: per-sample input of layers[i]; shapes[-1]: network output
    layers: tuple[LayerProfile, ...]   # the L learnable layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_classes(self) -> int:
        return self.shapes[-1][0]

    def check_partition_point(self, p) -> int:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= self.num_layers + 1:
            raise InvalidArgument(f"partition point {p!r} is out of range; this model takes 1..{self.num_layers + 1}")
        return p

    def cut_position(self, p: int) -> int:
        """Index into NetworkSpec.layers where the server's part starts for partition point p.

        p = 1 sends the raw input (cut at 0); otherwise the cut sits right before learnable layer p,
        so the parameter-free layers after layer p-1 (activation, pooling, flatten) run on the device.
        """
        self.check_partition_point(p)
        if p == 1:
            return 0
        return self.layers[p - 1].position if p <= self.num_layers else len(self.shapes) - 1

    def activation_shape(self, p: int) -> Shape:
        """Per-sample shape of what crosses the cut at partition point p."""
        return self.shapes[self.cut_position(p)]

    def device_layers(self, p: int) -> tuple[LayerProfile, ...]:
        return self.layers[: self.check_partition_point(p) - 1]


def analyze(spec: pb.NetworkSpec, max_elements: int = DEFAULT_MAX_ELEMENTS) -> NetworkProfile:
    """Validate a network description and compute every shape, parameter count and MAC count."""
    if spec.format_version != FORMAT_VERSION:
        raise InvalidArgument(f"network format version {spec.format_version} is not supported; expected {FORMAT_VERSION}")
    if len(spec.layers) > MAX_LAYERS:
        raise ResourceExhausted(f"network has {len(spec.layers)} layers; the limit is {MAX_LAYERS}")
    shape = tuple(int(d) for d in spec.input_shape)
    element_count(shape, "network input", max_elements)
    shapes, learnable = [shape], []
    for position, layer in enumerate(spec.layers):
        op = kind(layer)
        out = output_shape(layer, shape)
        element_count(out, f"output of layer {layer.name!r}", max_elements)
        params = parameter_shapes(layer)
        for pname, pshape in params.items():
            element_count(pshape, f"{pname} of layer {layer.name!r}", max_elements)
        if op in LEARNABLE_KINDS:
            learnable.append(LayerProfile(
                index=len(learnable) + 1, position=position, name=layer.name, kind=op,
                weight_count=sum(math.prod(s) for s in params.values()), macs=macs(layer, out),
                input_shape=shape, output_shape=out, param_shapes=params))
        shapes.append(out)
        shape = out
    return NetworkProfile(tuple(int(d) for d in spec.input_shape), tuple(shapes), tuple(learnable))


def head_spec(spec: pb.NetworkSpec, profile: NetworkProfile, p: int) -> pb.NetworkSpec:
    """The description of the device's part (every layer before the cut)."""
    head = pb.NetworkSpec(format_version=spec.format_version, input_shape=spec.input_shape)
    head.layers.extend(spec.layers[: profile.cut_position(p)])
    return head


def parameter_name(position: int, pname: str) -> str:
    return f"{position}.{pname}"

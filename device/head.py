"""The head executor: validate a Head received from the server, keep its weights compact, run it.

Everything the server declares is checked before tensors are allocated: the format version, the
network description (names, graph and shapes bounded), that each node has exactly the parameters
its op implies with the shapes the description implies, what decoding and holding every tensor will
cost against the device's memory bound (`check_memory`, `memory_bound`), and each tensor's bits,
scales and byte count. A head's bytes may be few (a coded tensor of zeros is tiny): what they decode
to is what is bounded. The head runs on a backend (qpart.device.backends): numpy always, torch where
installed.
"""
import numpy as np
from google.protobuf.message import DecodeError

from qpart.common import network, quant, tensors
from qpart.common.errors import InvalidArgument, ResourceExhausted
from qpart.device import backends
from qpart.v1 import network_pb2 as pb


DEFAULT_MAX_MEMORY = 256 << 20     # bytes a head may cost when the device's memory is not known
MEMORY_SHARE = 4                   # a head may cost at most 1/MEMORY_SHARE of the device's memory
MIB = 1 << 20


def memory_bound(device_memory_bytes: int = 0) -> int:
    """The most bytes a head may cost on a device with that much memory (its profile's memory_bytes): a
    quarter of it; DEFAULT_MAX_MEMORY (256 MiB) when it is not known (0)."""
    return device_memory_bytes // MEMORY_SHARE if device_memory_bytes > 0 else DEFAULT_MAX_MEMORY


def tensor_bytes(elements: int, bits: int) -> tuple[int, int]:
    """(bytes one parameter tensor keeps, bytes more while it is decoded), from its declared shape and bits
    alone. Kept: its codes (1 byte each at 8 bits or fewer, 2 above) and its float32 values (4: torch keeps
    them; numpy makes them as the node runs); a float32 tensor its values (4). While decoded: 8 bytes per
    element (the codes unpacked to 4 bytes, then dequantizing's two float32 temporaries), or for float32 9
    (its bytes read from the message, their copy, the finiteness check)."""
    if bits == quant.FLOAT_BITS:
        return 4 * elements, 9 * elements
    return ((1 if bits <= 8 else 2) + 4) * elements, 8 * elements


def check_memory(head: pb.Head, shapes: dict, max_memory: int) -> int:
    """The most bytes decoding and holding the head's parameters costs: what every tensor keeps plus the
    largest decoding's temporaries (tensor_bytes); or ResourceExhausted naming the tensor that takes it past
    max_memory. Nothing is inflated or allocated; the serialized head is bounded apart (max_head_bytes).
    Measured: 0.3 to 0.95 times this (tests/device/test_head.py). shapes: name -> shape its node implies."""
    kept = extra = 0
    for t in head.parameters:
        shape = [int(d) for d in shapes[t.name]]
        bits = quant.check_bits(t.bits, f"bit width of tensor {t.name[:64]!r}")
        keeps, decoding = tensor_bytes(tensors.element_count(shape, f"tensor {t.name[:64]!r}", 1 << 62), bits)
        kept, extra = kept + keeps, max(extra, decoding)
        if kept + extra > max_memory:
            raise ResourceExhausted(
                f"head tensor {t.name[:64]!r} {shape} at {bits} bits keeps {keeps / MIB:.1f} MiB and takes "
                f"{decoding / MIB:.1f} MiB more while decoded: {(kept + extra) / MIB:.1f} MiB with the tensors before "
                f"it; this device allows a head {max_memory / MIB:.1f} MiB (the daemon's max_head_memory_mb; by "
                f"default a quarter of the profile's memory_bytes)")
    return kept + extra


class HeadExecutor:
    def __init__(self, head: pb.Head, max_elements: int = tensors.DEFAULT_MAX_ELEMENTS, backend: str = "auto",
                 max_memory: int = DEFAULT_MAX_MEMORY):
        """max_elements: per tensor; max_memory: bytes decoding and holding the head's parameters may cost
        (check_memory), checked before any is decoded."""
        if head.format_version not in network.HEAD_FORMATS_READ:
            raise InvalidArgument(f"head format version {head.format_version} is not supported; expected one of "
                                  f"{list(network.HEAD_FORMATS_READ)}")
        if head.format_version < 3 and any(t.coding for t in head.parameters):
            raise InvalidArgument(f"a format-{head.format_version} head may not carry coded parameters")
        self.head = head
        self.profile = network.analyze(head.network, max_elements)
        expected = {network.parameter_name(node.name, pname): (node.name, pname, shape)
                    for node in self.profile.nodes for pname, shape in node.param_shapes.items()}
        received = [t.name for t in head.parameters]
        if sorted(received) != sorted(expected):
            raise InvalidArgument(f"head parameters {sorted(received)[:8]} do not match its nodes' {sorted(expected)[:8]}")
        self.memory = check_memory(head, {name: shape for name, (_, _, shape) in expected.items()}, max_memory)
        params: dict[str, dict[str, tensors.CompactTensor]] = {}
        for t in head.parameters:
            node, pname, shape = expected[t.name]
            params.setdefault(node, {})[pname] = tensors.decode_compact(t, shape, max_elements)
        self.backend = backends.make(head.network, self.profile, params, backend)
        self.outputs = tuple(head.network.outputs)
        self.output_shapes = self.profile.output_shapes
        self.macs = sum(node.macs for node in self.profile.nodes)                 # per sample
        self.weight_count = sum(node.weight_count for node in self.profile.nodes)

    @classmethod
    def from_bytes(cls, data: bytes, max_elements: int = tensors.DEFAULT_MAX_ELEMENTS, backend: str = "auto",
                   max_memory: int = DEFAULT_MAX_MEMORY) -> "HeadExecutor":
        head = pb.Head()
        try:
            head.ParseFromString(data)
        except DecodeError as e:
            raise InvalidArgument(f"head bytes do not parse as qpart.v1.Head: {e}") from None
        return cls(head, max_elements, backend, max_memory)

    def run(self, x: np.ndarray, cache=None) -> list[np.ndarray]:
        """[n, *input_shape] float32 -> one [n, *shape] float32 array per head output (the crossing tensors). A
        language model's head takes token ids [n, T] and its KVCache (qpart.common.kvcache), which the run
        advances by T."""
        return self.backend.run(x, cache) if cache is not None else self.backend.run(x)

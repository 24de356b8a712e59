"""The head executor: validate a Head received from the server, keep its weights compact, run it.

Everything the server declares is checked before tensors are allocated: the format version, the
network description (names, graph and shapes bounded), that each node has exactly the parameters
its op implies with the shapes the description implies, and each tensor's bits, scales and byte count.
The head runs on a backend (qpart.device.backends): numpy always, torch where installed.
"""
import numpy as np
from google.protobuf.message import DecodeError

from qpart.common import network, tensors
from qpart.common.errors import InvalidArgument
from qpart.device import backends
from qpart.v1 import network_pb2 as pb


class HeadExecutor:
    def __init__(self, head: pb.Head, max_elements: int = tensors.DEFAULT_MAX_ELEMENTS, backend: str = "auto"):
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
    def from_bytes(cls, data: bytes, max_elements: int = tensors.DEFAULT_MAX_ELEMENTS,
                   backend: str = "auto") -> "HeadExecutor":
        head = pb.Head()
        try:
            head.ParseFromString(data)
        except DecodeError as e:
            raise InvalidArgument(f"head bytes do not parse as qpart.v1.Head: {e}") from None
        return cls(head, max_elements, backend)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """[n, *input_shape] float32 -> one [n, *shape] float32 array per head output (the crossing tensors)."""
        return self.backend.run(x)

"""The head executor: validate a Head received from the server, rebuild it in torch, run it.

Everything the server declares is checked before tensors are allocated: the format version, the
network description (shapes bounded), that each learnable layer has exactly its weight and bias
with the shapes the description implies, and each tensor's bits, scales and byte count.
"""
import numpy as np
import torch
from google.protobuf.message import DecodeError

from qpart.common import network, tensors, torchnet
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb


class HeadExecutor:
    def __init__(self, head: pb.Head, max_elements: int = tensors.DEFAULT_MAX_ELEMENTS):
        if head.format_version != network.HEAD_FORMAT_VERSION:
            raise InvalidArgument(f"head format version {head.format_version} is not supported")
        self.head = head
        self.profile = network.analyze(head.network, max_elements)
        expected = {}
        for layer in self.profile.layers:
            for pname, shape in layer.param_shapes.items():
                expected[network.parameter_name(layer.position, pname)] = shape
        received = [t.name for t in head.parameters]
        if sorted(received) != sorted(expected):
            raise InvalidArgument(f"head parameters {sorted(received)} do not match its layers' {sorted(expected)}")
        params = {t.name: tensors.decode(t, expected[t.name], max_elements) for t in head.parameters}
        self.output_shape = tuple(int(d) for d in head.output_shape)
        if self.output_shape != self.profile.shapes[-1]:
            raise InvalidArgument(f"head declares output {list(self.output_shape)}, its layers give "
                                  f"{list(self.profile.shapes[-1])}")
        self.module = torchnet.build(head.network, params)
        self.macs = sum(layer.macs for layer in self.profile.layers)      # per sample
        self.weight_count = sum(layer.weight_count for layer in self.profile.layers)

    @classmethod
    def from_bytes(cls, data: bytes, max_elements: int = tensors.DEFAULT_MAX_ELEMENTS) -> "HeadExecutor":
        head = pb.Head()
        try:
            head.ParseFromString(data)
        except DecodeError as e:
            raise InvalidArgument(f"head bytes do not parse as qpart.v1.Head: {e}") from None
        return cls(head, max_elements)

    def run(self, x: np.ndarray) -> np.ndarray:
        """[n, *input_shape] float32 -> [n, *output_shape] float32."""
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

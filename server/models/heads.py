"""Heads: the quantized device part of a model, serialized once and served from a bounded cache."""
import collections
import hashlib
import threading
from dataclasses import dataclass

from qpart.common import network, quant, tensors
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.v1 import network_pb2 as pb


@dataclass(frozen=True)
class BuiltHead:
    data: bytes          # the serialized qpart.v1.Head
    content_hash: str    # SHA-256 hex of data

    @property
    def size(self) -> int:
        return len(self.data)


def build_head(model: Model, split: Split) -> pb.Head:
    """The layers before the cut, with each learnable layer's weight and bias packed at its bit width.

    Per-channel granularity applies to weights; a bias always has one scale (per element would cost more).
    """
    profile = model.profile
    p = split.partition_point
    head = pb.Head(format_version=network.HEAD_FORMAT_VERSION, model=model.name, model_version=model.version,
                   partition_point=p, network=network.head_spec(model.spec, profile, p),
                   output_shape=profile.activation_shape(p))
    for layer, bits in zip(profile.device_layers(p), split.weight_bits):
        for pname in layer.param_shapes:
            key = network.parameter_name(layer.position, pname)
            granularity = split.granularity if pname == "weight" else quant.PER_TENSOR
            head.parameters.append(tensors.encode(key, model.params[key], bits, granularity))
    return head


def serialize(head: pb.Head) -> BuiltHead:
    data = head.SerializeToString(deterministic=True)
    return BuiltHead(data, hashlib.sha256(data).hexdigest())


class HeadStore:
    """Builds heads on demand and keeps the most recently used within a byte budget."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._cache: collections.OrderedDict[tuple, BuiltHead] = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(model: Model, split: Split) -> tuple:
        """What a head depends on: the weights and the device layers' widths (not the activation's)."""
        return model.name, model.version, split.partition_point, split.weight_bits, split.granularity

    def get(self, model: Model, split: Split) -> BuiltHead | None:
        """The split's head, or None when the split ships nothing (p = 1)."""
        if not split.ships_head:
            return None
        key = self.key(model, split)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        built = serialize(build_head(model, split))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = built
                self._size += built.size
                while self._size > self.max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._size -= old.size
        return built

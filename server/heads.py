"""Heads: the quantized device part of a model, serialized once and served from a bounded cache."""
import collections
import hashlib
import threading
from dataclasses import dataclass

from qpart.common import network, quant, tensors
from qpart.server.plans import PlanSpec
from qpart.server.repository import Model
from qpart.v1 import network_pb2 as pb


@dataclass(frozen=True)
class BuiltHead:
    data: bytes          # the serialized qpart.v1.Head
    content_hash: str    # SHA-256 hex of data


@dataclass(frozen=True)
class HeadSummary:
    size: int            # bytes of the serialized head
    content_hash: str


def build_head(model: Model, plan: PlanSpec) -> pb.Head:
    """The layers before the cut, with each learnable layer's weight and bias packed at its bit width.

    Per-channel granularity applies to weights; a bias always has one scale (per element would cost more).
    """
    profile = model.profile
    p = plan.partition_point
    head = pb.Head(format_version=network.HEAD_FORMAT_VERSION, model=model.name, model_version=model.version,
                   partition_point=p, network=network.head_spec(model.spec, profile, p),
                   output_shape=profile.activation_shape(p))
    for layer, bits in zip(profile.device_layers(p), plan.weight_bits):
        for pname in layer.param_shapes:
            key = network.parameter_name(layer.position, pname)
            granularity = plan.granularity if pname == "weight" else quant.PER_TENSOR
            head.parameters.append(tensors.encode(key, model.params[key], bits, granularity))
    return head


def serialize(head: pb.Head) -> BuiltHead:
    data = head.SerializeToString(deterministic=True)
    return BuiltHead(data, hashlib.sha256(data).hexdigest())


class HeadStore:
    """Builds heads on demand and keeps the most recently used within a byte budget."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._cache: collections.OrderedDict[PlanSpec, BuiltHead] = collections.OrderedDict()
        self._summaries: dict[PlanSpec, HeadSummary] = {}
        self._size = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(plan: PlanSpec) -> PlanSpec:
        return PlanSpec(plan.model, plan.version, plan.partition_point, plan.weight_bits, 0, plan.granularity)

    def get(self, model: Model, plan: PlanSpec) -> BuiltHead | None:
        """The plan's head, or None when the plan ships nothing (p = 1)."""
        if plan.partition_point == 1:
            return None
        key = self.key(plan)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        built = serialize(build_head(model, plan))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = built
                self._size += len(built.data)
                self._summaries[key] = HeadSummary(len(built.data), built.content_hash)
                while self._size > self.max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._size -= len(old.data)
        return built

    def describe(self, model: Model, plan: PlanSpec) -> HeadSummary | None:
        """Size and hash of the plan's head (None when nothing ships), remembered after the first build."""
        if plan.partition_point == 1:
            return None
        summary = self._summaries.get(self.key(plan))
        if summary is None:
            built = self.get(model, plan)
            summary = HeadSummary(len(built.data), built.content_hash)
        return summary

"""What a device run reports: the plan it used, the head, bytes each way, timings and, with labels, accuracy."""
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from qpart.common import packing, policies
from qpart.v1 import service_pb2 as spb


@dataclass
class HeadReport:
    content_hash: str = ""
    bytes: int = 0                # size of the serialized head
    cache_hit: bool = False
    fetch_s: float = 0.0          # download time (0 on a cache hit)
    parameters: int = 0           # weight and bias elements in the head
    float32_bytes: int = 0        # the same parameters as float32
    backend: str = ""             # what runs it: numpy, torch, torch-cuda or onnxruntime
    weight_bytes: int = 0         # its parameters as the backend holds them in memory


@dataclass
class RunReport:
    model: str
    policy: str
    cut: int                      # the device ran nodes[0:cut]
    num_nodes: int
    weight_bits: list[int]        # of the device-side weight nodes
    activation_bits: list[int]    # of the tensors crossing the cut
    crossing: list[dict]          # per crossing tensor: name, shape, bits, coding and quality, packed_bytes (one
                                  # input's packed codes at the plan's bits), sent_bytes (TensorBatch.data of every
                                  # batch sent once, resends not counted) and bytes_per_input (measured: sent / inputs)
    predicted: dict               # the server's PlanPrediction, as a dict
    head: HeadReport
    candidates: list[dict] = field(default_factory=list)  # what the planner weighed, when asked to explain
    inputs: int = 0
    batches: int = 0
    accuracy: float | None = None           # percent top-1 when labels were given
    predictions: list[int] = field(default_factory=list)
    scores: list | None = None              # with keep_scores: every input's first model output (a classifier's logits)
    wire: dict = field(default_factory=dict)  # rpc -> {"sent": bytes, "received": bytes} of gRPC messages
    tcp: dict | None = None                  # {"sent", "received"}: TCP payload bytes from the kernel (None: unknown)
    emulated_macs_per_second: float = 0.0   # > 0: device compute was stretched to this rate (emulated board)
    reason: str = ""                        # the server's one line on why it chose this split
    server_speed: dict = field(default_factory=dict)   # the server's own timings the plan rests on (ServerSpeed)
    plan_s: float = 0.0                     # the Plan RPC, round trip, as this device timed it
    plan_decision_s: float = 0.0            # of which the server's planner took this long to choose
    device_compute_s: float = 0.0           # head compute plus packing, all inputs
    server_compute_s: float = 0.0           # tail compute the server reported, all inputs
    batch_latency_s: list[float] = field(default_factory=list)  # send of a batch -> its answer
    resent_streams: int = 0                 # streams opened again after a server became unavailable
    resent_inputs: int = 0                  # inputs handed to such a stream to send again (they had no answer)
    duplicates_dropped: int = 0             # answers that arrived for inputs that had one already (never used)
    replans: int = 0                        # plans asked for again when the server refused the plan id mid-stream
    total_s: float = 0.0                    # wall time of plan + head + all inferences

    @classmethod
    def for_plan(cls, plan: spb.PlanResponse, head: "HeadReport | None" = None, **fields) -> "RunReport":
        return cls(model=plan.model, policy=policies.from_enum(plan.policy), cut=plan.cut, num_nodes=plan.num_nodes,
                   weight_bits=list(plan.weight_bits), activation_bits=[a.bits for a in plan.activations],
                   crossing=[{"name": a.name, "shape": list(a.sample_shape), "bits": a.bits,
                              "packed_bytes": packing.packed_size(math.prod(a.sample_shape), a.bits),
                              "sent_bytes": 0, "bytes_per_input": None,
                              "coding": _enum_name(spb.Coding.DESCRIPTOR, a.coding), "quality": a.quality}
                             for a in plan.activations],
                   predicted=_message_dict(plan.predicted), head=head or HeadReport(), reason=plan.reason,
                   plan_decision_s=plan.decision_seconds, server_speed=_message_dict(plan.server_speed),
                   candidates=[_message_dict(c) for c in plan.candidates], **fields)

    def as_dict(self) -> dict:
        return asdict(self)

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.batch_latency_s, q)) if self.batch_latency_s else 0.0


SIGNIFICANT = 6     # digits kept of every float in the JSON report


def _enum_name(enum, number: int) -> str:
    """CODING_JPEG -> "jpeg", PER_CHANNEL -> "per_channel": lowercase, without the enum type's own prefix."""
    name = enum.values_by_number[number].name
    prefix = "".join("_" + ch if ch.isupper() and i else ch for i, ch in enumerate(enum.name)).upper() + "_"
    return name.removeprefix(prefix).lower()


def _message_dict(message) -> dict:
    """Every field: numbers as JSON numbers (64-bit too), enums by _enum_name, an unset optional as None."""
    out = {}
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED
        if f.message_type is not None:
            out[f.name] = [_message_dict(v) for v in value] if repeated else _message_dict(value)
        elif not repeated and f.has_presence and not message.HasField(f.name):
            out[f.name] = None
        elif f.enum_type is not None:
            out[f.name] = [_enum_name(f.enum_type, v) for v in value] if repeated else _enum_name(f.enum_type, value)
        else:
            out[f.name] = list(value) if repeated else value
    return out


def json_ready(value, name: str = ""):
    """As written to JSON: floats to SIGNIFICANT digits, unix times (keys ending _at) to ms, NaN/inf as None."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, 3) if name.endswith("_at") else float(f"{value:.{SIGNIFICANT}g}")
    if isinstance(value, dict):
        return {k: json_ready(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, name) for v in value]
    return value

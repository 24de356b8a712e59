"""The online planner (paper Algorithm 2): pick the pattern with the lowest weighted objective.

Every policy produces candidates (partition point, bit widths, the validation-measured accuracy
drop); each is priced with the cost model, filtered by the budget and the device's memory, and the
cheapest eligible one becomes the plan.
"""
import math
from dataclasses import dataclass, field

from qpart.common import packing, quant
from qpart.common.costmodel import Costs, DeviceProfile, LinkProfile, Objective, ServerProfile, Workload, predict
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.heads import HeadStore
from qpart.server.plans import PlanSpec
from qpart.server.repository import Model, ModelRepository

POLICIES = ("qpart", "server_only", "device_only", "float_split", "uniform_int8", "fixed")
ANSWER_OVERHEAD_BYTES = 16   # request id, label and framing of one Classification
INPUT_OVERHEAD_BYTES = 16    # request id and framing of one input in an ActivationBatch


@dataclass(frozen=True)
class FixedPlan:
    partition_point: int                 # p in 1..L+1
    weight_bits: tuple[int, ...]         # one per device layer, or a single value for all
    activation_bits: int                 # bits at the cut (ignored when p = L+1)
    granularity: str = quant.PER_TENSOR  # weight scale sharing


@dataclass(frozen=True)
class PlanRequest:
    model: str
    device: DeviceProfile = DeviceProfile()
    link: LinkProfile = LinkProfile()
    accuracy_budget: float = 1.0          # max top-1 drop, percentage points
    objective: Objective = Objective()
    inferences_per_head: int = 1          # inferences that reuse one head download
    held_heads: frozenset = frozenset()   # content hashes the device holds
    policy: str = "qpart"
    fixed: FixedPlan | None = None
    explain: bool = False

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise InvalidArgument(f"unknown policy {self.policy!r}; use one of {', '.join(POLICIES)}")
        if not math.isfinite(self.accuracy_budget) or self.accuracy_budget < 0:
            raise InvalidArgument(f"accuracy budget must be a non-negative number of points, got {self.accuracy_budget}")
        if self.policy == "fixed" and self.fixed is None:
            raise InvalidArgument("policy 'fixed' needs the fixed plan (partition point and bit widths)")


@dataclass
class Candidate:
    spec: PlanSpec
    accuracy_drop: float | None   # measured on validation data; None when unknown (fixed plans)
    work: Workload
    costs: Costs
    memory_bytes: int             # float32 head parameters + packed head + two largest activations
    head_hash: str = ""
    rejected: str = ""
    chosen: bool = False


@dataclass
class Plan:
    spec: PlanSpec
    policy: str
    activation: quant.QuantParams | None   # static quantizer at the cut (None: float32 or nothing sent)
    sample_shape: tuple[int, ...]          # per-sample shape of what crosses the cut
    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)


class Planner:
    def __init__(self, repository: ModelRepository, heads: HeadStore, server: ServerProfile = ServerProfile()):
        self.repository = repository
        self.heads = heads
        self.server = server

    def plan(self, request: PlanRequest) -> Plan:
        model = self.repository.get(request.model)
        patterns = self._patterns(model, request)
        candidates = [self._price(model, spec, drop, request) for spec, drop in patterns]
        for c in candidates:
            c.rejected = c.rejected or self._rejection(c, request)
        eligible = [c for c in candidates if not c.rejected]
        if not eligible:
            reasons = "; ".join(f"p={c.spec.partition_point}: {c.rejected}" for c in candidates) or "no candidates"
            raise FailedPrecondition(f"no plan for model {model.name!r} meets the request: {reasons}")
        best = min(eligible, key=lambda c: (c.costs.objective, c.spec.partition_point))
        best.chosen = True
        spec = best.spec
        p = spec.partition_point
        return Plan(spec, request.policy, spec.activation_params(model) if p <= model.num_layers else None,
                    model.profile.activation_shape(p) if p <= model.num_layers else (), best,
                    candidates if request.explain else [])

    def _patterns(self, model: Model, request: PlanRequest) -> list[tuple[PlanSpec, float | None]]:
        L = model.num_layers
        if request.policy == "fixed":
            return [(self.fixed_spec(model, request.fixed), None)]
        if request.policy == "device_only":
            return [(self._uniform(model, L + 1, 32), 0.0)]
        if request.policy == "float_split":
            return [(self._uniform(model, p, 32), 0.0) for p in range(1, L + 2)]
        raise FailedPrecondition(f"policy {request.policy!r} needs the model's offline catalog; "
                                 f"build it with `qpart catalog {model.name}`")

    @staticmethod
    def _uniform(model: Model, p: int, bits: int) -> PlanSpec:
        act = 0 if p == model.num_layers + 1 else bits
        return PlanSpec(model.name, model.version, p, (bits,) * (p - 1), act)

    @staticmethod
    def fixed_spec(model: Model, fixed: FixedPlan) -> PlanSpec:
        p = model.profile.check_partition_point(fixed.partition_point)
        bits = tuple(fixed.weight_bits)
        if len(bits) == 1 and p > 2:
            bits = bits * (p - 1)
        act = 0 if p == model.num_layers + 1 else fixed.activation_bits
        return PlanSpec(model.name, model.version, p, bits if p > 1 else (), act, fixed.granularity).check(model)

    def _price(self, model: Model, spec: PlanSpec, drop: float | None, request: PlanRequest) -> Candidate:
        profile = model.profile
        p = spec.partition_point
        device_layers = profile.device_layers(p)
        head = self.heads.describe(model, spec)
        head_bytes, head_hash = (head.size, head.content_hash) if head else (0, "")
        runs_tail = p <= model.num_layers
        uplink = 0
        if runs_tail:
            elements = math.prod(profile.activation_shape(p))
            uplink = packing.packed_size(elements, spec.activation_bits) + INPUT_OVERHEAD_BYTES
        answer = 4 * profile.num_classes + ANSWER_OVERHEAD_BYTES if runs_tail else 0
        device_macs = sum(layer.macs for layer in device_layers)
        work = Workload(device_macs, sum(layer.macs for layer in profile.layers) - device_macs,
                        head_bytes, uplink, answer, runs_tail)
        costs = predict(work, request.device, request.link, self.server, request.objective,
                        request.inferences_per_head, head_hash in request.held_heads)
        cut = profile.cut_position(p)
        largest_activation = max((math.prod(s) for s in profile.shapes[: cut + 1]), default=0)
        memory = 4 * sum(layer.weight_count for layer in device_layers) + head_bytes + 2 * 4 * largest_activation
        return Candidate(spec, drop, work, costs, memory, head_hash)

    @staticmethod
    def _rejection(c: Candidate, request: PlanRequest) -> str:
        if c.accuracy_drop is not None and c.accuracy_drop > request.accuracy_budget:
            return f"measured drop {c.accuracy_drop:.2f} points exceeds the budget {request.accuracy_budget:g}"
        memory = request.device.memory_bytes
        if memory and c.memory_bytes > memory:
            return f"needs {c.memory_bytes} bytes of device memory, the device has {memory}"
        return ""

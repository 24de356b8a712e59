"""The online planner (paper Algorithm 2): the catalog split with the lowest weighted objective.

The catalog (built offline, `qpart catalog`) holds certified QPART splits for every catalog cut and
budget, plus the uniform 8-bit and float32 splits the baselines use. Per request the planner prices
every split of the requested policy at once (the cost model on arrays), drops those whose certified
drop exceeds the budget or that do not fit the device's memory, and takes the cheapest.

Policies (qpart.common.policies): qpart (every catalog split, and the input as an image file where the
model has codecs.json), server_only (cut 0: the input, quantized only if the budget allows),
server_only_codec (cut 0: the input as a PNG, JPEG or WebP file the device can encode), device_only (the float32 model shipped), float_split (float32
at every cut, Neurosurgeon-style), uniform_int8 (8-bit weights and activations at every cut), fixed
(the request's own split, priced but not checked against the budget), speculative (a language model's
target whole on the server verifying what a draft model drafts on the device: server/planning/drafting.py;
qpart weighs the same candidates beside its splits when the device drafts).
"""
import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from qpart.common import images, network, policies
from qpart.common.costmodel import Costs, DeviceProfile, LinkProfile, Objective, ServerProfile, Workload, predict
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.models.heads import HeadStore
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.server.planning import drafting
from qpart.server.planning import generation as gen
from qpart.server.planning.patterns import Candidate, Patterns
from qpart.server.planning.plans import PlanSpec

if TYPE_CHECKING:
    from qpart.server.planning.served import ServedModel

MAX_REUSE = 10 ** 12         # inferences one head may be priced for
MAX_HELD_HEADS = 4096        # content hashes a device may say it holds


@dataclass(frozen=True)
class PlanRequest:
    """What a device asks for. Every number is range-checked here, before any is used."""
    model: str
    device: DeviceProfile = DeviceProfile()
    link: LinkProfile = LinkProfile()
    accuracy_budget: float = 1.0          # max top-1 drop, percentage points
    objective: Objective = Objective()
    inferences_per_head: int = 1          # inferences that reuse one head download
    held_heads: frozenset = frozenset()   # content hashes the device holds
    policy: str = policies.QPART
    fixed: Split | None = None            # policy "fixed": the split; one weight width stands for every layer
    explain: bool = False
    generation: gen.Shape | None = None   # a language model's generation to price (None: the default)

    def __post_init__(self):
        policies.to_enum(self.policy)   # raises on an unknown name
        if not math.isfinite(self.accuracy_budget) or not 0 <= self.accuracy_budget <= 100:
            raise InvalidArgument(f"accuracy budget must be 0 to 100 points, got {self.accuracy_budget:g}")
        if not 1 <= self.inferences_per_head <= MAX_REUSE:
            raise InvalidArgument(f"inferences_per_head must be 1 to {MAX_REUSE:g}, got {self.inferences_per_head}")
        if len(self.held_heads) > MAX_HELD_HEADS:
            raise InvalidArgument(f"held_heads lists {len(self.held_heads)} hashes; at most {MAX_HELD_HEADS} are read")
        if self.policy == "fixed" and self.fixed is None:
            raise InvalidArgument("policy 'fixed' needs the fixed plan (cut and bit widths)")


@dataclass(frozen=True)
class Drafting:
    """What the server allows of drafting: its limit on drafts per round and which drafts a requester may use."""
    max_draft_tokens: int = drafting.MAX_K
    may_use: object = lambda name: True      # name -> bool


@dataclass(frozen=True)
class DraftChoice:
    """A drafting candidate: the draft (whole on the device at its width), k, and what its price rests on."""
    option: drafting.Option
    spec: PlanSpec               # the draft's device-only split (its plan id fetches the head)
    k: int                       # drafts per round
    acceptance: float            # at the request's temperature
    tokens_per_round: float


@dataclass
class Plan:
    spec: PlanSpec
    policy: str
    activations: list             # per crossing tensor: (name, sample shape, QuantParams or None for float32)
    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""              # one line: why this split, against sending the input and running it all on the device
    decision_s: float = 0.0       # seconds the planner took to choose (no transport)
    load: float = 1.0             # the factor the server's idle-timed part was priced at (1: idle)
    speed: object = None          # the server's timings it was priced with (serving.speed_profile.SpeedProfile)
    generation: object = None     # a language model's: the generation.Shape its figures are for


def plan(served: "ServedModel", request: PlanRequest, load: float = 1.0, server: ServerProfile = ServerProfile(),
         heads: HeadStore | None = None, allowed: Drafting = Drafting()) -> Plan:
    """The plan for a request to one served model: a pure function of the model's priced splits, the request and
    the server's load (>= 1 multiplies the server's time, qpart.server.serving.load). Fixed plans build their head
    with `heads` to price its bytes, drafting candidates their draft's."""
    started = time.perf_counter()
    heads = heads or HeadStore()
    if request.policy == policies.FIXED:
        chosen = _plan_fixed(served, request, load, server, heads)
    else:
        chosen = _choose(served, request, load, server, heads, allowed)
    chosen.decision_s = time.perf_counter() - started
    chosen.load, chosen.speed = load, served.server_speed
    if served.model.profile.sequence is not None:
        chosen.generation = request.generation or gen.Shape()
    return chosen


def _predict(work: Workload, request: PlanRequest, load: float, server: ServerProfile, held) -> Costs:
    if load != 1.0:     # the server's part takes `load` times as long as timed on the idle server
        server = replace(server, macs_per_second=server.mac_rate / load)
        work = replace(work, decode_seconds=np.asarray(work.decode_seconds, float) * load,
                       server_seconds=None if work.server_seconds is None
                       else np.asarray(work.server_seconds, float) * load)
    return predict(work, request.device, request.link, server, request.objective, request.inferences_per_head, held)


def for_request(served: "ServedModel", patterns: Patterns, request: PlanRequest, server: ServerProfile) -> Patterns:
    """The patterns priced for this request's work: a language model's for one generation of its shape."""
    model = served.model
    if model.profile.sequence is None:
        if request.generation is not None:
            raise InvalidArgument(f"model {model.name!r} is not a language model; a generation shape applies to those")
        return patterns
    work, memory = gen.workload(model, [s.split for s in patterns.specs], patterns.work.head_bytes,
                              request.generation or gen.Shape(), server, served.speed, served.codec, request.device,
                              served.streamed_step())
    return replace(patterns, work=work, memory=memory)


def _choose(served: "ServedModel", request: PlanRequest, load: float, server: ServerProfile, heads: HeadStore,
            allowed: Drafting = Drafting()) -> Plan:
    model, patterns, masks = served.model, *served.priced(request.device.head_codings, heads)
    patterns = for_request(served, patterns, request, server)
    held = [h in request.held_heads for h in patterns.hashes] if request.held_heads else False
    costs = _predict(patterns.work, request, load, server, held)
    codings = images.available() if request.device.image_codings is None else request.device.image_codings
    in_policy = masks.get(request.policy, np.zeros(len(patterns.specs), bool)) & (
        ~np.isin(patterns.coding, list(images.FORMATS)) | np.isin(patterns.coding, list(codings)))
    fits_budget = patterns.drop <= request.accuracy_budget + 1e-9
    memory = request.device.memory_bytes
    fits_memory = patterns.memory <= memory if memory else np.ones(len(patterns.specs), bool)
    eligible = in_policy & fits_budget & fits_memory
    drafts = _drafting(served, request, load, server, heads, allowed, patterns, masks)
    best_draft = min((d for d in drafts if not d.rejected), key=lambda d: d.costs.objective, default=None)
    if best_draft is not None and (not eligible.any() or best_draft.costs.objective
                                   < float(np.min(np.where(eligible, costs.objective, np.inf)))):
        return _drafting_plan(model, request, best_draft, drafts, patterns, costs, eligible)
    if not eligible.any():
        if drafts:
            raise FailedPrecondition(f"no drafting plan for model {model.name!r} fits the device: {drafts[0].rejected}")
        raise FailedPrecondition(_no_plan_reason(model, request, patterns, in_policy, fits_budget))
    best = int(np.argmin(np.where(eligible, costs.objective, np.inf)))   # ties: the first, the earliest cut
    rows = np.flatnonzero(in_policy) if request.explain else [best]
    candidates, seen = [], {}
    for i in rows:
        key = (patterns.specs[i].split, patterns.coding[i], patterns.quality[i])
        if key in seen and int(i) != best:      # the same split under another kind (qpart at 8 bits = uniform8)
            continue
        if key in seen:
            candidates.remove(seen[key])
        rejected = ""
        if not fits_budget[i]:
            rejected = f"certified drop {patterns.drop[i]:.2f} points exceeds the budget {request.accuracy_budget:g}"
        elif not fits_memory[i]:
            rejected = f"needs {int(patterns.memory[i])} bytes of device memory, the device has {memory}"
        candidates.append(patterns.candidate(costs, int(i), rejected, bool(held and held[i])))
        candidates[-1].chosen = int(i) == best
        seen[key] = candidates[-1]
    chosen = next(c for c in candidates if c.chosen)
    out = _plan(model, request.policy, chosen, candidates + drafts if request.explain else [])
    out.reason = why(model, patterns, costs, eligible, best, int((in_policy & ~fits_budget).sum()),
                     int((in_policy & fits_budget & ~fits_memory).sum()))
    if best_draft is not None:
        out.reason += f"; {_draft_line(best_draft)}"
    return out


def _draft_line(c: Candidate) -> str:
    d, k = c.draft, c.costs
    return (f"{drafting.describe(d.option, d.k, d.acceptance)}: objective {k.objective:.4g} "
            f"({k.total_time_s * 1e3:.2f} ms)")


def _drafting(served: "ServedModel", request: PlanRequest, load: float, server: ServerProfile, heads: HeadStore,
              allowed: Drafting, patterns: Patterns, masks: dict) -> list[Candidate]:
    """The drafting candidates this request may weigh, one per measured draft and width: the k that prices
    best (each rejected by reason where it does not fit the device), or [] where drafting is not offered. Policy
    speculative refuses by name what keeps it from drafting."""
    model, asked = served.model, request.policy == policies.SPECULATIVE
    if not asked and request.policy != policies.QPART:
        return []
    if model.profile.sequence is None:
        if asked:
            raise InvalidArgument(f"policy speculative drafts tokens: model {model.name!r} is not a language model")
        return []
    most = drafting.limit(request.device, allowed.max_draft_tokens)
    options = [o for o in served.drafts if allowed.may_use(o.draft.name)]
    if asked and not options:
        raise FailedPrecondition(f"model {model.name!r} has no measured draft this device may use: `qpart catalog "
                                 f"{model.name}` measures the repository's drafts into {drafting.DRAFTS_FILE}")
    if asked and most == 0:
        raise FailedPrecondition("the device does not draft (DeviceCapabilities.max_draft_tokens is 0); policy "
                                 "speculative needs a device that drafts")
    target = np.flatnonzero(masks.get("server_only", np.zeros(len(patterns.specs), bool)) & (patterns.cut == 0))
    if most == 0 or not options or not len(target):
        return []
    spec = patterns.specs[int(target[0])]
    shape = (request.generation or gen.Shape()).check(model.profile.sequence[1])
    temperature = shape.temperature
    ks, out = np.arange(1, most + 1), []
    for option in options:
        draft_spec = PlanSpec(option.draft.name, option.draft.version, option.split, request.device.head_codings)
        head = heads.get(option.draft, option.split, codings=request.device.head_codings)
        work, memory = drafting.workload(model, option, ks, head.size, shape, temperature, server, served.speed,
                                         request.device, served.verification_pass())
        held = head.content_hash in request.held_heads
        costs = _predict(work, request, load, server, held)
        i = int(np.argmin(costs.objective))
        a = option.acceptance(temperature)
        choice = DraftChoice(option, draft_spec, int(ks[i]), a, float(drafting.tokens_per_round(a, ks[i])))
        rejected = ""
        if request.device.memory_bytes and memory[i] > request.device.memory_bytes:
            rejected = f"needs {int(memory[i])} bytes of device memory, the device has {request.device.memory_bytes}"
        row = Workload(*(np.asarray(getattr(work, f.name), float)[i] for f in fields(Workload)))
        out.append(Candidate(spec, "draft", 0.0, row, costs.at(i), int(memory[i]), head.content_hash, rejected,
                             held=held, draft=choice))
    return out


def _drafting_plan(model: Model, request: PlanRequest, chosen: Candidate, drafts: list[Candidate],
                   patterns: Patterns, costs: Costs, eligible: np.ndarray) -> Plan:
    chosen.chosen = True
    candidates = []
    if request.explain:
        rows = np.flatnonzero(eligible)
        candidates = [patterns.candidate(costs, int(i), held=False) for i in rows] + drafts
    out = _plan(model, request.policy, chosen, candidates)
    others = ""
    if eligible.any():
        best = int(np.argmin(np.where(eligible, costs.objective, np.inf)))
        k, cut = costs.at(best), int(patterns.cut[best])
        others = (f"; the best split (cut {cut}): objective {k.objective:.4g} ({k.total_time_s * 1e3:.2f} ms)")
    out.reason = _draft_line(chosen) + others
    return out


def _no_plan_reason(model: Model, request: PlanRequest, patterns: Patterns, in_policy, fits_budget) -> str:
    if not in_policy.any() and request.policy == "server_only_codec":
        return (f"model {model.name!r} has no certified image coding the device can encode (the device lists "
                f"{sorted(request.device.image_codings or [])}; the server measures them with `qpart catalog "
                f"{model.name}` into codecs.json)")
    if not (in_policy & fits_budget).any():
        best = float(patterns.drop[in_policy].min()) if in_policy.any() else float("nan")
        return (f"no {request.policy} pattern of model {model.name!r} is certified within "
                f"{request.accuracy_budget:g} points (the best is certified at {best:.2f})")
    return (f"no {request.policy} pattern of model {model.name!r} within the budget fits "
            f"{request.device.memory_bytes} bytes of device memory")


def _plan(model: Model, policy: str, chosen: Candidate, candidates: list[Candidate]) -> Plan:
    split = chosen.spec.split
    cut = model.profile.cut(split.cut)
    return Plan(chosen.spec, policy, list(zip(cut.tensors, cut.shapes, model.cut_quantizers(split))), chosen,
                candidates)


def _plan_fixed(served: "ServedModel", request: PlanRequest, load: float, server: ServerProfile,
                heads: HeadStore) -> Plan:
    model, codings = served.model, request.device.head_codings
    spec = replace(fixed_spec(model, request.fixed), head_codings=codings)
    entry = served.entry(spec.split)           # a fixed plan may name a certified catalog split
    head = heads.get(model, spec.split, pin=entry is not None and codings is None,
                     stored=entry.head_hash if entry else "", codings=codings)
    drop = entry.certified_drop if entry is not None else np.nan
    patterns = Patterns.of(model, [spec], ["fixed"], [drop], [head.size if head else 0],
                           [head.content_hash if head else ""], server, served.codec, speed=served.speed)
    patterns = for_request(served, patterns, request, server)
    held = bool(head) and head.content_hash in request.held_heads
    costs = _predict(patterns.work, request, load, server, held)
    chosen = patterns.candidate(costs, 0, held=held)
    chosen.chosen = True
    out = _plan(model, policies.FIXED, chosen, [chosen] if request.explain else [])
    out.reason = (f"a fixed plan: cut {spec.split.cut} as asked, priced, not chosen; " +
                  (f"it is the catalog's {entry.kind} split certified at {entry.certified_drop:.2f} points"
                   if entry is not None else "its accuracy is not certified (not a catalog split)"))
    return out


def fixed_spec(model: Model, fixed: Split) -> PlanSpec:
    """The device's split, checked: one weight width stands for every device-side weight node, one
    activation width for every crossing tensor; activation widths are ignored when nothing crosses."""
    cut = model.profile.cut(model.profile.check_cut(fixed.cut))
    if len(cut.tensors) > network.MAX_CUT_TENSORS:
        raise InvalidArgument(f"cut {cut.cut} sends {len(cut.tensors)} tensors across; a cut may send at most "
                              f"{network.MAX_CUT_TENSORS} (ServerLimits.max_cut_tensors; ModelInfo.cuts lists those)")
    weights, acts = fixed.weight_bits, fixed.activation_bits
    if len(weights) == 1:
        weights = weights * len(cut.weight_nodes)
    if len(acts) == 1:
        acts = acts * len(cut.tensors)
    split = Split(cut.cut, weights, acts if cut.runs_tail else (), fixed.granularity)
    return PlanSpec(model.name, model.version, split).check(model)

def why(model: Model, patterns: Patterns, costs: Costs, eligible: np.ndarray, best: int, over_budget: int,
        over_memory: int) -> str:
    """One line: the chosen split's objective and time against the best eligible plan that sends the input
    (cut 0) and the best that runs the whole network on the device, and what was ruled out."""
    def brief(i: int) -> str:
        k = costs.at(i)
        return f"objective {k.objective:.4g} ({k.total_time_s * 1e3:.2f} ms)"
    cut = int(patterns.cut[best])
    where = {0: "sending the input", model.num_nodes: "all on the device"}.get(
        cut, f"cut {cut} of {model.num_nodes} ({', '.join(model.profile.cut(cut).tensors)} crossing)")
    parts = [f"{where}: {brief(best)}"]
    for name, at in (("sending the input", 0), ("all on the device", model.num_nodes)):
        rows = np.flatnonzero(eligible & (patterns.cut == at))
        if at != cut and len(rows):
            parts.append(f"{name}: {brief(int(rows[np.argmin(np.asarray(costs.objective)[rows])]))}")
        elif at != cut:
            parts.append(f"{name}: not eligible")
    ruled = [f"{n} over the accuracy budget" for n in [over_budget] if n] + \
            [f"{n} over the device memory" for n in [over_memory] if n]
    return "; ".join(parts) + (f"; ruled out: {', '.join(ruled)}" if ruled else "")

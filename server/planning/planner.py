"""The online planner (paper Algorithm 2): the catalog split with the lowest weighted objective.

The catalog (built offline, `qpart catalog`) holds certified QPART splits for every catalog cut and
budget, plus the uniform 8-bit and float32 splits the baselines use. Per request the planner prices
every split of the requested policy at once (the cost model on arrays), drops those whose certified
drop exceeds the budget or that do not fit the device's memory, and takes the cheapest.

Policies (qpart.common.policies): qpart (every catalog split, and the input as an image file where the
model has codecs.json), server_only (cut 0: the input, quantized only if the budget allows),
server_only_codec (cut 0: the input as a PNG, JPEG or WebP file the device can encode), device_only (the float32 model shipped), float_split (float32
at every cut, Neurosurgeon-style), uniform_int8 (8-bit weights and activations at every cut), fixed
(the request's own split, priced but not checked against the budget).
"""
import math
import threading
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np

from qpart.common import images, packing, policies, quant, tensors
from qpart.common.costmodel import Costs, DeviceProfile, LinkProfile, Objective, ServerProfile, Workload, predict
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.models.heads import HeadStore
from qpart.server.models.repository import Model, ModelRepository
from qpart.server.models.split import Split
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import codecs as codecs_mod
from qpart.server.planning import coding as coding_mod
from qpart.server.planning.plans import PlanSpec

ANSWER_OVERHEAD_BYTES = 16   # request id, label and framing of one Classification
INPUT_OVERHEAD_BYTES = 16    # request id and framing of one input in an ActivationBatch
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


@dataclass
class Candidate:
    spec: PlanSpec
    kind: str                     # "qpart", "uniform8", "float" or "fixed"
    accuracy_drop: float | None   # certified bound on validation data; None when unknown (fixed plans)
    work: Workload
    costs: Costs
    memory_bytes: int             # device bytes: the serialized head, 4 per head parameter (decoded to float32),
                                  # 4 per element of the most activation elements alive at once in the head
    head_hash: str = ""
    rejected: str = ""
    chosen: bool = False
    held: bool = False            # the device holds its head: nothing is downloaded
    coding: int = tensors.RAW     # how its activations travel: raw, zlib-coded (qpart.server.planning.coding), or
                                  # the input as image files (qpart.server.planning.codecs)
    quality: int = 0              # of a JPEG or WebP coding


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


@dataclass(frozen=True)
class CodecCosts:
    """The activation codec on this server, timed at start-up (qpart.server.serving.speed)."""
    per_width: dict          # bits -> (encode s, encode s per element, decode s, decode s per element)
    mac_rate: float          # this machine's float32 MAC rate: encode seconds * mac_rate = MAC-equivalents
    zlib: tuple[float, float] = (0.0, 0.0)   # seconds per packed byte to zlib-code it, and to inflate it

    def tensor(self, bits: int, elements: int) -> tuple[float, float]:
        """(device MAC-equivalents to encode, server seconds to decode) one tensor of one input."""
        e0, e1, d0, d1 = self.per_width.get(bits, (0.0,) * 4)
        return (e0 + e1 * elements) * self.mac_rate, d0 + d1 * elements

    def coding(self, raw_bytes: float) -> tuple[float, float]:
        """(device MAC-equivalents, server seconds) zlib adds to a message of raw_bytes packed bytes."""
        return self.zlib[0] * raw_bytes * self.mac_rate, self.zlib[1] * raw_bytes


@dataclass(frozen=True)
class Coded:
    """A split's message sent coded: its mean bytes per input and, for image files, the measured coding times."""
    bytes: float                  # mean bytes of one input's message
    coding: int = tensors.ZLIB
    quality: int = 0              # JPEG or WebP quality
    encode_s: float = 0.0         # image codings: seconds per input to encode, on a machine of rate mac_rate
    decode_s: float = 0.0         # image codings: seconds per input to decode there
    mac_rate: float = 0.0         # MACs per second of the machine that timed them (image codings)

    def costs(self, server_rate: float) -> tuple[float, float]:
        """(device MAC-equivalents, server seconds at server_rate MACs/s) of an image coding, which replaces
        the packing."""
        return self.encode_s * self.mac_rate, self.decode_s * self.mac_rate / server_rate


@dataclass
class Patterns:
    """Candidate splits as arrays, one row per split, ready to be priced per request."""
    specs: list[PlanSpec]
    kinds: np.ndarray        # "qpart", "uniform8", "float" or "fixed"
    drop: np.ndarray         # certified top-1 drop, points (NaN: unknown)
    hashes: list[str]        # head content hashes ("" when nothing ships)
    work: Workload           # arrays
    memory: np.ndarray       # device bytes needed
    coding: np.ndarray       # per split: tensors.RAW, tensors.ZLIB or an image coding
    quality: np.ndarray      # per split: JPEG or WebP quality, else 0
    cut: np.ndarray = field(init=False)
    _rows: list = field(init=False, repr=False)   # the workload of each split as plain numbers

    def __post_init__(self):
        self.cut = np.array([s.split.cut for s in self.specs])
        columns = [np.broadcast_to(np.asarray(getattr(self.work, f.name)), (len(self.specs),)).tolist()
                   if getattr(self.work, f.name) is not None else [None] * len(self.specs) for f in fields(Workload)]
        self._rows = list(zip(*columns))

    @classmethod
    def of(cls, model: Model, specs: list[PlanSpec], kinds, drops, head_bytes, hashes, server: ServerProfile,
           codec: CodecCosts | None = None, coded=None) -> "Patterns":
        """coded: per split, how its message is coded (Coded), or None to send it raw."""
        profile = model.profile
        coded = coded or [None] * len(specs)
        total = sum(n.macs for n in profile.nodes)
        cuts = [profile.cut(s.split.cut) for s in specs]
        splits = [s.split for s in specs]
        runs_tail = np.array([c.runs_tail for c in cuts])
        raw = np.array([sum(packing.packed_size(math.prod(shape), bits) for shape, bits in zip(c.shapes, s.activation_bits))
                        for c, s in zip(cuts, splits)], float)
        message = np.array([r if k is None else k.bytes for r, k in zip(raw, coded)], float)
        uplink = message + np.where(runs_tail, INPUT_OVERHEAD_BYTES, 0)
        head_bytes = np.asarray(head_bytes, float)
        answer = np.where(runs_tail, 4 * sum(math.prod(s) for s in profile.output_shapes) + ANSWER_OVERHEAD_BYTES, 0.0)
        device_macs = np.array([c.device_macs for c in cuts], float)
        server_seconds = None
        if model.tail_seconds is not None:   # timed on this server: the tail from each catalog cut
            server_seconds = np.array([model.tail_seconds.get(c.cut, (total - c.device_macs) / server.mac_rate)
                                       if c.runs_tail else 0.0 for c in cuts])
        encode, decode = np.zeros(len(specs)), np.zeros(len(specs))
        for i, (c, s, k, r) in enumerate(zip(cuts, splits, coded, raw)):
            if k is not None and images.is_image(k.coding):      # measured offline: priced even without codec
                encode[i], decode[i] = k.costs(codec.mac_rate if codec else server.mac_rate)
            elif codec is not None:
                pairs = [codec.tensor(bits, math.prod(shape)) for shape, bits in zip(c.shapes, s.activation_bits)]
                z = codec.coding(r) if k is not None else (0.0, 0.0)
                encode[i], decode[i] = sum(e for e, _ in pairs) + z[0], sum(d for _, d in pairs) + z[1]
        if codec is not None:      # every plan's device preprocesses its raw image first (timed on this server)
            encode += model.preprocess_seconds * codec.mac_rate
        work = Workload(device_macs, total - device_macs, head_bytes, uplink, answer, runs_tail, server_seconds,
                        encode, decode)
        memory = head_bytes + np.array([4 * c.device_parameters + 4 * c.peak_elements for c in cuts], float)
        return cls(specs, np.asarray(kinds), np.asarray(drops, float), list(hashes), work, memory,
                   np.array([tensors.RAW if k is None else k.coding for k in coded], int),
                   np.array([0 if k is None else k.quality for k in coded], int))

    def candidate(self, costs: Costs, i: int, rejected: str = "", held: bool = False) -> Candidate:
        work = Workload(*self._rows[i])
        drop = None if np.isnan(self.drop[i]) else float(self.drop[i])
        return Candidate(self.specs[i], str(self.kinds[i]), drop, work, costs.at(i), int(self.memory[i]),
                         self.hashes[i], rejected, held=held,
                         coding=int(self.coding[i]), quality=int(self.quality[i]))


def catalog_patterns(model: Model, catalog: catalog_mod.Catalog, server: ServerProfile = ServerProfile(),
                     codec: CodecCosts | None = None, coding: coding_mod.Coding | None = None,
                     codecs: codecs_mod.Codecs | None = None) -> tuple[Patterns, dict[str, np.ndarray]]:
    """The catalog's splits and, per policy, which of them it may use. With coding, each QPART split whose
    message zlib shrinks comes a second time, coded (after every raw split: ties keep the raw one); with
    codecs, the input comes once more per certified image setting (kind "codec"). The qpart policy may use
    them all, server_only_codec the image settings; the other baselines send what they always sent."""
    entries = sorted(catalog.entries, key=lambda e: e.split.cut)   # stable: argmin ties pick the earliest cut
    twins = [(e, coding.coded_bytes(e.split)) for e in entries if coding_mod.codable(model, e)] if coding else []
    rows = list(entries) + [e for e, k in twins if k is not None]
    coded = [None] * len(entries) + [Coded(k) for _, k in twins if k is not None]
    input_split = Split(0, (), (8,), catalog.config.get("granularity", quant.PER_CHANNEL))
    for s in codecs.settings if codecs else []:
        rows.append(catalog_mod.Entry("codec", input_split, None, s.drop_ucb, 0, ""))
        coded.append(Coded(s.bytes, s.code, s.quality, s.encode_s, s.decode_s, codecs.mac_rate))
    patterns = Patterns.of(model, [PlanSpec(model.name, model.version, e.split) for e in rows],
                           [e.kind for e in rows], [e.certified_drop for e in rows],
                           [e.head_bytes for e in rows], [e.head_hash for e in rows], server, codec, coded)
    cut, kinds, n = patterns.cut, patterns.kinds, model.num_nodes
    raw = patterns.coding == tensors.RAW
    masks = {policies.QPART: np.ones(len(rows), bool), "server_only": (cut == 0) & raw,
             "server_only_codec": kinds == "codec",
             "device_only": (kinds == "float") & (cut == n), "float_split": (kinds == "float") & raw,
             "uniform_int8": (kinds == "uniform8") & raw}
    return patterns, masks


class Planner:
    def __init__(self, repository: ModelRepository, heads: HeadStore, server: ServerProfile = ServerProfile(),
                 coding: bool = True):
        self.repository = repository
        self.coding = coding                    # offer zlib-coded twins where a model has coding.json
        self.heads = heads
        self.server = server
        self._catalogs: dict[tuple[str, str], tuple[catalog_mod.Catalog, Patterns, dict]] = {}
        self._lock = threading.Lock()
        self.codec: CodecCosts | None = None   # the activation codec timed on this server (serving.speed)
        self.speed = None                       # the SpeedProfile the server's part is priced with (serving.speed)

    def forget(self) -> None:
        """Drop the priced patterns (after the server's speed was measured, or catalogs were rebuilt)."""
        with self._lock:
            self._catalogs.clear()

    def catalog(self, model: Model) -> catalog_mod.Catalog | None:
        """The model's catalog for its current weights (cached once found; a missing one is looked for again)."""
        key = (model.name, model.version)
        if key not in self._catalogs:
            catalog = catalog_mod.load(model)
            if catalog is None:
                return None
            with self._lock:
                self._catalogs[key] = (catalog, *catalog_patterns(model, catalog, self.server, self.codec,
                                                                  coding_mod.load(model) if self.coding else None,
                                                                  codecs_mod.load(model) if self.coding else None))
        return self._catalogs[key][0]

    def patterns(self, model: Model) -> tuple[Patterns, dict[str, np.ndarray]]:
        if self.catalog(model) is None:
            catalog_mod.require(model)   # raises FailedPrecondition naming the command that builds it
        _, patterns, masks = self._catalogs[(model.name, model.version)]
        return patterns, masks

    def plan(self, request: PlanRequest, load: float = 1.0) -> Plan:
        """The plan for a request; load >= 1 multiplies the server's time (qpart.server.serving.load)."""
        started = time.perf_counter()
        model = self.repository.get(request.model)
        plan = (self._plan_fixed(model, request, load) if request.policy == policies.FIXED
                else self._choose(model, request, load))
        plan.decision_s = time.perf_counter() - started
        plan.load, plan.speed = load, self.speed
        return plan

    def _predict(self, work: Workload, request: PlanRequest, load: float, held) -> Costs:
        server = self.server
        if load != 1.0:     # the server's part takes `load` times as long as timed on the idle server
            server = replace(server, macs_per_second=server.mac_rate / load)
            work = replace(work, decode_seconds=np.asarray(work.decode_seconds, float) * load,
                           server_seconds=None if work.server_seconds is None
                           else np.asarray(work.server_seconds, float) * load)
        return predict(work, request.device, request.link, server, request.objective, request.inferences_per_head, held)

    def _choose(self, model: Model, request: PlanRequest, load: float = 1.0) -> Plan:
        patterns, masks = self.patterns(model)
        held = [h in request.held_heads for h in patterns.hashes] if request.held_heads else False
        costs = self._predict(patterns.work, request, load, held)
        codings = images.available() if request.device.image_codings is None else request.device.image_codings
        in_policy = masks[request.policy] & (~np.isin(patterns.coding, list(images.FORMATS))
                                             | np.isin(patterns.coding, list(codings)))
        fits_budget = patterns.drop <= request.accuracy_budget + 1e-9
        memory = request.device.memory_bytes
        fits_memory = patterns.memory <= memory if memory else np.ones(len(patterns.specs), bool)
        eligible = in_policy & fits_budget & fits_memory
        if not eligible.any():
            raise FailedPrecondition(self._no_plan_reason(model, request, patterns, in_policy, fits_budget))
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
        plan = self._plan(model, request.policy, chosen, candidates if request.explain else [])
        plan.reason = why(model, patterns, costs, eligible, best, int((in_policy & ~fits_budget).sum()),
                          int((in_policy & fits_budget & ~fits_memory).sum()))
        return plan

    @staticmethod
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

    def _plan(self, model: Model, policy: str, chosen: Candidate, candidates: list[Candidate]) -> Plan:
        split = chosen.spec.split
        cut = model.profile.cut(split.cut)
        return Plan(chosen.spec, policy, list(zip(cut.tensors, cut.shapes, model.cut_quantizers(split))), chosen,
                    candidates)

    def _plan_fixed(self, model: Model, request: PlanRequest, load: float = 1.0) -> Plan:
        spec = self.fixed_spec(model, request.fixed)
        head = self.heads.get(model, spec.split)
        patterns = Patterns.of(model, [spec], ["fixed"], [np.nan], [head.size if head else 0],
                               [head.content_hash if head else ""], self.server, self.codec)
        held = bool(head) and head.content_hash in request.held_heads
        costs = self._predict(patterns.work, request, load, held)
        chosen = patterns.candidate(costs, 0, held=held)
        chosen.chosen = True
        plan = self._plan(model, policies.FIXED, chosen, [chosen] if request.explain else [])
        plan.reason = f"a fixed plan: cut {spec.split.cut} as asked, priced but not chosen (its accuracy is not certified)"
        return plan

    @staticmethod
    def fixed_spec(model: Model, fixed: Split) -> PlanSpec:
        """The device's split, checked: one weight width stands for every device-side weight node, one
        activation width for every crossing tensor; activation widths are ignored when nothing crosses."""
        cut = model.profile.cut(model.profile.check_cut(fixed.cut))
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

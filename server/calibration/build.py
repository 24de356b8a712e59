"""Build the offline catalog (paper Algorithm 1): certified splits for every catalog cut.

The catalog cuts are the model's cuts (at most network.MAX_CUT_TENSORS tensors crossing) that no
other cut dominates: a cut is dropped when another has no more device MACs, no more device
parameters and no more crossing elements (a cut inside a residual block, which sends the skip
tensor too, is dominated by the block's start in every network of the zoo). For each catalog cut
and each accuracy budget a:
 1. the accuracy model gives the allocation problem of the cut (γ: weights of each device-side node
    and elements of each crossing tensor; q: their fitted noise coefficients) and the noise budget C(a);
 2. the exact integer allocation (qpart.server.calibration.allocation.integer) is found for a ladder
    of noise budgets around the budgets' C(a), giving splits ordered by payload;
 3. repair: the cheapest split whose drop measured on the search split, plus the margin the
    certification will demand, fits the budget is found by bisection along that ladder;
 4. certification: the split is measured once on a disjoint certification split and kept only if
    the exact one-sided upper confidence bound of its paired top-1 drop (qpart.server.calibration.bounds)
    is within the budget; if not, the next richer split is tried, at most `max_certification_attempts`
    in all. Every try is a chance to pass by luck, so each is held to the level 1 - (1 - confidence) /
    attempts (Bonferroni: with 4 tries a 98.75 % bound per try keeps the entry's 95 %). A single 95 %
    bound per try let an entry through whose drop on the test set was 0.5 points past its bound
    (resnet8-96, budget 1). Until catalog format 7 the bound was the normal approximation, which
    certified 0 flips in 100 images at 0.00 points; no valid bound is below 2.95 points there.
A budget that even a split with no flips could not certify on the certification images (its zero-flip
bound is above the budget) gets no entry: the build warns, naming the budget and the images it would
need (0.1 points need 4,938 at 98.75 %), and leaves it out of the catalog's budgets; when no budget
can be certified it refuses (FailedPrecondition) before any search.
The validation split of the model's card is cut into the search split (its first half; the accuracy
model is fitted on the first `calibration_samples` of it) and the certification split (the second
half). The test set is never used. Uniform 8-bit and float32 splits are measured the same way.
Evaluations stream the images chunk by chunk (qpart.server.calibration.streaming): a build holds one chunk's
tensors at a time and a cache of at most `cache_bytes`, whatever the sample counts (resnet8-96 with the default
config: 1.0 GB peak RSS, 8.1 GB when every sample's tensors were kept), and builds the same catalog.
"""
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from qpart.common import network, quant
from qpart.common.errors import FailedPrecondition
from qpart.server.calibration import allocation, bounds, noise, text_samples
from qpart.server.calibration.accuracy import Evaluator, Measurement, expected_drop_bound
from qpart.server.calibration.streaming import DEFAULT_CACHE_BYTES, ImageInputs, PrefixCache
from qpart.server.models import datasets
from qpart.server.models.heads import build_head, serialize, write_head
from qpart.server.models.repository import Model
from qpart.server.models.split import FLOAT, Split, uniform
from qpart.server.planning.catalog import (AGREEMENT, BUDGETS, CERTIFICATION, TEXT_BUDGETS, TEXT_CERTIFICATION, TOP1,
                                          Catalog, Entry)

log = logging.getLogger("qpart.calibration")


@dataclass
class CatalogConfig:
    budgets: tuple[float, ...] = BUDGETS       # accuracy budgets, top-1 points
    text_budgets: tuple[float, ...] = TEXT_BUDGETS  # a language model's: points of next-token agreement
    calibration_samples: int = 1000            # samples that fit the accuracy model (from the search split)
    search_samples: int = 2000                 # samples that guide the search (from the first half of validation)
    certification_samples: int = 5000          # samples that certify (second half of validation)
    granularity: str = quant.PER_CHANNEL       # weight scale sharing of the QPART splits
    weight_bits: tuple[int, int] = (2, 12)     # allowed weight widths, inclusive
    activation_bits: tuple[int, int] = (2, 12) # allowed activation widths, inclusive
    ladder: int = 48                           # noise budgets tried per cut
    max_certification_attempts: int = 4        # richer splits tried when one fails certification
    confidence: float = 0.95                   # probability an entry's certified bound holds, all its tries together
    prune_dominated: bool = True               # leave out cuts another cut dominates (see the module docstring)
    sweep_bits: tuple[int, ...] = noise.FIT_BITS   # widths each tensor's noise is measured at for the accuracy model
    cuts: tuple[int, ...] | None = None        # certify only these of the catalog cuts (None: all; a demo's request)
    cache_bytes: int = DEFAULT_CACHE_BYTES     # memory for the tensors later evaluations start from (all evaluators)


def certification_confidence(config: CatalogConfig) -> float:
    """The confidence each certification try is held to (see the module docstring)."""
    return 1.0 - (1.0 - config.confidence) / max(config.max_certification_attempts, 1)


def certified_budgets(name: str, samples: int, config: CatalogConfig, asked=None) -> tuple[list[float], str]:
    """(the budgets of `asked` (default config.budgets) `samples` certification samples can certify, a note on the
    others for the catalog): warns naming each budget left out and the samples it would need; FailedPrecondition
    when none is left."""
    level = certification_confidence(config)
    ok, refused = bounds.certifiable(sorted(config.budgets if asked is None else asked), samples, level)
    if not refused:
        return ok, ""
    why = bounds.refusal(refused, samples, level)
    more = (f"certification uses the second half of the model's validation split, at most certification_samples "
            f"({config.certification_samples:,}) images: more need a larger split (`qpart train|import "
            "--validation-size`) and enough `qpart catalog --certification-samples`")
    if not ok:
        raise FailedPrecondition(f"{name}: no accuracy budget can be certified: {why}; {more}")
    log.warning("%s: no catalog entry for these budgets: %s; %s", name, why, more)
    return ok, f"; not certified: {why}"


@dataclass
class _Splits:
    """The three evaluators of a build: accuracy model fit, search, certification."""
    calibration: Evaluator
    search: Evaluator
    certification: Evaluator

    @classmethod
    def of(cls, model: Model, config: CatalogConfig, data_dir=None) -> "_Splits":
        return cls.from_data(model, config, validation_data(model, config, data_dir))

    @classmethod
    def from_data(cls, model: Model, config: CatalogConfig, data: dict[str, np.ndarray]) -> "_Splits":
        """The evaluators over validation_data's arrays. A classifier's images stay uint8 and are preprocessed
        chunk by chunk as evaluations need them; one cache of config.cache_bytes serves all three evaluators. A
        language model's are scored positions of the validation text's halves (text_samples); the labels are the
        float model's own next tokens (agreement), the true tokens give perplexity."""
        cache, confidence = PrefixCache(config.cache_bytes), certification_confidence(config)
        if model.profile.sequence is not None:
            sx, st, cx, ct = data["search_x"], data["search_t"], data["cert_x"], data["cert_t"]
            calib = np.linspace(0, len(sx) - 1, min(config.calibration_samples, len(sx))).round().astype(np.int64)
            return cls(Evaluator(model, sx[calib], None, cache=cache, targets=st[calib]),
                       Evaluator(model, sx, None, cache=cache, targets=st),
                       Evaluator(model, cx, None, cache=cache, targets=ct, confidence=confidence))
        search, y, cert, cert_y, pre = data["search"], data["search_y"], data["cert"], data["cert_y"], model.preprocessing
        calib_n = min(config.calibration_samples, len(y))
        return cls(Evaluator(model, ImageInputs(search, pre, calib_n), y[:calib_n], cache=cache),
                   Evaluator(model, ImageInputs(search, pre), y, cache=cache),
                   Evaluator(model, ImageInputs(cert, pre), cert_y, cache=cache, confidence=confidence))

    @property
    def evaluations(self) -> int:
        return self.calibration.evaluations + self.search.evaluations + self.certification.evaluations


def validation_data(model: Model, config: CatalogConfig, data_dir=None) -> dict[str, np.ndarray]:
    """The arrays a build evaluates on, from the validation split of the model's card: a classifier's search
    images (its first half, at most search_samples) and certification images (the second half, at most
    certification_samples) with their labels; a language model's search and certification positions
    (text_samples.validation). What a build on Ray puts in the object store once."""
    if model.profile.sequence is not None:
        (sx, st), (cx, ct) = text_samples.validation(model, config.search_samples, config.certification_samples)
        return {"search_x": sx, "search_t": st, "cert_x": cx, "cert_t": ct}
    images, y = datasets.split(model.card, "validation", data_dir)
    half = len(y) // 2
    search_n, cert_n = min(config.search_samples, half), min(config.certification_samples, len(y) - half)
    return {"search": images[:search_n], "search_y": y[:search_n], "cert": images[half:half + cert_n],
            "cert_y": y[half:half + cert_n]}


def catalog_cuts(model: Model, prune: bool = True) -> list[int]:
    """The cuts the catalog certifies splits for: every offered cut, less the dominated ones (ties: the later).
    Cut 0 (the input) and the whole model on the device always stay: the baselines need them."""
    cuts = model.cuts()
    if not prune:
        return [c.cut for c in cuts]
    ends = (0, model.num_nodes)
    # A language model's server sells per-token compute: a cut that leaves the server more MACs does not dominate
    # one that leaves it fewer, even when it sends less (its token ids, 4 bytes a position, undercut any hidden
    # state). A classifier's tail costs the server little beside the link: fewer device MACs dominate there.
    # Its catalog also keeps only the cuts where one tensor crosses (the residual stream between sub-blocks): a cut
    # inside an attention or feed-forward sub-block sends that stream and a second tensor at least as wide, for
    # each generated token, to move a share of one sub-block; certifying each would double the build.
    same_work = model.profile.sequence is not None
    if same_work:
        cuts = [c for c in cuts if len(c.tensors) <= 1]

    def dominates(a: network.Cut, b: network.Cut) -> bool:
        no_worse = ((a.device_macs == b.device_macs if same_work else a.device_macs <= b.device_macs)
                    and a.device_parameters <= b.device_parameters and a.elements <= b.elements
                    and a.runs_tail == b.runs_tail)
        better = (a.device_macs, a.device_parameters, a.elements) != (b.device_macs, b.device_parameters, b.elements)
        return no_worse and (better or a.cut > b.cut or a.cut in ends)
    return [b.cut for b in cuts if b.cut in ends or not any(dominates(a, b) for a in cuts if a is not b)]


def _problem(model: Model, am: noise.AccuracyModel, cut: int, config: CatalogConfig) -> allocation.Problem:
    c = model.profile.cut(cut)
    gamma, q, lo, hi = [], [], [], []
    for index in c.weight_nodes:
        gamma.append(model.profile.nodes[index].weight_count)
        q.append(am.weights[index].q)
        lo.append(config.weight_bits[0])
        hi.append(config.weight_bits[1])
    for name, shape in zip(c.tensors, c.shapes):
        gamma.append(math.prod(shape))
        q.append(am.activations[(cut, name)].q)
        lo.append(config.activation_bits[0])
        hi.append(config.activation_bits[1])
    return allocation.Problem(tuple(gamma), tuple(q), am.alpha, tuple(lo), tuple(hi))


def _ladder(problem: allocation.Problem, am: noise.AccuracyModel, config: CatalogConfig) -> list[tuple[int, ...]]:
    """Integer allocations for noise budgets spanning the budgets' C(a), richest first, distinct."""
    lo = min(problem.noise(problem.b_max), am.noise_budget(min(config.budgets) / 4))
    hi = max(am.noise_budget(max(config.budgets) * 4), problem.noise(problem.b_min))
    seen, out = set(), []
    for c in np.geomspace(max(lo, 1e-12), hi, config.ladder):
        bits = allocation.integer(problem, float(c))
        if bits is not None and bits not in seen:
            seen.add(bits)
            out.append(bits)
    return sorted(out, key=problem.payload, reverse=True)


def _split(bits: tuple[int, ...], model: Model, cut: int, granularity: str) -> Split:
    """The split of an allocation vector (the device nodes' weight bits, then each crossing tensor's)."""
    w = len(model.profile.cut(cut).weight_nodes)
    return Split(cut, bits[:w], bits[w:], granularity)


def _entry(model: Model, kind: str, split: Split, certified: Measurement | None, budget: float | None = None,
           search: Measurement | None = None, predicted: float | None = None) -> Entry:
    built = serialize(build_head(model, split)) if split.ships_head else None
    if built is not None:
        write_head(model, built)             # so that catalog.save need not code it again
    return Entry(kind, split, budget, certified.drop_ucb if certified else 0.0, built.size if built else 0,
                 built.content_hash if built else "", asdict(search) if search else None,
                 asdict(certified) if certified else None, predicted)


def _baselines(model: Model, cut: int, cert: Evaluator) -> list[Entry]:
    """The float32 and uniform 8-bit splits at a cut: float32 is exact (drop 0), uniform 8-bit is certified. A
    language model's input (token ids, cut 0) travels as float32 only."""
    eight = uniform(model.profile, cut, 8)
    exact = [_entry(model, "float", uniform(model.profile, cut, FLOAT), None)]
    return exact if ids_cross(model, cut) else exact + [_entry(model, "uniform8", eight, cert.measure(eight))]


def ids_cross(model: Model, cut: int) -> bool:
    """Whether a language model's token ids cross this cut: they are never quantized."""
    return model.profile.sequence is not None and model.profile.input_name in model.profile.cut(cut).tensors


def _qpart_entries(model: Model, cut: int, am: noise.AccuracyModel, splits: _Splits, config: CatalogConfig,
                   budgets: list[float]) -> list[Entry]:
    """For each budget, the cheapest split of the cut's ladder that passes certification."""
    problem = _problem(model, am, cut, config)
    ladder = [_split(bits, model, cut, config.granularity) for bits in _ladder(problem, am, config)]
    cert_n = len(splits.certification.labels)
    measured: dict[int, Measurement] = {}

    def searched(i: int) -> Measurement:
        if i not in measured:
            measured[i] = splits.search.measure(ladder[i])
        return measured[i]

    def expected_bound(i: int) -> float:       # the certification bound ladder[i] can expect from its search
        m = searched(i)
        return expected_drop_bound(m.flips_to_wrong, m.flips_to_right, m.samples, cert_n,
                                   splits.certification.confidence)

    entries, start = [], 0                      # a larger budget's split is at least as lean
    for budget in budgets:
        lo, hi = start, len(ladder) - 1         # ladder[lo] is the richest; find the last that fits
        if not ladder or expected_bound(lo) > budget:
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if expected_bound(mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        for attempt in range(lo, max(lo - config.max_certification_attempts, -1), -1):
            m = splits.certification.measure(ladder[attempt])
            if m.drop_ucb <= budget:
                predicted = am.predicted_drop(problem.noise(ladder[attempt].bits))
                entries.append(_entry(model, "qpart", ladder[attempt], m, budget, searched(attempt), predicted))
                start = attempt
                break
    return entries


def build(model: Model, data_dir=None, config: CatalogConfig = CatalogConfig(), progress: bool = True) -> Catalog:
    """The catalog of a classifier, or of a language model (its budgets are points of next-token agreement with
    the float model on the text, see text_samples); data_dir overrides where a classifier's data lies."""
    started = time.perf_counter()
    splits = _Splits.of(model, config, data_dir)
    plan = BuildPlan.of(model, config, len(splits.certification.labels))
    bar = tqdm(total=len(model.profile.weight_nodes) + 2 * len(plan.cuts), desc=f"catalog {model.name}",
               disable=not progress, unit="step")
    am = noise.calibrate(splits.calibration, plan.swept, config.granularity, progress=bar.update,
                         widths=tuple(config.sweep_bits))
    bar.update(len(plan.cuts) - len(plan.swept))
    splits.calibration.release()             # fitted: its cached tensors make room for the search's
    entries: list[Entry] = []
    for cut in plan.cuts:
        entries += cut_entries(model, cut, am, splits, config, plan.budgets)
        bar.update()
    bar.close()
    return plan.catalog(model, config, noise.summary(am.alpha, am.samples, am.granularity, am.weights,
                                                     am.activations, am.additivity),
                        entries, time.perf_counter() - started, splits.evaluations)


@dataclass
class BuildPlan:
    """What a build certifies: its cuts, those whose activations the accuracy model sweeps, the budgets."""
    cuts: list[int]
    swept: list[int]
    budgets: list[float]
    note: str                # the budgets left out and why ("" when none)

    @classmethod
    def of(cls, model: Model, config: CatalogConfig, certification_samples: int) -> "BuildPlan":
        cuts = catalog_cuts(model, config.prune_dominated)
        if config.cuts is not None:
            cuts = [c for c in cuts if c in config.cuts]
            if not cuts:
                raise FailedPrecondition(f"{model.name}: none of the cuts {list(config.cuts)} is a catalog cut")
        language = model.profile.sequence is not None
        budgets, note = certified_budgets(model.name, certification_samples, config,
                                          config.text_budgets if language else config.budgets)
        swept = [c for c in cuts if model.profile.cut(c).runs_tail and not ids_cross(model, c)]
        return cls(cuts, swept, budgets, note)

    def catalog(self, model: Model, config: CatalogConfig, accuracy_model: dict, entries: list[Entry],
                seconds: float, evaluations: int) -> Catalog:
        """accuracy_model: noise.summary of the build's accuracy model."""
        language = model.profile.sequence is not None
        return Catalog(
            model.name, model.version, self.budgets, _dedupe(entries),
            certification=(TEXT_CERTIFICATION if language else CERTIFICATION) + self.note,
            metric=AGREEMENT if language else TOP1, config=asdict(config), cuts=self.cuts,
            accuracy_model=accuracy_model, build_seconds=round(seconds, 1), evaluations=evaluations)


def cut_entries(model: Model, cut: int, am: noise.AccuracyModel, splits: _Splits, config: CatalogConfig,
                budgets: list[float]) -> list[Entry]:
    """One cut's entries: its float and uniform 8-bit baselines, and a certified split per budget."""
    entries = _baselines(model, cut, splits.certification)
    if not ids_cross(model, cut):
        entries += _qpart_entries(model, cut, am, splits, config, budgets)
    return entries


def _dedupe(entries: list[Entry]) -> list[Entry]:
    """One entry per (kind, split): a split certified for several budgets keeps the smallest budget."""
    seen, out = set(), []
    for e in entries:
        if (e.kind, e.split) not in seen:
            seen.add((e.kind, e.split))
            out.append(e)
    return out

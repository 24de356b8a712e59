"""The offline catalog (paper Algorithm 1): certified quantization patterns for every partition point.

For each partition point p and each accuracy budget a:
 1. the accuracy model gives the noise budget C(a) and the allocation problem of p (γ: weights of
    layers 1..p-1 and activation elements at the cut; q: their fitted noise coefficients);
 2. the closed form (eq 40, water-filled) bounds the payload; the exact integer allocation is found
    for a ladder of noise budgets around C(a), giving patterns ordered by payload;
 3. repair: the cheapest pattern whose drop measured on the search split, plus the margin the
    certification will demand, fits the budget is found by bisection along that ladder;
 4. certification: the pattern is measured once on a disjoint certification split and kept only if
    the one-sided 95 % upper confidence bound of its paired top-1 drop is within the budget; if not,
    the next richer pattern is tried.
The validation split of the model's card is cut into the search split (its first half; the accuracy
model is fitted on the first `calibration_samples` of it) and the certification split (the second
half). The test set is never used. Uniform 8-bit and float32 patterns are measured the same way.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from qpart.common import packing, quant
from qpart.common.errors import FailedPrecondition
from qpart.server import allocation, calibration, train
from qpart.server.accuracy import FLOAT, Evaluator, Measurement, Pattern
from qpart.server.heads import build_head, serialize
from qpart.server.plans import PlanSpec
from qpart.server.repository import Model, write_json

CATALOG_VERSION = 1
BUDGETS = (0.1, 0.25, 0.5, 1.0, 2.0)
CERTIFICATION = ("one-sided 95% upper confidence bound of the paired top-1 drop (float vs pattern, per-sample "
                 "flips) on a certification split disjoint from the search split; the test set is never used")


@dataclass
class CatalogConfig:
    budgets: tuple[float, ...] = BUDGETS       # accuracy budgets, top-1 points
    calibration_samples: int = 1000            # samples that fit the accuracy model (from the search split)
    search_samples: int = 2000                 # samples that guide the search (from the first half of validation)
    certification_samples: int = 5000          # samples that certify (second half of validation)
    granularity: str = quant.PER_CHANNEL       # weight scale sharing of the QPART patterns
    weight_bits: tuple[int, int] = (2, 12)     # allowed weight widths
    activation_bits: tuple[int, int] = (2, 12) # allowed activation widths
    ladder: int = 48                           # noise budgets tried per partition point
    max_certification_attempts: int = 4        # richer patterns tried when one fails certification


@dataclass
class Entry:
    kind: str                      # "qpart", "uniform8" or "float"
    partition_point: int
    weight_bits: list[int]
    activation_bits: int           # 0 when p = L+1
    granularity: str
    budget: float | None           # the budget a qpart entry was certified for
    certified_drop: float          # upper confidence bound of the drop on the certification split, points
    head_bytes: int
    head_hash: str
    search: dict | None = None     # Measurement on the search split
    certification: dict | None = None  # Measurement on the certification split
    predicted_drop: float | None = None  # the accuracy model's prediction

    def plan_spec(self, model: Model) -> PlanSpec:
        return PlanSpec(model.name, model.version, self.partition_point, tuple(self.weight_bits),
                        self.activation_bits, self.granularity)


@dataclass
class Catalog:
    model: str
    model_version: str
    budgets: list[float]
    entries: list[Entry]
    certification: str = CERTIFICATION
    config: dict = field(default_factory=dict)
    accuracy_model: dict = field(default_factory=dict)
    build_seconds: float = 0.0
    evaluations: int = 0
    format_version: int = CATALOG_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "Catalog":
        value = dict(value)
        value["entries"] = [Entry(**e) for e in value["entries"]]
        return cls(**value)


def load(model: Model) -> Catalog | None:
    """The model's catalog, or None when it is missing or was built for other weights."""
    path = model.catalog_path
    if not path.exists():
        return None
    catalog = Catalog.from_json(json.loads(path.read_text()))
    if catalog.model_version != model.version or catalog.format_version != CATALOG_VERSION:
        return None
    return catalog


def _uplink_elements(model: Model, p: int) -> int:
    return math.prod(model.profile.activation_shape(p)) if p <= model.num_layers else 0


def _problem(model: Model, am: calibration.AccuracyModel, p: int, config: CatalogConfig) -> allocation.Problem:
    gamma, q, lo, hi = [], [], [], []
    for layer in model.profile.device_layers(p):
        gamma.append(layer.weight_count)
        q.append(am.weights[layer.index - 1].q)
        lo.append(config.weight_bits[0])
        hi.append(config.weight_bits[1])
    if p <= model.num_layers:
        gamma.append(_uplink_elements(model, p))
        q.append(am.activations[p - 1].q)
        lo.append(config.activation_bits[0])
        hi.append(config.activation_bits[1])
    return allocation.Problem(tuple(gamma), tuple(q), am.alpha, tuple(lo), tuple(hi))


def _ladder(problem: allocation.Problem, am: calibration.AccuracyModel, config: CatalogConfig) -> list[tuple[int, ...]]:
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


def _expected_certified(m: Measurement, certification_samples: int) -> float:
    """The certification bound a pattern measured as m on the search split can expect."""
    n = m.samples
    d = (m.flips_to_wrong - m.flips_to_right) / n
    variance = max((m.flips_to_wrong + m.flips_to_right) / n - d * d, 0.0)
    return 100.0 * (d + 1.6448536269514722 * math.sqrt(variance / certification_samples))


def _split(bits: tuple[int, ...], p: int, num_layers: int) -> tuple[list[int], int]:
    """(weight bits of layers 1..p-1, activation bits) from an allocation vector."""
    if p <= num_layers:
        return list(bits[:-1]), int(bits[-1])
    return list(bits), 0


def build(model: Model, data_dir=None, config: CatalogConfig = CatalogConfig(), progress: bool = True) -> Catalog:
    started = time.perf_counter()
    x, y = train.validation_data(model, data_dir)
    half = len(x) // 2
    search_n = min(config.search_samples, half)
    cert_n = min(config.certification_samples, len(x) - half)
    search = Evaluator(model, x[:search_n], y[:search_n])
    calib = Evaluator(model, x[: min(config.calibration_samples, search_n)], y[: min(config.calibration_samples, search_n)])
    cert = Evaluator(model, x[half:half + cert_n], y[half:half + cert_n])
    L = model.num_layers
    bar = tqdm(total=2 * L + L + 1, desc=f"catalog {model.name}", disable=not progress, unit="step")
    am = calibration.calibrate(calib, config.granularity, progress=bar.update)
    entries: list[Entry] = []

    def finish(kind, p, weight_bits, act_bits, granularity, budget, certified, search_m=None, cert_m=None,
               predicted=None) -> Entry:
        spec = PlanSpec(model.name, model.version, p, tuple(weight_bits), act_bits, granularity)
        built = serialize(build_head(model, spec)) if p > 1 else None
        return Entry(kind, p, list(weight_bits), act_bits, granularity, budget, certified,
                     len(built.data) if built else 0, built.content_hash if built else "",
                     asdict(search_m) if search_m else None, asdict(cert_m) if cert_m else None, predicted)

    for p in range(1, L + 2):
        act_float = 0 if p == L + 1 else FLOAT
        entries.append(finish("float", p, [FLOAT] * (p - 1), act_float, quant.PER_TENSOR, None, 0.0))
        act8 = 0 if p == L + 1 else 8
        uniform = Pattern(p, (8,) * (p - 1), act8, quant.PER_TENSOR)
        m = cert.measure(uniform)
        entries.append(finish("uniform8", p, [8] * (p - 1), act8, quant.PER_TENSOR, None, m.drop_ucb, cert_m=m))

        problem = _problem(model, am, p, config)
        ladder = _ladder(problem, am, config)
        measured: dict[int, Measurement] = {}

        def searched(i: int) -> Measurement:
            if i not in measured:
                wb, ab = _split(ladder[i], p, L)
                measured[i] = search.measure(Pattern(p, tuple(wb), ab, config.granularity))
            return measured[i]

        start = 0                                # a larger budget's pattern is at least as lean
        for budget in sorted(config.budgets):
            lo, hi = start, len(ladder) - 1      # ladder[lo] is the richest; find the last that fits
            if not ladder or _expected_certified(searched(lo), cert_n) > budget:
                continue
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _expected_certified(searched(mid), cert_n) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            for attempt in range(lo, max(lo - config.max_certification_attempts, -1), -1):
                wb, ab = _split(ladder[attempt], p, L)
                m = cert.measure(Pattern(p, tuple(wb), ab, config.granularity))
                if m.drop_ucb <= budget:
                    predicted = am.predicted_drop(problem.noise(ladder[attempt]))
                    entries.append(finish("qpart", p, wb, ab, config.granularity, budget, m.drop_ucb,
                                          searched(attempt), m, predicted))
                    start = attempt
                    break
        bar.update()
    bar.close()
    return Catalog(
        model.name, model.version, list(config.budgets), _dedupe(entries), config=asdict(config),
        accuracy_model={"alpha": am.alpha, "samples": am.samples, "granularity": am.granularity,
                        "weights": [w.as_dict() for w in am.weights],
                        "activations": [a.as_dict() for a in am.activations], "additivity": am.additivity},
        build_seconds=round(time.perf_counter() - started, 1),
        evaluations=search.evaluations + calib.evaluations + cert.evaluations)


def _dedupe(entries: list[Entry]) -> list[Entry]:
    """One qpart entry per pattern: a pattern certified for several budgets keeps the smallest budget."""
    seen, out = set(), []
    for e in entries:
        key = (e.kind, e.partition_point, tuple(e.weight_bits), e.activation_bits, e.granularity)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def save(model: Model, catalog: Catalog) -> None:
    write_json(model.catalog_path, catalog.to_json())


def require(model: Model) -> Catalog:
    catalog = load(model)
    if catalog is None:
        raise FailedPrecondition(f"model {model.name!r} has no catalog for its current weights; "
                                 f"build it with `qpart catalog {model.name}`")
    return catalog

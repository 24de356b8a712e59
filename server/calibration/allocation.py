"""Bit allocation for one cut (eqs 28-40): minimise the payload Σ γ_i b_i subject to
the noise budget Σ q_i e^{-α b_i} <= C, with b_i in [b_min, b_max].

`continuous` is the KKT solution (eq 40) with water-filling for the box constraints, a lower bound
on the payload; `integer` is the exact integer allocation (dynamic programming); `exhaustive` is
the reference for small problems.
"""
import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Problem:
    gamma: tuple[float, ...]   # γ_i: elements that carry layer i's bits (weights, or the cut's activation)
    q: tuple[float, ...]       # q_i: noise at 0 bits, e^{α b} times the noise at b bits
    alpha: float               # noise decay per bit
    b_min: tuple[int, ...]     # smallest allowed width per layer
    b_max: tuple[int, ...]     # largest allowed width per layer

    def noise(self, bits) -> float:
        return float(sum(q * math.exp(-self.alpha * b) for q, b in zip(self.q, bits)))

    def payload(self, bits) -> float:
        return float(sum(g * b for g, b in zip(self.gamma, bits)))


def continuous(problem: Problem, budget: float) -> np.ndarray:
    """The KKT solution with box constraints: b_i(λ) = clip((1/α) ln(α λ q_i / γ_i), b_min, b_max) (eq 40),
    with the multiplier λ found by bisection so that the noise meets the budget (eq 39 without bounds)."""
    gamma, q = np.asarray(problem.gamma, float), np.asarray(problem.q, float)
    lo, hi = np.asarray(problem.b_min, float), np.asarray(problem.b_max, float)
    a = problem.alpha

    def bits(log_lam: float) -> np.ndarray:
        return np.clip((log_lam + np.log(a * q / gamma)) / a, lo, hi)

    if problem.noise(hi) >= budget:
        return hi
    if problem.noise(lo) <= budget:
        return lo
    low, high = -200.0, 200.0           # log λ; the noise falls as λ grows
    for _ in range(200):
        mid = 0.5 * (low + high)
        if problem.noise(bits(mid)) > budget:
            low = mid
        else:
            high = mid
    return bits(high)


def integer(problem: Problem, budget: float, resolution: int = 4096) -> tuple[int, ...] | None:
    """The cheapest integer allocation meeting the budget, or None if even b_max misses it.

    Dynamic programming over the budget cut into `resolution` units: each layer's noise at each
    width is rounded up to whole units, so every answer meets the budget, and the answer is optimal
    for budgets that are not within (layers / resolution) of binding. Rounding eq 40 down and adding
    bits greedily was up to 45 % above the optimum on random small problems; this is exact.
    """
    if budget <= 0 or problem.noise(problem.b_max) > budget:
        return None
    unit = budget / resolution
    best = np.zeros(resolution + 1)                     # best[k]: least payload of the layers so far within k units
    choices = []
    for q, g, lo, hi in zip(problem.q, problem.gamma, problem.b_min, problem.b_max):
        widths = np.arange(lo, hi + 1)
        units = np.ceil(q * np.exp(-problem.alpha * widths) / unit - 1e-9).astype(np.int64)
        candidates = np.full((len(widths), resolution + 1), np.inf)
        for w, (b, u) in enumerate(zip(widths, units)):
            if u <= resolution:
                candidates[w, u:] = best[: resolution + 1 - u] + g * b
        choice = np.argmin(candidates, axis=0)
        best = candidates[choice, np.arange(resolution + 1)]
        choices.append((widths, units, choice))
    if not np.isfinite(best[resolution]):
        return None
    bits, k = [], resolution
    for widths, units, choice in reversed(choices):
        w = choice[k]
        bits.append(int(widths[w]))
        k -= int(units[w])
    return tuple(reversed(bits))


def exhaustive(problem: Problem, budget: float) -> tuple[int, ...] | None:
    """The optimum by enumeration (small problems only)."""
    best, best_payload = None, math.inf
    for bits in itertools.product(*(range(lo, hi + 1) for lo, hi in zip(problem.b_min, problem.b_max))):
        if problem.noise(bits) <= budget and problem.payload(bits) < best_payload:
            best, best_payload = bits, problem.payload(bits)
    return best

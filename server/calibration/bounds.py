"""Exact one-sided upper confidence bounds on a split's top-1 drop, valid at every sample size.

Each certification image gives a paired outcome X = +1 (the float model right, the split wrong), -1 (the
float model wrong, the split right) or 0; with W and R the counts of +1 and -1 in n images, the drop is
D = E[X] = theta_W - theta_R. The normal approximation d + z sqrt(var / n) certifies 0 flips in 100
images at a drop of 0.00 points; no valid 95 % bound can be below 2.95 points there (with theta_R = 0 and
theta_W = 2.95 %, 0 flips still happen 5 % of the time).

The bound here is Berger and Boos' exact unconditional bound (JASA 1994): the nuisance pi = theta_W +
theta_R is confined to its one-sided Clopper-Pearson interval [0, pi_U] at level 1 - gamma (gamma =
alpha / 10), and each candidate drop delta gets the p-value

    p(delta) = sup over pi in [|delta|, pi_U] of P(outcome at least as extreme | delta, pi)

where "at least as extreme" orders outcomes by W - R, ties by W + R (fewer flips: stronger evidence of a
small drop). The bound is the largest delta with p(delta) > alpha - gamma, found by bisection: p falls as
delta grows (at each pi, and the range of pi shrinks while delta >= 0; below 0, where the split beats the
float model and the range grows with delta, the supremum stays at its upper end in every case checked).
It covers D with probability >= 1 - alpha for every (theta_W, theta_R) and n: the true pi lies outside
the interval with probability <= gamma, and inside it the p-value at the true D is below alpha - gamma
with probability <= alpha - gamma. P(outcome | delta, pi) is exact: M = W + R ~ Bin(n, pi),
W | M ~ Bin(M, theta_W / pi), its CDF along M by a two-term recurrence (O(n) per pi, numpy, binomial
terms in log space). The supremum is taken on a grid of pi (its endpoints included; the probability
grows with pi near the bound, so it is usually the upper end) refined around an interior maximum.
One bound takes 4-20 ms with the tens to hundreds of flips a catalog sees (40 ms: 3,000 flips in 100,000).

Bounds in points (the catalog's 98.75 % per certification try; 95 % where marked):

    flips W/R      n  level   normal  split CP  Berger-Boos  theta_W alone*
      0/0        100  95 %      0.00      3.62      3.20        2.95
      1/0        100  95 %      2.64      5.45      4.85        4.66
      0/0       1000            0.00      0.51      0.49        0.44
      0/0       3000            0.00      0.17      0.17        0.15
      2/1       3000            0.16      0.30      0.27        0.27
      0/0       5000            0.00      0.10      0.10        0.09
      3/1       5000            0.13      0.21      0.20        0.20
      8/3       5000            0.25      0.36      0.31        0.34
     15/8       5000            0.36      0.50      0.42        0.53
     30/15      2500            1.20      1.58      1.32        1.79
     60/30      5000            1.03      1.28      1.09        1.59
    150/100     3000            2.85      3.51      2.96        5.97

split CP: Clopper-Pearson bounds on theta_W and theta_R at alpha / 2 each (Bonferroni), also exact.
*theta_W alone bounds D <= theta_W: the best any valid bound can do at 0 flips, useless once R > 0.
Berger-Boos is 8-13 % above the best possible at 0 flips (split CP: 15-23 %) and, with 10 to 250 flips,
3-25 % above the normal approximation (split CP: 12-66 %): it is the one used. gamma = alpha / 5 or
alpha / 20 moves these figures by at most 0.01 points at n = 5000. The smallest bound n images can give
(0 flips) sets the smallest budget they can certify: 0.1 points at 98.75 % need 4,938 images, 0.25 need
1,974, 0.5 need 986, 1 needs 492, 2 need 245 (`samples_needed`).
"""
import functools
import math

import numpy as np

GAMMA_SHARE = 0.1          # the share of alpha spent on the interval of pi
_GRID = 17                 # pi values per p-value (endpoints included), and again around an interior maximum
_TOLERANCE = 1e-7          # bisection stops when the bracket is this narrow (a fraction: 1e-5 points)
_TAIL_SD = 12.0            # M is summed over its mean +- this many standard deviations (+ 12)
_log_fact = np.zeros(1)


def _log_factorials(n: int) -> np.ndarray:
    global _log_fact
    if len(_log_fact) <= n:
        size = max(n + 1, 2 * len(_log_fact))
        _log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, size, dtype=np.float64)))])
    return _log_fact


def _xlogy(x, y):
    """x log y with 0 log 0 = 0."""
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(y))


def _binom_pmf(k, m, p):
    """P(Bin(m, p) = k) elementwise; 0 where k is outside 0..m."""
    k, m = np.asarray(k), np.asarray(m)
    inside = (k >= 0) & (k <= m)
    kc, mc = np.clip(k, 0, None), np.clip(m, 0, None)
    kc = np.minimum(kc, mc)
    lf = _log_factorials(int(mc.max(initial=0)))
    log = lf[mc] - lf[kc] - lf[mc - kc] + _xlogy(kc, p) + _xlogy(mc - kc, 1.0 - p)
    return np.where(inside, np.exp(log), 0.0)


def _binom_cdf(k: int, n: int, p: float) -> float:
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(min(_binom_pmf(np.arange(k + 1), n, p).sum(), 1.0))


@functools.lru_cache(maxsize=4096)
def clopper_pearson_upper(x: int, n: int, alpha: float) -> float:
    """The one-sided 1 - alpha upper bound of a binomial proportion with x successes in n trials."""
    if x >= n:
        return 1.0
    lo, hi = x / n, 1.0
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _binom_cdf(x, n, mid) > alpha else (lo, mid)
    return hi


def extreme_probabilities(w: int, r: int, n: int, theta_w: np.ndarray, theta_r: np.ndarray) -> np.ndarray:
    """P(an outcome at least as extreme as (w, r)) for each (theta_w, theta_r): W - R < w - r, or W - R = w - r
    and W + R <= w + r. Summed over M = W + R (its mean +- _TAIL_SD standard deviations, all rows at once),
    with P(W <= k_m | M = m) along m by F(m + 1) = F(m) - q pmf_m(k_m) + [k_{m+1} > k_m] pmf_{m+1}(k_{m+1})."""
    theta_w, theta_r = np.atleast_1d(np.asarray(theta_w, np.float64)), np.atleast_1d(np.asarray(theta_r, np.float64))
    t, m_obs, pi = w - r, w + r, theta_w + theta_r
    q = np.where(pi > 0, theta_w / np.where(pi > 0, pi, 1.0), 0.5)[:, None]   # (pi = 0: M = 0, any q will do)
    spread = _TAIL_SD * np.sqrt(n * pi * (1.0 - pi)) + 12.0
    a = max(int(np.min(n * pi - spread)), 0)
    b = min(int(math.ceil(np.max(n * pi + spread))), n)
    ms = np.arange(a, b + 1)
    k = np.where(ms <= m_obs, (t + ms) // 2, (t - 1 + ms) // 2)     # W <= k_m: {T <= t, M <= m_obs} or {T < t}
    pmf = _binom_pmf(k[None, :], ms[None, :], q)
    steps = np.where(k[1:] > k[:-1], pmf[:, 1:], 0.0) - q * pmf[:, :-1]
    first = _binom_pmf(np.arange(max(min(k[0], a), -1) + 1)[None, :], a, q).sum(axis=1, keepdims=True)
    cdf = np.clip(first + np.concatenate([np.zeros((len(q), 1)), np.cumsum(steps, axis=1)], axis=1), 0.0, 1.0)
    weights = _binom_pmf(ms[None, :], n, pi[:, None])
    return np.minimum((weights * cdf).sum(axis=1), 1.0)


def _p_value(w: int, r: int, n: int, delta: float, pi_upper: float) -> float:
    """sup over pi in [|delta|, pi_upper] of the extreme probability at drop delta (0 when the range is empty)."""
    low = abs(delta)
    if low > pi_upper:
        return 0.0

    def at(pis):
        return extreme_probabilities(w, r, n, (pis + delta) / 2, np.maximum(pis - delta, 0.0) / 2)
    grid = np.linspace(low, pi_upper, _GRID)
    values = at(grid)
    best = int(np.argmax(values))
    if 0 < best < _GRID - 1:                        # an interior maximum: look closer around it
        return float(max(values.max(), at(np.linspace(grid[best - 1], grid[best + 1], _GRID)).max()))
    return float(values[best])


@functools.lru_cache(maxsize=65536)
def upper_bound(w: int, r: int, n: int, confidence: float) -> float:
    """The exact one-sided upper confidence bound of D = theta_W - theta_R, as a fraction (see the module)."""
    if not (0 <= w and 0 <= r and w + r <= n and n > 0):
        raise ValueError(f"flips {w} and {r} of {n} samples")
    alpha = 1.0 - confidence
    gamma = GAMMA_SHARE * alpha
    pi_upper = clopper_pearson_upper(w + r, n, gamma)
    lo, hi = (w - r) / n, pi_upper                  # p(hi) <= gamma < alpha - gamma
    while _p_value(w, r, n, lo, pi_upper) <= alpha - gamma and lo > -1.0:
        lo = max(lo - max(hi - lo, 1.0 / n), -1.0)  # (p is near 1/2 at the observed drop: rarely taken)
    while hi - lo > _TOLERANCE:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _p_value(w, r, n, mid, pi_upper) > alpha - gamma else (lo, mid)
    return hi


def zero_flip_bound(n: int, confidence: float) -> float:
    """The smallest bound n samples can certify (no flips at all), as a fraction."""
    return upper_bound(0, 0, n, confidence)


@functools.lru_cache(maxsize=256)
def samples_needed(budget: float, confidence: float) -> int:
    """The fewest samples whose zero-flip bound is within budget (a fraction): fewer cannot certify it."""
    lo = max(int(math.log(1.0 - confidence) / math.log1p(-budget)), 1)   # fewer: no valid bound can (theta_W alone)
    hi = 2 * lo
    while zero_flip_bound(hi, confidence) > budget:
        lo, hi = hi, 2 * hi
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if zero_flip_bound(mid, confidence) <= budget else (mid + 1, hi)
    return lo


def certifiable(budgets, samples: int, confidence: float) -> tuple[list[float], list[tuple[float, int]]]:
    """(the budgets, in points, that `samples` images can certify at `confidence`; (budget, images it would
    need) for each of the others): a budget below the zero-flip bound is refused, whatever the split."""
    smallest = 100.0 * zero_flip_bound(samples, confidence)
    ok = [b for b in budgets if b >= smallest]
    return ok, [(b, samples_needed(b / 100.0, confidence)) for b in budgets if b < smallest]


def refusal(refused: list[tuple[float, int]], samples: int, confidence: float) -> str:
    """'n images at c% cannot certify a budget of 0.1 points (that needs at least N images), ...'."""
    needs = ", ".join(f"{b:g} (needs at least {need:,})" for b, need in refused)
    return (f"{samples:,} certification images at {confidence:.2%} cannot certify the budget(s) {needs}: "
            f"even a split with no flips would be bounded at {100.0 * zero_flip_bound(samples, confidence):.2f} points")

"""The certified drop bound is exact: it covers the true drop at every sample size, where the normal
approximation it replaced certified 0 flips in 100 images at 0.00 points."""
import math
from statistics import NormalDist

import numpy as np
import pytest

from qpart.server.calibration import bounds
from qpart.server.calibration.accuracy import expected_drop_bound, paired_drop_bound


def normal_bound(w: int, r: int, n: int, confidence: float) -> float:
    """The bound catalogs up to format 6 certified with (points): d + z sqrt(var / n)."""
    d = (w - r) / n
    variance = max((w + r) / n - d * d, 0.0)
    return 100.0 * (d + NormalDist().inv_cdf(confidence) * math.sqrt(variance / n))


def test_no_flips_in_100_images_do_not_certify_a_tenth_of_a_point():
    old = normal_bound(0, 0, 100, 0.95)
    drop, new = paired_drop_bound(0, 0, 100, 0.95)
    assert old == 0.0 <= 0.1 and drop == 0.0                 # the old bound passed the 0.1-point budget
    assert new > 0.1 and new >= 100 * (1 - 0.05 ** (1 / 100))   # no valid bound is below 2.95 points here
    ok, refused = bounds.certifiable([0.1, 2.0, 5.0], 100, 0.95)
    assert ok == [5.0] and [b for b, _ in refused] == [0.1, 2.0]


def test_the_zero_flip_bound_is_near_the_best_possible_and_sets_the_images_a_budget_needs():
    for n, confidence in ((100, 0.95), (1000, 0.9875), (5000, 0.9875)):
        best = 1 - (1 - confidence) ** (1 / n)      # theta_R = 0, theta_W = best: 0 flips w.p. 1 - confidence
        assert best <= bounds.zero_flip_bound(n, confidence) <= 1.15 * best
    need = bounds.samples_needed(0.001, 0.9875)
    assert bounds.zero_flip_bound(need, 0.9875) <= 0.001 < bounds.zero_flip_bound(need - 1, 0.9875)
    assert 4000 < need < 5000


@pytest.mark.parametrize("theta_w, theta_r, n, confidence, normal_fails", [
    (0.03, 0.0, 100, 0.95, True),
    (0.05, 0.02, 50, 0.95, True),
    (0.002, 0.0, 1000, 0.9875, True),
    (0.01, 0.005, 400, 0.95, False),
])
def test_the_bound_covers_the_true_drop(theta_w, theta_r, n, confidence, normal_fails):
    """Simulated certification sets: the bound is below the true drop in at most 1 - confidence of them
    (+ 3 Monte-Carlo standard deviations); the normal approximation misses far more often at small n."""
    draws = 2000
    counts = np.random.default_rng(24).multinomial(n, [theta_w, theta_r, 1 - theta_w - theta_r], size=draws)
    pairs, times = np.unique(counts[:, :2], axis=0, return_counts=True)
    true_drop = 100.0 * (theta_w - theta_r)
    alpha = 1 - confidence
    slack = 3 * math.sqrt(alpha * confidence / draws)

    def missed(bound) -> float:
        return sum(t for (w, r), t in zip(pairs, times) if bound(int(w), int(r)) < true_drop) / draws
    assert missed(lambda w, r: paired_drop_bound(w, r, n, confidence)[1]) <= alpha + slack
    if normal_fails:
        assert missed(lambda w, r: normal_bound(w, r, n, confidence)) > alpha + slack


@pytest.mark.parametrize("w, r, n, confidence", [(2000, 1000, 100_000, 0.95), (400, 200, 20_000, 0.9875),
                                                 (1000, 900, 20_000, 0.9875)])
def test_at_large_n_the_bound_is_the_normal_one_within_a_tenth_of_its_margin(w, r, n, confidence):
    drop, exact = paired_drop_bound(w, r, n, confidence)
    normal = normal_bound(w, r, n, confidence)
    assert normal <= exact <= normal + 0.1 * (normal - drop)


def test_the_supremum_over_the_nuisance_is_that_of_a_fine_grid():
    for w, r, n, delta, confidence in ((3, 1, 500, 0.008, 0.9875), (30, 15, 2500, 0.013, 0.9875),
                                       (0, 0, 100, 0.03, 0.95), (10, 0, 200, 0.09, 0.95), (2, 40, 1000, -0.02, 0.9875)):
        top = bounds.clopper_pearson_upper(w + r, n, bounds.GAMMA_SHARE * (1 - confidence))
        pis = np.linspace(abs(delta), top, 2001)
        fine = bounds.extreme_probabilities(w, r, n, (pis + delta) / 2, np.maximum(pis - delta, 0) / 2).max()
        assert bounds._p_value(w, r, n, delta, top) == pytest.approx(fine, rel=1e-6, abs=1e-12)


def test_the_extreme_probability_is_the_trinomial_sum():
    n, theta_w, theta_r = 14, 0.15, 0.1
    for w, r in ((0, 0), (2, 1), (1, 3), (3, 3)):
        total = 0.0
        for a in range(n + 1):
            for b in range(n + 1 - a):
                if a - b < w - r or (a - b == w - r and a + b <= w + r):
                    total += (math.factorial(n) / (math.factorial(a) * math.factorial(b) * math.factorial(n - a - b))
                              * theta_w ** a * theta_r ** b * (1 - theta_w - theta_r) ** (n - a - b))
        assert bounds.extreme_probabilities(w, r, n, theta_w, theta_r)[0] == pytest.approx(total, rel=1e-10)


def test_the_search_expects_the_bound_of_the_scaled_counts():
    assert expected_drop_bound(6, 2, 1000, 3000, 0.9875) == paired_drop_bound(18, 6, 3000, 0.9875)[1]
    with pytest.raises(ValueError):
        bounds.upper_bound(3, 2, 4, 0.95)

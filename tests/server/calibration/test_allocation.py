import math

import numpy as np
import pytest

from qpart.server.calibration import allocation


def random_problem(rng, layers: int, lo: int = 2, hi: int = 8) -> allocation.Problem:
    gamma = tuple(float(g) for g in rng.choice([10, 100, 1000, 10_000, 100_000], layers) * rng.uniform(0.5, 2, layers))
    q = tuple(float(x) for x in 10 ** rng.uniform(-1, 3, layers))
    return allocation.Problem(gamma, q, float(rng.uniform(1.0, 1.8)), (lo,) * layers, (hi,) * layers)


def test_integer_allocation_is_within_5_percent_of_the_exhaustive_optimum():
    """Small instances: up to 4 layers, widths 2..8, the same noise constraint."""
    rng = np.random.default_rng(0)
    worst, checked = 1.0, 0
    for _ in range(600):
        problem = random_problem(rng, int(rng.integers(1, 5)))
        budget = float(np.exp(rng.uniform(np.log(problem.noise(problem.b_max)), np.log(problem.noise(problem.b_min)))))
        best, found = allocation.exhaustive(problem, budget), allocation.integer(problem, budget)
        assert (best is None) == (found is None)
        if best is None:
            continue
        assert problem.noise(found) <= budget * (1 + 1e-9)
        worst = max(worst, problem.payload(found) / problem.payload(best))
        checked += 1
    assert checked > 500 and worst <= 1.05, worst


def test_continuous_solution_satisfies_kkt():
    problem = allocation.Problem((1000.0, 10.0, 100.0), (5.0, 50.0, 1.0), math.log(4), (1, 1, 1), (16, 16, 16))
    budget = 0.01
    b = allocation.continuous(problem, budget)
    assert problem.noise(b) == pytest.approx(budget, rel=1e-9)
    # eq 39: equal marginal noise per payload bit, q_i e^{-α b_i} / γ_i, across layers
    marginal = [q * math.exp(-problem.alpha * bi) / g for q, bi, g in zip(problem.q, b, problem.gamma)]
    assert max(marginal) == pytest.approx(min(marginal), rel=1e-9)
    # eq 40 directly
    total = sum(problem.gamma)
    for q, g, bi in zip(problem.q, problem.gamma, b):
        assert bi == pytest.approx(math.log(q * total / (budget * g)) / problem.alpha)


def test_box_constraints_and_relaxation_bound():
    rng = np.random.default_rng(1)
    for _ in range(200):
        problem = random_problem(rng, 5)
        budget = problem.noise((5,) * 5)
        b = allocation.continuous(problem, budget)
        assert np.all(b >= 2 - 1e-9) and np.all(b <= 8 + 1e-9)
        assert problem.noise(b) <= budget * (1 + 1e-6)
        found = allocation.integer(problem, budget)
        assert problem.payload(b) <= problem.payload(found) + 1e-6   # the relaxation bounds the integer optimum


def test_infeasible_budget():
    problem = allocation.Problem((10.0,), (100.0,), 1.0, (2,), (4,))
    assert allocation.integer(problem, problem.noise((4,)) / 2) is None
    assert allocation.integer(problem, problem.noise((2,))) == (2,)

"""Speculative drafting's rules: greedy gives the target's own tokens; sampling follows the target's distribution
(a chi-square test over many seeds, which a wrong acceptance rule fails); bad draft probabilities are refused."""
import numpy as np
import pytest
import torch

from qpart.common import sampling, speculative
from qpart.common.errors import InvalidArgument

V = 6                                                     # a vocabulary small enough to test every pair of tokens
RNG = np.random.default_rng(7)
P = RNG.dirichlet(np.full(V, 2.0), size=V) * 0.7 + 0.3 / V  # the target's next-token distribution after token i
Q = RNG.dirichlet(np.full(V, 2.0), size=V) * 0.7 + 0.3 / V  # the draft's: different, as a small draft's is


def two_tokens(seed: int, k: int, rule=speculative.verify) -> tuple[int, int]:
    """The first two tokens after context token 0, by rounds of k drafts verified against P."""
    pick, context, out = sampling.Sampling(temperature=1.0, seed=seed), [0], []
    while len(out) < 2:
        position, drafts, rows = len(context), [], []
        last = context[-1]
        for i in range(k):
            d, q = speculative.draft(np.log(Q[last]), pick, position + i)
            drafts.append(d)
            rows.append(q)
            last = d
        scores = np.log(P[[context[-1]] + drafts])                           # [k + 1, V]
        m, token = rule(scores, drafts, np.array(rows), pick, position)
        context += drafts[:m] + [token]
        out += drafts[:m] + [token]
    return out[0], out[1]


def chi_square_p(observed: np.ndarray, expected: np.ndarray) -> float:
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = observed.size - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(statistic / 2, dtype=torch.float64)))


def joint_counts(k: int, n: int, rule=speculative.verify) -> np.ndarray:
    counts = np.zeros((V, V))
    for seed in range(n):
        a, b = two_tokens(seed, k, rule)
        counts[a, b] += 1
    return counts


EXPECTED = P[0][:, None] * P                              # P(t1 = a, t2 = b) = P[0][a] P[a][b]
N = 6000


@pytest.mark.parametrize("k", [1, 3])
def test_sampled_tokens_follow_the_targets_distribution(k):
    # chi-square goodness of fit of the first two tokens' joint distribution (36 cells, 35 degrees of freedom)
    p_value = chi_square_p(joint_counts(k, N), N * EXPECTED)
    assert p_value > 1e-3, f"k={k}: p = {p_value:.2e}"


def test_a_wrong_acceptance_rule_fails_the_same_test():
    def accept_by_q_over_p(scores, drafts, q, pick, position):    # the ratio upside down
        p = speculative.probabilities(scores, pick.temperature)
        for i, d in enumerate(drafts):
            u = np.random.default_rng([pick.seed, position + i, speculative.ACCEPT]).random()
            if u * p[i, d] >= q[i, d]:
                residual = np.maximum(p[i] - q[i], 0)
                return i, speculative._draw(residual / residual.sum(), pick.seed, position + i, speculative.RESIDUAL)
        return len(drafts), sampling.pick(scores[-1], pick, position + len(drafts))

    assert chi_square_p(joint_counts(3, N, accept_by_q_over_p), N * EXPECTED) < 1e-6


def test_greedy_gives_the_targets_greedy_tokens_whatever_the_drafts():
    scores = np.log(P[[0, 1, 2, 3]])                       # target rows at the positions of d1, d2, d3 and after
    best = [int(np.argmax(r)) for r in scores]
    for drafts in ([best[0], best[1], best[2]], [best[0], (best[1] + 1) % V, best[2]], [(best[0] + 1) % V, 0, 0]):
        m, token = speculative.verify(scores, drafts, None, sampling.Sampling(), 5)
        agree = next((i for i, d in enumerate(drafts) if d != best[i]), len(drafts))
        assert (m, token) == (agree, best[agree])


@pytest.mark.parametrize("q, drafts, message", [
    (np.array([[0.5, 0.6, 0, 0, 0, 0]]), [0], "sum to 1.1"),
    (np.array([[1.2, -0.2, 0, 0, 0, 0]]), [0], "non-negative"),
    (np.array([[np.nan, 1, 0, 0, 0, 0]]), [1], "finite"),
    (np.array([[0.5, 0.5, 0, 0, 0, 0]]), [2], "give 0"),
])
def test_bad_draft_probabilities_are_refused(q, drafts, message):
    with pytest.raises(InvalidArgument, match=message):
        speculative.check_draft_probabilities(q, drafts)

"""Speculative drafting's rules, shared by the device that drafts and the server that verifies.

A device's draft model proposes k tokens d_1 .. d_k after its context, d_i drawn from the draft's distribution
q_i (greedy: q_i's most likely token). The server runs the target once over the context's last token and the
k drafts; its scores give p_1 .. p_{k+1}, p_i the target's distribution at d_i's position.
    greedy    accept d_i while it is p_i's most likely token; the token after the accepted prefix is the
              target's most likely there: exactly the target's own greedy tokens, whatever the draft
    sampling  accept d_i with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection draw from the
              residual norm(max(0, p_i - q_i)); with all k accepted draw one more from p_{k+1}. The tokens then
              follow the target's distribution whatever q is, provided each d_i was drawn from the q_i sent
              (Leviathan et al. 2023, Chen et al. 2023)
Randomness is seeded by (seed, position, stream) as in qpart.common.sampling, one stream per use, so a resent
context draws the same again, and the draft's draws, the acceptance tests and the residual draws are
independent of one another.
"""
import numpy as np

from qpart.common import sampling
from qpart.common.errors import InvalidArgument

ACCEPT, RESIDUAL, DRAFT = 1, 2, 3       # random streams beside sampling.pick's (which draws the bonus token)
SUM_TOLERANCE = 1e-3                    # a draft distribution's sum may differ from 1 by this much


def probabilities(scores: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(scores / temperature) over the last axis, float64 (as sampling.pick draws from)."""
    scores = np.asarray(scores, np.float64)
    z = (scores - scores.max(axis=-1, keepdims=True)) / temperature
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _draw(p: np.ndarray, seed: int, position: int, stream: int) -> int:
    u = np.random.default_rng([seed, position, stream]).random()
    cumulative = np.cumsum(p)
    return int(min(np.searchsorted(cumulative, u * cumulative[-1], side="right"), len(p) - 1))


def draft(scores: np.ndarray, pick: sampling.Sampling, position: int) -> tuple[int, np.ndarray | None]:
    """(the draft's token at `position`, the distribution it was drawn from: None when greedy) from the draft
    model's scores [vocab] of the position before it."""
    scores = np.asarray(scores, np.float64).reshape(-1)                       # [vocab]
    if not np.isfinite(scores).all():
        raise InvalidArgument("the draft model's scores hold a value that is not finite; no token can be drafted")
    if pick.greedy:
        return int(np.argmax(scores)), None
    q = probabilities(scores, pick.temperature)
    return _draw(q, pick.seed, position, DRAFT), q


def check_draft_probabilities(q: np.ndarray, drafts: list[int]) -> np.ndarray:
    """q [k, vocab] as sent, checked: finite, non-negative, each row summing to 1 within SUM_TOLERANCE, each
    drafted token's probability above 0; returned normalised, float64."""
    q = np.asarray(q, np.float64)
    if not np.isfinite(q).all() or (q < 0).any():
        raise InvalidArgument("draft probabilities must be finite and non-negative")
    sums = q.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > SUM_TOLERANCE:
        raise InvalidArgument(f"draft probabilities of draft {worst} sum to {sums[worst]:.6g}; each draft's must sum "
                              f"to 1 within {SUM_TOLERANCE:g}")
    chosen = q[np.arange(len(drafts)), drafts]
    if (chosen <= 0).any():
        i = int(np.argmin(chosen))
        raise InvalidArgument(f"draft {i} is token {drafts[i]}, which its draft probabilities give 0: a drafted token "
                              f"must be drawn from the probabilities sent")
    return q / sums[:, None]


def verify(scores: np.ndarray, drafts: list[int], q: np.ndarray | None, pick: sampling.Sampling,
           position: int) -> tuple[int, int]:
    """(drafts accepted m, the target's token after them) from the target's scores [k + 1, vocab] at the
    positions of d_1 .. d_k and the one after; `position` is d_1's. q [k, vocab]: the draft's distributions
    (checked), None when greedy."""
    k = len(drafts)
    scores = np.asarray(scores, np.float64)                                   # [k + 1, vocab]
    if not np.isfinite(scores).all():
        raise InvalidArgument("the model's scores hold a value that is not finite; no token can be picked")
    if pick.greedy:
        best = np.argmax(scores, axis=1)                                      # [k + 1]
        m = 0
        while m < k and best[m] == drafts[m]:
            m += 1
        return m, int(best[m])
    p = probabilities(scores, pick.temperature)                               # [k + 1, vocab]
    for i, d in enumerate(drafts):
        u = np.random.default_rng([pick.seed, position + i, ACCEPT]).random()
        if u * q[i, d] < p[i, d]:                                             # u < min(1, p / q)
            continue
        residual = np.maximum(p[i] - q[i], 0.0)
        if residual.sum() <= 0:                       # p == q up to rounding: a rejection has no mass to move
            residual = p[i]
        return i, _draw(residual / residual.sum(), pick.seed, position + i, RESIDUAL)
    return k, sampling.pick(scores[k], pick, position + k)

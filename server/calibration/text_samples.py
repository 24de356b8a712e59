"""A language model's samples: scored positions of its text, for the catalog (validation) and the test check.

One sample is one position p of a part's token stream: its input is the window of WINDOW tokens before it
(tokens[p - WINDOW : p]), its target the token at p. The accuracy a language model's budget speaks of is
next-token agreement with the float model: a sample agrees when a split's top-1 at the window's last position
is the float model's; the drop is the points of agreement lost (the float model agrees with itself on every
sample, so no sample flips to right). Perplexity (of the true tokens) is reported beside it.

Only each window's last position is scored. Positions are drawn at random (seeded) without replacement, so
each sample's outcome is a draw from the part's positions and the exact bound of qpart.server.calibration.bounds
applies as it does to images. Scoring every position of a window would give WINDOW times the samples for the
same compute, but positions of one window share their context and flip together: a binomial bound over them
would claim far more certainty than the text gives.
"""
import numpy as np

from qpart.common.errors import FailedPrecondition
from qpart.server.models import text

WINDOW = 64           # tokens of context before each scored position
SEED = 20             # seeds the positions drawn


def positions(lo: int, hi: int, count: int, seed: int = SEED) -> np.ndarray:
    """`count` distinct positions in [lo, hi), sorted; all of them when there are fewer."""
    if hi - lo <= count:
        return np.arange(lo, max(hi, lo), dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(np.arange(lo, hi, dtype=np.int64), count, replace=False))


def windows(stream: np.ndarray, at: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(float32 inputs [n, window]: the tokens before each position, int64 targets [n]: the token at it)."""
    index = at[:, None] + np.arange(-window, 0)[None, :]                                    # [n, window]
    return stream[index].astype(np.float32), stream[at]


def stream(model, part: str) -> np.ndarray:
    corpus = text.open_corpus(model.card.get("data"))
    tokens = corpus.tokens(part)
    if len(tokens) < 2 * WINDOW + 2:
        raise FailedPrecondition(f"model {model.name!r}: the {part} text has {len(tokens)} tokens, too few to "
                                 f"score positions after a {WINDOW}-token window")
    return tokens


def validation(model, search: int, certification: int) -> tuple[tuple, tuple]:
    """((x, targets) to search on, (x, targets) to certify on): positions of the validation text's first and
    second halves (each window lies within its half)."""
    tokens = stream(model, "validation")
    half = len(tokens) // 2
    return (windows(tokens, positions(WINDOW, half, search)),
            windows(tokens, positions(half + WINDOW, len(tokens), certification, SEED + 1)))


def test(model, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, targets) of `count` positions of the test text."""
    tokens = stream(model, "test")
    return windows(tokens, positions(WINDOW, len(tokens), count, SEED + 2))

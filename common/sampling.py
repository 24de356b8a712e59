"""How a language model's next token is picked from its scores: greedy, or a seeded draw at a temperature.

The same code picks on the server (Generate) and on a device that runs the whole model, so a plan that moves
the cut does not change which token a seed draws. The draw for position p uses its own generator seeded with
(seed, p): a context resent after a lost session draws the same tokens again (see Sampling in service.proto).
"""
import math
from dataclasses import dataclass

import numpy as np

from qpart.common.errors import InvalidArgument

MAX_TEMPERATURE = 100.0
MAX_SEED = (1 << 64) - 1


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0    # 0: greedy; above 0: softmax(scores / temperature) is drawn from
    seed: int = 0               # with the token's position, seeds the draw

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE):
            raise InvalidArgument(f"sampling temperature must be in [0, {MAX_TEMPERATURE:g}] (0: greedy), got "
                                  f"{self.temperature:.6g}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgument(f"sampling seed must be in [0, 2^64), got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def pick(scores: np.ndarray, sampling: Sampling, position: int) -> int:
    """The token at `position` from the scores [vocab] of the position before it."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)              # [vocab]
    if not np.isfinite(scores).all():
        raise InvalidArgument("the model's scores hold a value that is not finite; no token can be picked")
    if sampling.greedy:
        return int(np.argmax(scores))
    z = (scores - scores.max()) / sampling.temperature
    p = np.exp(z)
    cumulative = np.cumsum(p / p.sum())                                    # [vocab]
    u = np.random.default_rng([sampling.seed, position]).random()
    return int(min(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1))

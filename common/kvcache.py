"""What a language model's run keeps between steps: the positions seen and each attention node's keys and values.

One KVCache belongs to one sequence (or a batch of sequences that advance together) on one side of a cut:
the device keeps one for its head, the server one for the tail, each holding only its own attention
nodes. The executors (qpart.common.torchnet, qpart.common.npexec) read `position` for the positions of a
run and append to `layers`; the run's caller advances the cache once the whole run is done, so that every
node of the run sees the same starting position. Arrays are the executor's own (torch tensors or numpy
arrays), [n, kv_heads, positions, head_dim].
"""
from dataclasses import dataclass, field

from qpart.common.errors import InvalidArgument, ResourceExhausted


@dataclass
class KVCache:
    max_positions: int                          # the model's context length: position + a run's T must stay within
    position: int = 0                           # positions already seen: the next token's position
    layers: dict = field(default_factory=dict)  # attention node name -> (keys, values), each [n, kv_heads, position, head_dim]

    def check_run(self, length: int) -> None:
        """Refuse a run of `length` positions that would pass the context length, before anything runs."""
        if length < 1:
            raise InvalidArgument(f"a run needs at least one position, got {length}")
        if self.position + length > self.max_positions:
            raise ResourceExhausted(f"{self.position} positions seen and {length} more exceed the model's context of "
                                    f"{self.max_positions}")

    def advance(self, length: int) -> None:
        self.position += length

    def truncate(self, positions: int) -> None:
        """Keep the first `positions` positions (drafted tokens not accepted leave the cache)."""
        if not 0 <= positions <= self.position:
            raise InvalidArgument(f"a cache holding {self.position} positions cannot keep {positions}")
        self.layers = {name: (k[:, :, :positions], v[:, :, :positions]) for name, (k, v) in self.layers.items()}
        self.position = positions

    @property
    def nbytes(self) -> int:
        """Bytes the cached keys and values hold (float32)."""
        return sum(4 * (_elements(k) + _elements(v)) for k, v in self.layers.values())


def _elements(array) -> int:
    return int(array.numel()) if hasattr(array, "numel") else int(array.size)


def cache_bytes_per_position(attention_nodes) -> int:
    """Bytes one position costs in a cache holding these attention ops' keys and values (float32)."""
    return sum(2 * 4 * a.kv_heads * a.head_dim for a in attention_nodes)

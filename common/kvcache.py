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


class RaggedCache:
    """Several sequences' KVCaches run together in one pass (the server batching verifications): sequence i
    holds caches[i].position positions and brings lengths[i] new ones, padded to the longest run. The torch
    executor reads `starts` for each row's positions and calls `attend` for each attention node; `commit` then
    appends each sequence's own new keys and values to its cache and advances it."""

    def __init__(self, caches: list[KVCache], lengths: list[int]):
        import torch
        self.caches, self.lengths = caches, lengths
        for c, t in zip(caches, lengths):
            c.check_run(t)
        self.starts = torch.tensor([c.position for c in caches])                  # [n]
        self.max_positions = min(c.max_positions for c in caches)
        self.new: dict = {}                                                       # node -> (k, v) [n, Hkv, T, hd]

    def check_run(self, length: int) -> None:
        if length != max(self.lengths):
            raise InvalidArgument(f"a ragged run is {max(self.lengths)} positions long, got {length}")

    def advance(self, length: int) -> None:
        pass                                    # each sequence advances by its own length in commit()

    def positions(self, length: int):
        """[n, length] each row's positions (padding clamped to the last valid one)."""
        import torch
        p = self.starts[:, None] + torch.arange(length)[None, :]
        return p.clamp(max=self.max_positions - 1)

    def attend(self, name: str, k, v):
        """(keys, values [n, Hkv, P + T, hd], mask [n, 1, T, P + T]) for an attention node's new k, v
        [n, Hkv, T, hd]: the rows' cached keys left-aligned in P = the longest cache, then the run's."""
        import torch
        n, kv_heads, t, head_dim = k.shape
        width = int(self.starts.max())
        past_k, past_v = k.new_zeros(n, kv_heads, width, head_dim), v.new_zeros(n, kv_heads, width, head_dim)
        for i, c in enumerate(self.caches):
            if name in c.layers and c.position:
                past_k[i, :, :c.position], past_v[i, :, :c.position] = c.layers[name][0][0], c.layers[name][1][0]
        self.new[name] = (k, v)
        slots = torch.arange(width + t)
        seen_past = slots[None, None, :] < self.starts[:, None, None]                      # [n, 1, P + T]
        seen_run = (slots[None, :] >= width) & (slots[None, :] - width <= torch.arange(t)[:, None])   # [T, P + T]
        mask = (seen_past | seen_run[None]).unsqueeze(1)                                   # [n, 1, T, P + T]
        return torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), mask

    def commit(self) -> None:
        import torch
        for i, (c, t) in enumerate(zip(self.caches, self.lengths)):
            for name, (k, v) in self.new.items():
                mine_k, mine_v = k[i:i + 1, :, :t], v[i:i + 1, :, :t]
                if name in c.layers and c.position:
                    mine_k = torch.cat([c.layers[name][0][:, :, :c.position], mine_k], dim=2)
                    mine_v = torch.cat([c.layers[name][1][:, :, :c.position], mine_v], dim=2)
                c.layers[name] = (mine_k, mine_v)
            c.advance(t)


def _elements(array) -> int:
    return int(array.numel()) if hasattr(array, "numel") else int(array.size)


def cache_bytes_per_position(attention_nodes) -> int:
    """Bytes one position costs in a cache holding these attention ops' keys and values (float32)."""
    return sum(2 * 4 * a.kv_heads * a.head_dim for a in attention_nodes)

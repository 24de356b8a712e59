"""Split: where a model is cut and how many bits each tensor that travels gets.

The one value type for a split, whoever holds it: a catalog entry, a priced candidate, a plan id,
a fixed plan from a device, a pattern whose accuracy is measured.
"""
from dataclasses import dataclass

from qpart.common import quant

FLOAT = quant.FLOAT_BITS


@dataclass(frozen=True)
class Split:
    cut: int                             # nodes[0:cut] run on the device (0: none; the node count: all)
    weight_bits: tuple[int, ...]         # bits of each device-side conv2d/linear node, in order (32: float32)
    activation_bits: tuple[int, ...]     # bits of each tensor crossing the cut, in order (32: float32)
    granularity: str = quant.PER_TENSOR  # scale sharing of the head's weights: per tensor or per output channel

    def __post_init__(self):
        object.__setattr__(self, "weight_bits", tuple(int(b) for b in self.weight_bits))
        object.__setattr__(self, "activation_bits", tuple(int(b) for b in self.activation_bits))

    @property
    def ships_head(self) -> bool:
        return self.cut > 0

    @property
    def bits(self) -> tuple[int, ...]:
        """Every width of the split: the weights', then the activations'."""
        return self.weight_bits + self.activation_bits


def uniform(profile, cut: int, bits: int, granularity: str = quant.PER_TENSOR) -> Split:
    """Every weight and crossing tensor of a cut at the same width (32: the float32 split)."""
    c = profile.cut(cut)
    return Split(cut, (bits,) * len(c.weight_nodes), (bits,) * len(c.tensors), granularity)

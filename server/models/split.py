"""Split: where a model is cut and how many bits each tensor that travels gets.

The one value type for a split, whoever holds it: a catalog entry, a priced candidate, a plan id,
a fixed plan from a device, a pattern whose accuracy is measured.
"""
from dataclasses import dataclass

from qpart.common import quant

FLOAT = quant.FLOAT_BITS


@dataclass(frozen=True)
class Split:
    partition_point: int                 # p: the device runs learnable layers 1..p-1 (p = L+1: all of them)
    weight_bits: tuple[int, ...]         # bits of device layers 1..p-1 (32: float32)
    activation_bits: int                 # bits of the activation at the cut (32: float32; 0 when p = L+1)
    granularity: str = quant.PER_TENSOR  # scale sharing of the head's weights: per tensor or per output channel

    def __post_init__(self):
        object.__setattr__(self, "weight_bits", tuple(int(b) for b in self.weight_bits))

    @property
    def ships_head(self) -> bool:
        return self.partition_point > 1

"""Measure a quantization split's effect: top-1 drop and logit noise against the float model.

The split is the one the runtime executes: the weights of learnable layers 1..p-1 quantized at
their bit widths (fake-quantized with the same numpy quantizer the head builder uses), the
activation at cut p quantized with the static range the plan ships, everything else in float.
Activations after each layer are cached by the prefix of bit widths that produced them, so that
splits sharing a prefix only recompute the rest.
"""
import collections
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from qpart.common import network, quant
from qpart.server.models.repository import Model
from qpart.server.models.split import FLOAT, Split

CHUNK = 500   # samples per torch call

@dataclass(frozen=True)
class Measurement:
    accuracy: float      # top-1, percent
    drop: float          # float accuracy minus this accuracy, percentage points
    drop_ucb: float      # one-sided 95 % upper confidence bound of the drop, points (paired flips)
    flips_to_wrong: int  # samples the float model got right and this split gets wrong
    flips_to_right: int
    samples: int
    noise: float         # mean squared logit error against the float model


Z_95 = 1.6448536269514722


def paired_drop_bound(to_wrong: int, to_right: int, n: int, z: float = Z_95,
                      bound_samples: int | None = None) -> tuple[float, float]:
    """(drop, one-sided upper confidence bound) in points from paired outcomes: each sample contributes
    +1 (the float model right, the split wrong), -1 or 0. With bound_samples, the bound is the one a
    measurement on that many samples with the same outcome rates would give (what certifying a split
    measured on a search split can expect)."""
    d = (to_wrong - to_right) / n
    variance = max((to_wrong + to_right) / n - d * d, 0.0)
    return 100.0 * d, 100.0 * (d + z * math.sqrt(variance / (bound_samples or n)))


def fake_quantize_torch(x: torch.Tensor, params: quant.QuantParams) -> torch.Tensor:
    """The numpy quantizer's arithmetic in torch (float32, round half to even): identical results."""
    scale = torch.tensor(float(params.scale[0]), dtype=torch.float32)
    zero = float(params.zero_point[0])
    codes = torch.clamp(torch.round(x / scale) + zero, 0, (1 << params.bits) - 1)
    return (codes - zero) * scale


class Evaluator:
    def __init__(self, model: Model, x: np.ndarray, labels: np.ndarray, cache_bytes: int = 2 << 30):
        self.model = model
        self.labels = torch.from_numpy(np.asarray(labels))
        x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        # activations travel as chunks of CHUNK samples, images channels-last (faster CPU convolutions)
        self.x = [c.contiguous(memory_format=torch.channels_last) if c.dim() == 4 else c for c in x.split(CHUNK)]
        self.profile = model.profile
        self.learnable_at = {layer.position: layer.index for layer in self.profile.layers}
        self.ops = [model.segment(i, i + 1)[0] for i in range(len(model.spec.layers))]
        self._weights: dict = {}
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_size = 0
        self.cache_bytes = cache_bytes
        self.evaluations = 0
        self.float_logits = self._forward(Split(self.profile.num_layers + 1, (FLOAT,) * self.profile.num_layers, 0))
        self.float_correct = self.float_logits.argmax(1) == self.labels
        self.float_accuracy = 100.0 * float(self.float_correct.float().mean())

    def _weight(self, index: int, bits: int, granularity: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (index, bits, granularity)
        if key not in self._weights:
            layer = self.profile.layers[index - 1]
            out = []
            for pname in ("weight", "bias"):
                value = self.model.params.get(network.parameter_name(layer.position, pname))
                if value is not None and bits != FLOAT:
                    value = quant.fake_quantize(value, bits, granularity if pname == "weight" else quant.PER_TENSOR)
                tensor = None if value is None else torch.from_numpy(np.asarray(value, np.float32))
                if tensor is not None and tensor.dim() == 4:
                    tensor = tensor.contiguous(memory_format=torch.channels_last)
                out.append(tensor)
            self._weights[key] = tuple(out)
        return self._weights[key]

    def _apply(self, position: int, h: list[torch.Tensor], bits: int, granularity: str) -> list[torch.Tensor]:
        op = self.ops[position]
        if position not in self.learnable_at:
            fn = op
        else:
            weight, bias = self._weight(self.learnable_at[position], bits, granularity)
            if isinstance(op, torch.nn.Linear):
                def fn(t):
                    return F.linear(t, weight, bias)
            else:
                def fn(t):
                    return F.conv2d(t, weight, bias, op.stride, op.padding, op.dilation, op.groups)
        with torch.inference_mode():
            return [fn(chunk) for chunk in h]

    def _steps(self, split: Split) -> list[tuple]:
        """The (position, key) sequence of the split: ('w', position, bits) per layer, ('a', bits) at the cut."""
        p = split.partition_point
        cut = self.profile.cut_position(p)
        steps = []
        for position in range(len(self.ops) + 1):
            if position == cut and p <= self.profile.num_layers and split.activation_bits != FLOAT:
                steps.append(("a", split.activation_bits))
            if position == len(self.ops):
                break
            index = self.learnable_at.get(position)
            bits = split.weight_bits[index - 1] if index is not None and index < p else FLOAT
            steps.append(("w", position, bits, split.granularity if bits != FLOAT else ""))
        return steps

    def _forward(self, split: Split) -> torch.Tensor:
        steps = self._steps(split)
        start, h = 0, self.x
        for n in range(len(steps), 0, -1):          # the longest cached prefix
            cached = self._cache.get(tuple(steps[:n]))
            if cached is not None:
                self._cache.move_to_end(tuple(steps[:n]))
                start, h = n, cached[0]
                break
        for n in range(start, len(steps)):
            step = steps[n]
            if step[0] == "a":
                params = self.model.activation_params(split.partition_point, step[1])
                with torch.inference_mode():
                    h = [fake_quantize_torch(chunk, params) for chunk in h]
            else:
                h = self._apply(step[1], h, step[2], split.granularity)
            self._remember(tuple(steps[: n + 1]), h)
        return torch.cat(h)

    def _remember(self, key: tuple, h: list[torch.Tensor]) -> None:
        size = sum(chunk.numel() * chunk.element_size() for chunk in h)
        if size > self.cache_bytes // 4:
            return
        self._cache[key] = (h, size)
        self._cache_size += size
        while self._cache_size > self.cache_bytes:
            _, (_, old_size) = self._cache.popitem(last=False)
            self._cache_size -= old_size

    def logits(self, split: Split) -> torch.Tensor:
        self.evaluations += 1
        return self._forward(split)

    def measure(self, split: Split) -> Measurement:
        logits = self.logits(split)
        correct = logits.argmax(1) == self.labels
        to_wrong = int((self.float_correct & ~correct).sum())
        to_right = int((~self.float_correct & correct).sum())
        n = len(self.labels)
        drop, ucb = paired_drop_bound(to_wrong, to_right, n)
        noise = float(((logits - self.float_logits) ** 2).sum(1).mean())
        return Measurement(100.0 * float(correct.float().mean()), drop, ucb, to_wrong, to_right, n, noise)

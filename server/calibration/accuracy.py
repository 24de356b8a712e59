"""Measure a split's effect: top-1 drop and logit noise against the float model.

The split is the one the runtime executes: the weights of the device-side conv2d and linear nodes
quantized at their bit widths (fake-quantized with the same numpy quantizer the head builder uses),
each tensor crossing the cut quantized with the static range the plan ships, everything else in
float. The tensors alive after each step are cached by the prefix of steps that produced them, so
that splits sharing a prefix only recompute the rest. Each measurement's drop bound is the exact one of
qpart.server.calibration.bounds (valid at every number of samples, unlike the normal approximation).
"""
import collections
from dataclasses import dataclass

import numpy as np
import torch

from qpart.common import quant
from qpart.common.torchnet import node_parameters, run_node
from qpart.server.calibration import bounds
from qpart.server.models.repository import Model
from qpart.server.models.split import FLOAT, Split, uniform

CHUNK = 500   # samples per torch call


@dataclass(frozen=True)
class Measurement:
    accuracy: float      # top-1, percent
    drop: float          # float accuracy minus this accuracy, percentage points
    drop_ucb: float      # exact one-sided upper confidence bound of the drop, points (the evaluator's confidence)
    flips_to_wrong: int  # samples the float model got right and this split gets wrong
    flips_to_right: int
    samples: int
    noise: float         # mean squared logit error against the float model


CONFIDENCE = 0.95


def paired_drop_bound(to_wrong: int, to_right: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(drop, one-sided upper confidence bound at `confidence`) in points from paired outcomes: each sample
    contributes +1 (the float model right, the split wrong), -1 or 0. The bound is exact at every n
    (qpart.server.calibration.bounds): every certified figure comes from here."""
    return 100.0 * (to_wrong - to_right) / n, 100.0 * bounds.upper_bound(to_wrong, to_right, n, confidence)


def expected_drop_bound(to_wrong: int, to_right: int, n: int, samples: int, confidence: float = CONFIDENCE) -> float:
    """The bound (points) a measurement on `samples` samples with the same flip rates can expect: the exact bound
    of the counts scaled to that many samples, rounded. Only a guide for the search (what certifying a split
    measured on the search split can expect); it certifies nothing."""
    w = min(round(to_wrong * samples / n), samples)
    r = min(round(to_right * samples / n), samples - w)
    return 100.0 * bounds.upper_bound(w, r, samples, confidence)


def fake_quantize_torch(x: torch.Tensor, params: quant.QuantParams) -> torch.Tensor:
    """The numpy quantizer's arithmetic in torch (float32, round half to even): identical results."""
    scale = torch.tensor(float(params.scale[0]), dtype=torch.float32)
    zero = float(params.zero_point[0])
    codes = torch.clamp(torch.round(x / scale) + zero, 0, (1 << params.bits) - 1)
    return (codes - zero) * scale


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


class Evaluator:
    def __init__(self, model: Model, x: np.ndarray, labels: np.ndarray, cache_bytes: int = 2 << 30,
                 confidence: float = CONFIDENCE):
        self.model = model
        self.confidence = confidence            # of the drop bounds this evaluator reports
        self.profile = model.profile
        self.nodes = list(model.spec.nodes)
        self.labels = torch.from_numpy(np.asarray(labels))
        x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        self.x = [_channels_last(c) for c in x.split(CHUNK)]    # chunks; images channels-last (faster convolutions)
        self._float = [node_parameters(node, model.params, channels_last=True) for node in self.nodes]
        self._weights: dict = {}
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_size = 0
        self.cache_bytes = cache_bytes
        self.evaluations = 0
        n = self.profile.num_nodes
        self.float_logits = self._forward(uniform(self.profile, n, FLOAT))
        self.float_correct = self.float_logits.argmax(1) == self.labels
        self.float_accuracy = 100.0 * float(self.float_correct.float().mean())

    def _params(self, index: int, bits: int, granularity: str) -> dict:
        if bits == FLOAT:
            return self._float[index]
        key = (index, bits, granularity)
        if key not in self._weights:
            out = {}
            for pname, value in self._float[index].items():
                array = np.ascontiguousarray(value.numpy())
                q = quant.fake_quantize(array, bits, granularity if pname == "weight" else quant.PER_TENSOR)
                out[pname] = _channels_last(torch.from_numpy(q))
            self._weights[key] = out
        return self._weights[key]

    def _steps(self, split: Split) -> list[tuple]:
        """('w', node, bits, granularity) per node; ('a', bits per crossing tensor) at the cut, when quantized."""
        cut = self.profile.cut(split.cut)
        widths = dict(zip(cut.weight_nodes, split.weight_bits))
        steps = []
        for i in range(self.profile.num_nodes + 1):
            if i == split.cut and cut.runs_tail and any(b != FLOAT for b in split.activation_bits):
                steps.append(("a", tuple(split.activation_bits)))
            if i == self.profile.num_nodes:
                break
            bits = widths.get(i, FLOAT)
            steps.append(("w", i, bits, split.granularity if bits != FLOAT else ""))
        return steps

    def _run(self, step: tuple, env: dict, split: Split) -> dict:
        env = dict(env)
        if step[0] == "a":
            for name, bits in zip(self.profile.cut(split.cut).tensors, step[1]):
                if bits != FLOAT:
                    params = self.model.activation_params(name, bits)
                    env[name] = [fake_quantize_torch(c, params) for c in env[name]]
            return env
        i = step[1]
        node, params = self.nodes[i], self._params(i, step[2], step[3])
        args = [env[name] for name in node.inputs]
        env[node.name] = [run_node(node, [a[k] for a in args], params) for k in range(len(self.x))]
        for name in node.inputs:
            if self.profile.last_use[name] == i:
                env.pop(name, None)
        return env

    def _forward(self, split: Split) -> torch.Tensor:
        steps = self._steps(split)
        start, env = 0, {self.profile.input_name: self.x}
        for n in range(len(steps), 0, -1):          # the longest cached prefix
            cached = self._cache.get(tuple(steps[:n]))
            if cached is not None:
                self._cache.move_to_end(tuple(steps[:n]))
                start, env = n, cached[0]
                break
        with torch.inference_mode():
            for n in range(start, len(steps)):
                env = self._run(steps[n], env, split)
                self._remember(tuple(steps[: n + 1]), env)
        return torch.cat(env[self.profile.outputs[0]])

    def _remember(self, key: tuple, env: dict) -> None:
        size = sum(c.numel() * c.element_size() for chunks in env.values() for c in chunks)
        if size > self.cache_bytes // 4:
            return
        self._cache[key] = (env, size)
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
        drop, ucb = paired_drop_bound(to_wrong, to_right, n, self.confidence)
        noise = float(((logits - self.float_logits) ** 2).sum(1).mean())
        return Measurement(100.0 * float(correct.float().mean()), drop, ucb, to_wrong, to_right, n, noise)

"""Measure a split's effect: top-1 drop and logit noise against the float model.

The split is the one the runtime executes: the weights of the device-side conv2d and linear nodes
quantized at their bit widths (fake-quantized with the same numpy quantizer the head builder uses),
each tensor crossing the cut quantized with the static range the plan ships, everything else in
float. Samples stream through in chunks (qpart.server.calibration.streaming): an evaluation holds one chunk's
tensors at a time, and keeps for later evaluations, in a cache bounded by the bytes it really holds, only the
tensors they can start from: each chunk's input, where a split leaves the float path (the float prefix other
splits share: the accuracy model's sweeps), and what a split sends across its cut. Every figure is the one a
whole-batch run gives, bit for bit, whatever is cached. Each measurement's drop bound is the exact one of
qpart.server.calibration.bounds (valid at every number of samples, unlike the normal approximation).
"""
import collections
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from qpart.common import quant
from qpart.common.torchnet import node_parameters, run_node
from qpart.server.calibration import bounds, streaming
from qpart.server.calibration.streaming import (CHUNK, DEFAULT_CACHE_BYTES, Inputs, PrefixCache,  # noqa: F401
                                                as_inputs, channels_last, compact, expand)
from qpart.server.models.repository import Model
from qpart.server.models.split import FLOAT, Split, uniform

WEIGHT_CACHE_BYTES = 128 << 20   # fake-quantized weights kept per evaluator (node, bits, granularity), least recent out


@dataclass(frozen=True)
class Measurement:
    accuracy: float      # top-1, percent
    drop: float          # float accuracy minus this accuracy, percentage points
    drop_ucb: float      # exact one-sided upper confidence bound of the drop, points (the evaluator's confidence)
    flips_to_wrong: int  # samples the float model got right and this split gets wrong
    flips_to_right: int
    samples: int
    noise: float         # mean squared logit error against the float model
    perplexity: float | None = None   # a language model's: exp of the mean cross-entropy of the true next tokens


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
    codes = torch.round(x / scale)                       # the same operations in place: one temporary, not five
    codes.add_(zero).clamp_(0, (1 << params.bits) - 1)
    return codes.sub_(zero).mul_(scale)


_OWNERS = itertools.count()


class Evaluator:
    """Logits, top-1 drop and logit noise of splits on a fixed set of samples (x: float32 inputs [n, *shape], or
    streaming.Inputs such as raw images preprocessed chunk by chunk). `cache` (shared by several evaluators, e.g.
    a catalog build's) or a cache of its own of `cache_bytes` keeps the tensors later evaluations start from.

    A language model's samples are token windows [n, T]; only each window's last position is scored (its logits
    [n, vocab]). labels None: the float model's own top-1 is the label, so the drop is the loss of next-token
    agreement with the float model (qpart.server.calibration.text_samples); targets, the true next tokens, give
    each measurement's perplexity."""

    def __init__(self, model: Model, x, labels: np.ndarray | None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 confidence: float = CONFIDENCE, cache: PrefixCache | None = None, targets: np.ndarray | None = None):
        self.model = model
        self.confidence = confidence            # of the drop bounds this evaluator reports
        self.profile = model.profile
        self.nodes = list(model.spec.nodes)
        self.inputs: Inputs = as_inputs(x)
        self.labels = torch.from_numpy(np.asarray(labels)) if labels is not None else None
        self.targets = torch.from_numpy(np.asarray(targets, np.int64)) if targets is not None else None
        for given in (self.labels, self.targets):
            if given is not None and len(self.inputs) != len(given):
                raise ValueError(f"{len(self.inputs)} inputs for {len(given)} labels")
        self.cache = cache if cache is not None else PrefixCache(cache_bytes)
        self._owner = next(_OWNERS)             # this evaluator's keys in a shared cache
        self._float = [node_parameters(node, model.params, channels_last=True) for node in self.nodes]
        self._weights: collections.OrderedDict = collections.OrderedDict()
        self._weights_size = 0
        self._backwards = False                 # chunk order, alternated (see _forward)
        self._last: tuple | None = None         # (split, logits) of the last evaluation
        self.evaluations = 0
        n = self.profile.num_nodes
        self.float_logits = self._forward(uniform(self.profile, n, FLOAT))
        if self.labels is None:
            self.labels = self.float_logits.argmax(1)
        self.float_correct = self.float_logits.argmax(1) == self.labels
        self.float_accuracy = 100.0 * float(self.float_correct.float().mean())

    def _params(self, index: int, bits: int, granularity: str) -> dict:
        if bits == FLOAT:
            return self._float[index]
        key = (index, bits, granularity)
        if key in self._weights:
            self._weights.move_to_end(key)
            return self._weights[key][0]
        out = {}
        for pname, value in self._float[index].items():
            array = np.ascontiguousarray(value.numpy())
            q = quant.fake_quantize(array, bits, granularity if pname == "weight" else quant.PER_TENSOR)
            out[pname] = channels_last(torch.from_numpy(q))
        size = sum(t.numel() * t.element_size() for t in out.values())
        self._weights[key] = (out, size)
        self._weights_size += size
        while self._weights_size > WEIGHT_CACHE_BYTES and len(self._weights) > 1:
            _, (_, old) = self._weights.popitem(last=False)
            self._weights_size -= old
        return out

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

    @staticmethod
    def _kept(steps: list[tuple]) -> set[int]:
        """The prefix lengths worth keeping: where the split leaves the float path (splits that differ after it
        share what came before: the accuracy model's sweeps) and its cut (splits that differ only in what crosses)."""
        kept = {n for n, s in enumerate(steps) if s[0] == "a"}
        leaves = next((n for n, s in enumerate(steps) if s[0] == "a" or s[2] != FLOAT), None)
        if leaves:
            kept.add(leaves)
        return kept

    def _run(self, step: tuple, env: dict, split: Split) -> dict:
        env = dict(env)
        if step[0] == "a":
            for name, bits in zip(self.profile.cut(split.cut).tensors, step[1]):
                if bits != FLOAT:
                    env[name] = fake_quantize_torch(env[name], self.model.activation_params(name, bits))
            return env
        i = step[1]
        node, params = self.nodes[i], self._params(i, step[2], step[3])
        env[node.name] = run_node(node, [env[name] for name in node.inputs], params)
        for name in node.inputs:
            if self.profile.last_use[name] == i:
                env.pop(name, None)
        return env

    def _start(self, k: int, keys: list[tuple]) -> tuple[int, dict]:
        """(steps done, tensors alive) for chunk k: the longest prefix cached, else its input."""
        for n in range(len(keys) - 1, 0, -1):
            if keys[n] in self.cache:
                return n, self.cache.get(keys[n])
        kept = self.cache.get(keys[0])
        if kept is None:
            x = self.inputs.chunk(k)
            self.cache.put(keys[0], {"input": compact(x)}, lasting=True)
        else:
            x = expand(kept["input"], self.profile.input_shape[0])
        return 0, {self.profile.input_name: x}

    def _forward(self, split: Split) -> torch.Tensor:
        """The split's logits, chunk by chunk. Chunks go forwards and backwards in turn, so that a cache too small
        for every chunk's tensors still serves the chunks the last evaluation ended with."""
        steps = self._steps(split)
        kept = self._kept(steps)
        out: list = [None] * self.inputs.chunks
        order = range(len(out) - 1, -1, -1) if self._backwards else range(len(out))
        self._backwards = not self._backwards
        with torch.inference_mode():
            for k in order:
                keys = [(self._owner, k, tuple(steps[:n])) for n in range(len(steps) + 1)]
                start, env = self._start(k, keys)
                for n in range(start, len(steps)):
                    env = self._run(steps[n], env, split)
                    if n + 1 in kept:
                        self.cache.put(keys[n + 1], env)
                out[k] = env[self.profile.outputs[0]]
                if self.profile.sequence is not None:
                    out[k] = out[k][:, -1]                          # [n, T, vocab] -> [n, vocab]: the last position
        streaming.evaluated()
        return torch.cat(out) if out else torch.zeros((0, 0))

    def release(self) -> None:
        """Drop what this evaluator keeps in the cache (it will not be asked again, or may start afresh)."""
        self.cache.discard(self._owner)
        self._weights.clear()
        self._weights_size = 0

    def logits(self, split: Split) -> torch.Tensor:
        self.evaluations += 1
        if self._last is not None and self._last[0] == split:
            return self._last[1]
        logits = self._forward(split)
        self._last = (split, logits)
        return logits

    def judge(self, logits: torch.Tensor) -> Measurement:
        """The measurement of logits against the float model's on these samples."""
        correct = logits.argmax(1) == self.labels
        to_wrong = int((self.float_correct & ~correct).sum())
        to_right = int((~self.float_correct & correct).sum())
        n = len(self.labels)
        drop, ucb = paired_drop_bound(to_wrong, to_right, n, self.confidence)
        noise = float(((logits - self.float_logits) ** 2).sum(1).mean())
        perplexity = (float(torch.exp(torch.nn.functional.cross_entropy(logits, self.targets)))
                      if self.targets is not None else None)
        return Measurement(100.0 * float(correct.float().mean()), drop, ucb, to_wrong, to_right, n, noise, perplexity)

    def measure(self, split: Split) -> Measurement:
        return self.judge(self.logits(split))

"""This device's compute, measured once: which backend runs its heads, and how fast, as the plan is priced.

Every installed backend (qpart.device.backends) runs the same small head through its own executor: two
3x3 convolutions and a linear layer with 8-bit weights, the ops and the weight format heads are made of
(a matrix product alone flatters numpy, whose convolutions go through im2col). Each is timed in rounds
(qpart.common.timing: the median of the windows, its spread, outliers refused). `auto` resolves here,
before the plan, to the fastest: that backend runs every head, and its rate prices the plan. So the
backend that runs is the one priced, and auto never runs a backend its own timing found slower.
A rate outside SANE_MAC_RATE is refused with a warning that names it; the plan is then priced with the
profile's rate.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from qpart.common import network, quant, tensors, timing
from qpart.device import backends
from qpart.v1 import network_pb2 as pb

SANE_MAC_RATE = (1e5, 1e14)    # MACs per second a head executor can plausibly run at (a microcontroller to a GPU)


@dataclass(frozen=True)
class Compute:
    backend: str                      # what runs every head: numpy or torch (on CUDA where torch sees a GPU), or
                                      # onnxruntime where named (image models' heads only)
    macs_per_second: float            # its MAC rate on the benchmark head, median; 0: refused, price with the profile
    spread: float = 0.0               # (upper - lower quartile) / median of its windows
    rates: dict = field(default_factory=dict)   # every backend timed: name -> MACs per second
    warning: str = ""                 # a rate refused as out of range, "" when none was
    seconds_per_node: float = 0.0     # the backend's cost of running one op beside its MACs (node_overhead; 0 on
                                      # onnxruntime, which runs no language model, the only plans it prices)

    def describe(self) -> str:
        others = ", ".join(f"{n} {r / 1e9:.2f}" for n, r in self.rates.items() if n != self.backend)
        return (f"{self.macs_per_second / 1e9:.2f} GMAC/s (spread {100 * self.spread:.0f}%) on the {self.backend} "
                f"backend" + (f"; also timed: {others} GMAC/s" if others else ""))


def benchmark_head(seed: int = 0) -> tuple[pb.NetworkSpec, network.NetworkProfile, dict]:
    """(spec, profile, params) of the benchmark head: [16, 24, 24] -> conv 3x3 32 -> ReLU -> conv 3x3/2 32 -> ReLU
    -> flatten -> linear 64, weights at 8 bits per output channel (4.3 M MACs per input)."""
    spec = pb.NetworkSpec(format_version=network.FORMAT_VERSION, input_shape=[16, 24, 24], input="x", outputs=["fc"])
    conv = dict(kernel_h=3, kernel_w=3, padding_h=1, padding_w=1, dilation_h=1, dilation_w=1, groups=1, bias=True)
    spec.nodes.add(name="c1", inputs=["x"], conv2d=pb.Conv2dOp(in_channels=16, out_channels=32, stride_h=1, stride_w=1,
                                                               **conv))
    spec.nodes.add(name="r1", inputs=["c1"], activation=pb.ActivationOp(function=pb.RELU))
    spec.nodes.add(name="c2", inputs=["r1"], conv2d=pb.Conv2dOp(in_channels=32, out_channels=32, stride_h=2, stride_w=2,
                                                               **conv))
    spec.nodes.add(name="r2", inputs=["c2"], activation=pb.ActivationOp(function=pb.RELU))
    spec.nodes.add(name="f", inputs=["r2"], flatten=pb.FlattenOp())
    spec.nodes.add(name="fc", inputs=["f"], linear=pb.LinearOp(in_features=32 * 12 * 12, out_features=64, bias=True))
    profile = network.analyze(spec)
    rng = np.random.default_rng(seed)
    params: dict[str, dict[str, tensors.CompactTensor]] = {}
    for node in profile.nodes:
        for pname, shape in node.param_shapes.items():
            w = rng.normal(0, 0.05, shape).astype(np.float32)
            if pname == "weight":
                codes, qp = quant.quantize(w, 8, quant.PER_CHANNEL)
                params.setdefault(node.name, {})[pname] = tensors.CompactTensor(tuple(shape), codes.astype(np.uint8), qp)
            else:
                params.setdefault(node.name, {})[pname] = tensors.CompactTensor(tuple(shape), values=w)
    return spec, profile, params


def backend_rate(name: str, windows: int = 7, window_s: float = 0.04, clock=time.perf_counter) -> timing.Timing:
    """Timing of the MACs per second backend `name` runs the benchmark head at, one input at a time."""
    spec, profile, params = benchmark_head()
    backend = backends.make(spec, profile, params, name)
    x = np.random.default_rng(1).random((1, *profile.input_shape), np.float32)
    macs = sum(node.macs for node in profile.nodes)
    return timing.rate(lambda: backend.run(x), macs, windows, window_s, clock)


STEP_BLOCKS = 4        # pre-norm transformer blocks of the per-op benchmark, width 8


def step_benchmark(seed: int = 0) -> tuple[pb.NetworkSpec, dict]:
    """(spec, params) of a tiny language model whose MACs are negligible: ids -> token and position embeddings ->
    STEP_BLOCKS pre-norm blocks (layer norm, q/k/v projection and slices, causal attention, projection, residual
    add; layer norm, GELU feed-forward, residual add) of width 8, 8-bit weights as heads carry them. One decode
    step of it is a language model's per-token work but its MACs: the ops a step runs, each once."""
    width, rng = 8, np.random.default_rng(seed)
    spec = pb.NetworkSpec(format_version=network.SEQUENCE_FORMAT_VERSION, input_shape=[64], input="ids",
                          sequence=pb.SequenceSpec(vocab_size=16, max_positions=64))
    params: dict[str, dict[str, tensors.CompactTensor]] = {}

    def add(name, inputs, weights=None, **op):
        spec.nodes.add(name=name, inputs=inputs, **op)
        for pname, shape in (weights or {}).items():
            w = rng.normal(0, 0.3, shape).astype(np.float32)
            if pname == "weight" and len(shape) == 2:
                codes, qp = quant.quantize(w, 8, quant.PER_CHANNEL)
                params.setdefault(name, {})[pname] = tensors.CompactTensor(tuple(shape), codes.astype(np.uint8), qp)
            else:
                params.setdefault(name, {})[pname] = tensors.CompactTensor(tuple(shape), values=w)
        return name

    def linear(name, x, n_in, n_out):
        return add(name, [x], {"weight": (n_out, n_in), "bias": (n_out,)},
                   linear=pb.LinearOp(in_features=n_in, out_features=n_out, bias=True))

    def norm(name, x):
        return add(name, [x], {"weight": (width,), "bias": (width,)},
                   layer_norm=pb.LayerNormOp(dim=width, eps=1e-5, bias=True))

    x = add("wte", ["ids"], {"weight": (16, width)}, embedding=pb.EmbeddingOp(num_embeddings=16, embedding_dim=width))
    x = add("wpe", [x], {"weight": (64, width)}, position_embedding=pb.PositionEmbeddingOp(max_positions=64, dim=width))
    for i in range(STEP_BLOCKS):
        qkv = linear(f"b{i}.qkv", norm(f"b{i}.ln1", x), width, 3 * width)
        q, k, v = (add(f"b{i}.{n}", [qkv], slice=pb.SliceOp(axis=1, start=j * width, stop=(j + 1) * width))
                   for j, n in enumerate("qkv"))
        a = add(f"b{i}.attn", [q, k, v], attention=pb.AttentionOp(heads=1, kv_heads=1, head_dim=width, scale=0.35))
        x = add(f"b{i}.res1", [x, linear(f"b{i}.proj", a, width, width)], add=pb.AddOp())
        h = add(f"b{i}.gelu", [linear(f"b{i}.fc", norm(f"b{i}.ln2", x), width, 4 * width)],
                activation=pb.ActivationOp(function=pb.GELU))
        x = add(f"b{i}.res2", [x, linear(f"b{i}.out", h, 4 * width, width)], add=pb.AddOp())
    spec.outputs.append(x)
    return spec, params


def node_overhead(name: str, rounds: int = 15, clock=time.perf_counter) -> float:
    """Seconds backend `name` spends per node beside its MACs: the median decode step of step_benchmark (one
    position after 32 cached, as a language model's next token), over its node count."""
    from qpart.common.kvcache import KVCache
    spec, params = step_benchmark()
    backend = backends.make(spec, network.analyze(spec), params, name)
    warm = np.zeros((1, 32), np.float32)
    runs = []
    for _ in range(rounds):
        cache = KVCache(64)
        backend.run(warm, cache)
        started = clock()
        backend.run(np.ones((1, 1), np.float32), cache)
        runs.append(clock() - started)
    return float(np.median(runs)) / len(spec.nodes)


def measure(choice: str = "auto", clock=time.perf_counter) -> Compute:
    """The backend that runs heads (`choice`, or for auto the fastest installed one) and its MAC rate."""
    backends.require(choice)
    # auto: what runs every head, a language model's too, so onnxruntime (image models' heads only) is not among
    # them; named, it runs the heads of image models and a language model's head is refused
    names = [n for n in backends.installed() if backends.runs_sequences(n)] if choice == "auto" else [choice]
    timed = {name: backend_rate(name, clock=clock) for name in names}
    refused = {n: timing.in_range(f"the {n} backend's MAC rate", t.median, *SANE_MAC_RATE, unit=" MAC/s")
               for n, t in timed.items()}
    sane = [n for n in names if not refused[n]] or names
    best = max(sane, key=lambda n: timed[n].median)
    rate = timed[best]
    return Compute(best, 0.0 if refused[best] else rate.median, rate.spread, {n: t.median for n, t in timed.items()},
                   "; ".join(w for w in refused.values() if w),
                   min(node_overhead(best, clock=clock), 1.0) if backends.runs_sequences(best) else 0.0)

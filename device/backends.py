"""The head's executors: numpy always; torch (with CUDA on a Jetson) where it is installed; onnxruntime (image
models' heads, qpart.device.onnx_head) where the `onnxruntime` extra is installed.

"auto" picks by what is installed and, among those, what runs this head fastest here: the median of runs
in rounds on a batch of one. (qpart-device, the daemon and SplitClient resolve auto before the plan instead,
qpart.device.compute, so that the backend that runs is the one the plan is priced with.) The numpy backend keeps the weights as they travelled (one byte per code for 8 bits or
fewer) and dequantizes a node's weights as it runs (a language model's, run once per token, once and kept);
torch dequantizes once into float32 tensors.
"""
import importlib.util
import time

import numpy as np

from qpart.common import npexec, timing
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.common.network import NetworkProfile
from qpart.common.tensors import CompactTensor
from qpart.v1 import network_pb2 as pb

NAMES = ("auto", "numpy", "torch", "onnxruntime")
EXTRAS = {"torch": "torch (the CPU build: pip install torch)",
          "onnxruntime": "onnx and onnxruntime: pip install 'qpart[device,onnxruntime]'"}


class NumpyBackend:
    name = "numpy"

    def __init__(self, spec: pb.NetworkSpec, profile: NetworkProfile, params: dict[str, dict[str, CompactTensor]]):
        self.nodes = list(spec.nodes)
        self.params = [params.get(node.name, {}) for node in self.nodes]
        self.inputs, self.outputs = (spec.input,), tuple(spec.outputs)
        keep = set(self.outputs)
        last = {name: i for i, node in enumerate(self.nodes) for name in node.inputs}
        self.free = [[t for t, j in last.items() if j == i and t not in keep] for i in range(len(self.nodes))]
        self._dequantized: list[dict] | None = None

    def run(self, x: np.ndarray, cache=None) -> list[np.ndarray]:
        env = self.tensors(x, keep=False, cache=cache)
        return [env[name] for name in self.outputs]

    def tensors(self, x: np.ndarray, keep: bool = True, cache=None) -> dict[str, np.ndarray]:
        """Every tensor of a run by name (keep=False: only those still needed at the end, the outputs); cache: a
        language model's KVCache, advanced by the run's positions."""
        env = {self.inputs[0]: np.ascontiguousarray(x, np.float32)}
        if cache is not None:
            cache.check_run(x.shape[1])
        floats = self._floats() if cache is not None else None
        for i, (node, params, free) in enumerate(zip(self.nodes, self.params, self.free)):
            weights = floats[i] if floats is not None else {name: tensor.float() for name, tensor in params.items()}
            env[node.name] = npexec.run_node(node, [env[name] for name in node.inputs], weights, cache)
            for name in free if not keep else ():
                del env[name]
        if cache is not None:
            cache.advance(x.shape[1])
        return env

    def _floats(self) -> list[dict]:
        """Every node's weights dequantized, made at a language model's first run and kept: it runs once per token,
        and dequantizing every weight at each one doubled a step of the zoo's GPT (0.6 -> 1.25 ms). Within the
        memory the head was checked against (qpart.device.head.check_memory counts 4 bytes per weight beside its
        codes); a classifier's head keeps only its codes."""
        if self._dequantized is None:
            self._dequantized = [{name: t.float() for name, t in params.items()} for params in self.params]
        return self._dequantized

    @property
    def weight_bytes(self) -> int:
        held = sum(t.nbytes for p in self.params for t in p.values())
        return held + (sum(v.nbytes for p in self._dequantized for v in p.values()) if self._dequantized else 0)


class TorchBackend:
    def __init__(self, spec: pb.NetworkSpec, profile: NetworkProfile, params: dict[str, dict[str, CompactTensor]]):
        import torch
        from qpart.common.torchnet import GraphModule
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name = "torch-cuda" if self.device == "cuda" else "torch"
        flat = {f"{node}.{pname}": t.float() for node, p in params.items() for pname, t in p.items()}
        self.module = GraphModule(spec, profile, flat).to(self.device)
        self.module.params = [{k: v.to(self.device) for k, v in p.items()} for p in self.module.params]
        self.weight_bytes = sum(v.numel() * 4 for p in self.module.params for v in p.values())

    def run(self, x: np.ndarray, cache=None) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device), cache=cache)
            return [y.cpu().numpy() for y in out]

    def tensors(self, x: np.ndarray, cache=None) -> dict[str, np.ndarray]:
        """Every tensor of a run by name."""
        from qpart.common.torchnet import run_node
        with self.torch.inference_mode():
            env = {self.module.inputs[0]: self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)}
            if cache is not None:
                cache.check_run(x.shape[1])
            for node, params in zip(self.module.nodes, self.module.params):
                env[node.name] = run_node(node, [env[name] for name in node.inputs], params, cache)
            if cache is not None:
                cache.advance(x.shape[1])
            return {name: value.cpu().numpy() for name, value in env.items()}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed() -> list[str]:
    return (["numpy"] + (["torch"] if _has("torch") else [])
            + (["onnxruntime"] if _has("onnxruntime") and _has("onnx") else []))


def require(choice: str) -> None:
    """Refuse an unknown backend, or a named one this device has not installed (naming what it needs)."""
    if choice not in NAMES:
        raise InvalidArgument(f"unknown backend {choice!r}; use one of {', '.join(NAMES)}")
    if choice != "auto" and choice not in installed():
        raise FailedPrecondition(f"backend {choice} is not installed here (it needs {EXTRAS[choice]}); use numpy "
                                 f"(or auto)")


def runs_sequences(name: str) -> bool:
    """Whether a backend runs language models' heads (onnxruntime runs image models' only)."""
    return name != "onnxruntime"


def fastest(candidates: list, x: np.ndarray, rounds: int = 7, clock=time.perf_counter):
    """The candidate backend that runs x fastest: the median of runs taken in rounds over all candidates
    (drift of the machine hits each alike), a first run each excluded."""
    samples = [[] for _ in candidates]
    for backend in candidates:
        backend.run(x)
    for _ in range(rounds):
        for i, backend in enumerate(candidates):
            started = clock()
            backend.run(x)
            samples[i].append(clock() - started)
    medians = [timing.Timing.of(s).median for s in samples]
    return candidates[medians.index(min(medians))]


def sample_input(profile: NetworkProfile, n: int = 1) -> np.ndarray:
    """n random inputs of the head's model: images in [0, 1), or token ids of a language model (a run of at most
    16 positions)."""
    rng = np.random.default_rng(0)
    if profile.sequence is not None:
        vocab, positions = profile.sequence
        return rng.integers(0, vocab, (n, min(positions, 16))).astype(np.float32)
    return rng.random((n, *profile.input_shape), np.float32)


def make(spec: pb.NetworkSpec, profile: NetworkProfile, params: dict, choice: str = "auto"):
    """The backend to run a head with: `choice`, or with "auto" the fastest installed one on this head (onnxruntime
    only for image models' heads)."""
    require(choice)
    if choice != "auto":
        return _build(choice, spec, profile, params)
    names = [n for n in installed() if profile.sequence is None or runs_sequences(n)]
    candidates = [_build(n, spec, profile, params) for n in names]
    if len(candidates) == 1:
        return candidates[0]
    return fastest(candidates, sample_input(profile))


def _build(name: str, spec: pb.NetworkSpec, profile: NetworkProfile, params: dict):
    if name == "numpy":
        return NumpyBackend(spec, profile, params)
    if name == "torch":
        return TorchBackend(spec, profile, params)
    from qpart.device.onnx_head import OnnxBackend
    return OnnxBackend(spec, profile, params)


def mac_rate(backend: str = "numpy", seconds: float = 0.3, width: int = 512, batch: int = 8) -> float:
    """MACs per second of a float32 matrix product [batch, width] x [width, width] on a backend, the median over
    windows of ~`seconds` in all: the kernel the server's own MAC rate is timed with (so that encoding priced
    in the server's MAC-equivalents can be stretched to a board's speed). Heads are timed by qpart.device.compute."""
    if backend.startswith("torch"):
        from qpart.common.torchnet import mac_rate as torch_rate
        return torch_rate(seconds, width, batch)
    rng = np.random.default_rng(0)
    x, w = rng.random((batch, width), np.float32), rng.random((width, width), np.float32)
    return timing.rate(lambda: x @ w, batch * width * width, windows=9, window_s=seconds / 9).median

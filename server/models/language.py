"""Language models in the network description: a builder for their graphs and the check against the module.

    spec, params = layouts.convert(module)            # GPT-2, Llama (transformers) or nanoGPT's layout
    check_logits(module, spec, params, ids)          # refuses a description that computes something else

A language model's description takes token ids [T] (float32 whole numbers) and gives logits [T, vocab];
its blocks are built from the format-3 ops of qpart.common.sequence. Every parameter of the module must be
used by the description, or the conversion is refused naming the first one left (nothing dropped silently).
"""
import numpy as np
import torch

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.common.kvcache import KVCache
from qpart.common.torchnet import GraphModule
from qpart.v1 import network_pb2 as pb

RTOL, ATOL = 1e-3, 1e-4     # |graph - module| <= (ATOL + RTOL) * max|module|, as the vision import checks


class Unsupported(InvalidArgument):
    """A part of a language model the description cannot express, named by module path and setting."""


class LogitsMismatch(InvalidArgument):
    """The description computes other logits than the module."""


class SequenceBuilder:
    """Appends nodes to a language model's description; parameters are taken from the module's tensors and
    marked used."""

    def __init__(self, module: torch.nn.Module, vocab: int, max_positions: int, input_name: str = "tokens"):
        self.spec = pb.NetworkSpec(format_version=network.SEQUENCE_FORMAT_VERSION, input=input_name,
                                   input_shape=[max_positions])
        self.spec.sequence.vocab_size, self.spec.sequence.max_positions = vocab, max_positions
        self.params: dict[str, np.ndarray] = {}
        self.names: dict[int, set] = {}            # a tensor -> its names (tied weights have several)
        for name, p in module.named_parameters(remove_duplicate=False):
            self.names.setdefault(id(p), set()).add(name)
        self.unused = set().union(*self.names.values())
        self.model = type(module).__name__

    def node(self, name: str, op: str, message, inputs: list[str], source: str = "", **params) -> str:
        out = pb.Node(name=name, inputs=inputs, source=source or name)
        getattr(out, op).CopyFrom(message)
        self.spec.nodes.append(out)
        for pname, value in params.items():
            if value is None:
                continue
            self.used(value)
            self.params[network.parameter_name(name, pname)] = value.detach().to(torch.float64).cpu().numpy()
        return name

    def linear(self, name: str, x: str, weight: torch.Tensor, bias: torch.Tensor | None, source: str = "",
               transposed: bool = False) -> str:
        """A linear node from a [out, in] weight (transposed: an [in, out] one, as GPT-2's Conv1D keeps it)."""
        w = weight.t() if transposed else weight
        message = pb.LinearOp(in_features=w.shape[1], out_features=w.shape[0], bias=bias is not None)
        self.used(weight)
        return self.node(name, "linear", message, [x], source, weight=w, bias=bias)

    def used(self, tensor: torch.Tensor) -> None:
        self.unused -= self.names.get(id(tensor), set())

    def finish(self, outputs: list[str]) -> tuple[pb.NetworkSpec, dict[str, np.ndarray]]:
        if self.unused:
            first = sorted(self.unused)[0]
            raise Unsupported(f"{self.model}: parameter {first!r} ({len(self.unused)} in all) is not used by any "
                              "op the conversion knows; a layer of this module is not supported")
        self.spec.outputs.extend(outputs)
        network.analyze(self.spec)
        return self.spec, {k: v.astype(np.float32) for k, v in self.params.items()}


def module_logits(module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """[n, T] int64 -> [n, T, vocab]: a transformers model's `.logits`, or a module's first output."""
    with torch.no_grad():
        out = module.eval()(ids)
    out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)
    return out.float()


def check_logits(module: torch.nn.Module, spec: pb.NetworkSpec, params: dict, ids: np.ndarray) -> dict:
    """Run the description (whole, then token by token with a cache) and the module on the same ids [n, T];
    raise LogitsMismatch naming the gap if they differ."""
    expected = module_logits(module, torch.from_numpy(ids.astype(np.int64)))
    graph = GraphModule(spec, network.analyze(spec), params)
    x = torch.from_numpy(ids.astype(np.float32))
    with torch.no_grad():
        whole = graph(x)[0]
        cache = KVCache(spec.sequence.max_positions)
        stepped = torch.cat([graph(x[:, t:t + 1], cache=cache)[0] for t in range(x.shape[1])], dim=1)
    bound = (ATOL + RTOL) * float(expected.abs().max())
    worst = 0.0
    for how, got in (("whole", whole), ("token by token", stepped)):
        got = got[:, -expected.shape[1]:]        # a module may give the last positions' only (nanoGPT: the last)
        gap = float((expected - got).abs().max()) if got.shape == expected.shape else float("inf")
        agree = float((expected.argmax(-1) == got.argmax(-1)).float().mean()) if got.shape == expected.shape else 0.0
        if gap > bound or agree < 1.0:
            raise LogitsMismatch(f"the description's logits ({how}) differ from {type(module).__name__}'s: max "
                                 f"difference {gap:.3g} (allowed {bound:.3g}), next-token agreement {100 * agree:.1f} % "
                                 f"on {ids.shape[0]} sequences of {ids.shape[1]} tokens")
        worst = max(worst, gap)
    return {"sequences": int(ids.shape[0]), "tokens": int(ids.shape[1]), "max_difference": worst}

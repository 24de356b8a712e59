"""Float evaluation helpers: outputs, accuracy, and the range of every tensor of a network."""
import numpy as np
import torch

from qpart.common import network
from qpart.common.torchnet import GraphModule, run_node
from qpart.v1 import network_pb2 as pb

EVAL_BATCH = 500


def chunks(x, batch: int = EVAL_BATCH):
    """x itself chunk by chunk when it is an array; any other iterable of arrays as it comes."""
    if isinstance(x, np.ndarray):
        return (x[i:i + batch] for i in range(0, len(x), batch))
    return x


def logits(module: torch.nn.Module, x, batch: int = EVAL_BATCH) -> np.ndarray:
    """The first output of a GraphModule (or any module returning a tensor or a tuple) over x: an array
    [n, *input_shape] or an iterable of such arrays."""
    out = []
    with torch.inference_mode():
        for chunk in chunks(x, batch):
            y = module(torch.from_numpy(np.ascontiguousarray(chunk)))
            out.append((y[0] if isinstance(y, (tuple, list)) else y).numpy())
    return np.concatenate(out)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float(np.mean(predictions == labels))


def tensor_ranges(spec: pb.NetworkSpec, params: dict, x, first_output: list | None = None) -> dict[str, list[float]]:
    """{tensor: [min, max]} of the input and every node's output over the samples x (an array or an iterable
    of arrays), in one float pass; first_output, where given, gets the network's first output of each chunk
    (what `logits` would compute, without a second pass)."""
    module = GraphModule(spec, network.analyze(spec), params)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}

    def seen(name: str, value: torch.Tensor) -> None:
        lo[name] = min(lo.get(name, np.inf), float(value.min()))
        hi[name] = max(hi.get(name, -np.inf), float(value.max()))

    with torch.inference_mode():
        for chunk in chunks(x):
            env = {spec.input: torch.from_numpy(np.ascontiguousarray(chunk))}
            seen(spec.input, env[spec.input])
            for node, node_params, free in zip(module.nodes, module.params, module.free):
                env[node.name] = run_node(node, [env[n] for n in node.inputs], node_params)
                seen(node.name, env[node.name])
                for name in free:
                    del env[name]
            if first_output is not None:
                first_output.append(env[spec.outputs[0]].numpy())
    return {name: [lo[name], hi[name]] for name in lo}

"""Float evaluation helpers: logits, accuracy and the activation range at every cut."""
import numpy as np
import torch

from qpart.common import network
from qpart.common.torchnet import build
from qpart.v1 import network_pb2 as pb

EVAL_BATCH = 1000


def logits(module: torch.nn.Module, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(module(torch.from_numpy(x[i:i + batch])).numpy())
    return np.concatenate(out)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float(np.mean(predictions == labels))


def cut_ranges(spec: pb.NetworkSpec, params: dict, x: np.ndarray) -> list[tuple[float, float]]:
    """[(min, max)] of the activation crossing cut p = 1..L over the samples x, from one float pass."""
    profile = network.analyze(spec)
    positions = [profile.cut_position(p) for p in range(1, profile.num_layers + 1)]
    lo = {pos: np.inf for pos in positions}
    hi = {pos: -np.inf for pos in positions}
    module = build(spec, params)
    with torch.inference_mode():
        for i in range(0, len(x), EVAL_BATCH):
            h = torch.from_numpy(x[i:i + EVAL_BATCH])
            for position, layer in enumerate([*module, None]):
                if position in lo:
                    lo[position] = min(lo[position], float(h.min()))
                    hi[position] = max(hi[position], float(h.max()))
                if layer is not None:
                    h = layer(h)
    return [(lo[pos], hi[pos]) for pos in positions]

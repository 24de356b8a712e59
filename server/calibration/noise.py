"""The accuracy model (eqs 18-22), measured on the validation split only.

For each conv2d and linear node i, only its weights are quantized, at each width of a sweep; for each
tensor crossing each catalog cut, only that tensor (as it crosses that cut). The logit noise r (quantized minus float logits) gives:
    e_i(b) = E||r||^2                       (eqs 18-19)
    v_i(b) = E<r, u>^2                      u = (e_j - e_k)/sqrt(2): towards the runner-up class j of
                                            each sample, the direction of its smallest flipping
                                            perturbation r_adv (the DeepFool closed form on the logits)
    v_i(b) ~= q_i e^{-α b}                  one α for all layers and cuts (least squares over b in FIT_BITS)
    t_i = e_i / v_i                         robustness (eq 22, projection reading): how much of the
                                            noise energy reaches the decision
Noise of several layers adds (checked, see `additivity`); with projected noise variance σ^2 = Σ v_i
a sample at logit margin d flips with probability Φ(-d / (sqrt(2) σ)), which gives the expected top-1
drop and so the noise budget C(a) for an accuracy budget a (the paper's C, eq 23, made explicit).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from qpart.common import quant
from qpart.server.calibration.accuracy import Evaluator
from qpart.server.models.split import FLOAT, Split

SWEEP_BITS = (2, 3, 4, 6, 8)
FIT_BITS = (4, 6, 8)


@dataclass
class NoiseProfile:
    kind: str                  # "weight" or "activation"
    name: str                  # the weight node, or the tensor crossing the cut
    cut: int                   # the cut an activation crosses (-1 for weights)
    elements: int              # γ: weights of the node, or elements of the crossing tensor
    energy: dict[int, float]   # bits -> E||r||^2 on the logits
    projected: dict[int, float]  # bits -> E<r, u>^2
    drop: dict[int, float]     # bits -> measured top-1 drop, points
    q: float = 0.0             # fitted projected noise at 0 bits
    t: float = 0.0             # robustness e/v at 6 bits

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, value: dict) -> "NoiseProfile":
        """Inverse of as_dict, also after JSON (whose object keys, the widths, are strings)."""
        value = dict(value)
        for name in ("energy", "projected", "drop"):
            value[name] = {int(bits): float(v) for bits, v in value[name].items()}
        return cls(**value)


@dataclass
class AccuracyModel:
    alpha: float
    weights: dict[int, NoiseProfile]   # node index -> its weights' noise
    activations: dict[tuple[int, str], NoiseProfile]   # (cut, tensor) -> the noise of quantizing it there
    margins: np.ndarray                # d_k - d_j logit margin of each calibration sample
    correct: np.ndarray                # float model correct on the sample
    granularity: str
    samples: int
    additivity: list[dict] = field(default_factory=list)

    def predicted_drop(self, sigma2: float) -> float:
        """Expected share (points) of correctly classified samples that Gaussian projected noise of
        variance sigma2 flips: monotone in sigma2, and an upper bound of the drop (flips to right ignored)."""
        if sigma2 <= 0:
            return 0.0
        flip = 0.5 * torch.special.erfc(torch.from_numpy(self.margins / (2.0 * math.sqrt(sigma2)))).numpy()
        return 100.0 * float((flip * self.correct).sum()) / self.samples

    def noise_budget(self, drop: float) -> float:
        """C(a): the projected noise variance whose predicted drop is `drop` points (bisection on log σ²)."""
        lo, hi = 1e-12, 1e6
        for _ in range(100):
            mid = math.sqrt(lo * hi)
            if self.predicted_drop(mid) > drop:
                hi = mid
            else:
                lo = mid
        return lo


def _noise(ev: Evaluator, split: Split, runner_up: torch.Tensor, top: torch.Tensor) -> tuple[float, float, float]:
    logits = ev.logits(split)
    m = ev.judge(logits)
    r = logits - ev.float_logits                                    # [n, classes]
    along = (r.gather(1, runner_up[:, None]) - r.gather(1, top[:, None]))[:, 0] / math.sqrt(2.0)
    return m.noise, float((along ** 2).mean()), m.drop


def _fit_points(prof: NoiseProfile) -> tuple[np.ndarray, np.ndarray]:
    """(bits, ln v) of the widths in FIT_BITS with noise: a width that restores the tensor exactly (8-bit
    Fashion-MNIST pixels are multiples of 1/255) has none and says nothing about the decay."""
    bits = [b for b in FIT_BITS if prof.projected[b] > 0]
    return np.array(bits, float), np.log([prof.projected[b] for b in bits])


def fit_alpha(profiles: list[NoiseProfile]) -> float:
    """One slope for ln v = ln q - α b over all profiles, each with its own intercept; sets each q."""
    num = den = 0.0
    for prof in profiles:
        b, y = _fit_points(prof)
        if len(b) >= 2:
            num += float(((b - b.mean()) * (y - y.mean())).sum())
            den += float(((b - b.mean()) ** 2).sum())
    alpha = -num / den if den else math.log(4.0)
    for prof in profiles:
        b, y = _fit_points(prof)
        prof.q = float(np.exp(np.mean(y + alpha * b))) if len(b) else 1e-30
        prof.t = prof.energy[6] / max(prof.projected[6], 1e-30)
    return float(alpha)


def _sweep(ev: Evaluator, prof: NoiseProfile, split_at, runner_up, top, widths) -> NoiseProfile:
    for bits in widths:
        prof.energy[bits], prof.projected[bits], prof.drop[bits] = _noise(ev, split_at(bits), runner_up, top)
    return prof


def calibrate(ev: Evaluator, cuts: list[int], granularity: str = quant.PER_CHANNEL, progress=None,
              widths: tuple[int, ...] = SWEEP_BITS) -> AccuracyModel:
    """The accuracy model from weight sweeps of every conv2d/linear node and activation sweeps of every
    tensor crossing each of `cuts`, at `widths` (which must hold FIT_BITS and 6); progress() is called
    after each sweep. The same sweeps one by one (weight_sweep, activation_sweeps, then assemble) are the
    units a build on Ray fans out (qpart.server.calibration.distributed)."""
    reference = Reference.of(ev)
    weights, activations = {}, {}
    for index in ev.profile.cut(ev.profile.num_nodes).weight_nodes:
        weights[index] = weight_sweep(ev, index, granularity, widths, reference)
        if progress:
            progress()
    for c in cuts:
        for profile in activation_sweeps(ev, c, granularity, widths, reference):
            activations[(c, profile.name)] = profile
        if progress:
            progress()
    return assemble(ev, weights, activations, granularity, reference)


@dataclass
class Reference:
    """What every sweep measures against: the float model's top class and runner-up on the calibration samples,
    and the margin between them."""
    top: torch.Tensor
    runner_up: torch.Tensor
    margins: np.ndarray

    @classmethod
    def of(cls, ev: Evaluator) -> "Reference":
        logits = ev.float_logits
        top2 = logits.topk(2, dim=1).indices
        top, runner_up = top2[:, 0], top2[:, 1]
        margins = (logits.gather(1, top[:, None]) - logits.gather(1, runner_up[:, None]))[:, 0].numpy()
        return cls(top, runner_up, margins)


def weight_sweep(ev: Evaluator, index: int, granularity: str, widths, reference: Reference) -> NoiseProfile:
    """The noise of weight node `index` alone quantized at each width (every other node float)."""
    n, all_weights = ev.profile.num_nodes, ev.profile.cut(ev.profile.num_nodes).weight_nodes
    node = ev.profile.nodes[index]
    return _sweep(ev, NoiseProfile("weight", node.name, -1, node.weight_count, {}, {}, {}), lambda b: Split(
        n, tuple(b if i == index else FLOAT for i in all_weights), (), granularity), reference.runner_up,
        reference.top, widths)


def activation_sweeps(ev: Evaluator, c: int, granularity: str, widths, reference: Reference) -> list[NoiseProfile]:
    """The noise of each tensor crossing cut c alone quantized at each width."""
    cut = ev.profile.cut(c)
    return [_sweep(ev, NoiseProfile("activation", name, c, math.prod(cut.shapes[j]), {}, {}, {}), lambda b, j=j: Split(
        c, (FLOAT,) * len(cut.weight_nodes), tuple(b if k == j else FLOAT for k in range(len(cut.tensors))),
        granularity), reference.runner_up, reference.top, widths) for j, name in enumerate(cut.tensors)]


def assemble(ev: Evaluator, weights: dict[int, NoiseProfile], activations: dict[tuple[int, str], NoiseProfile],
             granularity: str, reference: Reference) -> AccuracyModel:
    """The accuracy model of the sweeps: α fitted over all of them (weights first, then activations, in the
    order given), and the additivity check (every node's weights at once against the sum of single-node
    noise)."""
    alpha = fit_alpha(list(weights.values()) + list(activations.values()))
    model = AccuracyModel(alpha, weights, activations, reference.margins, ev.float_correct.numpy(), granularity,
                          len(reference.margins))
    model.additivity = measure_additivity(ev, weights, granularity, reference, model)
    return model


def summary(alpha: float, samples: int, granularity: str, weights: dict, activations: dict,
            additivity: list[dict]) -> dict:
    """What a catalog records of its accuracy model (Catalog.accuracy_model)."""
    return {"alpha": alpha, "samples": samples, "granularity": granularity,
            "weights": [w.as_dict() for w in weights.values()],
            "activations": [a.as_dict() for a in activations.values()], "additivity": additivity}


def measure_additivity(ev: Evaluator, weights: dict[int, NoiseProfile], granularity: str, reference: Reference,
                       model: AccuracyModel) -> list[dict]:
    n, all_weights = ev.profile.num_nodes, ev.profile.cut(ev.profile.num_nodes).weight_nodes
    out = []
    for bits in (4, 6):
        energy, projected, drop = _noise(ev, Split(n, (bits,) * len(all_weights), (), granularity),
                                         reference.runner_up, reference.top)
        out.append({
            "bits": bits, "energy_all": energy, "energy_sum": sum(w.energy[bits] for w in weights.values()),
            "projected_all": projected, "projected_sum": sum(w.projected[bits] for w in weights.values()),
            "drop_all": drop, "predicted_drop": model.predicted_drop(sum(w.projected[bits] for w in weights.values()))})
    return out

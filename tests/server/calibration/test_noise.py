import numpy as np
import pytest

from qpart.server.calibration import noise as calibration

from qpart.server.calibration.build import catalog_cuts
from qpart.server.models import datasets
from qpart.server.calibration.accuracy import Evaluator, fake_quantize_torch, paired_drop_bound
from qpart.server.models.split import Split


def test_accuracy_model(repo, data_dir):
    model = repo.get("lenet")
    x, y = datasets.model_split(model, "validation", data_dir, limit=1000)
    cuts = [c for c in catalog_cuts(model) if model.profile.cut(c).runs_tail]
    am = calibration.calibrate(Evaluator(model, x, y), cuts)
    assert 1.0 < am.alpha < 2.5                       # ln 4 = 1.39 in theory (eq 18)
    assert len(am.weights) == len(model.profile.weight_nodes)
    assert set(am.activations) == {(c, t) for c in cuts for t in model.profile.cut(c).tensors}
    for prof in list(am.weights.values()) + list(am.activations.values()):
        assert prof.q > 0 and prof.t > 1              # projected noise is a share of the noise energy
        assert prof.energy[2] > prof.energy[8]        # fewer bits, more noise
    for check in am.additivity:                       # sum of single-layer noise ~ noise of all layers at once
        assert 0.3 < check["energy_all"] / check["energy_sum"] < 3.0
    budgets = [am.noise_budget(a) for a in (0.1, 0.5, 1.0, 2.0)]
    assert budgets == sorted(budgets) and budgets[0] > 0
    assert abs(am.predicted_drop(budgets[2]) - 1.0) < 0.01


def test_the_evaluator_uses_the_wire_quantizer(repo):
    """Fake quantization in torch equals the numpy quantizer the device uses, bit for bit."""
    import torch
    from qpart.common import quant
    model = repo.get("vgg8")
    params = model.activation_params(model.profile.nodes[3].name, 5)
    x = np.random.default_rng(0).uniform(-1, 30, (7, 12, 14, 14)).astype(np.float32)
    codes = quant.quantize_with(x, params)
    expected = quant.dequantize(codes, params)
    assert np.array_equal(fake_quantize_torch(torch.from_numpy(x), params).numpy(), expected)


def test_paired_bound():
    drop, ucb = paired_drop_bound(30, 10, 5000)
    normal = 0.4 + 1.645 * 100 * np.sqrt((40 / 5000 - 0.004 ** 2) / 5000)
    assert drop == 0.4 and normal < ucb < 1.2 * normal     # exact: a little above the normal approximation
    drop, ucb = paired_drop_bound(0, 0, 100)
    assert drop == 0.0 and 2.95 < ucb < 3.5                  # not 0.00 (tests/server/calibration/test_bounds.py)


@pytest.mark.parametrize("name", ["lenet", "resnet8"])
def test_prefix_cache_gives_the_same_answer(name, repo, data_dir):
    model = repo.get(name)
    x, y = datasets.model_split(model, "validation", data_dir, limit=600)
    cached = Evaluator(model, x, y)
    cut = next(c for c in model.cuts() if len(c.weight_nodes) >= 3 and c.runs_tail)   # two tensors for resnet8
    width = len(cut.weight_nodes)
    split = Split(cut.cut, (5, 4) + (3,) * (width - 2), (4,) * len(cut.tensors), "channel")
    cached.measure(Split(cut.cut, (5, 4) + (6,) * (width - 2), (4,) * len(cut.tensors), "channel"))  # shared prefix
    fresh = Evaluator(model, x, y, cache_bytes=0)
    assert np.array_equal(cached.logits(split).numpy(), fresh.logits(split).numpy())

"""A fixed plan's run reports the model's outputs, not only labels: the library (SplitClient(fixed=...), its head on
numpy and on onnxruntime) and qpart-device --json --scores, checked against the whole float model."""
import json

import numpy as np
import pytest
import torch

from qpart.common.costmodel import LinkProfile
from qpart.device import main as device_main
from qpart.device.split_client import SplitClient
from qpart.v1 import service_pb2 as spb


def float_logits(repo, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return repo.get("lenet").module()(torch.from_numpy(x))[0].numpy()


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_the_library_runs_a_fixed_plan_and_returns_its_logits(backend, server, repo, model_inputs, tmp_path):
    x, _ = model_inputs("lenet", 16)
    fixed = spb.FixedPlan(cut=3, weight_bits=[16], activation_bits=[16])
    with SplitClient(f"127.0.0.1:{server.port}", "lenet", 2.0, link=LinkProfile(rate_bps=2e6, rtt_s=0.01),
                     cache_dir=tmp_path, measure_compute=False, backend=backend, fixed=fixed) as split:
        results = split.classify(x)
        assert split.plan.cut == 3 and split.plan.policy == spb.FIXED and split.backend == backend
    scores = np.stack([r.scores for r in results])
    np.testing.assert_allclose(scores, float_logits(repo, x), atol=2e-3)


def test_the_cli_writes_every_inputs_scores(server, repo, model_inputs, tmp_path):
    out = tmp_path / "report.json"
    assert device_main.main(["--server", f"127.0.0.1:{server.port}", "--model", "lenet", "--cut", "3",
                             "--weight-bits", "16", "--activation-bits", "16", "--count", "8", "--no-cache",
                             "--no-measure-compute", "--quiet", "--scores", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    scores = np.array(report["split"]["scores"], np.float32)
    x, _ = model_inputs("lenet", 8)
    assert report["schema"] == 2 and scores.shape == (8, 10)
    np.testing.assert_allclose(scores, float_logits(repo, x), atol=2e-3)
    assert report["split"]["predictions"] == scores.argmax(1).tolist()

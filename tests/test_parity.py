"""The headline test: head on the device, a real gRPC channel, tail on the server, against the unsplit model.

For every zoo model and every cut it offers (at most two tensors crossing: inside residual blocks the
branch and the skip travel together), with 16-bit weights and activations, the split top-1 must equal the
unsplit top-1 on every test image but at most 0.1 % of them, or one (1,000 images; 200 for the 3x96x96 models
and mobilenetv2), counting the images whose unsplit top-1 leads its runner-up by more than 16-bit quantization
can move (TIE of the logits' range): an image on a tie may go either way at any width, and at most 1 % of them
may be ties.
"""
import numpy as np
import pytest

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.server.models import evaluate
from qpart.v1 import service_pb2 as spb
from tests.conftest import CAMERA, ZOO_NAMES


def fixed_request(model: str, cut: int, weight_bits: int, activation_bits: int) -> spb.PlanRequest:
    return spb.PlanRequest(model=model, policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=cut, weight_bits=[weight_bits], activation_bits=[activation_bits]))


TIE = 1e-4        # a top-1 lead below this share of the logits' range is a tie at 16 bits


def split_agreement(agent: DeviceAgent, model, x: np.ndarray, labels: np.ndarray, bits: int = 16) -> dict:
    """{cut: share of the decisive inputs (not on a tie) whose split top-1 equals the unsplit model's} over every
    offered cut."""
    logits = evaluate.logits(model.module(), x)                                  # [n, classes]
    unsplit = logits.argmax(axis=1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > TIE * float(logits.max() - logits.min())
    assert decisive.mean() >= 0.99, f"{model.name}: {int((~decisive).sum())} of {len(x)} inputs are ties"
    out = {}
    for cut in model.cuts():
        report = agent.run(fixed_request(model.name, cut.cut, bits, bits), x, labels, batch_size=100, window=2)
        assert report.inputs == len(x) and report.cut == cut.cut
        assert [c["name"] for c in report.crossing] == list(cut.tensors)
        if 0 < cut.cut < model.num_nodes:
            assert report.wire["Infer"]["sent"] > 0 and report.wire["FetchHead"]["received"] > report.head.bytes
        out[cut.cut] = float(np.mean((np.array(report.predictions) == unsplit)[decisive]))
    return out


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_split_matches_unsplit_at_16_bits(name, repo, client, model_inputs, tmp_path):
    model = repo.get(name)
    x, labels = model_inputs(name, 200 if name in CAMERA + ("mobilenetv2",) else 1000)
    agreement = split_agreement(DeviceAgent(client, HeadCache(tmp_path / "cache")), model, x, labels)
    assert len(agreement) >= 3
    if name in ("resnet8", "resnet8-96", "mobilenetv2"):   # cuts inside residual blocks send two tensors
        assert any(len(model.profile.cut(c).tensors) == 2 for c in agreement)
    allowed = max(1, 0.001 * len(x)) / len(x)       # 99.9 %, and one input of a 200-input set
    low = {c: a for c, a in agreement.items() if a < 1 - allowed - 1e-9}
    assert not low, f"{name}: split top-1 differs from unsplit at cuts {low}"


def test_low_bit_split_still_classifies(repo, client, test_set):
    """4-bit weights and activations cost some accuracy but stay far above chance: the quantization is real."""
    x, labels = test_set
    model = repo.get("lenet")
    float_accuracy = evaluate.accuracy(evaluate.logits(model.module(), x).argmax(axis=1), labels)
    report = DeviceAgent(client, HeadCache(None)).run(fixed_request("lenet", 7, 4, 4), x, labels, batch_size=50)
    assert float_accuracy - 10 < report.accuracy <= float_accuracy + 2
    one_bit = DeviceAgent(client, HeadCache(None)).run(fixed_request("lenet", 7, 1, 1), x, labels, batch_size=50)
    assert one_bit.accuracy < report.accuracy

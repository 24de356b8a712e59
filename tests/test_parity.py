"""The headline test: head on the device, a real gRPC channel, tail on the server, against the unsplit model.

For every zoo model and every partition point, with 16-bit weights and activations, the split top-1
must equal the unsplit top-1 on at least 99.9 % of 1,000 test images.
"""
import numpy as np
import pytest

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.server.models import evaluate
from qpart.v1 import service_pb2 as spb
from tests.conftest import ZOO_NAMES


def fixed_request(model: str, p: int, weight_bits: int, activation_bits: int) -> spb.PlanRequest:
    return spb.PlanRequest(model=model, policy=spb.FIXED, fixed=spb.FixedPlan(
        partition_point=p, weight_bits=[weight_bits], activation_bits=activation_bits))


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_split_matches_unsplit_at_16_bits(name, repo, client, test_set, tmp_path):
    x, labels = test_set
    model = repo.get(name)
    unsplit = evaluate.logits(model.segment(0), x).argmax(axis=1)
    agent = DeviceAgent(client, HeadCache(tmp_path / "cache"))
    for p in range(1, model.num_layers + 2):
        report = agent.run(fixed_request(name, p, 16, 16), x, labels, batch_size=100, window=2)
        agreement = float(np.mean(np.array(report.predictions) == unsplit))
        assert agreement >= 0.999, f"{name} p={p}: split agrees with unsplit on {agreement:.2%}"
        assert report.inputs == len(x) and report.partition_point == p
        if 1 < p <= model.num_layers:
            assert report.wire["Infer"]["sent"] > 0 and report.wire["FetchHead"]["received"] > report.head.bytes


def test_low_bit_split_still_classifies(repo, client, test_set, tmp_path):
    """4-bit weights and activations cost some accuracy but stay far above chance: the quantization is real."""
    x, labels = test_set
    model = repo.get("lenet")
    float_accuracy = evaluate.accuracy(evaluate.logits(model.segment(0), x).argmax(axis=1), labels)
    report = DeviceAgent(client, HeadCache(None)).run(fixed_request("lenet", 4, 4, 4), x, labels, batch_size=50)
    assert float_accuracy - 10 < report.accuracy <= float_accuracy + 2
    one_bit = DeviceAgent(client, HeadCache(None)).run(fixed_request("lenet", 4, 1, 1), x, labels, batch_size=50)
    assert one_bit.accuracy < report.accuracy

"""The numpy executor against the torch executor: the same top-1 through the server's tail at every cut
of every zoo model (16-bit weights). bench/device_executors.py does the same on 1,000 images of every
model and prints times and memory; here the costly models use fewer images to keep `make test` short."""
import pytest

from qpart.testbed.executors import agreement_at_cuts
from tests.conftest import ZOO_NAMES

IMAGES = {"resnet8": 300, "mobilenetv2": 200, "resnet8-96": 200, "mobilenetv2-96": 100}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_numpy_and_torch_executors_agree_at_every_cut(name, repo, model_inputs):
    model = repo.get(name)
    x, _ = model_inputs(name, IMAGES.get(name, 1000))
    agreement = agreement_at_cuts(model, x)
    assert len(agreement) == len(model.cuts())
    low = {cut: a for cut, a in agreement.items() if a < 0.999}
    assert not low, f"{name}: numpy and torch differ at cuts {low}"


def test_device_memory_is_measured_without_torch(repo):
    from qpart.server.models.heads import build_head
    from qpart.server.models.split import uniform
    from qpart.testbed.executors import peak_rss
    model = repo.get("vgg8")
    rss = peak_rss(build_head(model, uniform(model.profile, model.num_nodes, 8)))
    float32 = sum(n.weight_count for n in model.profile.nodes) * 4
    assert not rss["torch"] and rss["after_kib"] >= rss["before_kib"] > 10_000
    assert rss["before_kib"] < 200_000        # the device process's own peak, not this (torch) process's
    assert float32 / 4 <= rss["weight_bytes"] < float32 / 3          # one byte per 8-bit code, plus scales

import numpy as np
import pytest

from qpart.common.errors import InvalidArgument
from qpart.device.head import HeadExecutor
from qpart.server.models.heads import build_head
from qpart.server.models.split import Split


@pytest.fixture(scope="module")
def head(repo):
    model = repo.get("lenet")
    return build_head(model, Split(9, (8, 8, 8), (8,)))      # conv part and fc1 on the device


def test_valid_head_runs_like_the_float_model(repo, head, test_set):
    x = test_set[0][:64]
    executor = HeadExecutor.from_bytes(head.SerializeToString())
    model = repo.get("lenet")
    (reference,) = model.module(0, 9)(__import__("torch").from_numpy(x))
    reference = reference.numpy()
    (out,) = executor.run(x)
    assert out.shape == (64, 120) and executor.outputs == model.profile.cut(9).tensors
    assert np.abs(out - reference).max() < 0.05 * np.abs(reference).max()   # 8-bit weights: close, not equal


def _tampered(head, mutate):
    copy = type(head)()
    copy.CopyFrom(head)
    mutate(copy)
    return copy.SerializeToString()


@pytest.mark.parametrize("mutate, match", [
    (lambda h: setattr(h, "format_version", 9), "format version"),
    (lambda h: h.parameters.pop(), "do not match"),
    (lambda h: h.parameters.add().CopyFrom(h.parameters[0]), "do not match"),
    (lambda h: setattr(h.parameters[0], "name", "0.bogus"), "do not match"),
    (lambda h: h.parameters[0].shape.__setitem__(0, 7), "expected"),
    (lambda h: setattr(h.parameters[0], "data", h.parameters[0].data[:-3]), "take|inflate"),
    (lambda h: setattr(h.parameters[0], "coding", 9), "unknown coding"),
    (lambda h: setattr(h.parameters[0], "bits", 17), "bit width"),
    (lambda h: h.network.outputs.__setitem__(0, "nowhere"), "output 'nowhere' is not the input or a node"),
    (lambda h: setattr(h.network.nodes[0].conv2d, "in_channels", 3), "input"),
    (lambda h: h.network.nodes[3].inputs.__setitem__(0, "fc9"), "reads 'fc9'"),
    (lambda h: h.network.input_shape.extend([1 << 30]), "elements; the limit is"),
])
def test_tampered_heads_are_rejected(head, mutate, match):
    with pytest.raises(InvalidArgument, match=match):
        HeadExecutor.from_bytes(_tampered(head, mutate))


def test_garbage_bytes_are_rejected():
    with pytest.raises(InvalidArgument, match="do not parse"):
        HeadExecutor.from_bytes(b"\xff\xff\xff\xff")

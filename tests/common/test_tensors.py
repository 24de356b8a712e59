import tracemalloc

import numpy as np
import pytest

from qpart.common import tensors
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb


def test_encode_decode_per_tensor_and_per_channel():
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32) * np.arange(1, 9)[:, None, None, None]
    for granularity in ("tensor", "channel"):
        msg = tensors.encode("0.weight", w, 6, granularity)
        assert len(msg.data) == (w.size * 6 + 7) // 8
        assert len(msg.scale) == (1 if granularity == "tensor" else 8)
        back = tensors.decode(msg, expected_shape=w.shape)
        steps = np.asarray(msg.scale, np.float32).reshape(-1, 1, 1, 1)
        assert np.all(np.abs(back - w) <= steps / 2 * 1.0001 + 1e-6)
    per_channel_error = np.abs(tensors.decode(tensors.encode("w", w, 4, "channel")) - w).mean()
    per_tensor_error = np.abs(tensors.decode(tensors.encode("w", w, 4, "tensor")) - w).mean()
    assert per_channel_error < per_tensor_error


def test_float32_encoding_is_exact():
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    msg = tensors.encode("x", x, 32)
    assert len(msg.data) == 80 and not msg.scale
    assert np.array_equal(tensors.decode(msg), x)


def _valid() -> pb.PackedTensor:
    return tensors.encode("t", np.arange(12, dtype=np.float32).reshape(3, 4), 5)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.ClearField("shape"), "empty shape"),
    (lambda m: m.shape.__setitem__(0, 0), "not positive"),
    (lambda m: m.shape.__setitem__(0, 4), "take"),
    (lambda m: setattr(m, "data", m.data[:-1]), "take"),
    (lambda m: setattr(m, "bits", 0), "bit width"),
    (lambda m: setattr(m, "bits", 17), "bit width"),
    (lambda m: m.scale.__setitem__(0, float("nan")), "scale"),
    (lambda m: m.scale.__setitem__(0, -1.0), "scale"),
    (lambda m: m.zero_point.__setitem__(0, 32), "zero point"),
    (lambda m: m.scale.append(1.0), "scale"),
    (lambda m: setattr(m, "granularity", pb.GRANULARITY_UNSPECIFIED), "granularity"),
    (lambda m: setattr(m, "granularity", pb.PER_CHANNEL), "scale"),
])
def test_malformed_tensors_are_rejected(mutate, message):
    msg = _valid()
    mutate(msg)
    with pytest.raises(InvalidArgument, match=message):
        tensors.decode(msg)


def test_expected_shape_is_enforced():
    with pytest.raises(InvalidArgument, match="expected"):
        tensors.decode(_valid(), expected_shape=(4, 3))


def test_huge_declared_shape_is_rejected_without_allocating():
    msg = pb.PackedTensor(name="huge", shape=[1 << 20, 1 << 20], bits=4, granularity=pb.PER_TENSOR,
                          scale=[1.0], zero_point=[0], data=b"\0" * 16)
    tracemalloc.start()
    with pytest.raises(InvalidArgument, match="1099511627776 elements"):
        tensors.decode(msg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20


def test_batch_checks():
    assert tensors.check_batch(3, (2, 2), 3, 5) == 12
    with pytest.raises(InvalidArgument, match="take 5 bytes, got 4"):
        tensors.check_batch(3, (2, 2), 3, 4)
    with pytest.raises(InvalidArgument, match="elements"):
        tensors.check_batch(1 << 20, (1 << 20,), 8, 10)

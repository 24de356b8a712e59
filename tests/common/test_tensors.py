import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from qpart.common import packing, quant, tensors
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


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 5), sample=hnp.array_shapes(min_dims=1, max_dims=3, max_side=7), bits=st.integers(1, 16),
       lo=st.floats(-50, 0, width=32), span=st.floats(0, 100, width=32), seed=st.integers(0, 2**16))
def test_activation_batches_round_trip_exactly_as_the_quantizer_says(n, sample, bits, lo, span, seed):
    """The batch codec (table lookups for 1, 2, 4, 8 bits) restores what fake quantization predicts, bit for bit."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo - 1, lo + span + 1, (n, *sample)).astype(np.float32)   # some values beyond the range: clipped
    params = quant.params_for_range(lo, lo + span, bits)
    data = tensors.encode_batch(x, params)
    assert tensors.check_batch(n, sample, bits, len(data)) == x.size
    assert len(data) == packing.packed_size(x.size, bits)
    expected = quant.dequantize(quant.quantize_with(x, params), params)
    assert np.array_equal(tensors.decode_batch(data, n, sample, params), expected)
    assert np.array_equal(tensors.decode_batch(tensors.encode_batch(x, None), n, sample, None), x)


@pytest.mark.parametrize("bits", [1, 2, 4, 7])
def test_activation_batches_with_dirty_padding_bits_are_refused(bits):
    params = quant.params_for_range(0, 1, bits)
    data = bytearray(tensors.encode_batch(np.zeros((1, 3), np.float32), params))
    data[-1] |= 0x80
    with pytest.raises(InvalidArgument, match="unused high bits"):
        tensors.decode_batch(bytes(data), 1, (3,), params)


def test_zlib_coded_activations_round_trip_and_every_bad_stream_is_refused():
    params = quant.QuantParams(4, np.array([0.1], np.float32), np.array([0], np.int64))
    x = np.zeros((2, 8, 8), np.float32)
    x[:, 2:4, 2:4] = 0.5                                            # mostly zeros, as after a ReLU
    raw = tensors.encode_batch(x, params)
    coded = tensors.code(raw, tensors.ZLIB)
    assert len(coded) < len(raw)
    assert tensors.check_batch(2, (8, 8), 4, len(coded), coding=tensors.ZLIB) == 128
    assert tensors.uncode(coded, tensors.ZLIB, len(raw)) == raw
    assert tensors.code(raw, tensors.RAW) is raw and tensors.uncode(raw, tensors.RAW, len(raw)) is raw
    bomb = zlib.compress(bytes(1 << 24))                             # 16 MiB of zeros in ~16 KB
    with pytest.raises(InvalidArgument, match="exactly 64 bytes"):
        tensors.uncode(bomb, tensors.ZLIB, 64)                       # at most 65 bytes are ever inflated
    for bad, why in ((coded[:-3], "exactly"), (coded + b"x", "after its end"), (b"not zlib", "does not inflate"),
                     (zlib.compress(raw[:-1]), "exactly")):
        with pytest.raises(InvalidArgument, match=why):
            tensors.uncode(bad, tensors.ZLIB, len(raw))
    with pytest.raises(InvalidArgument, match="zlib-coded at most"):
        tensors.check_batch(2, (8, 8), 4, tensors.coded_limit(len(raw)) + 1, coding=tensors.ZLIB)
    with pytest.raises(InvalidArgument, match="unknown activation coding"):
        tensors.check_batch(2, (8, 8), 4, len(raw), coding=7)

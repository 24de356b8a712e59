import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from qpart.common import quant
from qpart.common.errors import InvalidArgument

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9), elements=finite)


@settings(max_examples=200, deadline=None)
@given(x=arrays, bits=st.integers(1, 16), per_channel=st.booleans())
def test_round_trip_error_is_at_most_half_a_step(x, bits, per_channel):
    granularity = quant.PER_CHANNEL if per_channel else quant.PER_TENSOR
    codes, params = quant.quantize(x, bits, granularity)
    assert codes.dtype == np.uint32 and codes.shape == x.shape
    assert int(codes.max()) <= (1 << bits) - 1
    restored = quant.dequantize(codes, params)
    scale, _ = params.broadcast(x.ndim)
    # half a step, plus float32 rounding of x / scale and of the product (relative 2^-24 each, or one subnormal ulp)
    bound = scale.astype(np.float64) / 2 + np.abs(x).astype(np.float64) * 2.0 ** -21 + 1.5e-45
    assert (np.abs(restored.astype(np.float64) - x) <= bound).all()


@given(value=finite, shape=hnp.array_shapes(max_dims=3, max_side=5), bits=st.integers(1, 16))
def test_constant_tensors(value, shape, bits):
    """A constant is an end of its range [min(c, 0), max(c, 0)]: restored within half a step, zero exactly."""
    x = np.full(shape, value, np.float32)
    codes, params = quant.quantize(x, bits)
    restored = quant.dequantize(codes, params)
    bound = float(params.scale[0]) / 2 + abs(float(value)) * 2.0 ** -21 + 1.5e-45
    assert np.all(np.abs(restored.astype(np.float64) - x) <= bound)
    assert np.all(restored == restored.flat[0])
    assert np.array_equal(quant.fake_quantize(np.zeros(shape, np.float32), bits), np.zeros(shape, np.float32))


@pytest.mark.parametrize("bits", [1, 2, 7, 16])
def test_extreme_values(bits):
    big = np.finfo(np.float32).max / 4
    x = np.array([-big, 0.0, big, 1e-38, -1e-38], np.float32)
    denormal = np.array([1e-45, 3e-45], np.float32)
    assert np.abs(quant.fake_quantize(denormal, bits) - denormal).max() <= 2e-45
    codes, params = quant.quantize(x, bits)
    restored = quant.dequantize(codes, params)
    assert np.isfinite(restored).all()
    assert np.abs(restored - x).max() <= params.scale[0] / 2 * (1 + 1e-5)


def test_zero_is_exactly_representable():
    x = np.array([0.0, 0.3, 1.7, 0.0], np.float32)   # e.g. a ReLU output
    for bits in range(1, 17):
        assert quant.fake_quantize(x, bits)[0] == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_rejected(bad):
    with pytest.raises(InvalidArgument, match="NaN or infinity"):
        quant.quantize(np.array([1.0, bad], np.float32), 8)


@pytest.mark.parametrize("bits", [0, 17, 31, 33, -1, 2.5, "8", True])
def test_unsupported_bit_widths_are_rejected(bits):
    with pytest.raises(InvalidArgument):
        quant.check_bits(bits)


def test_float_width_passes_through():
    x = np.random.default_rng(0).standard_normal(10).astype(np.float32)
    assert quant.check_bits(32) == 32
    assert np.array_equal(quant.fake_quantize(x, 32), x)


def test_noise_falls_about_four_times_per_bit():
    """Uniform quantization noise power scales as 4^-b (alpha = ln 4 in the accuracy model)."""
    x = np.random.default_rng(1).standard_normal(100_000).astype(np.float32)
    power = [np.mean((quant.fake_quantize(x, b) - x) ** 2) for b in (6, 7, 8, 9)]
    ratios = np.array(power[:-1]) / np.array(power[1:])
    assert np.all((ratios > 3.5) & (ratios < 4.5))


def test_ranges_beyond_float32_are_rejected_clearly():
    edge = np.finfo(np.float32).max
    with pytest.raises(InvalidArgument, match="too wide for float32 at 2 bits"):
        quant.quantize(np.array([-0.9 * edge, 0.9 * edge], np.float32), 2)

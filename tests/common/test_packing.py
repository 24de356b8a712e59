import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qpart.common import packing
from qpart.common.errors import InvalidArgument


def reference_stream(codes: np.ndarray, bits: int) -> bytes:
    """The bit stream spelled out bit by bit: code i at stream bits [i*b, (i+1)*b), LSB first."""
    bit_matrix = (codes.astype(np.uint64)[:, None] >> np.arange(bits, dtype=np.uint64)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


@settings(max_examples=300, deadline=None)
@given(bits=st.integers(1, 16), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_round_trip_is_dense_and_matches_the_reference(bits, n, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, n).astype(np.uint32)
    data = packing.pack(codes, bits)
    assert len(data) == (n * bits + 7) // 8 == packing.packed_size(n, bits)
    assert data == reference_stream(codes, bits)
    assert np.array_equal(packing.unpack(data, n, bits), codes)


@pytest.mark.parametrize("bits", range(1, 17))
def test_extreme_codes(bits):
    top = (1 << bits) - 1
    codes = np.array([0, top, top, 0, top, 1 if bits > 1 else 0, top, 0, top], np.uint32)
    assert np.array_equal(packing.unpack(packing.pack(codes, bits), len(codes), bits), codes)


def test_truncated_and_padded_data_is_rejected():
    data = packing.pack(np.arange(10, dtype=np.uint32), 5)   # 50 bits -> 7 bytes
    with pytest.raises(InvalidArgument, match="take 7 bytes, got 6"):
        packing.unpack(data[:-1], 10, 5)
    with pytest.raises(InvalidArgument, match="take 7 bytes, got 8"):
        packing.unpack(data + b"\0", 10, 5)


def test_nonzero_padding_bits_are_rejected():
    data = bytearray(packing.pack(np.zeros(3, np.uint32), 3))   # 9 bits: 7 unused high bits in byte 2
    data[-1] |= 0x80
    with pytest.raises(InvalidArgument, match="unused high bits"):
        packing.unpack(bytes(data), 3, 3)


def test_codes_out_of_range_are_rejected():
    with pytest.raises(InvalidArgument, match=r"\[0, 7\]"):
        packing.pack(np.array([8], np.uint32), 3)
    with pytest.raises(InvalidArgument):
        packing.pack(np.array([1], np.uint32), 0)
    with pytest.raises(InvalidArgument):
        packing.unpack(b"\0\0\0", 1, 17)


@pytest.mark.parametrize("bits", range(1, 17))
def test_large_tensors_take_the_group_path_and_match_the_reference(bits):
    n = packing.SMALL_BITS // bits + 1001          # past the bit-by-bit path, not a multiple of 8
    codes = np.random.default_rng(bits).integers(0, 1 << bits, n).astype(np.uint32)
    data = packing.pack(codes, bits)
    assert data == reference_stream(codes, bits)
    assert np.array_equal(packing.unpack(data, n, bits), codes)

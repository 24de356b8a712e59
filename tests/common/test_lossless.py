import lzma
import zlib

import numpy as np
import pytest

from qpart.common import lossless, packing, tensors
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb


def _codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    """Quantized-weight-like codes: a narrow bell around the middle code, as a trained layer's are."""
    rng = np.random.default_rng(seed)
    middle = (1 << bits) // 2
    return np.clip(np.rint(rng.normal(middle, max(1.0, (1 << bits) / 12), n)), 0, (1 << bits) - 1).astype(np.uint32)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 9, 12, 16])
@pytest.mark.parametrize("coding", [lossless.ZLIB, lossless.LZMA2, lossless.LZMA2_BYTES])
def test_every_coding_round_trips_every_width(bits, coding):
    codes = _codes(3001, bits)
    packed = packing.pack(codes, bits)
    source = lossless.byte_codes(codes, bits) if coding == lossless.LZMA2_BYTES else packed
    coded = lossless.compress(source, coding)
    if len(coded) <= len(packed):
        assert np.array_equal(lossless.decode_codes(coded, coding, codes.size, bits), codes)


def test_the_smallest_coding_wins_and_dense_stays_where_nothing_shrinks():
    codes = _codes(20000, 6)
    packed = packing.pack(codes, 6)
    coding, data = lossless.smallest(packed, codes.size, 6)
    sizes = {c: len(lossless.compress(lossless.byte_codes(codes, 6) if c == lossless.LZMA2_BYTES else packed, c))
             for c in (lossless.ZLIB, lossless.LZMA2, lossless.LZMA2_BYTES)}
    assert coding != lossless.DENSE and len(data) == min(sizes.values()) < len(packed)
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint32)      # uniform codes: incompressible
    assert lossless.smallest(packing.pack(noise, 8), noise.size, 8) == (lossless.DENSE, packing.pack(noise, 8))


def test_a_coded_head_tensor_restores_the_dense_one_exactly():
    x = np.random.default_rng(2).normal(0, 0.05, (64, 32, 3, 3)).astype(np.float32)
    dense = tensors.encode("conv.weight", x, 4, "channel")
    coded = tensors.code_tensor(pb.PackedTensor().__class__.FromString(dense.SerializeToString()))
    assert coded.coding != pb.TENSOR_CODING_DENSE and len(coded.data) < len(dense.data)
    assert np.array_equal(tensors.decode(coded), tensors.decode(dense))
    floats = tensors.encode("bn.scale", x[:, 0, 0, 0], 32)
    assert tensors.code_tensor(floats).coding == pb.TENSOR_CODING_DENSE                 # float32 stays dense
    floats.coding = pb.TENSOR_CODING_ZLIB
    with pytest.raises(InvalidArgument, match="only quantized codes may be coded"):
        tensors.decode(floats)


@pytest.mark.parametrize("coding", [lossless.ZLIB, lossless.LZMA2, lossless.LZMA2_BYTES])
def test_bombs_and_broken_streams_are_refused_without_inflating_past_the_declared_size(coding):
    codes = _codes(40000, 4)
    source = lossless.byte_codes(codes, 4) if coding == lossless.LZMA2_BYTES else packing.pack(codes, 4)
    good = lossless.compress(source, coding)
    if coding == lossless.ZLIB:
        bomb = zlib.compress(bytes(1 << 24))
    else:
        bomb = lzma.compress(bytes(1 << 24), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    with pytest.raises(InvalidArgument, match="exactly"):
        lossless.decode_codes(bomb, coding, 40000, 4)               # 16 MiB of zeros claimed as 20,000 bytes
    for bad, why in ((good[:-3], "exactly|does not inflate"), (good + b"x", "after its end|does not inflate"),
                     (b"\x07garbage", "does not inflate|exactly"), (b"", "take 1 to"),
                     (bytes(packing.packed_size(40000, 4) + 1), "take 1 to")):
        with pytest.raises(InvalidArgument, match=why):
            lossless.decode_codes(bad, coding, 40000, 4)
    with pytest.raises(InvalidArgument, match="unknown coding 7"):
        lossless.decode_codes(good, 7, 40000, 4)


def test_byte_coded_codes_above_the_width_are_refused():
    codes = np.full(5000, 200, np.uint32)                     # fine at 8 bits, not at 4
    coded = lossless.compress(lossless.byte_codes(codes, 8), lossless.LZMA2_BYTES)
    assert np.array_equal(lossless.decode_codes(coded, lossless.LZMA2_BYTES, 5000, 8), codes)
    with pytest.raises(InvalidArgument, match="exceeds 15"):
        lossless.decode_codes(coded, lossless.LZMA2_BYTES, 5000, 4)

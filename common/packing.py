"""Dense bit packing: n codes of b bits take exactly ceil(n*b/8) bytes, for every b in 1..16.

The stream is least-significant-bit first: code i occupies stream bits [i*b, (i+1)*b), and byte k
holds stream bits [8k, 8k+8). Eight codes form a group of exactly b bytes, so packing is a fixed
set of shift/mask/or operations per byte position of a group, vectorized over all groups.
Unused high bits of the last byte are zero, and unpack rejects data where they are not.
"""
import functools

import numpy as np

from qpart.common.errors import InvalidArgument
from qpart.common.quant import check_bits, code_type

CODES_PER_GROUP = 8


def packed_size(n: int, bits: int) -> int:
    """Bytes taken by n values at `bits` bits (4 bytes per value for float32, bits = 32)."""
    return (n * bits + 7) // 8


@functools.lru_cache(maxsize=None)
def _overlaps(bits: int) -> tuple[tuple[int, int, int, int, int], ...]:
    """(code j, byte k, first bit within code, first bit within byte, length) of every overlap in a group."""
    out = []
    for j in range(CODES_PER_GROUP):
        for k in range(bits):
            start = max(j * bits, 8 * k)
            stop = min((j + 1) * bits, 8 * k + 8)
            if start < stop:
                out.append((j, k, start - j * bits, start - 8 * k, stop - start))
    return tuple(out)


SMALL_BITS = 1 << 16   # streams up to this many bits are packed bit by bit


@functools.lru_cache(maxsize=None)
def _shifts(bits: int) -> np.ndarray:
    return np.arange(bits, dtype=np.uint16)


@functools.lru_cache(maxsize=None)
def byte_codes(bits: int) -> np.ndarray:
    """[256, 8 // bits]: the codes each byte value holds, for the widths 1, 2, 4 and 8 that divide a byte."""
    per_byte = 8 // bits
    return (np.arange(256, dtype=np.uint8)[:, None] >> (np.arange(per_byte, dtype=np.uint8) * bits)) & ((1 << bits) - 1)


def pack(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integer codes (each < 2^bits) densely, row-major."""
    bits = check_bits(bits, allow_float=False)
    codes = np.asarray(codes).reshape(-1)
    n = codes.size
    if n and ((codes.dtype.kind != "u" and codes.min() < 0) or int(codes.max()) >> bits):
        raise InvalidArgument(f"codes must lie in [0, {(1 << bits) - 1}] to be packed at {bits} bits")
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    if bits == 16:
        return codes.astype("<u2").tobytes()
    if bits == 1:
        return np.packbits(codes.astype(np.uint8, copy=False), bitorder="little").tobytes()
    if bits in (2, 4):             # whole codes per byte: a few shifts
        per_byte = 8 // bits
        padded = np.zeros(-(-n // per_byte) * per_byte, np.uint8)
        padded[:n] = codes
        lanes = padded.reshape(-1, per_byte)                                             # [bytes, codes per byte]
        out = lanes[:, 0].copy()
        for j in range(1, per_byte):
            out |= lanes[:, j] << (j * bits)
        return out.tobytes()
    if n * bits <= SMALL_BITS:   # spell the bits out: least overhead for small tensors (activations)
        bit_matrix = (codes.astype(np.uint16)[:, None] >> _shifts(bits)) & 1           # [n, bits]
        return np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()
    groups = -(-n // CODES_PER_GROUP)
    word = code_type(bits)
    padded = np.zeros(groups * CODES_PER_GROUP, word)
    padded[:n] = codes
    columns = padded.reshape(groups, CODES_PER_GROUP).T.copy()  # (8, groups): code j of every group
    out = np.zeros((bits, groups), np.uint8)                     # (b, groups): byte k of every group
    for j, k, code_bit, byte_bit, length in _overlaps(bits):
        part = (columns[j] >> code_bit) & ((1 << length) - 1)   # at most 8 bits: fits the byte
        out[k] |= part.astype(np.uint8, copy=False) << byte_bit
    return out.T.tobytes()[: packed_size(n, bits)]


def packed_bytes(data: bytes, n: int, bits: int) -> np.ndarray:
    """The bytes of n packed codes as uint8, after checking their count and the unused high bits."""
    if n < 0:
        raise InvalidArgument(f"element count must not be negative, got {n}")
    expected = packed_size(n, bits)
    if len(data) != expected:
        raise InvalidArgument(f"{n} values at {bits} bits take {expected} bytes, got {len(data)}")
    buf = np.frombuffer(data, np.uint8)
    used = (n * bits) % 8
    if used and int(buf[-1]) >> used:
        raise InvalidArgument("the unused high bits of the last byte must be zero")
    return buf


def unpack(data: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of pack: n codes as uint32. The data must be exactly ceil(n*bits/8) bytes."""
    bits = check_bits(bits, allow_float=False)
    buf = packed_bytes(data, n, bits)
    if bits == 8:
        return buf.astype(np.uint32)
    if bits == 16:
        return np.frombuffer(data, "<u2").astype(np.uint32)
    if bits in (1, 2, 4):
        return byte_codes(bits)[buf].reshape(-1)[:n].astype(np.uint32)                 # [bytes, per byte] -> [n]
    if n * bits <= SMALL_BITS:
        bit_matrix = np.unpackbits(buf, count=n * bits, bitorder="little").reshape(n, bits)   # [n, bits]
        return (bit_matrix.astype(np.uint32) << _shifts(bits).astype(np.uint32)).sum(axis=1, dtype=np.uint32)
    groups = -(-n // CODES_PER_GROUP)
    word = code_type(bits)
    padded = np.zeros(groups * bits, np.uint8)
    padded[: buf.size] = buf
    rows = padded.reshape(groups, bits).T.astype(word)       # (b, groups): byte k of every group
    codes = np.zeros((CODES_PER_GROUP, groups), word)        # (8, groups): code j of every group
    for j, k, code_bit, byte_bit, length in _overlaps(bits):
        codes[j] |= ((rows[k] >> byte_bit) & ((1 << length) - 1)) << code_bit
    return codes.T.reshape(-1)[:n].astype(np.uint32)

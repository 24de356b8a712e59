"""Lossless coders for quantized codes: zlib and raw LZMA2 (standard library), with bounded decoders.

Heads (qpart.v1.PackedTensor.coding) use them per tensor: the server tries each and ships the smallest,
dense packing where none shrinks the tensor. Activations use zlib only (TensorBatch.coding).
A decoder is told the exact size its output must have, inflates at most one byte past it whatever the
stream claims, and refuses a stream that is shorter, longer, unfinished, corrupt or followed by other bytes.
bench/head_coding.py measured the choice: lzma over the codes one per byte wins on large dense layers,
lzma or zlib over the packed bits elsewhere; an order-0 (Huffman/rANS) coder of the code histogram
never beat the best of these per head, so there is none here.
"""
import lzma
import zlib

import numpy as np

from qpart.common import packing
from qpart.common.errors import InvalidArgument

# qpart.v1.TensorCoding
DENSE, ZLIB, LZMA2, LZMA2_BYTES = 0, 1, 2, 3
NAMES = {DENSE: "dense", ZLIB: "zlib", LZMA2: "lzma2", LZMA2_BYTES: "lzma2 over bytes"}
ZLIB_LEVEL = 9          # heads are coded once, offline: the smallest zlib output
LZMA_PRESET = 9
MIN_DICT = 4096         # LZMA2's smallest dictionary


def byte_codes(codes: np.ndarray, bits: int) -> bytes:
    """Codes one per byte (8 bits or fewer) or two bytes little-endian (9..16 bits)."""
    return np.asarray(codes).astype(np.uint8 if bits <= 8 else "<u2").tobytes()


def _lzma_filters(size: int, preset: int | None = None) -> list[dict]:
    """Raw LZMA2 with a dictionary as large as the output: no distance can reach further."""
    spec = {"id": lzma.FILTER_LZMA2, "dict_size": max(MIN_DICT, size)}
    if preset is not None:
        spec["preset"] = preset
    return [spec]


def compress(data: bytes, coding: int) -> bytes:
    if coding == DENSE:
        return data
    if coding == ZLIB:
        return zlib.compress(data, ZLIB_LEVEL)
    if coding in (LZMA2, LZMA2_BYTES):
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(data), LZMA_PRESET))
    raise InvalidArgument(f"unknown coding {coding}")


ALL = frozenset(NAMES)


def allowed(codings) -> frozenset | None:
    """The codings a device decodes, checked (DENSE always among them); None when that is every one."""
    found = frozenset(int(c) for c in codings) | {DENSE}
    if not found <= ALL:
        raise InvalidArgument(f"head codings must be among {sorted(ALL)} (TensorCoding), got {sorted(found)[:9]}")
    return None if found == ALL else found


def smallest(packed: bytes, n: int, bits: int, codings: frozenset | None = None) -> tuple[int, bytes]:
    """The coding that ships n packed codes of `bits` bits in the fewest bytes, and those bytes (dense on ties);
    codings: the ones the receiver decodes (None: every one)."""
    best = (DENSE, packed)
    candidates = [(ZLIB, packed), (LZMA2, packed), (LZMA2_BYTES, None)]
    for coding, data in candidates:
        if codings is not None and coding not in codings:
            continue
        data = data if data is not None else byte_codes(packing.unpack(packed, n, bits), bits)
        coded = compress(data, coding)
        if len(coded) < len(best[1]):
            best = (coding, coded)
    return best


def inflate(data: bytes, coding: int, size: int, what: str = "data") -> bytes:
    """Exactly `size` bytes from a zlib or raw LZMA2 stream, or InvalidArgument; never more than size + 1 inflated."""
    if size <= 0:
        raise InvalidArgument(f"{what}: a coded stream must inflate to at least one byte")
    if coding == ZLIB:
        inflater, errors = zlib.decompressobj(), zlib.error
    elif coding in (LZMA2, LZMA2_BYTES):
        inflater, errors = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_lzma_filters(size)), lzma.LZMAError
    else:
        raise InvalidArgument(f"{what}: unknown coding {coding}")
    try:
        out = inflater.decompress(data, size)
        if coding == ZLIB:
            extra = inflater.decompress(inflater.unconsumed_tail, 1) if inflater.unconsumed_tail else b""
        else:
            extra = b"" if inflater.eof or inflater.needs_input else inflater.decompress(b"", 1)
    except errors as e:
        raise InvalidArgument(f"{what}: the {NAMES[coding]} stream does not inflate: {e}") from None
    if extra or len(out) != size or not inflater.eof or inflater.unused_data:
        raise InvalidArgument(f"{what}: the {NAMES[coding]} stream must inflate to exactly {size} bytes and end there "
                              f"({'more' if extra else len(out)} bytes{'' if inflater.eof else ', the stream unfinished'}"
                              f"{', bytes after its end' if inflater.unused_data else ''})")
    return out


def decode_codes(data: bytes, coding: int, n: int, bits: int, what: str = "tensor") -> np.ndarray:
    """n codes as uint32 from data coded as `coding`; a coded stream may not be larger than the dense packing."""
    dense = packing.packed_size(n, bits)
    if coding == DENSE:
        return packing.unpack(data, n, bits)
    if coding not in NAMES:
        raise InvalidArgument(f"{what}: unknown coding {coding} (0 dense, 1 zlib, 2 lzma2, 3 lzma2 over bytes)")
    if not 0 < len(data) <= dense:
        raise InvalidArgument(f"{what}: coded as {NAMES[coding]}, {n} codes at {bits} bits take 1 to {dense} bytes "
                              f"(their dense size), got {len(data)}")
    if coding != LZMA2_BYTES:
        return packing.unpack(inflate(data, coding, dense, what), n, bits)
    width = 1 if bits <= 8 else 2
    codes = np.frombuffer(inflate(data, coding, n * width, what), np.uint8 if width == 1 else "<u2").astype(np.uint32)
    if n and int(codes.max()) >> bits:
        raise InvalidArgument(f"{what}: a code exceeds {(1 << bits) - 1}, the largest {bits}-bit code")
    return codes

"""PackedTensor <-> numpy, with every declared size checked before anything is allocated."""
import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np

from qpart.common import lossless, guard, images, packing, quant
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb

DEFAULT_MAX_ELEMENTS = 1 << 26  # 64 Mi elements (256 MiB as float32) per tensor unless the caller says otherwise
RAW, ZLIB = 0, 1                 # TensorBatch.coding: qpart.v1.Coding CODING_RAW, CODING_ZLIB
ZLIB_LEVEL = 1                   # the device codes at zlib's fastest level (see bench/activation_coding.py)

_GRANULARITY_TO_PB = {quant.PER_TENSOR: pb.PER_TENSOR, quant.PER_CHANNEL: pb.PER_CHANNEL}


def element_count(shape, what: str = "tensor", max_elements: int = DEFAULT_MAX_ELEMENTS) -> int:
    """Product of a declared shape, refusing empty dims and anything above max_elements."""
    dims = [int(d) for d in shape]
    if not dims:
        raise InvalidArgument(f"{what} has an empty shape")
    if any(d <= 0 for d in dims):
        raise InvalidArgument(f"{what} shape {dims} has a dimension that is not positive")
    n = math.prod(dims)
    if n > max_elements:
        raise InvalidArgument(f"{what} shape {dims} declares {n} elements; the limit is {max_elements}")
    return n


def encode_float32(x: np.ndarray) -> bytes:
    x = np.asarray(x, np.float32)
    quant.check_finite(x)
    return x.astype("<f4", copy=False).tobytes()


def decode_float32(data: bytes, n: int) -> np.ndarray:
    if len(data) != 4 * n:
        raise InvalidArgument(f"{n} float32 values take {4 * n} bytes, got {len(data)}")
    return guard.check_finite(np.frombuffer(data, "<f4").astype(np.float32), "float32 data")   # the input guard


def encode(name: str, x: np.ndarray, bits: int, granularity: str = quant.PER_TENSOR) -> pb.PackedTensor:
    """Quantize x at `bits` (or keep float32 for bits = 32) and pack it."""
    x = np.asarray(x, np.float32)
    bits = quant.check_bits(bits, f"bit width of {name!r}")
    msg = pb.PackedTensor(name=name, shape=list(x.shape), bits=bits)
    if bits == quant.FLOAT_BITS:
        msg.data = encode_float32(x)
        return msg
    codes, params = quant.quantize(x, bits, granularity)
    msg.granularity = _GRANULARITY_TO_PB[granularity]
    msg.scale.extend(params.scale.tolist())
    msg.zero_point.extend(params.zero_point.tolist())
    msg.data = packing.pack(codes, bits)
    return msg


def code_tensor(msg: pb.PackedTensor, codings: frozenset | None = None) -> pb.PackedTensor:
    """Recode a dense quantized tensor with whichever coder ships it smallest (heads; float32 stays as it is);
    codings: those the device decodes (None: every one)."""
    if msg.bits <= quant.MAX_BITS and msg.coding == lossless.DENSE:
        msg.coding, msg.data = lossless.smallest(msg.data, math.prod(msg.shape), msg.bits, codings)
    return msg


@dataclass(frozen=True)
class CompactTensor:
    """A parameter kept as it travels: integer codes (one byte each for 8 bits or fewer, two above) and
    their scales, dequantized only when used; or float32 values (bits = 32)."""
    shape: tuple[int, ...]
    codes: np.ndarray | None = None              # uint8 or uint16, [*shape]
    params: quant.QuantParams | None = None
    values: np.ndarray | None = None             # float32 when the tensor travelled unquantized

    def float(self) -> np.ndarray:
        return self.values if self.values is not None else quant.dequantize(self.codes, self.params)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes if self.values is not None else self.codes.nbytes + self.params.scale.nbytes * 3


def decode_compact(msg: pb.PackedTensor, expected_shape=None, max_elements: int = DEFAULT_MAX_ELEMENTS) -> CompactTensor:
    """A PackedTensor as codes and scales, validating bits, shape, scales and byte count first."""
    what = f"tensor {msg.name[:64]!r}" if msg.name else "tensor"
    shape = [int(d) for d in msg.shape]
    if expected_shape is not None and shape != [int(d) for d in expected_shape]:
        raise InvalidArgument(f"{what} has shape {shape[:8]}, expected {list(expected_shape)}")
    n = element_count(shape, what, max_elements)
    bits = quant.check_bits(msg.bits, f"bit width of {what}")
    if bits == quant.FLOAT_BITS:
        if msg.coding != lossless.DENSE:
            raise InvalidArgument(f"{what} is float32; only quantized codes may be coded")
        return CompactTensor(tuple(shape), values=decode_float32(msg.data, n).reshape(shape))
    groups = {pb.PER_TENSOR: 1, pb.PER_CHANNEL: shape[0]}.get(msg.granularity)
    if groups is None:
        raise InvalidArgument(f"{what} is quantized but its granularity is not PER_TENSOR or PER_CHANNEL")
    if len(msg.scale) != groups or len(msg.zero_point) != groups:
        raise InvalidArgument(f"{what} needs {groups} scale(s) and zero point(s), got "
                              f"{len(msg.scale)} and {len(msg.zero_point)}")
    scale = np.asarray(msg.scale, np.float32)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise InvalidArgument(f"{what} has a scale that is not a positive finite number")
    zero = np.asarray(msg.zero_point, np.int64)
    if (zero > (1 << bits) - 1).any():
        raise InvalidArgument(f"{what} has a zero point above {(1 << bits) - 1}, the largest {bits}-bit code")
    codes = lossless.decode_codes(msg.data, msg.coding, n, bits, what).astype(quant.code_type(bits)).reshape(shape)
    return CompactTensor(tuple(shape), codes, quant.QuantParams(bits, scale, zero))


def decode(msg: pb.PackedTensor, expected_shape=None, max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """Restore a PackedTensor to float32, validating bits, shape, scales and byte count first."""
    return decode_compact(msg, expected_shape, max_elements).float()


def check_batch(n: int, sample_shape, bits: int, data_len: int, max_elements: int = DEFAULT_MAX_ELEMENTS,
                coding: int = RAW) -> int:
    """Validate a declared activation batch before decoding it; returns the element count."""
    shape = tuple(int(d) for d in sample_shape)
    total, fewest, most = _batch_bounds(n, shape, bits, max_elements, coding)
    if fewest <= data_len <= most:
        return total
    if images.is_image(coding):
        raise InvalidArgument(f"{n} image-coded input(s) of shape {list(shape)} take 1 to {most} bytes, got {data_len}")
    expected = packing.packed_size(total, bits)
    if coding == ZLIB:
        raise InvalidArgument(f"{n} activation(s) of shape {list(shape)} at {bits} bits take {expected} bytes, "
                              f"zlib-coded at most {most}; got {data_len}")
    raise InvalidArgument(f"{n} activation(s) of shape {list(shape)} at {bits} bits take {expected} bytes, "
                          f"got {data_len}")


@functools.lru_cache(maxsize=1024)
def _batch_bounds(n: int, sample_shape: tuple, bits: int, max_elements: int, coding: int) -> tuple[int, int, int]:
    """(elements, fewest bytes, most bytes) of a declared batch; the same for every message of a stream's
    batch size, so computed once (a refused declaration raises and is not kept)."""
    per_sample = element_count(sample_shape, "activation sample", max_elements)
    total = element_count([n, per_sample], "activation batch", max_elements) if n else 0
    expected = packing.packed_size(total, bits)
    if images.is_image(coding):
        images.check_shape(sample_shape, bits, "activation sample")
        return total, 1, n * (images.FRAME.size + images.file_limit(sample_shape))
    if coding == ZLIB:
        return total, 1, coded_limit(expected)
    if coding != RAW:
        raise InvalidArgument(f"unknown activation coding {coding} (0: raw, 1: zlib, 2: png, 3: jpeg, 4: webp)")
    return total, expected, expected


def coding_label(coding: int, quality: int = 0) -> str:
    """'raw', 'zlib', 'png', 'jpeg q75', ... for reports."""
    return {RAW: "raw", ZLIB: "zlib"}.get(coding) or images.label(coding, quality)


def message_bound(sample_shape, bits: int, coding: int = RAW) -> int:
    """The most bytes one input's tensor may take in TensorBatch.data under a coding."""
    if images.is_image(coding):
        return images.FRAME.size + images.file_limit(sample_shape)
    raw = packing.packed_size(math.prod(int(d) for d in sample_shape), bits)
    return coded_limit(raw) if coding == ZLIB else raw


def coded_limit(raw: int) -> int:
    """The most bytes a zlib-coded tensor of `raw` packed bytes may take (zlib's worst case is far below)."""
    return raw + raw // 1000 + 64


def code(data: bytes, coding: int) -> bytes:
    return zlib.compress(data, ZLIB_LEVEL) if coding == ZLIB else data


def uncode(data: bytes, coding: int, raw: int) -> bytes:
    """The packed bytes of a coded tensor (call check_batch first): exactly `raw` of them, or InvalidArgument.
    Never inflates more than raw + 1 bytes, whatever the stream claims."""
    if coding == RAW:
        return data
    return lossless.inflate(data, lossless.ZLIB, raw, "zlib-coded activations")


def encode_message(x: np.ndarray, params: quant.QuantParams | None, coding: int = RAW, quality: int = 0) -> bytes:
    """A batch [n, *sample_shape] as TensorBatch.data: quantized with the plan's static quantization, then
    packed (and zlib-coded), or each input as an image file."""
    if not images.is_image(coding):
        return code(encode_batch(x, params), coding)
    if params is None or params.scale.size != 1:
        raise InvalidArgument("image codings carry 8-bit codes with one scale")
    return images.encode(quant.quantize_with(x, params, np.uint8), coding, quality)


def decode_message(data: bytes, coding: int, n: int, sample_shape, params: quant.QuantParams | None) -> np.ndarray:
    """Inverse of encode_message (call check_batch first): [n, *sample_shape] float32."""
    if images.is_image(coding):
        if params is None or params.scale.size != 1:
            raise InvalidArgument("image codings carry 8-bit codes with one scale")
        codes = images.decode(data, coding, n, sample_shape)                            # [n, C, H, W] uint8
        table = _byte_values(params.bits, float(params.scale[0]), int(params.zero_point[0]))
        return table[codes.reshape(-1)].reshape(codes.shape)
    raw = packing.packed_size(n * math.prod(int(d) for d in sample_shape), params.bits if params else quant.FLOAT_BITS)
    return decode_batch(uncode(data, coding, raw), n, sample_shape, params)


def encode_batch(x: np.ndarray, params: quant.QuantParams | None) -> bytes:
    """Pack a batch [n, *sample_shape] with the plan's static quantization (None: float32)."""
    if params is None:
        return encode_float32(x)
    return packing.pack(quant.quantize_with(x, params, quant.code_type(params.bits)), params.bits)


@functools.lru_cache(maxsize=256)
def _byte_values(bits: int, scale: float, zero: int) -> np.ndarray:
    """[256, 8 // bits] float32: the values each packed byte stands for (per-tensor 1, 2, 4 or 8 bits)."""
    params = quant.QuantParams(bits, np.array([scale], np.float32), np.array([zero], np.int64))
    return quant.dequantize(packing.byte_codes(bits), params)


def decode_batch(data: bytes, n: int, sample_shape, params: quant.QuantParams | None) -> np.ndarray:
    """Inverse of encode_batch; call check_batch first."""
    shape = (n, *[int(d) for d in sample_shape])
    count = math.prod(shape)
    if params is None:
        return decode_float32(data, count).reshape(shape)
    if params.scale.size == 1 and 8 % params.bits == 0:   # one table lookup per byte
        table = _byte_values(params.bits, float(params.scale[0]), int(params.zero_point[0]))
        return table[packing.packed_bytes(data, count, params.bits)].reshape(-1)[:count].reshape(shape)
    return quant.dequantize(packing.unpack(data, count, params.bits).reshape(shape), params)

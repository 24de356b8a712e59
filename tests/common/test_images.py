import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from qpart.common import images, quant, tensors
from qpart.common.errors import InvalidArgument


def _codes(n: int, c: int, h: int = 20, w: int = 24) -> np.ndarray:
    """Image-like codes: a bright blob on a dark background, different per input and channel."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, c, h, w), np.uint8)
    for i in range(n):
        for ch in range(c):
            out[i, ch] = np.clip(255 * np.exp(-((yy - 5 - i) ** 2 + (xx - 8 - ch) ** 2) / 30), 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("coding, quality, tolerance", [(images.PNG, 0, 0), (images.JPEG, 90, 24), (images.WEBP, 90, 24)])
def test_image_codings_round_trip(channels, coding, quality, tolerance):
    codes = _codes(3, channels)
    data = images.encode(codes, coding, quality)
    back = images.decode(data, coding, 3, codes.shape[1:])
    assert back.shape == codes.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - codes.astype(int)).max() <= tolerance
    if coding == images.PNG:
        assert np.array_equal(back, codes)                                       # lossless


def test_messages_quantize_then_code_the_input_and_decode_to_the_plans_values():
    params = quant.params_for_range(-1.0, 2.0, 8)
    x = np.random.default_rng(0).uniform(-1, 2, (2, 1, 16, 16)).astype(np.float32)
    data = tensors.encode_message(x, params, images.PNG)
    assert tensors.check_batch(2, (1, 16, 16), 8, len(data), coding=images.PNG) == 512
    back = tensors.decode_message(data, images.PNG, 2, (1, 16, 16), params)
    assert np.array_equal(back, quant.dequantize(quant.quantize_with(x, params), params))   # as raw 8-bit codes


def _file(fmt: str, size=(24, 20), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header (CRC fixed) declares other dimensions: a decompression bomb's header."""
    data = bytearray(_file("PNG"))
    data[16:24] = struct.pack(">II", width, height)                 # IHDR payload starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _framed(*files: bytes) -> bytes:
    return b"".join(images.FRAME.pack(len(f)) + f for f in files)


@pytest.mark.parametrize("data, coding, match", [
    (_framed(_file("PNG")), images.JPEG, "not a valid JPEG file"),                # a PNG where a JPEG is declared
    (_framed(_file("PNG", (25, 20))), images.PNG, "declares 25x20"),             # other dimensions
    (_framed(_file("PNG", mode="RGB")), images.PNG, "declares 24x20 RGB"),       # other mode
    (_framed(_png_declaring(3000, 3000)), images.PNG, "declares 3000x3000"),        # a bomb: refused from its header
    (_framed(_file("PNG"))[:-5], images.PNG, "declares .* bytes"),               # truncated block
    (_framed(_file("PNG")) + b"x", images.PNG, "after its 1 files"),
    (_framed(b"\x89PNG garbage"), images.PNG, "not a valid PNG file"),
    (images.FRAME.pack(10 ** 9), images.PNG, "declares 1000000000 bytes"),
    (b"\x01", images.PNG, "ends before its length"),
])
def test_bad_image_blocks_are_refused_before_decoding(data, coding, match):
    with pytest.raises(InvalidArgument, match=match):
        images.decode(data, coding, 1, (1, 20, 24))


def test_image_codings_carry_only_8_bit_one_or_three_channel_inputs():
    for shape, bits in (((2, 20, 24), 8), ((1, 20, 24), 4), ((480,), 8)):
        with pytest.raises(InvalidArgument, match="image codings carry 8-bit"):
            tensors.check_batch(1, shape, bits, 100, coding=images.JPEG)
    limit = images.FRAME.size + images.file_limit((1, 20, 24))
    with pytest.raises(InvalidArgument, match=f"take 1 to {2 * limit} bytes"):
        tensors.check_batch(2, (1, 20, 24), 8, 2 * limit + 1, coding=images.JPEG)

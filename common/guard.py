"""The one input guard: what an image file or a float tensor from a peer must be before qpart decodes or uses it.

Both ends call it, with the same limits (`LIMITS`; qpart.v1.LocalAgent's agent.proto states them):
the server on the input as image files at cut 0 (qpart.common.images, which also holds every file to
the plan's size) and on float32 data (qpart.common.tensors); the device daemon on what
LocalAgent.Classify receives (qpart.device.daemon), and the library on image bytes
(qpart.device.split_client).

An image file is checked from its header, read here for PNG (IHDR), JPEG (the SOF marker) and WebP
(VP8, VP8L, VP8X) before Pillow opens it: its format, width and height, and mode. An accepted file
decodes in at most `decode_bytes(header)` <= `ImageLimits.max_decode_bytes` bytes. A float tensor's
shape is checked (and bounded) before its bytes are read, and every value must be finite. Everything
refused raises InvalidArgument naming what was wrong (FailedPrecondition where Pillow is missing).
"""
import io
import math
import struct
from dataclasses import dataclass

import numpy as np

from qpart.common.errors import FailedPrecondition, InvalidArgument

# Bytes one pixel may cost while a file is decoded to uint8 pixels, at most: Pillow's raster in the file's
# mode (4: Pillow keeps every multi-band mode in 4 bytes), the decoder's own buffers (a progressive JPEG's
# coefficients, 2 bytes per component; libwebp's two canvases and the frame it hands Pillow, 4 bytes each),
# the raster converted to L or RGB (4) and the pixels handed out (3, twice while Pillow joins them).
# Measured at the pixel limit: PNG 14, JPEG 14, WebP 23 (tests/common/test_guard.py).
DECODE_BYTES_PER_PIXEL = 30
# The modes accepted, as Pillow names them -> channels handed out: 1 (gray) or 3 (RGB)
MODES = {"1": 1, "L": 1, "LA": 1, "I;16": 1, "I": 1, "P": 3, "RGB": 3, "RGBA": 3, "CMYK": 3}


@dataclass(frozen=True)
class ImageLimits:
    """What one image file may declare; the server and the device daemon use the same (LIMITS)."""
    max_file_bytes: int = 4 << 20        # one encoded file, bytes (gRPC's default message limit)
    max_side: int = 4096                 # its width and its height, pixels each
    max_pixels: int = 1 << 21            # width x height, pixels: 2,097,152 (a 1920 x 1080 frame fits)
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")    # the formats accepted, as Pillow names them

    @property
    def max_decode_bytes(self) -> int:
        """The most bytes decoding one accepted file may cost: max_pixels x DECODE_BYTES_PER_PIXEL (60 MiB)."""
        return self.max_pixels * DECODE_BYTES_PER_PIXEL


LIMITS = ImageLimits()


@dataclass(frozen=True)
class ImageHeader:
    format: str       # PNG, JPEG or WEBP
    width: int        # pixels
    height: int       # pixels
    mode: str         # Pillow's mode for it: L, RGB, RGBA, P, ...

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def channels(self) -> int:
        """Channels of the pixels handed out: 1 (gray) or 3 (RGB)."""
        return MODES[self.mode]


def decode_bytes(header: ImageHeader) -> int:
    """The most bytes decoding this file to uint8 pixels costs (see DECODE_BYTES_PER_PIXEL)."""
    return header.pixels * DECODE_BYTES_PER_PIXEL


def pillow():
    try:
        from PIL import Image
    except ImportError:
        raise FailedPrecondition("image files need Pillow here: pip install 'qpart[images]'") from None
    return Image


_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}     # IHDR colour type -> mode (8 bits per sample)
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}                     # components -> mode
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}              # start-of-frame markers (not DHT, JPG, DAC)


def _png(data: bytes) -> tuple[int, int, str]:
    if len(data) < 29:
        raise struct.error
    if data[12:16] != b"IHDR":
        raise InvalidArgument("the PNG file has no IHDR header")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_MODES or depth not in (1, 2, 4, 8, 16):
        raise InvalidArgument(f"the PNG file declares colour type {colour} at {depth} bits, which is not supported")
    mode = _PNG_MODES[colour]
    if colour == 0 and depth == 16:
        mode = "I;16"
    return width, height, mode


def _jpeg(data: bytes) -> tuple[int, int, str]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise InvalidArgument(f"the JPEG file has no marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:                                   # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:         # markers without a length
            at += 2
            continue
        if marker in (0xD9, 0xDA):                          # end of image, start of scan: no frame header before
            break
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if marker in _SOF:
            if length < 8 or at + 10 > len(data):
                raise InvalidArgument("the JPEG file's frame header is truncated")
            precision, height, width, components = struct.unpack(">BHHB", data[at + 4:at + 10])
            if precision != 8 or components not in _JPEG_MODES:
                raise InvalidArgument(f"the JPEG file declares {components} components at {precision} bits, "
                                      "which is not supported")
            return width, height, _JPEG_MODES[components]
        at += 2 + length
    raise InvalidArgument("the JPEG file has no frame header (SOF) before its data")


def _webp(data: bytes) -> tuple[int, int, str]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF, "RGB"
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])       # width - 1, height - 1 (14 bits each), alpha used (1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, "RGBA" if bits >> 28 & 1 else "RGB"
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1,
                "RGBA" if data[20] & 0x10 else "RGB")
    raise InvalidArgument("the WEBP file has no VP8, VP8L or VP8X header")


_SIGNATURES = {"PNG": lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", "JPEG": lambda d: d[:3] == b"\xff\xd8\xff",
               "WEBP": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"}
_READERS = {"PNG": _png, "JPEG": _jpeg, "WEBP": _webp}


def image_header(data: bytes, limits: ImageLimits = LIMITS, formats=None, what: str = "the image") -> ImageHeader:
    """The file's format, size and mode, read from its first bytes and checked against the limits; nothing
    is decoded. formats: the formats accepted here (a subset of limits.formats; default all of them)."""
    formats = tuple(formats or limits.formats)
    data = bytes(data)
    kind = next((f for f in formats if f in limits.formats and _SIGNATURES[f](data)), None)
    if kind is None:
        named = ", ".join(formats[:-1]) + " or " * (len(formats) > 1) + formats[-1]
        raise InvalidArgument(f"{what} is not a valid {named} file (its first bytes say otherwise)")
    try:
        width, height, mode = _READERS[kind](data)
    except struct.error:
        raise InvalidArgument(f"{what}: the {kind} file's header is truncated") from None
    except InvalidArgument as e:
        raise InvalidArgument(f"{what}: {e}") from None
    header = ImageHeader(kind, width, height, mode)
    if not (0 < width <= limits.max_side and 0 < height <= limits.max_side) or header.pixels > limits.max_pixels:
        raise InvalidArgument(f"{what} declares {width}x{height} pixels; at most {limits.max_side} per side and "
                              f"{limits.max_pixels:,} in all (decoding costs up to {DECODE_BYTES_PER_PIXEL} bytes a "
                              f"pixel)")
    return header


def decode_image(data: bytes, limits: ImageLimits = LIMITS, formats=None, expect=None, mode: str | None = None,
                 what: str = "the image") -> np.ndarray:
    """An image file's uint8 pixels, [H, W] (mode L) or [H, W, 3] (mode RGB; alpha dropped, palette resolved),
    after checking its size and its header against the limits (and `expect(header)`, which raises to refuse
    it). mode: L or RGB to hand out; default L for a gray file, RGB for any other."""
    Image = pillow()
    if not 0 < len(data) <= limits.max_file_bytes:
        raise InvalidArgument(f"{what} takes {len(data):,} bytes; 1 to {limits.max_file_bytes:,} are accepted")
    header = image_header(data, limits, formats, what)
    if expect is not None:
        expect(header)
    try:
        with Image.open(io.BytesIO(data), formats=[header.format]) as image:
            if image.size != (header.width, header.height) or image.mode not in MODES:
                raise InvalidArgument(f"{what}: Pillow reads a {image.size[0]}x{image.size[1]} {image.mode} image "
                                      f"where its header says {header.width}x{header.height} {header.mode}")
            wanted = mode or ("L" if MODES[image.mode] == 1 else "RGB")
            if image.mode != wanted:
                image = image.convert(wanted)
            pixels = np.asarray(image)
    except InvalidArgument:
        raise
    except Exception as e:        # Pillow raises OSError, SyntaxError, ValueError, ... on a bad file
        raise InvalidArgument(f"{what} is not a valid {header.format} file "
                              f"({type(e).__name__}: {str(e)[:120]})") from None
    if pixels.shape[:2] != (header.height, header.width):
        raise InvalidArgument(f"{what} decoded to {list(pixels.shape)}, its header says {header.height}x{header.width}")
    return pixels


def check_finite(x: np.ndarray, what: str = "the tensor") -> np.ndarray:
    """x, if every value is finite; else InvalidArgument counting the NaN and infinite values and where the first is."""
    bad = ~np.isfinite(x)
    if bad.any():
        nan = int(np.isnan(x).sum())
        first = [int(i) for i in np.unravel_index(int(bad.argmax()), x.shape)]
        raise InvalidArgument(f"{what} holds {nan} NaN and {int(bad.sum()) - nan} infinite value(s) of {x.size} "
                              f"(the first at index {first}); only finite values are accepted")
    return x


def float_tensor(shape, data: bytes, what: str = "the tensor", expected=None, max_elements: int = 1 << 24) -> np.ndarray:
    """float32 values from little-endian bytes, after checking the declared shape (positive dimensions, at
    most max_elements, equal to `expected` when given) and the byte count; every value must be finite."""
    dims = [int(d) for d in shape]
    if not dims or any(d < 1 for d in dims) or math.prod(dims) > max_elements:
        raise InvalidArgument(f"{what}: shape {dims[:8]} is empty or too large (at most {max_elements:,} values)")
    if expected is not None and dims != [int(d) for d in expected]:
        raise InvalidArgument(f"{what}: shape {dims[:8]}; the model's input is {[int(d) for d in expected]}")
    if len(data) != 4 * math.prod(dims):
        raise InvalidArgument(f"{what}: shape {dims} takes {4 * math.prod(dims)} bytes, got {len(data)}")
    return check_finite(np.frombuffer(data, "<f4").astype(np.float32).reshape(dims), what)


def check_pixels(x: np.ndarray, limits: ImageLimits = LIMITS, what: str = "the pixels") -> np.ndarray:
    """Raw pixel values [H, W] or [H, W, C] (C in 1, 3, 4) as uint8: sides and count within the limits, every
    value a whole number in 0..255."""
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] not in (1, 3, 4)):
        raise InvalidArgument(f"{what} must be [H, W] or [H, W, C] with C in 1, 3, 4; got {list(x.shape)}")
    height, width = x.shape[:2]
    if height > limits.max_side or width > limits.max_side or height * width > limits.max_pixels:
        raise InvalidArgument(f"{what} are {width}x{height}; at most {limits.max_side} per side and "
                              f"{limits.max_pixels:,} in all")
    check_finite(x, what)
    if (x < 0).any() or (x > 255).any() or (x != np.floor(x)).any():
        raise InvalidArgument(f"{what} must be whole numbers in 0..255")
    return x.astype(np.uint8)

"""The input as image files: 8-bit codes [n, C, H, W] (C = 1 or 3) <-> PNG, JPEG or WebP files (Pillow).

What a camera pipeline would send instead of split inference; qpart.v1.Coding CODING_PNG, CODING_JPEG
and CODING_WEBP spell out the framing. Decoding checks the frame lengths, then each file's format and
its header's size and mode (qpart.common.guard, the one input guard), before Pillow decodes a pixel: a
file that declares anything else costs nothing.
"""
import io
import struct

import numpy as np

from qpart.common import guard
from qpart.common.errors import InvalidArgument

PNG, JPEG, WEBP = 2, 3, 4                  # qpart.v1.Coding
FORMATS = {PNG: "PNG", JPEG: "JPEG", WEBP: "WEBP"}
NAMES = {PNG: "png", JPEG: "jpeg", WEBP: "webp"}
BY_NAME = {name: coding for coding, name in NAMES.items()}
LOSSY = (JPEG, WEBP)
MODES = {1: "L", 3: "RGB"}                # channels -> Pillow mode
FRAME = struct.Struct("<I")


def is_image(coding: int) -> bool:
    return coding in FORMATS


def label(coding: int, quality: int = 0) -> str:
    """'jpeg q75', 'png'."""
    return NAMES[coding] + (f" q{quality}" if coding in LOSSY else "")


def available() -> frozenset[int]:
    """The image codings this machine can encode and decode (none without Pillow; WebP only where Pillow has it)."""
    try:
        from PIL import features
    except ImportError:
        return frozenset()
    return frozenset(c for c in FORMATS if c != WEBP or features.check("webp"))


def file_limit(sample_shape) -> int:
    """The most bytes one input's image file may take: twice its raw 8-bit codes plus headers."""
    return 2 * int(np.prod(sample_shape)) + 1024


def check_shape(sample_shape, bits: int, what: str = "input") -> tuple[int, int, int]:
    shape = tuple(int(d) for d in sample_shape)
    if bits != 8 or len(shape) != 3 or shape[0] not in MODES:
        raise InvalidArgument(f"{what}: image codings carry 8-bit [C, H, W] tensors with C = 1 or 3, "
                              f"not {list(shape)} at {bits} bits")
    return shape


def encode(codes: np.ndarray, coding: int, quality: int = 0) -> bytes:
    """codes [n, C, H, W] uint8 -> the framed files of the n inputs."""
    Image = guard.pillow()
    n, c, h, w = codes.shape
    check_shape(codes.shape[1:], 8)
    options = {"quality": int(quality)} if coding in LOSSY else {}
    if coding in LOSSY and not 1 <= quality <= 100:
        raise InvalidArgument(f"{NAMES[coding]} quality must be 1 to 100, got {quality}")
    out = []
    for i in range(n):
        pixels = codes[i, 0] if c == 1 else np.ascontiguousarray(codes[i].transpose(1, 2, 0))     # [H, W] or [H, W, 3]
        buf = io.BytesIO()
        Image.fromarray(np.asarray(pixels, np.uint8), MODES[c]).save(buf, FORMATS[coding], **options)
        out += [FRAME.pack(buf.tell()), buf.getvalue()]
    return b"".join(out)


def frames(data: bytes, n: int, sample_shape) -> list[memoryview]:
    """The n files of a framed block, after checking every length (no decoding)."""
    limit, view, files, at = file_limit(sample_shape), memoryview(data), [], 0
    for i in range(n):
        if at + FRAME.size > len(view):
            raise InvalidArgument(f"image-coded input {i} of {n}: the block ends before its length")
        (size,) = FRAME.unpack_from(view, at)
        at += FRAME.size
        if not 0 < size <= limit or at + size > len(view):
            raise InvalidArgument(f"image-coded input {i} of {n} declares {size} bytes; it may take 1 to {limit} "
                                  f"and {len(view) - at} remain")
        files.append(view[at:at + size])
        at += size
    if at != len(view):
        raise InvalidArgument(f"the image-coded block holds {len(view) - at} bytes after its {n} files")
    return files


def decode(data: bytes, coding: int, n: int, sample_shape) -> np.ndarray:
    """The framed files of n inputs -> codes [n, C, H, W] uint8; every declared size checked before decoding.
    Each file goes through the input guard (qpart.common.guard, the limits the device daemon applies too) and
    must declare the plan's size and mode."""
    c, h, w = check_shape(sample_shape, 8)
    files = frames(data, n, (c, h, w))
    mode = "RGB" if coding == WEBP else MODES[c]          # WebP has no grayscale: its luma is read
    out = np.empty((n, c, h, w), np.uint8)
    for i, file in enumerate(files):
        def expect(header: guard.ImageHeader, i=i) -> None:
            if (header.width, header.height) != (w, h) or header.mode != mode:
                raise InvalidArgument(f"image-coded input {i}: the file declares {header.width}x{header.height} "
                                      f"{header.mode}, the plan {w}x{h} {mode}")
        pixels = guard.decode_image(bytes(file), formats=[FORMATS[coding]], expect=expect, mode=MODES[c],
                                    what=f"image-coded input {i}")                # [H, W] or [H, W, 3]
        if pixels.shape != ((h, w) if c == 1 else (h, w, 3)):
            raise InvalidArgument(f"image-coded input {i} decoded to {list(pixels.shape)}")
        out[i] = pixels if c == 1 else pixels.transpose(2, 0, 1)
    return out

"""The input guard (qpart.common.guard): image files checked from their header before a pixel is decoded,
what decoding an accepted one costs, and float tensors checked for shape and finiteness."""
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from qpart.common import guard, images, tensors
from qpart.common.errors import InvalidArgument
from tests.common import crafted


def _file(fmt: str, mode: str, size=(40, 30), **options) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (7,) * len(Image.new(mode, (1, 1)).getbands())).save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, mode, options, header_mode", [
    ("PNG", "L", {}, "L"), ("PNG", "RGB", {}, "RGB"), ("PNG", "RGBA", {}, "RGBA"), ("PNG", "P", {}, "P"),
    ("PNG", "LA", {}, "LA"), ("PNG", "I;16", {}, "I;16"),
    ("JPEG", "L", {}, "L"), ("JPEG", "RGB", {"progressive": True}, "RGB"), ("JPEG", "CMYK", {}, "CMYK"),
    ("WEBP", "RGB", {}, "RGB"), ("WEBP", "RGBA", {}, "RGBA"), ("WEBP", "RGB", {"lossless": True}, "RGB"),
    ("WEBP", "RGBA", {"lossless": True}, "RGBA"),
])
def test_the_header_says_what_pillow_finds(fmt, mode, options, header_mode):
    data = _file(fmt, mode, **options)
    header = guard.image_header(data)
    with Image.open(io.BytesIO(data)) as image:
        assert (header.format, header.width, header.height) == (image.format, *image.size) == (fmt, 40, 30)
    assert header.mode == header_mode
    pixels = guard.decode_image(data)
    assert pixels.dtype == np.uint8 and pixels.shape == ((30, 40) if header.channels == 1 else (30, 40, 3))


@pytest.mark.parametrize("name", list(crafted.OVERSIZED))
def test_oversized_images_are_refused_from_their_header_at_no_cost(name):
    make, fmt = crafted.OVERSIZED[name]
    data = make()
    width, height = name.split()[1].split("x")
    refused, grew = crafted.peak_increase(lambda: guard.decode_image(data))
    assert isinstance(refused, InvalidArgument) and f"declares {width}x{height} pixels" in str(refused), refused
    assert grew < 8 * crafted.MIB, grew
    # the server's path (the input as image files, cut 0) refuses it with the same guard: INVALID_ARGUMENT
    block = images.FRAME.pack(len(data)) + data
    with pytest.raises(InvalidArgument):
        tensors.decode_message(block, {"PNG": images.PNG, "JPEG": images.JPEG, "WEBP": images.WEBP}[fmt], 1,
                               (3, 96, 96), None)


@pytest.mark.parametrize("data, match", [
    (crafted.png(40, 30)[:20], "header is truncated"),
    (crafted.png(40, 30)[:8] + b"\x00\x00\x00\x0dIHDX" + bytes(17), "no IHDR"),
    (crafted.png(40, 30).replace(b"\x08\x00\x00\x00\x00", b"\x08\x05\x00\x00\x00", 1), "colour type 5"),
    (b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02", "no frame header"),
    (b"\xff\xd8\xff\xe0\x00\x04abXYZW", "no marker at byte 8"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20), "no VP8, VP8L or VP8X header"),
    (b"GIF89a" + bytes(30), "not a valid PNG, JPEG or WEBP file"),
    (crafted.png(0, 30), "declares 0x30 pixels"),
    (crafted.png(4097, 1), "declares 4097x1 pixels"),
    (crafted.png(1449, 1449, rows=1), "declares 1449x1449 pixels"),            # 2,099,601 pixels: one row too many
])
def test_bad_headers_are_refused_by_name(data, match):
    with pytest.raises(InvalidArgument, match=match):
        guard.decode_image(data)


def test_a_file_whose_body_does_not_decode_is_refused_and_one_too_long_is_not_read():
    good = crafted.png(40, 30)
    with pytest.raises(InvalidArgument, match="not a valid PNG file"):
        guard.decode_image(good[:-30])                                 # the header is fine, the data is cut short
    with pytest.raises(InvalidArgument, match="takes 4,194,305 bytes"):
        guard.decode_image(good + bytes(guard.LIMITS.max_file_bytes + 1 - len(good)))
    with pytest.raises(InvalidArgument, match="is not a valid JPEG file"):
        guard.decode_image(good, formats=["JPEG"])                     # only the formats asked for


_AT_THE_LIMIT = textwrap.dedent("""
    import gc, sys
    from qpart.common import guard
    data = open(sys.argv[1], "rb").read()
    def kib(field):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
    import io, PIL.Image
    small = io.BytesIO()
    PIL.Image.new("RGB", (8, 8)).save(small, guard.image_header(data).format)
    guard.decode_image(small.getvalue())          # the decoder's code loaded before measuring
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")
    before = kib("VmRSS")
    pixels = guard.decode_image(data)
    print((kib("VmHWM") - before) * 1024, guard.decode_bytes(guard.image_header(data)), pixels.shape)
""")


@pytest.mark.parametrize("fmt, mode, size, options", [
    ("PNG", "RGBA", (1448, 1448), {}),
    ("JPEG", "CMYK", (1920, 1080), {"progressive": True, "quality": 90}),
    ("WEBP", "RGBA", (1920, 1080), {"quality": 80}),
])
def test_decoding_a_file_at_the_pixel_limit_costs_at_most_the_stated_bytes(tmp_path, fmt, mode, size, options):
    """Measured in a fresh process, whose heap holds nothing freed that decoding could reuse unseen."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    texture = ((xx * 7 + yy * 3 + (xx * yy) % 13) % 256).astype(np.uint8)
    Image.fromarray(np.stack([texture, texture[::-1], texture[:, ::-1], texture], -1), "RGBA").convert(mode).save(
        tmp_path / "image", fmt, **options)
    done = subprocess.run([sys.executable, "-c", _AT_THE_LIMIT, str(tmp_path / "image")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    grew, bound, shape = done.stdout.split(maxsplit=2)
    assert w * h <= guard.LIMITS.max_pixels and int(bound) <= guard.LIMITS.max_decode_bytes
    assert 0 < int(grew) <= int(bound), (grew, bound, shape)
    print(f"{fmt} {mode} {w}x{h}: decoding took {int(grew) / crafted.MIB:.1f} MiB of {int(bound) / crafted.MIB:.1f}")


def test_float_tensors_are_checked_for_shape_and_finiteness():
    x = np.zeros((3, 4, 5), np.float32)
    x[1, 2, 3], x[2, 0, 0], x[2, 1, 1] = np.nan, np.inf, np.nan
    with pytest.raises(InvalidArgument, match=r"holds 2 NaN and 1 infinite value\(s\) of 60 \(the first at index "
                                              r"\[1, 2, 3\]\)"):
        guard.float_tensor(x.shape, x.tobytes(), "the tensor")
    good = np.ones((3, 4, 5), np.float32)
    assert np.array_equal(guard.float_tensor([3, 4, 5], good.tobytes(), expected=(3, 4, 5)), good)
    for shape, data, expected, match in (([3, 4, 5], good.tobytes(), (1, 28, 28), "the model's input is"),
                                         ([3, 4, 5], good.tobytes()[:-1], None, "takes 240 bytes, got 239"),
                                         ([3, 0, 5], b"", None, "empty or too large"),
                                         ([1 << 20, 1 << 20], b"", None, "empty or too large")):
        with pytest.raises(InvalidArgument, match=match):
            guard.float_tensor(shape, data, "the tensor", expected)
    with pytest.raises(InvalidArgument, match="float32 data holds 1 NaN"):        # the server's float32 inputs
        tensors.decode_float32(np.float32([1, np.nan]).tobytes(), 2)


def test_pixels_are_bounded_like_images():
    assert guard.check_pixels(np.full((30, 40, 3), 255.0, np.float32)).dtype == np.uint8
    for x, match in ((np.zeros((30, 40, 2)), r"\[H, W, C\]"), (np.zeros((1, 4097)), "at most 4096 per side"),
                     (np.zeros((1500, 1500)), "2,097,152 in all"), (np.full((2, 2), np.nan), "holds 4 NaN"),
                     (np.full((2, 2), 256.0), "0..255")):
        with pytest.raises(InvalidArgument, match=match):
            guard.check_pixels(x)


def test_without_pillow_an_image_is_refused_as_a_precondition(monkeypatch):
    from qpart.common.errors import FailedPrecondition
    monkeypatch.setitem(sys.modules, "PIL", None)                  # import PIL raises ImportError
    with pytest.raises(FailedPrecondition, match="need Pillow"):
        guard.decode_image(crafted.png(40, 30))

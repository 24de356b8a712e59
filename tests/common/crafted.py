"""Hostile inputs, crafted small, and the peak-memory measurement the tests that replay them use.

The images are the cases issue 24 reported against the device daemon: headers declaring 100,000 x
100,000 (PNG), 65,500 x 65,500 (JPEG) and 16,383 x 16,383 (WebP) pixels, and real PNGs of zeros,
8,192 x 8,192 gray (66 KB) and 5,000 x 5,000 RGB (73 KB), written row by row so that crafting them costs
the test nothing. The head declares four 8,192 x 8,192 LZMA2-coded layers in 39.6 KB.
"""
import gc
import io
import lzma
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from qpart.common import lossless, network, packing
from qpart.v1 import network_pb2 as pb

MIB = 1 << 20


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width: int, height: int, rgb: bool = False, rows: int | None = None) -> bytes:
    """An 8-bit gray (or RGB) PNG declaring width x height; its IDAT holds `rows` rows of zeros (all of them by
    default: a valid file, compressed about 1,000 to 1), compressed a row at a time."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    z, row = zlib.compressobj(9), bytes(1 + width * (3 if rgb else 1))
    idat = b"".join([z.compress(row) for _ in range(height if rows is None else rows)] + [z.flush()])
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def small(fmt: str, mode: str = "RGB", size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt)
    return buf.getvalue()


def jpeg(width: int, height: int) -> bytes:
    """A 16 x 16 JPEG whose frame header (SOF0) declares width x height."""
    data, at = bytearray(small("JPEG")), 2
    while data[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp(width: int, height: int) -> bytes:
    """A 16 x 16 lossy WebP whose VP8 frame header declares width x height (14 bits each)."""
    data = bytearray(small("WEBP"))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", width, height)
    return bytes(data)


# name -> (the file, Pillow's format name): what issue 24 sent the daemon
OVERSIZED = {
    "png 100000x100000 header": (lambda: png(100_000, 100_000, rows=1), "PNG"),
    "jpeg 65500x65500 header": (lambda: jpeg(65_500, 65_500), "JPEG"),
    "webp 16383x16383 header": (lambda: webp(16_383, 16_383), "WEBP"),
    "png 8192x8192 zeros": (lambda: png(8192, 8192), "PNG"),
    "png 5000x5000 rgb zeros": (lambda: png(5000, 5000, rgb=True), "PNG"),
}


def bomb_head(layers: int = 4, width: int = 8192, bits: int = 8) -> bytes:
    """A head of `layers` linear layers width x width whose weights are all-zero codes coded as raw LZMA2: a few
    KB on the wire however much they decode to (4 x 8192 x 8192 at 8 bits: 39.6 KB)."""
    head = pb.Head(format_version=network.HEAD_FORMAT_VERSION, model="bomb", cut=layers,
                   network=pb.NetworkSpec(format_version=network.FORMAT_VERSION, input="x", input_shape=[width]))
    coder = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 1, "dict_size": 1 << 20}])
    zeros, dense = bytes(1 << 20), packing.packed_size(width * width, bits)
    coded = b"".join([coder.compress(zeros[:min(1 << 20, dense - at)]) for at in range(0, dense, 1 << 20)]
                     + [coder.flush()])
    previous = "x"
    for i in range(layers):
        head.network.nodes.add(name=f"fc{i}", inputs=[previous],
                               linear=pb.LinearOp(in_features=width, out_features=width, bias=False))
        head.parameters.add(name=f"fc{i}.weight", shape=[width, width], bits=bits, granularity=pb.PER_TENSOR,
                            scale=[1.0], zero_point=[0], coding=lossless.LZMA2, data=coded)
        previous = f"fc{i}"
    head.network.outputs.append(previous)
    return head.SerializeToString()


def random_head(layers: int, width: int, bits: int) -> bytes:
    """A valid head of dense random codes (or float32 values: bits 32), `layers` linear layers width x width."""
    head = pb.Head(format_version=network.HEAD_FORMAT_VERSION, model="m", cut=layers,
                   network=pb.NetworkSpec(format_version=network.FORMAT_VERSION, input="x", input_shape=[width]))
    rng, previous = np.random.default_rng(0), "x"
    for i in range(layers):
        head.network.nodes.add(name=f"fc{i}", inputs=[previous],
                               linear=pb.LinearOp(in_features=width, out_features=width, bias=False))
        if bits == 32:
            head.parameters.add(name=f"fc{i}.weight", shape=[width, width], bits=32,
                                data=rng.standard_normal(width * width, np.float32).tobytes())
            previous = f"fc{i}"
            continue
        codes = rng.integers(0, 1 << bits, width * width)
        head.parameters.add(name=f"fc{i}.weight", shape=[width, width], bits=bits, granularity=pb.PER_TENSOR,
                            scale=[0.01], zero_point=[1 << (bits - 1)], data=packing.pack(codes, bits))
        previous = f"fc{i}"
    head.network.outputs.append(previous)
    return head.SerializeToString()


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_increase(call):
    """(what call() returned or raised, by how many bytes it raised this process's peak resident set): the
    peak (VmHWM) is reset to the current resident set first (/proc/self/clear_refs, Linux 4.0+). Threads of
    this process (an in-process daemon or server) count too."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        pytest.skip(f"cannot reset this process's peak resident set: {e}")
    before = _kib("VmRSS")
    try:
        outcome = call()
    except Exception as e:        # noqa: BLE001 (the caller asserts on it)
        outcome = e
    return outcome, (_kib("VmHWM") - before) * 1024

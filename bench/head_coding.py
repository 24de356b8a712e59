"""How small could heads be with an entropy coder? Measured, for issue 13, before choosing a format.

    python bench/head_coding.py [--models model-repo] [--budget 1] [--min-weights 100000]

For each model's catalog entries at --budget whose head holds at least --min-weights weights: the head
as shipped today (dense packing, ceil(n*b/8) bytes per tensor) against the same head with each
quantized tensor's codes coded by
  zlib-9 and lzma (standard library) over the packed bytes and over the codes one per byte (or two),
  the order-0 entropy of the code histogram: what a static Huffman or rANS coder approaches, plus a
  256-entry table per tensor,
and the time numpy + zlib/lzma take to decode the whole head here against its download at 20 Mbit/s.
Everything that is not a code (node list, scales, zero points, float32 batch-norm vectors) is kept as
is, so the percentages are of the head's float32 weight bytes, as in docs/planner.md.
"""
import argparse
import lzma
import pathlib
import time
import zlib

import numpy as np

from qpart.common import packing
from qpart.server.models.heads import build_head, serialize
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import catalog as catalog_mod

LINK_BPS = 20e6
CODERS = ("dense", "zlib", "lzma", "zlib-bytes", "lzma-bytes", "entropy")


def order0_bytes(codes: np.ndarray, bits: int) -> float:
    """Shannon bound of the codes under their own histogram, plus the table a static coder ships."""
    counts = np.bincount(codes.astype(np.int64), minlength=1 << bits)
    p = counts[counts > 0] / codes.size
    return float(-(p * np.log2(p)).sum() * codes.size / 8 + 2 * min(1 << bits, 256))


def coded_sizes(data: bytes, n: int, bits: int) -> dict[str, float]:
    codes = packing.unpack(data, n, bits)                                         # [n] integers < 2**bits
    aligned = codes.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    return {"dense": len(data), "zlib": len(zlib.compress(data, 9)), "lzma": len(lzma.compress(data)),
            "zlib-bytes": len(zlib.compress(aligned, 9)), "lzma-bytes": len(lzma.compress(aligned)),
            "entropy": order0_bytes(codes, bits)}


def decode_seconds(blobs: list[tuple[bytes, int, int]], compress, decompress, rounds: int = 5) -> float:
    coded = [(compress(data), n, bits) for data, n, bits in blobs]
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for blob, n, bits in coded:
            packing.unpack(decompress(blob), n, bits)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--budget", type=float, default=1.0, help="catalog budget, points")
    parser.add_argument("--min-weights", type=int, default=100_000, help="heads with at least this many weights")
    args = parser.parse_args()
    print(f"{'model':<15}{'cut':>4}{'weights':>10}{'float32 B':>11}  " + "".join(f"{c:>11}" for c in CODERS)
          + f"{'dense ms':>10}{'zlib ms':>9}{'lzma ms':>9}{'20Mb/s ms':>10}")
    for model in ModelRepository(args.models):
        catalog = catalog_mod.load(model)
        if catalog is None:
            continue
        for entry in catalog.entries:
            cut = model.profile.cut(entry.split.cut)
            if entry.kind != "qpart" or entry.budget != args.budget or cut.device_parameters < args.min_weights:
                continue
            head = build_head(model, entry.split)
            shipped = serialize(head).size
            quantized = [(p.data, int(np.prod(p.shape)), p.bits) for p in head.parameters if p.bits <= 16]
            dense = sum(len(d) for d, _, _ in quantized)
            totals = {c: shipped - dense for c in CODERS}
            for data, n, bits in quantized:
                for coder, size in coded_sizes(data, n, bits).items():
                    totals[coder] += size
            float32 = 4 * cut.device_parameters
            times = [decode_seconds(quantized, lambda d: d, lambda d: d),
                     decode_seconds(quantized, lambda d: zlib.compress(d, 9), zlib.decompress),
                     decode_seconds(quantized, lzma.compress, lzma.decompress)]
            print(f"{model.name:<15}{entry.split.cut:>4}{cut.device_parameters:>10,}{float32:>11,}  "
                  + "".join(f"{100 * totals[c] / float32:>10.2f}%" for c in CODERS)
                  + "".join(f"{t * 1e3:>9.2f}" for t in times) + f"{shipped * 8 / LINK_BPS * 1e3:>10.1f}")


if __name__ == "__main__":
    main()

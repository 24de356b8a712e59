"""Pack and unpack throughput of the dense bit packer, next to a plain memory copy of the same bytes.

    python bench/wire_throughput.py [--values 4000000]

MB/s counts packed bytes (what travels). The quantizer's time is not included.
"""
import argparse
import time

import numpy as np

from qpart.common import packing


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=4_000_000, help="values per tensor")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.values:,} values per tensor; MB/s of packed bytes (best of 5)")
    print(f"{'bits':>4} {'bytes':>11} {'pack MB/s':>10} {'unpack MB/s':>12} {'memcpy MB/s':>12} {'pack/memcpy':>12}")
    for bits in range(1, 17):
        codes = rng.integers(0, 1 << bits, args.values).astype(np.uint32)
        data = packing.pack(codes, bits)
        assert np.array_equal(packing.unpack(data, args.values, bits), codes)
        source = np.frombuffer(data, np.uint8)
        copy_s = best_of(lambda: source.copy())
        pack_s = best_of(lambda: packing.pack(codes, bits))
        unpack_s = best_of(lambda: packing.unpack(data, args.values, bits))
        mb = len(data) / 1e6
        print(f"{bits:>4} {len(data):>11,} {mb / pack_s:>10.0f} {mb / unpack_s:>12.0f} {mb / copy_s:>12.0f} "
              f"{copy_s / pack_s:>12.3f}")


if __name__ == "__main__":
    main()

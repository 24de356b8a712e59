"""Would an entropy coder shrink the activation messages? Measured at the cuts the catalog offers.

    python bench/activation_coding.py [--models model-repo] [--budget 1] [--images 500]

For each model's QPART catalog entries at --budget that send something (the input, or tensors inside
the network; not the whole model on the device), the device's real message for one input at a
time: the head run on Fashion-MNIST test images, each crossing tensor quantized and
packed as the plan says (dense, ceil(n*b/8) bytes), then that payload coded by zlib (levels 1 and 9)
and lzma. Per input: mean bytes each way of coding, the encode time here (pack + code) and the decode
time (decode + unpack), and what the saved bytes are worth at 1 and 20 Mbit/s, to set against the
coding time on a device (a Raspberry Pi 4 runs such code about 3-5x slower than this machine).
"""
import argparse
import lzma
import pathlib
import time
import zlib

import numpy as np

from qpart.common import tensors
from qpart.server.calibration import activation_coding
from qpart.server.models import datasets
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import catalog as catalog_mod

CODERS = {"zlib-1": (lambda d: zlib.compress(d, 1), zlib.decompress),
          "zlib-9": (lambda d: zlib.compress(d, 9), zlib.decompress),
          "lzma": (lzma.compress, lzma.decompress)}


def messages(model, split, x: np.ndarray) -> list[bytes]:
    """One input's packed crossing tensors, concatenated, per input of x [n, *input_shape]."""
    outputs, params = activation_coding.head_outputs(model, split, x), model.cut_quantizers(split)
    return [b"".join(tensors.encode_batch(v[i:i + 1], p) for v, p in zip(outputs, params)) for i in range(len(x))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--budget", type=float, default=1.0, help="catalog budget, points")
    parser.add_argument("--images", type=int, default=500, help="test images per entry")
    parser.add_argument("--data", help="data spec (default: what the card records)")
    args = parser.parse_args()
    print(f"{'model':<15}{'cut':>4} {'bits':<10}{'dense B':>9}" + "".join(f"{c + ' B':>10}" for c in CODERS)
          + "".join(f"{c + ' enc/dec us':>22}" for c in CODERS) + f"{'saved at 1 / 20 Mbit/s (best)':>32}")
    for model in ModelRepository(args.models):
        catalog = catalog_mod.load(model)
        if catalog is None:
            continue
        x, _ = datasets.model_split(model, "test", args.data, limit=args.images)
        for entry in catalog.entries:
            cut = model.profile.cut(entry.split.cut)
            if entry.kind != "qpart" or entry.budget != args.budget or not cut.runs_tail:
                continue
            dense = messages(model, entry.split, x)
            sizes, times = {}, {}
            for name, (encode, decode) in CODERS.items():
                started = time.perf_counter()
                coded = [encode(m) for m in dense]
                encoded = time.perf_counter() - started
                started = time.perf_counter()
                for c in coded:
                    decode(c)
                times[name] = (encoded / len(dense), (time.perf_counter() - started) / len(dense))
                sizes[name] = float(np.mean([len(c) for c in coded]))
            mean_dense = float(np.mean([len(m) for m in dense]))
            best = min(sizes, key=sizes.get)
            saved = max(mean_dense - sizes[best], 0.0)
            print(f"{model.name:<15}{entry.split.cut:>4} {str(list(entry.split.activation_bits)):<10}{mean_dense:>9,.0f}"
                  + "".join(f"{sizes[c]:>10,.0f}" for c in CODERS)
                  + "".join(f"{1e6 * times[c][0]:>11.0f}/{1e6 * times[c][1]:<10.0f}" for c in CODERS)
                  + f"{8 * saved / 1e6 * 1e3:>14.2f} / {8 * saved / 20e6 * 1e3:.3f} ms ({best})")


if __name__ == "__main__":
    main()

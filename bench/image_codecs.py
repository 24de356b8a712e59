"""The input as image files (codecs.json), each setting's bytes, times and certified drop, and its drop on test data.

    python bench/image_codecs.py [--models model-repo] [--only NAME ...] [--test-images 10000]

For each model whose codecs.json is current (`qpart catalog NAME` measures it on validation data): every
setting's mean bytes per input (file plus its 4-byte length) against the raw 8-bit input and the catalog's
cheapest cut-0 entry at a 1-point budget, the encode and decode time per input measured with it, the drop
measured on the certification images and its certified bound; then the same setting applied to the model's
test images (never seen by the certification), so that each bound can be checked against data it never saw.
"""
import argparse
import math
import pathlib

from qpart.common import images, packing
from qpart.server.calibration import image_files as measuring
from qpart.server.calibration.accuracy import Evaluator, paired_drop_bound
from qpart.server.models import datasets
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import image_files

SLACK = 0.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--data", help="directory of MNIST-format IDX files")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these models only")
    parser.add_argument("--test-images", type=int, default=10000, help="test images per model (0: skip the check)")
    args = parser.parse_args()
    print(f"{'model':<15}{'setting':<10}{'bytes':>8}{'raw 8-bit':>10}{'cut0 b=1':>9}{'enc us':>8}{'dec us':>8}"
          f"{'cert drop':>10}{'bound':>7}{'test drop':>10}  within bound + {SLACK}")
    misses = 0
    for model in ModelRepository(args.models):
        if args.only and model.name not in args.only:
            continue
        found, catalog = image_files.load(model), catalog_mod.load(model)
        if found is None or catalog is None:
            continue
        raw = math.prod(model.spec.input_shape)                       # the input at 8 bits, packed
        cut0 = min((e for e in catalog.entries if e.kind == "qpart" and e.split.cut == 0 and e.budget == 1.0),
                   key=lambda e: e.split.activation_bits, default=None)
        cut0_bytes = f"{packing.packed_size(raw, cut0.split.activation_bits[0]):,}" if cut0 else "-"
        x = y = reference = None
        if args.test_images:
            x, y = datasets.model_split(model, "test", args.data, limit=args.test_images)
            reference = Evaluator(model, x, y, cache_bytes=0).float_correct
        for s in found.settings:
            test = within = ""
            if reference is not None:
                back, _, _, _ = measuring.roundtrip(x, measuring.input_quantizer(model), s.code, s.quality)
                correct = Evaluator(model, back, y, cache_bytes=0).float_correct
                drop, _ = paired_drop_bound(int((reference & ~correct).sum()), int((~reference & correct).sum()), len(y))
                ok = drop <= s.drop_ucb + SLACK
                misses += not ok
                test, within = f"{drop:.2f}", "yes" if ok else "NO"
            print(f"{model.name:<15}{images.label(s.code, s.quality):<10}{s.bytes:>8,.0f}{raw:>10,}{cut0_bytes:>9}"
                  f"{s.encode_s * 1e6:>8.0f}{s.decode_s * 1e6:>8.0f}{s.drop:>10.2f}{s.drop_ucb:>7.2f}{test:>10}  {within}")
        print(f"{'':<15}({found.samples} certification images at {found.confidence:.2%} per setting, measured in "
              f"{found.seconds} s{f'; {len(y)} test images' if y is not None else ''})")
    print(f"\n{misses} setting(s) measured above their certified bound + {SLACK} on the test images")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())

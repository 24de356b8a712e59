"""Mixed precision against uniform bit widths, at equal measured accuracy.

    python bench/mixed_precision.py [--models model-repo]

For the whole model on the device (the largest head), each budget's QPART pattern is compared with
the narrowest uniform width (same quantizer, same per-channel scales) whose drop, measured on the
same Fashion-MNIST test images, is no larger. Zhou et al. report 20-40 % smaller models.
"""
import argparse
import pathlib

from qpart.server.planning import catalog as catalog_mod
from qpart.testbed import catalog_report as reports
from qpart.server.models.repository import ModelRepository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--data", help="directory of MNIST-format IDX files")
    args = parser.parse_args()
    print(f"{'model':<7} {'budget':>6} {'qpart bits':<28} {'bytes':>9} {'drop':>6} {'uniform':>7} {'bytes':>9} "
          f"{'drop':>6} {'saving':>7}")
    for model in ModelRepository(args.models):
        catalog = catalog_mod.load(model)
        if catalog is None:
            continue
        for row in reports.mixed_precision(model, catalog, reports.test_evaluator(model, args.data)):
            uniform = (f"{row.uniform_bits:>7} {row.uniform_bytes:>9,} {row.uniform_drop:>6.2f} {row.saving:>7.1%}"
                       if row.uniform_bits else f"{'none':>7}")
            print(f"{model.name:<7} {row.budget:>6g} {str(row.qpart_bits):<28} {row.qpart_bytes:>9,} "
                  f"{row.qpart_drop:>6.2f} {uniform}")


if __name__ == "__main__":
    main()

"""Every catalog entry of every model, its certified drop and its drop on the Fashion-MNIST test set (a language
model: the loss of next-token agreement with the float model on 10,000 positions of its test text, and the
perplexity of the true tokens).

    python bench/catalog_report.py [--models model-repo] [--only NAME ...] [--markdown docs/catalog.md]

The catalog is built on the validation split only; this is the check on data it never saw: each
QPART entry's test drop should be at most its budget plus 0.3 points.
"""
import argparse
import pathlib
import time

from qpart.server.planning import catalog as catalog_mod
from qpart.testbed import catalog_report as reports
from qpart.server.models.repository import ModelRepository

SLACK = 0.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--data", help="directory of MNIST-format IDX files")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="report these models only (default: all)")
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the table as markdown here")
    args = parser.parse_args()
    lines = ["| model | cut | kind | budget | weight bits | act bits | head bytes | % float32 | certified drop | test drop "
             "| within | test perplexity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    failures = 0
    for model in ModelRepository(args.models):
        if args.only and model.name not in args.only:
            continue
        catalog = catalog_mod.load(model)
        if catalog is None:
            print(f"{model.name}: no current catalog (qpart catalog {model.name})")
            continue
        started = time.perf_counter()
        evaluator = reports.test_evaluator(model, args.data)
        rows = reports.test_set_table(model, catalog, evaluator)
        if catalog.metric == catalog_mod.AGREEMENT:
            print(f"{model.name}: drops are points of {catalog.metric}, on {len(evaluator.labels):,} test positions; "
                  f"float perplexity {evaluator.judge(evaluator.float_logits).perplexity:.3f} "
                  f"({time.perf_counter() - started:.0f} s)")
        else:
            print(f"{model.name}: float test accuracy {evaluator.float_accuracy:.2f}% on {len(evaluator.labels)} "
                  f"images ({time.perf_counter() - started:.0f} s)")
        for row in rows:
            e = row.entry
            float32 = 4 * model.profile.cut(e.split.cut).device_parameters
            share = f"{100 * e.head_bytes / float32:.1f}" if float32 else "-"
            limit = (e.budget if e.budget is not None else e.certified_drop) + SLACK
            within = row.test.drop <= limit + 1e-9
            failures += e.kind == "qpart" and not within
            budget = f"{e.budget:g}" if e.budget is not None else "-"
            perplexity = f"{row.test.perplexity:.3f}" if row.test.perplexity is not None else "-"
            lines.append(f"| {model.name} | {e.split.cut} | {e.kind} | {budget} | {list(e.split.weight_bits)} | "
                         f"{list(e.split.activation_bits)} | {e.head_bytes:,} | {share} | {e.certified_drop:.2f} | "
                         f"{row.test.drop:.2f} | {'yes' if within else 'NO'} | {perplexity} |")
    print("\n".join(lines))
    qpart_rows = sum(1 for line in lines[2:] if "| qpart |" in line)
    print(f"\n{qpart_rows - failures} of {qpart_rows} QPART entries hold their budget + {SLACK} points on the test set")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

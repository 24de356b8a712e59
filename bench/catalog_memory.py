"""Peak memory and time of one catalog build (and, with --codecs, of measuring codecs.json), printed.

    python bench/catalog_memory.py resnet8-96 [--models model-repo] [--config '{"certification_samples": 5000}']
        [--codecs] [--out catalog.json]

Builds in this process without saving anything beside the model but its heads; prints the peak resident set
(VmHWM of /proc/self/status) after loading the model and after the build, the wall and CPU seconds, and the
evaluations. Run it on an otherwise idle machine: the seconds are this run's, the memory is the build's.
"""
import argparse
import json
import pathlib
import resource
import time

from qpart.server.calibration import build, image_files
from qpart.server.models.repository import load_model


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--data", help="the model card's data, elsewhere")
    parser.add_argument("--config", default="{}", help="CatalogConfig fields as JSON (default: the defaults)")
    parser.add_argument("--codecs", action="store_true", help="also measure the image codecs (codecs.json's figures)")
    parser.add_argument("--out", type=pathlib.Path, help="write the catalog (and codecs) as JSON here, to compare")
    args = parser.parse_args()
    model = load_model(args.models / args.model)
    print(f"{args.model}: loaded, peak RSS {peak_mb():,.0f} MB")
    config = build.CatalogConfig(**json.loads(args.config))
    started, cpu = time.perf_counter(), cpu_s()
    built = build.build(model, args.data, config, progress=False)
    print(f"build: {time.perf_counter() - started:.1f} s wall, {cpu_s() - cpu:.1f} s CPU, {built.evaluations} "
          f"evaluations, {len(built.entries)} entries, peak RSS {peak_mb():,.0f} MB")
    out = built.to_json()
    if args.codecs:
        started = time.perf_counter()
        found = image_files.measure(model, built, args.data)
        out["codecs"] = [vars(s) for s in found.settings]
        print(f"codecs: {time.perf_counter() - started:.1f} s wall, peak RSS {peak_mb():,.0f} MB")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()

"""How a catalog build scales on Ray: measured on this machine, projected to larger clusters.

    python bench/catalog_scaling.py [--models model-repo] [--model mobilenetv2-96] [--search-samples 2000]
                                    [--certification-samples 5000] [--out docs/catalog_scaling.md]

In one run: the local build (one process, torch on every core), then the same config on a local Ray instance of
2 workers (qpart.server.calibration.distributed; each task one torch thread) on a copy of the model; their
catalogs must have the same entries. From the Ray build's record of each task (units.json: seconds, and the
seconds a worker took to load the model and data before its first unit), the build time at 8, 32 and 128
workers is projected: each phase (the sweeps; then the cuts' entries and the additivity check) is scheduled
longest task first on W workers, each worker starting after its load, and the driver's own time (data, fit,
gathering; the measured 2-worker wall time less its simulated schedule) is added. The critical path is the
longest task of each phase plus a load plus the driver's time: no number of workers builds faster. Figures
on this machine's cores; the projection assumes workers as fast as these and a store that ships the
model and data in negligible time.
"""
import argparse
import heapq
import json
import os
import pathlib
import platform
import shutil
import tempfile
import time
from dataclasses import asdict

import ray

from qpart.server.calibration import build, distributed
from qpart.server.models.repository import ModelRepository


def makespan(tasks: list[float], workers: int, load: float) -> float:
    """Longest-task-first schedule of `tasks` seconds on `workers`, each free from `load` seconds on."""
    free = [load] * workers
    heapq.heapify(free)
    for t in sorted(tasks, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def project(units: dict, wall: float, measured_workers: int) -> tuple[dict, dict]:
    sweeps = {u for u in units if u[0] in "wa" and u[1:].isdigit()}     # phase 1; then cuts and the additivity check
    phases = [[r["seconds"] for u, r in units.items() if u in sweeps],
              [r["seconds"] for u, r in units.items() if u not in sweeps]]
    load = max((r["load_seconds"] for r in units.values()), default=0.0)
    simulated = makespan(phases[0], measured_workers, load) + makespan(phases[1], measured_workers, 0.0)
    driver = max(wall - simulated, 0.0)
    longest = max(units, key=lambda u: units[u]["seconds"])
    facts = {"driver_s": driver, "load_s": load, "work_s": sum(sum(p) for p in phases), "longest": longest,
             "longest_s": units[longest]["seconds"], "simulated_s": simulated,
             "critical_s": driver + load + sum(max(p, default=0.0) for p in phases), "tasks": len(units)}
    return {w: driver + makespan(phases[0], w, load) + makespan(phases[1], w, 0.0) for w in (8, 32, 128)}, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="mobilenetv2-96", help="the largest zoo model")
    parser.add_argument("--data", help="Fashion-MNIST directory (default: $QPART_DATA or the Debian package's)")
    parser.add_argument("--search-samples", type=int, default=2000)
    parser.add_argument("--certification-samples", type=int, default=5000)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/catalog_scaling.md"))
    args = parser.parse_args()
    config = build.CatalogConfig(search_samples=args.search_samples, certification_samples=args.certification_samples)
    model = ModelRepository(args.models).get(args.model)
    started = time.perf_counter()
    local = build.build(model, args.data, config, progress=False)
    local_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(model.directory, pathlib.Path(tmp) / model.name,
                        ignore=shutil.ignore_patterns("catalog*", "heads", "*.lock"))
        copy = ModelRepository(pathlib.Path(tmp)).get(model.name)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        started = time.perf_counter()
        on_ray = distributed.build_on_ray(copy, args.data, config, progress=False)
        ray_s = time.perf_counter() - started
        ray.shutdown()
        units = json.loads((distributed.UnitStore(copy, config).directory / "units.json").read_text())
    same = [asdict(e) for e in local.entries] == [asdict(e) for e in on_ray.entries]
    projected, facts = project(units, ray_s, 2)
    slowest = sorted(units.items(), key=lambda kv: -kv[1]["seconds"])[:8]
    lines = [
        "# Catalog builds on Ray: measured and projected", "",
        f"Command: `python bench/catalog_scaling.py --model {args.model} --search-samples {args.search_samples} "
        f"--certification-samples {args.certification_samples}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, ray {ray.__version__}, {time.strftime('%Y-%m-%d')}. {args.model}: "
        f"{model.num_nodes} nodes, {len(local.cuts)} catalog cuts, {len(local.budgets)} budgets.", "",
        "## Measured on these 2 cores", "",
        "| build | seconds | entries | same entries as local |", "|---|---|---|---|",
        f"| local (one process, torch on {os.cpu_count()} threads) | {local_s:.1f} | {len(local.entries)} | |",
        f"| Ray, 2 workers (a task per unit, one torch thread each) | {ray_s:.1f} | {len(on_ray.entries)} | "
        f"{'yes' if same else 'NO'} |", "",
        f"Ratio local / Ray: {local_s / ray_s:.2f}.", "",
        "## Projected", "",
        f"{facts['tasks']} tasks, {facts['work_s']:.1f} s of work in all; a worker loads the model and data in "
        f"{facts['load_s']:.1f} s before its first task; the driver's own time (data, fit, gathering) "
        f"{facts['driver_s']:.1f} s. Each phase scheduled longest task first (the 2-worker schedule simulated this way "
        f"takes {facts['simulated_s']:.1f} s of the measured {ray_s:.1f} s).", "",
        "| workers | projected build seconds | speed-up over the local build |", "|---|---|---|",
        *[f"| {w} | {s:.1f} | {local_s / s:.1f}x |" for w, s in projected.items()], "",
        f"Critical path (no number of workers is faster): {facts['critical_s']:.1f} s. The longest single task: "
        f"`{facts['longest']}` ({facts['longest_s']:.1f} s; `c<cut>` is a cut's entries, its searches and "
        f"certifications in sequence, `w<node>` a weight sweep, `a<cut>` a cut's activation sweeps).", "",
        "The slowest tasks:", "", "| unit | seconds |", "|---|---|",
        *[f"| `{u}` | {r['seconds']:.2f} |" for u, r in slowest], ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

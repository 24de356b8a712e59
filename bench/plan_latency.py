"""How long one plan decision takes, RPC excluded (target: 100 microseconds median).

    python bench/plan_latency.py [--models model-repo] [--decisions 2000]

Each decision prices every catalog pattern of the model for a random device, link, budget, objective
and head reuse, and picks one (Planner.plan, the work the Plan RPC does between decode and encode).
"""
import argparse
import pathlib
import random
import statistics
import time

from qpart.common import profiles
from qpart.common.costmodel import LinkProfile, Objective
from qpart.server.models.heads import HeadStore
from qpart.server.planning.planner import Planner, PlanRequest
from qpart.server.models.repository import ModelRepository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--decisions", type=int, default=2000, help="decisions per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    repo = ModelRepository(args.models)
    planner = Planner(repo, HeadStore())
    devices = [profiles.load_device(name) for name in profiles.bundled()]
    rng = random.Random(0)
    for model in repo:
        if planner.catalog(model) is None:
            continue
        requests = [PlanRequest(model.name, rng.choice(devices),
                                LinkProfile(rate_bps=rng.choice([1e6, 5e6, 20e6, 100e6]), rtt_s=rng.choice([0, 0.01])),
                                rng.choice([0.5, 1.0, 2.0]), Objective(1, rng.choice([0, 1]), rng.choice([0, 1])),
                                rng.choice([1, 100])) for _ in range(args.decisions)]
        planner.plan(requests[0])   # warm: the catalog is loaded once per model version
        medians, times = [], []
        for _ in range(args.rounds):   # rounds, so that a noisy neighbour shows as one slow round
            round_times = []
            for request in requests:
                started = time.perf_counter()
                planner.plan(request)
                round_times.append(time.perf_counter() - started)
            medians.append(statistics.median(round_times))
            times += round_times
        patterns = len(planner.patterns(model)[0].specs)
        print(f"{model.name:<7} {patterns:>3} patterns: median {statistics.median(times) * 1e6:6.1f} us, "
              f"p95 {sorted(times)[int(0.95 * len(times))] * 1e6:6.1f} us over {len(times)} decisions; "
              f"round medians {', '.join(f'{m * 1e6:.0f}' for m in medians)} us")


if __name__ == "__main__":
    main()

"""How long one plan decision takes, RPC excluded (target: 100 microseconds median), and what a Plan
RPC costs around it.

    python bench/plan_latency.py [--models model-repo] [--decisions 2000] [--rpcs 200]

Each decision prices every catalog pattern of the model for a random device, link, budget, objective
and head reuse, and picks one (ServedModels.plan, the work the Plan RPC does between decode and encode).
Then a qpart-server process on loopback answers --rpcs Plan RPCs per model: the decision time the
server reports (PlanResponse.decision_seconds: decode, plan, sign, encode) against the round trip the
client sees (gRPC over loopback on top).
"""
import argparse
import pathlib
import random
import statistics
import time

from qpart.common import messages, profiles
from qpart.common.costmodel import LinkProfile, Objective
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels
from qpart.server.models.repository import ModelRepository
from qpart.device.client import ServerClient
from qpart.testbed.processes import ServerProcess
from qpart.v1 import service_pb2 as spb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--decisions", type=int, default=2000, help="decisions per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rpcs", type=int, default=200, help="Plan RPCs per model against a server process (0: none)")
    args = parser.parse_args()
    repo = ModelRepository(args.models)
    planner = ServedModels(repo)
    devices = [profiles.load_device(name) for name in profiles.bundled()]
    rng = random.Random(0)
    for model in repo:
        if planner.get(model.name).catalog is None:
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
        patterns = len(planner.get(model.name).priced()[0].specs)
        print(f"{model.name:<7} {patterns:>3} patterns: median {statistics.median(times) * 1e6:6.1f} us, "
              f"p95 {sorted(times)[int(0.95 * len(times))] * 1e6:6.1f} us over {len(times)} decisions; "
              f"round medians {', '.join(f'{m * 1e6:.0f}' for m in medians)} us")

    if args.rpcs:
        rpc_times(args.models, [m.name for m in repo if planner.get(m.name).catalog is not None], args.rpcs)


def rpc_times(models: pathlib.Path, names: list[str], count: int) -> None:
    with ServerProcess(models) as server, ServerClient(server.target, timeout_s=30) as client:
        for name in names:
            request = spb.PlanRequest(model=name, device=messages.device_to_pb(profiles.load_device("rpi4")),
                                      link=messages.link_to_pb(LinkProfile(rate_bps=5e6, rtt_s=0.01)),
                                      accuracy_budget=1.0, inferences_per_head=100)
            client.plan(request)
            decided, round_trips = [], []
            for _ in range(count):
                started = time.perf_counter()
                response = client.plan(request)
                round_trips.append(time.perf_counter() - started)
                decided.append(response.decision_seconds)
            print(f"{name:<15} Plan RPC over loopback: server decision median {statistics.median(decided) * 1e3:.2f} ms, "
                  f"round trip median {statistics.median(round_trips) * 1e3:.2f} ms "
                  f"(p95 {sorted(round_trips)[int(0.95 * count)] * 1e3:.2f} ms) over {count} calls")


if __name__ == "__main__":
    main()

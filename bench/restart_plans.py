"""Four qpart-server starts on this machine, two of them while busy loops load every core: the same Plan
requests to each, and the figures and plans they answer with. Writes docs/benchmarks/restart_plans.md.

    python bench/restart_plans.py --models model-repo --model resnet8-96

Two modes, each four starts (starts 2 and 4 of each begin while one busy loop per core runs, for
--busy-s seconds, shorter than the server's --speed-idle-wait-s):
- fresh: every start times itself anew (--remeasure-speed, a profile file of its own): how far the timings
  themselves move between starts, and whether the plans follow them;
- shared: the starts share one speed profile file (the default, .qpart-speed.json beside the models):
  the first start that times on an idle machine writes it, the others read it.
"""
import argparse
import multiprocessing
import pathlib
import sys
import tempfile
import time

from qpart.common import messages, profiles
from qpart.common.costmodel import LinkProfile
from qpart.device.client import ServerClient
from qpart.testbed.processes import ServerProcess
from qpart.v1 import service_pb2 as spb

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "restart_plans.md"


def spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def busy_loops(seconds: float) -> list:
    loops = [multiprocessing.Process(target=spin, args=(seconds,), daemon=True)
             for _ in range(multiprocessing.cpu_count())]
    for p in loops:
        p.start()
    return loops


def requests(model: str) -> list[tuple[str, spb.PlanRequest]]:
    out = []
    for device in ("rpi4", "jetson-orin-nano"):
        for mbps in (1, 5, 20, 100):
            link = LinkProfile(rate_bps=mbps * 1e6, rtt_s=0.01)
            out.append((f"{device} {mbps} Mbit/s", spb.PlanRequest(
                model=model, device=messages.device_to_pb(profiles.load_device(device)), link=messages.link_to_pb(link),
                accuracy_budget=1.0, inferences_per_head=1000)))
    return out


def one_start(models: pathlib.Path, busy_s: float, extra: list[str], asked) -> dict:
    loops = busy_loops(busy_s) if busy_s > 0 else []
    started = time.perf_counter()
    with ServerProcess(models, 0, *extra) as server:
        ready = time.perf_counter() - started
        client = ServerClient(server.target, timeout_s=60)
        try:
            answers = {name: client.plan(request) for name, request in asked}
        finally:
            client.close()
    for p in loops:
        p.join()
    first = next(iter(answers.values())).server_speed
    return {"busy": busy_s > 0, "ready_s": ready, "source": first.source, "busy_while_timed": first.busy_while_timed,
            "mac_rate": first.macs_per_second, "mac_spread": first.macs_spread,
            "plans": {name: (p.cut, tuple(p.weight_bits), tuple(a.bits for a in p.activations), p.server_speed.tail_seconds,
                             p.server_speed.tail_spread) for name, p in answers.items()}}


def run(models: pathlib.Path, model: str, busy_s: float, wait_s: float) -> list[str]:
    asked = requests(model)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        modes = {"fresh": lambda i: ["--remeasure-speed", "--speed-profile", f"{tmp}/fresh{i}.json"],
                 "shared": lambda i: ["--speed-profile", f"{tmp}/shared.json"]}
        for mode, flags in modes.items():
            starts = [one_start(models, busy_s if i % 2 else 0.0, flags(i) + ["--speed-idle-wait-s", str(wait_s)], asked)
                      for i in range(4)]
            agree = sum(len({s["plans"][name][:3] for s in starts}) == 1 for name, _ in asked)
            lines += [f"### {mode}: {agree} of {len(asked)} requests got the same plan from all four starts", "",
                      "| start | busy loops | ready s | figures | others' CPU share | MAC rate GMAC/s (spread) |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {i + 1} | {'yes' if s['busy'] else 'no'} | {s['ready_s']:.1f} | {s['source']} | "
                      f"{s['busy_while_timed']:.2f} | {s['mac_rate'] / 1e9:.2f} ({100 * s['mac_spread']:.0f}%) |"
                      for i, s in enumerate(starts)]
            lines += ["", "| request | " + " | ".join(f"start {i + 1}: cut, tail ms (spread)" for i in range(4)) + " |",
                      "|---|" + "---|" * 4]
            for name, _ in asked:
                cells = [f"{s['plans'][name][0]}, {1e3 * s['plans'][name][3]:.3f} ({100 * s['plans'][name][4]:.0f}%)"
                         for s in starts]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
            print("\n".join(lines[-len(asked) - 12:]), flush=True)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="resnet8-96")
    parser.add_argument("--busy-s", type=float, default=6.0, help="seconds the busy loops run from a start")
    parser.add_argument("--speed-idle-wait-s", type=float, default=10.0)
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    lines = run(args.models, args.model, args.busy_s, args.speed_idle_wait_s)
    header = ["# The same request, the same plan: four server starts", "",
              f"`python bench/restart_plans.py --model {args.model}` on {multiprocessing.cpu_count()} cores. Starts 2 and "
              f"4 of each mode begin while one busy loop per core runs for {args.busy_s:g} s; the server waits up to "
              f"{args.speed_idle_wait_s:g} s for the machine to be idle before timing. Requests: budget 1 point, head "
              "reused 1,000 times, 10 ms round trip. 'fresh' times every start anew; 'shared' shares one speed profile "
              "file (the default). Tail: the chosen plan's server part as the server timed it (median, spread).", ""]
    args.out.write_text("\n".join(header + lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

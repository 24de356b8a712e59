"""Split decoding end to end: time to first token and per token for server_only, device_only, float_split and
qpart plans of a language model, over emulated links, predicted against measured.

    python bench/generation.py [--models model-repo] [--model gpt-fortunes] [--rates 1,5,20] [--rtts 10,50]
                               [--profiles rpi4,jetson-orin-nano] [--tokens 64] [--prompts 3]
                               [--markdown docs/benchmarks/generation.md]

qpart-server runs as its own process; the link is a delay relay (qpart.testbed.relay: serialization at the
rate and half the round trip each way, in its own process) on loopback; the device is this process with the
numpy backend (no torch, as on a board). Board speeds are NOT emulated: the device's MAC rate and cost per op
are measured on this machine and sent with the plan request, so each plan is priced for the device that runs
it; a profile gives the plan its energy and memory only. Heads are priced for 10^6 generations and fetched
before the timed runs (after one warm-up generation): the figures are generation alone. Prompts come from the
model's test text. Each plan's
next-token agreement with the float model and perplexity are measured on 10,000 positions of the test text.
"""
import argparse
import dataclasses
import multiprocessing
import pathlib
import statistics
import sys
import time

from qpart.common import messages, profiles, tokenizer
from qpart.common.costmodel import LinkProfile, Objective
from qpart.common.errors import QpartError
from qpart.device import compute
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.generation import SplitGeneration
from qpart.server.models import text
from qpart.server.models.repository import ModelRepository
from qpart.server.models.split import Split
from qpart.server.serving.convert import GRANULARITY_FROM_PB
from qpart.testbed import catalog_report
from qpart.testbed.processes import ServerProcess
from qpart.testbed.relay import Relay, Shape, ShapeSource
from qpart.v1 import service_pb2 as spb

POLICIES = ("server_only", "device_only", "float_split", "qpart")
HEAD_REUSE = 10 ** 6      # generations a head is priced for: its download (fetched once, before) is left out


def relay(port: int, target: tuple[str, int], shape: Shape, ready) -> None:
    r = Relay(("127.0.0.1", port), target, ShapeSource(fixed=shape))
    ready.set()
    r.serve_forever()


def start_link(server: ServerProcess, rate_mbps: float, rtt_ms: float) -> tuple[multiprocessing.Process, str]:
    """A relay process in front of the server (rate, round trip) and the address devices dial."""
    host, port = server.target.rsplit(":", 1)
    ready, link_port = multiprocessing.Event(), _free_port()
    proc = multiprocessing.Process(target=relay, args=(link_port, (host, int(port)),
                                                       Shape(rate_mbps * 1e6, rtt_ms / 2e3), ready), daemon=True)
    proc.start()
    ready.wait(10)
    return proc, f"127.0.0.1:{link_port}"


def prompts(model, count: int, length: int = 24) -> list[list[int]]:
    """The first `length` bytes of `count` test documents (at least that long), spread over the test part."""
    docs = [d for d in text.open_corpus(model.card["data"]).documents["test"] if len(d.encode()) >= length + 8]
    step = max(len(docs) // count, 1)
    return [tokenizer.ByteTokenizer().encode(d)[:length] for d in docs[::step][:count]]


def measure_plan(client: ServerClient, request: spb.PlanRequest, info, inputs, tokens: int, repeats: int) -> dict:
    agent = DeviceAgent(client, HeadCache(None), backend="numpy")
    plan = agent.plan(request)
    executor, _ = agent.obtain_head(plan)
    split = SplitGeneration(client, plan, executor, info)
    split.generate(inputs[0], tokens)              # warm-up, not measured: the stream, the first runs' allocations
    runs = [split.generate(p, tokens) for _ in range(repeats) for p in inputs]
    total = [r.first_token_s + sum(r.token_s) for r in runs]
    return {"plan": plan, "first": statistics.median(r.first_token_s for r in runs),
            "per_token": statistics.median(t for r in runs for t in r.token_s),
            "total": statistics.median(total), "predicted": plan.predicted.total_time_s,
            "up_per_token": statistics.median(b for r in runs for b in r.sent_bytes[1:]) if runs[0].sent_bytes[1:]
            else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="gpt-fortunes")
    parser.add_argument("--rates", default="1,5,20", help="Mbit/s, comma-separated")
    parser.add_argument("--rtts", default="10,50", help="round trips, ms, comma-separated")
    parser.add_argument("--profiles", default="rpi4,jetson-orin-nano")
    parser.add_argument("--budget", type=float, default=1.0, help="points of next-token agreement")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="generations per prompt and plan (the median is kept)")
    parser.add_argument("--server-threads", type=int, default=1,
                        help="the server's torch threads (1: the other core runs the device and the relay)")
    parser.add_argument("--memory-mb", type=float, default=0.0, help="the device's memory for qpart (0: the profile's)")
    parser.add_argument("--w-cost", type=float, default=1.0, help="objective weight on server cost (time's is 1)")
    parser.add_argument("--markdown", type=pathlib.Path)
    args = parser.parse_args()
    model = ModelRepository(args.models).get(args.model)
    found = compute.measure("numpy")
    speeds = []
    inputs = prompts(model, args.prompts)
    rows, quality, refused = [], {}, []
    evaluator = catalog_report.test_evaluator(model)
    started = time.perf_counter()
    print(f"device: numpy at {found.macs_per_second / 1e9:.2f} GMAC/s, {found.seconds_per_node * 1e6:.1f} us per op "
          f"(measured here); {len(inputs)} prompts of {len(inputs[0])} tokens, {args.tokens} new tokens", flush=True)
    with ServerProcess(args.models, 0, "--torch-threads", str(args.server_threads), "--remeasure-speed") as server:
        for rtt in [float(r) for r in args.rtts.split(",")]:
            for rate in [float(r) for r in args.rates.split(",")]:
                proc, address = start_link(server, rate, rtt)
                try:
                    with ServerClient(address, timeout_s=120) as client:
                        info = client.list_models(args.model)[0]
                        for name in [p.strip() for p in args.profiles.split(",")]:
                            found = compute.measure("numpy")     # the device's speed now, as a device measures
                            speeds.append(found)                 # it before it asks for a plan
                            device = dataclasses.replace(profiles.load_device(name),
                                                         macs_per_second=found.macs_per_second,
                                                         seconds_per_node=found.seconds_per_node)
                            if args.memory_mb:
                                device = dataclasses.replace(device, memory_bytes=int(args.memory_mb * 2**20))
                            for policy in POLICIES:
                                request = spb.PlanRequest(
                                    model=args.model, device=messages.device_to_pb(device),
                                    link=messages.link_to_pb(LinkProfile(rate_bps=rate * 1e6, rtt_s=rtt / 1e3)),
                                    accuracy_budget=args.budget, inferences_per_head=HEAD_REUSE,
                                    weights=messages.objective_to_pb(Objective(cost=args.w_cost)),
                                    policy=getattr(spb, policy.upper()),
                                    generation=spb.GenerationShape(prompt_tokens=len(inputs[0]),
                                                                   new_tokens=args.tokens))
                                try:
                                    m = measure_plan(client, request, info, inputs, args.tokens, args.repeats)
                                except QpartError as e:           # e.g. no plan of the policy fits the memory
                                    refused.append(f"{rtt:g} ms, {rate:g} Mbit/s, {name}, {policy}: {e.status}: {e}")
                                    print(refused[-1], flush=True)
                                    continue
                                plan = m["plan"]
                                key = (plan.cut, tuple(plan.weight_bits), tuple(a.bits for a in plan.activations))
                                if key not in quality:
                                    split = Split(plan.cut, tuple(plan.weight_bits), key[2],
                                                  GRANULARITY_FROM_PB[plan.weight_granularity])
                                    quality[key] = evaluator.measure(split)
                                rows.append((rtt, rate, name, policy, m, quality[key]))
                                print(_row(rows[-1]), flush=True)
                finally:
                    proc.terminate()
    lines = _table(rows, evaluator, speeds, args, inputs, time.perf_counter() - started)
    lines += (["", "No plan:"] + [f"- {r}" for r in refused]) if refused else []
    print("\n".join(lines))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


def _free_port() -> int:
    from qpart.testbed.processes import free_port
    return free_port()


def _row(row) -> str:
    rtt, rate, name, policy, m, q = row
    plan = m["plan"]
    error = 100 * (m["predicted"] - m["total"]) / m["total"]
    return (f"| {rtt:g} | {rate:g} | {name} | {policy} | {plan.cut} | {[a.bits for a in plan.activations]} | "
            f"{1e3 * m['first']:.1f} | {1e3 * m['per_token']:.2f} | {1 / m['per_token']:.0f} | {m['up_per_token']:,.0f} | "
            f"{1e3 * m['predicted']:.0f} | {1e3 * m['total']:.0f} | {error:+.1f}% | {q.drop:.2f} | {q.perplexity:.3f} |")


def _table(rows, evaluator, speeds, args, inputs, seconds) -> list[str]:
    errors = [abs(r[4]["predicted"] - r[4]["total"]) / r[4]["total"] for r in rows]
    qpart_errors = [e for e, r in zip(errors, rows) if r[3] == "qpart"]
    wins = {}
    for r in rows:
        cell = (r[0], r[1], r[2])
        wins.setdefault(cell, []).append(r)
    lines = [f"## {args.model}, {args.tokens} tokens after {len(inputs[0])}-token prompts", "",
             f"`python bench/generation.py {' '.join(sys.argv[1:])}` on {sys.platform}, 2 cores, "
             f"{seconds / 60:.0f} minutes. The link: a relay on loopback (serialization at the rate, half the round trip "
             f"each way). The server: {args.server_threads} torch thread(s), its speed timed afresh at start. The device: "
             f"this machine's numpy backend, measured before each profile's plans at "
             f"{min(f.macs_per_second for f in speeds) / 1e9:.2f}-{max(f.macs_per_second for f in speeds) / 1e9:.2f} GMAC/s "
             f"and {min(f.seconds_per_node for f in speeds) * 1e6:.1f}-{max(f.seconds_per_node for f in speeds) * 1e6:.1f} "
             f"us per op and priced so (board speeds are not emulated; the profile gives energy and memory{f'; memory {args.memory_mb:g} MB' if args.memory_mb else ''}). Objective: "
             f"time + energy + {args.w_cost:g} x server cost. Budget {args.budget:g} points of next-token agreement. Predicted and "
             f"measured: one generation, prompt to last token (median of {len(inputs)} prompts x {args.repeats}, after a warm-up; the head's download left out). Agreement drop and "
             f"perplexity: the plan's split on {len(evaluator.labels):,} positions of the test text (float perplexity "
             f"{evaluator.judge(evaluator.float_logits).perplexity:.3f}).", "",
             "| rtt ms | Mbit/s | profile | policy | cut | act bits | first token ms | per token ms | tokens/s | "
             "bytes up/token | predicted ms | measured ms | error | agreement drop | perplexity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows]
    fastest = {cell: min(rs, key=lambda r: r[4]["total"]) for cell, rs in wins.items()}
    split_wins = [cell for cell, r in fastest.items() if 0 < r[4]["plan"].cut < r[4]["plan"].num_nodes]
    lines += ["", f"Median |predicted - measured| / measured: {100 * statistics.median(errors):.1f} % over all rows, "
                  f"{100 * statistics.median(qpart_errors):.1f} % for qpart plans.",
              f"Cells where a split (0 < cut < all) measured fastest: {len(split_wins)} of {len(fastest)}" +
              (": " + ", ".join(f"{c[2]} {c[1]:g} Mbit/s {c[0]:g} ms" for c in split_wins) if split_wins else ".")]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

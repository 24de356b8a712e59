"""Many devices against one server, in one run: server-only generation (the server batching its streamed steps
across devices, the fair baseline), device-only generation with a draft model, split decoding and speculative
drafting (the server batching verifications across devices), for 1, 8, 32 and 64 devices over emulated links:
tokens per second per device, time to first token and per token (p50, p99), server CPU per generated token,
bytes up per token, acceptance, capacity under a bound, and how many generations gave the target's greedy tokens.

    python bench/drafting_fleet.py [--models model-repo] [--devices 1,8,32,64] [--seconds 8] [--tokens 32]
                                   [--modes server_only,device_only:draft-fortunes-2,split:28:10:12,
                                            draft-fortunes-1:3,draft-fortunes-2:4]
                                   [--links 20:10,5:50,1:50] [--slowdown 1] [--bound-ms 50]
                                   [--markdown docs/benchmarks/drafting_fleet.md]

Modes: server_only (the device sends the prompt, the server generates and streams), device_only:DRAFT (the
draft run whole on the device at 8-bit weights: no server work, the draft's own tokens), split:CUT:W:A (the
target split after node CUT, W-bit weights on the device, A-bit hidden states: one round trip per token),
DRAFT:K or DRAFT:auto (speculative drafting with k drafts a round, or k adapted as the device goes).

qpart-server runs as its own process (1 torch thread, --batch-max-inputs 64, --batch-delay-ms 2); devices are
threads in 2 worker processes on the same 2 cores (their drafting and heads compete with the server for them:
said in the output). Each device has its own connection through one delay relay on loopback, shaped per
connection: each device has a link of its own of the stated rate and round trip. --slowdown F stretches every
device-side model run to F times what it took here (a board F times slower per op; sleeping, so the stretch
costs no CPU). Each device generates --tokens greedy tokens after a test prompt, again and again, for --seconds.
Time per token: a generation's time after its first token over its later tokens (drafted tokens arrive in
bursts, so single gaps say little).
"""
import argparse
import multiprocessing
import pathlib
import statistics
import sys
import threading
import time

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.generation import SplitGeneration
from qpart.device.speculative import SpeculativeGeneration
from qpart.server.models.repository import ModelRepository
from qpart.testbed.processes import ServerProcess
from qpart.v1 import service_pb2 as spb

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from drafting import cut_zero, draft_head  # noqa: E402
from fleet import cpu_seconds  # noqa: E402
from generation import prompts, start_link  # noqa: E402

WORKERS = 2
DRAFT_BITS = 8


class Stretched:
    """A head whose runs take `factor` times as long as they do here (the rest of the time slept)."""

    def __init__(self, head, factor: float):
        self.head, self.factor = head, factor

    def run(self, *args, **kwargs):
        began = time.perf_counter()
        out = self.head.run(*args, **kwargs)
        time.sleep((self.factor - 1) * (time.perf_counter() - began))
        return out

    def __getattr__(self, name):
        return getattr(self.head, name)


def generators(address: str, model: str, mode: str, devices: int, slowdown: float) -> list:
    """One generator per device, each with a connection (and so a link) of its own; plans and heads are fetched
    once per worker and shared, as devices of one kind would each hold the same head."""
    setup = ServerClient(address, timeout_s=120)
    info = setup.list_models(model)[0]
    stretch = (lambda h: Stretched(h, slowdown)) if slowdown > 1 else (lambda h: h)    # noqa: E731
    kind, *rest = mode.split(":")
    clients = [ServerClient(address, timeout_s=120, own_connection=True) for _ in range(devices)]
    if kind == "server_only":
        target = cut_zero(setup, model)
        make = lambda c: SplitGeneration(c, target, None, info)                                  # noqa: E731
    elif kind == "device_only":
        head, draft_info, plan = draft_head(setup, rest[0], DRAFT_BITS)
        make = lambda c: SplitGeneration(c, plan, stretch(head), draft_info)                    # noqa: E731
    elif kind == "split":
        cut, w, a = (int(v) for v in rest)
        plan = setup.plan(spb.PlanRequest(model=model, policy=spb.FIXED,
                                          fixed=spb.FixedPlan(cut=cut, weight_bits=[w], activation_bits=[a])))
        head, _ = DeviceAgent(setup, HeadCache(None), backend="numpy").obtain_head(plan)
        make = lambda c: SplitGeneration(c, plan, stretch(head), info)                          # noqa: E731
    else:
        target = cut_zero(setup, model)
        head, draft_info, _ = draft_head(setup, kind, DRAFT_BITS)
        k, adapt = (4, True) if rest[0] == "auto" else (int(rest[0]), False)
        make = lambda c: SpeculativeGeneration(c, target, info, stretch(head), draft_info, k, adapt)  # noqa: E731
    setup.close()
    return [make(c) for c in clients]


def worker(address, model, mode, devices, seconds, tokens, inputs, slowdown, ready, go, results) -> None:
    gens = generators(address, model, mode, devices, slowdown)
    warm = [threading.Thread(target=g.generate, args=(inputs[0], 2)) for g in gens]   # connections, first runs
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    found = []
    ready.put(devices)
    go.wait()
    until = time.perf_counter() + seconds

    def device(i: int) -> None:
        j = i
        while time.perf_counter() < until:
            prompt = j % len(inputs)
            out = gens[i].generate(inputs[prompt], tokens)
            found.append((prompt, out.tokens, out.first_token_s, sum(out.token_s), out.drafted, out.accepted,
                          sum(out.sent_bytes)))
            j += 1

    threads = [threading.Thread(target=device, args=(i,)) for i in range(devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in gens:
        g.client.close()
    results.put(found)


def one_run(server: ServerProcess, address: str, args, mode: str, devices: int, inputs) -> tuple[list, float]:
    ready, go, results = multiprocessing.Queue(), multiprocessing.Event(), multiprocessing.Queue()
    split = [devices // WORKERS + (w < devices % WORKERS) for w in range(WORKERS)]
    procs = [multiprocessing.Process(target=worker, args=(address, args.model, mode, n, args.seconds, args.tokens,
                                                          inputs, args.slowdown, ready, go, results))
             for n in split if n]
    for p in procs:
        p.start()
    for _ in procs:                                         # plans, heads, connections and warm-ups first
        ready.get(timeout=600)
    before = cpu_seconds(server.pid)
    go.set()
    found = [r for _ in procs for r in results.get(timeout=args.seconds + 600)]
    cpu = cpu_seconds(server.pid) - before
    for p in procs:
        p.join()
    return found, cpu


def reference(server: ServerProcess, model: str, inputs, tokens: int) -> list[list[int]]:
    """The target's own greedy tokens after each prompt (server-only, no relay)."""
    with ServerClient(server.target, timeout_s=120) as client:
        gen = SplitGeneration(client, cut_zero(client, model), None, client.list_models(model)[0])
        return [gen.generate(p, tokens).tokens for p in inputs]


def summary(link: str, mode: str, n: int, found: list, cpu: float, want: list, seconds: float) -> dict:
    made = sum(len(f[1]) for f in found)
    per_token = sorted(f[3] / max(len(f[1]) - 1, 1) for f in found)
    drafted = sum(f[4] for f in found)
    same_places = sum(sum(a == b for a, b in zip(f[1], want[f[0]])) for f in found)
    return {"link": link, "mode": mode, "devices": n, "generations": len(found), "per_device": made / seconds / n,
            "first": 1e3 * statistics.median(f[2] for f in found),
            "p50": 1e3 * statistics.median(per_token), "p99": 1e3 * per_token[int(0.99 * (len(per_token) - 1))],
            "cpu_ms": 1e3 * cpu / made, "up": sum(f[6] for f in found) / made,
            "acceptance": sum(f[5] for f in found) / drafted if drafted else None,
            "same": sum(f[1] == want[f[0]] for f in found), "places": same_places / made}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="gpt-fortunes")
    parser.add_argument("--devices", default="1,8,32,64")
    parser.add_argument("--modes", default="server_only,device_only:draft-fortunes-2,split:28:10:12,"
                                           "draft-fortunes-1:3,draft-fortunes-2:4",
                        help="server_only, device_only:DRAFT, split:CUT:W:A, DRAFT:K or DRAFT:auto, comma-separated")
    parser.add_argument("--links", default="20:10,5:50,1:50", help="RATE:RTT pairs, Mbit/s and ms, comma-separated")
    parser.add_argument("--slowdown", type=float, default=1.0, help="device model runs stretched this many times")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--bound-ms", type=float, default=50.0, help="capacity: p99 time per token under this")
    parser.add_argument("--markdown", type=pathlib.Path)
    args = parser.parse_args()
    inputs = prompts(ModelRepository(args.models).get(args.model), 8)
    counts, modes = [int(d) for d in args.devices.split(",")], args.modes.split(",")
    links = [tuple(float(v) for v in pair.split(":")) for pair in args.links.split(",")]
    rows, capacity, started = [], {}, time.perf_counter()
    with ServerProcess(args.models, 0, "--torch-threads", "1", "--no-measure-speed", "--batch-max-inputs", "64",
                       "--batch-delay-ms", "2", "--generation-sessions", "256", "--workers", "512",
                       "--generation-sessions-per-client", "256", "--max-streams-per-connection", "128") as server:
        want = reference(server, args.model, inputs, args.tokens)
        for i, (rate, rtt) in enumerate(links):
            link, address = start_link(server, rate, rtt)
            try:
                for mode in modes:
                    if mode.startswith("device_only") and i:
                        continue                            # no link in it: run once
                    name = "-" if mode.startswith("device_only") else f"{rate:g} Mbit/s, {rtt:g} ms"
                    for n in counts:
                        found, cpu = one_run(server, address, args, mode, n, inputs)
                        rows.append(summary(name, mode, n, found, cpu, want, args.seconds))
                        if rows[-1]["p99"] <= args.bound_ms:
                            capacity[(name, mode)] = n
                        capacity.setdefault((name, mode), 0)
                        print(_row(rows[-1]), flush=True)
            finally:
                link.terminate()
    lines = _report(args, rows, capacity, time.perf_counter() - started)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


def _report(args, rows: list[dict], capacity: dict, seconds: float) -> list[str]:
    lines = [f"## Many devices, one server: {args.model}, {args.tokens} greedy tokens per generation", "",
             f"`python bench/drafting_fleet.py {' '.join(sys.argv[1:])}` on {sys.platform}, 2 cores, "
             f"{seconds / 60:.0f} minutes. Server: 1 torch thread, batching across devices (up to 64 runs a pass, "
             f"2 ms wait). Devices: threads in {WORKERS} processes on the same 2 cores, numpy, drafts at "
             f"{DRAFT_BITS}-bit weights" + (f", every device model run stretched {args.slowdown:g}x" if
                                            args.slowdown > 1 else "") +
             "; each device its own connection through a relay that shapes each connection to the link's rate and "
             f"round trip. Each cell runs {args.seconds:g} s. Time per token: a generation's time after its first "
             "token over its later tokens. Target's tokens: generations equal to the target's own greedy tokens, "
             "and the share of generated positions that equal them.", "",
             "| link | mode | devices | generations | tokens/s per device | first token ms (p50) | p50 ms/token | "
             "p99 ms/token | server CPU ms per token | bytes up per token | acceptance | target's tokens |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows]
    lines += ["", f"Capacity (the most devices of {args.devices} with p99 time per token at most {args.bound_ms:g} ms):"]
    for link in dict.fromkeys(r["link"] for r in rows):
        lines.append(f"- {link}: " + ", ".join(f"{m} {n}" for (lk, m), n in capacity.items() if lk == link) + ".")
    return lines


def _row(r) -> str:
    acceptance = "" if r["acceptance"] is None else f"{100 * r['acceptance']:.0f} %"
    return (f"| {r['link']} | {r['mode']} | {r['devices']} | {r['generations']} | {r['per_device']:.1f} | "
            f"{r['first']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_ms']:.3f} | {r['up']:.0f} | {acceptance} | "
            f"{r['same']} of {r['generations']} ({100 * r['places']:.0f} %) |")


if __name__ == "__main__":
    raise SystemExit(main())

"""Many devices against one server: server-only generation (the server batching its streamed steps across
devices) against speculative drafting (the server batching verifications across devices), for 1, 8, 32 and 64
devices: tokens per second per device, time per token (p50, p99), server CPU per generated token, bytes up per
token, acceptance, capacity under a bound, and whether every generation gave the target's greedy tokens.

    python bench/drafting_fleet.py [--models model-repo] [--devices 1,8,32,64] [--seconds 10] [--tokens 32]
                                   [--modes server_only,draft-fortunes-1:3,draft-fortunes-2:4] [--bound-ms 50]
                                   [--rate 100] [--rtt 10] [--markdown docs/benchmarks/drafting_fleet.md]

qpart-server runs as its own process (1 torch thread, --batch-max-inputs 64, --batch-delay-ms 2); devices are
threads in 2 worker processes on the same 2 cores (their drafting competes with the server for them: said in
the output), behind one delay relay on loopback. Each device generates --tokens greedy tokens after a test
prompt, again and again, for --seconds. Time per token: a generation's time after its first token over its
later tokens (drafted tokens arrive in bursts, so single gaps say little).
"""
import argparse
import multiprocessing
import pathlib
import statistics
import sys
import threading
import time

from qpart.device.client import ServerClient
from qpart.device.generation import SplitGeneration
from qpart.device.speculative import SpeculativeGeneration
from qpart.server.models.repository import ModelRepository
from qpart.testbed.processes import ServerProcess

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from drafting import cut_zero, draft_head  # noqa: E402
from fleet import cpu_seconds  # noqa: E402
from generation import prompts, start_link  # noqa: E402

WORKERS = 2


def worker(address, model, mode, devices, seconds, tokens, inputs, go, results) -> None:
    client = ServerClient(address, timeout_s=120)
    info, target = client.list_models(model)[0], cut_zero(client, model)
    if mode == "server_only":
        make = lambda: SplitGeneration(client, target, None, info)                      # noqa: E731
    else:
        draft, k = mode.split(":")
        head, draft_info, _ = draft_head(client, draft, 8)
        make = lambda: SpeculativeGeneration(client, target, info, head, draft_info, int(k))  # noqa: E731
    gens = [make() for _ in range(devices)]
    gens[0].generate(inputs[0], 4)                          # warm-up: the stream, the draft's first run
    found = []
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
    client.close()
    results.put(found)


def one_run(server: ServerProcess, address: str, args, mode: str, devices: int, inputs) -> list:
    go, results = multiprocessing.Event(), multiprocessing.Queue()
    split = [devices // WORKERS + (w < devices % WORKERS) for w in range(WORKERS)]
    procs = [multiprocessing.Process(target=worker, args=(address, args.model, mode, n, args.seconds, args.tokens,
                                                          inputs, go, results)) for n in split if n]
    for p in procs:
        p.start()
    time.sleep(3 + 0.05 * devices)                          # plans, heads and warm-ups before the clock starts
    before = cpu_seconds(server.pid)
    go.set()
    found = [r for _ in procs for r in results.get(timeout=args.seconds + 300)]
    cpu = cpu_seconds(server.pid) - before
    for p in procs:
        p.join()
    return found, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="gpt-fortunes")
    parser.add_argument("--devices", default="1,8,32,64")
    parser.add_argument("--modes", default="server_only,draft-fortunes-1:3,draft-fortunes-2:4",
                        help="server_only, or DRAFT:K, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--bound-ms", type=float, default=50.0, help="capacity: p99 time per token under this")
    parser.add_argument("--rate", type=float, default=100.0, help="Mbit/s")
    parser.add_argument("--rtt", type=float, default=10.0, help="round trip, ms")
    parser.add_argument("--markdown", type=pathlib.Path)
    args = parser.parse_args()
    inputs = prompts(ModelRepository(args.models).get(args.model), 8)
    counts, modes = [int(d) for d in args.devices.split(",")], args.modes.split(",")
    rows, capacity, reference, started = [], {}, {}, time.perf_counter()
    with ServerProcess(args.models, 0, "--torch-threads", "1", "--no-measure-speed", "--batch-max-inputs", "64",
                       "--batch-delay-ms", "2", "--generation-sessions", "256",
                       "--generation-sessions-per-client", "256", "--max-streams-per-connection", "128") as server:
        link, address = start_link(server, args.rate, args.rtt)
        try:
            for mode in modes:
                for n in counts:
                    found, cpu = one_run(server, address, args, mode, n, inputs)
                    for prompt, toks, *_ in found:
                        reference.setdefault(prompt, toks)
                    made = sum(len(f[1]) for f in found)
                    per_token = sorted(f[3] / max(len(f[1]) - 1, 1) for f in found)
                    drafted = sum(f[4] for f in found)
                    r = {"mode": mode, "devices": n, "generations": len(found),
                         "per_device": made / args.seconds / n,
                         "p50": 1e3 * statistics.median(per_token), "p99": 1e3 * per_token[int(0.99 * (len(per_token) - 1))],
                         "cpu_ms": 1e3 * cpu / made, "up": sum(f[6] for f in found) / made,
                         "acceptance": sum(f[5] for f in found) / drafted if drafted else None,
                         "same": all(f[1] == reference[f[0]] for f in found)}
                    rows.append(r)
                    if r["p99"] <= args.bound_ms:
                        capacity[mode] = n
                    print(_row(r), flush=True)
        finally:
            link.terminate()
    lines = [f"## Many devices, one server: {args.model}, {args.tokens} greedy tokens per generation", "",
             f"`python bench/drafting_fleet.py {' '.join(sys.argv[1:])}` on {sys.platform}, 2 cores, "
             f"{(time.perf_counter() - started) / 60:.0f} minutes. Server: 1 torch thread, batching across devices "
             f"(up to 64 runs a pass, 2 ms wait). Devices: threads in {WORKERS} processes on the same 2 cores, "
             f"drafting with numpy at 8-bit draft weights, behind one relay ({args.rate:g} Mbit/s, {args.rtt:g} ms). "
             f"Each cell runs {args.seconds:g} s. Time per token: a generation's time after its first token over "
             f"its later tokens.", "",
             "| mode | devices | generations | tokens/s per device | p50 ms/token | p99 ms/token | server CPU ms per "
             "token | bytes up per token | acceptance | target's greedy tokens |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows]
    lines += ["", f"Capacity (the most devices of {args.devices} with p99 time per token at most {args.bound_ms:g} ms): " +
              ", ".join(f"{m} {capacity.get(m, 0)}" for m in modes) + "."]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


def _row(r) -> str:
    acceptance = "" if r["acceptance"] is None else f"{100 * r['acceptance']:.0f} %"
    return (f"| {r['mode']} | {r['devices']} | {r['generations']} | {r['per_device']:.1f} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['cpu_ms']:.3f} | {r['up']:.0f} | {acceptance} | {'all' if r['same'] else 'NO'} |")


if __name__ == "__main__":
    raise SystemExit(main())

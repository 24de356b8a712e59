"""Load, faults and bad input, measured, written as docs/reliability.md.

    python bench/reliability.py [--models model-repo] [--out docs/reliability.md] [--sessions 64] [--seconds 20]

Every figure comes from real server processes and device clients on this machine (qpart.testbed.reliability).
"""
import argparse
import pathlib
import tempfile
import time

from qpart.common import data
from qpart.testbed import bench, reliability
from qpart.testbed.demo import start_server, stop_server
from qpart.v1 import service_pb2 as spb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--data", help="directory of MNIST-format IDX files")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/reliability.md"))
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-kind", type=int, default=200, help="hostile messages of each kind")
    args = parser.parse_args()
    started = time.perf_counter()
    bench.ensure_models(args.models, ("fc6", "lenet", "vgg8"), args.data)
    images, _ = data.load_split("test", args.data)
    x = data.to_float(images[:500])

    server, target = start_server(args.models)
    try:
        held = reliability.load(target, args.sessions, args.seconds)
        held["peak_memory_mb"] = reliability.peak_memory_kb(server.pid) / 1024
        from qpart.device.client import ServerClient
        client = ServerClient(target)
        valid = [client.plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            partition_point=p, weight_bits=[5], activation_bits=5))).plan_id for p in (1, 3, 6)]
        client.close()
        hostile = reliability.bad_inputs(target, valid, args.per_kind)
        port = int(target.rsplit(":", 1)[1])
        address = reliability.unavailable_address(port)
        alive = reliability.load(target, 4, 2.0, processes=1)   # the server still serves after all of it
    finally:
        stop_server(server)
    with tempfile.TemporaryDirectory() as tmp:
        shed = reliability.overload(args.models, pathlib.Path(tmp) / "server.log")
    faults = {
        "replica killed mid-run (two addresses)": reliability.replica_switch(args.models, x[:300]),
        "server killed and restarted mid-run": reliability.server_restart(args.models, x[300:500]),
        "graceful shutdown with a stream in flight": reliability.graceful_shutdown(args.models, x[:200]),
    }
    corrupted = reliability.corrupted_chunk(args.models)
    silent = reliability.silent_peer()
    lost = sum(f["lost"] for f in faults.values())
    twice = sum(f["answered_twice"] for f in faults.values())
    m = bench.machine()

    lines = ["# Reliability", "",
             f"Produced by `python bench/reliability.py --models {args.models} --sessions {args.sessions} --seconds "
             f"{args.seconds:g}` on {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, "
             f"{m['date']} ({(time.perf_counter() - started) / 60:.1f} minutes). Server and devices are separate "
             "processes on loopback; figures are measured, not assumed.", "",
             f"**Inputs lost: {lost}. Inputs answered twice: {twice}.**", "",
             "## Load held", "",
             "Each session is a device with its own connection: it plans once (lenet split at p = 3), fetches the "
             "head, then classifies one input at a time for the whole period.", "",
             "| sessions | seconds | requests | answered | errors | p50 ms | p99 ms | answers/s | server peak memory |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {held['sessions']} | {held['seconds']} | {held['requests']} | {held['answered']} | "
             f"{sum(held['errors'].values())} | {held['p50_ms']:.0f} | {held['p99_ms']:.0f} | {held['throughput_per_s']} | "
             f"{held['peak_memory_mb']:.0f} MB |", "",
             "## Past capacity", "",
             "One compute slot, two waiting places, 48 sessions: the rest is refused at once with RESOURCE_EXHAUSTED "
             "(the time is the server's own, from a batch's arrival to its refusal, in its JSON log).", "",
             "| sessions | answered | refused | other errors | refusal p99 (server) | health after | log lines without request id |",
             "|---|---|---|---|---|---|---|",
             f"| {shed['sessions']} | {shed['answered']} | {shed['errors'].get('RESOURCE_EXHAUSTED', 0)} | "
             f"{sum(v for k, v in shed['errors'].items() if k != 'RESOURCE_EXHAUSTED')} | {shed['refused_p99_ms']:.2f} ms | "
             f"{shed['health_after']} | {shed['logged_without_request_id']} |", "",
             "## Faults injected", "",
             "A device classifies a run of test images (lenet, p = 3, head paced to ~5 ms per input) while the fault "
             "strikes; its answers are compared with a fault-free run.", "",
             "| fault | inputs | answered | lost | answered twice | streams resent | answers dropped as duplicates | "
             "agree with fault-free | notes |", "|---|---|---|---|---|---|---|---|---|"]
    for name, f in faults.items():
        notes = {"replica killed mid-run (two addresses)": f"finished on the {f.get('ended_on')}, {f['failovers']} failover(s)",
                 "server killed and restarted mid-run": "same address, retried with backoff until it was back",
                 "graceful shutdown with a stream in flight":
                     f"health while draining: {f.get('health_while_draining')}; a new call: {f.get('new_call_while_draining')}"}[name]
        lines.append(f"| {name} | {f['inputs']} | {f['answered']} | {f['lost']} | {f['answered_twice']} | "
                     f"{f['resent_streams']} | {f['duplicates_dropped']} | {100 * f['agree_with_fault_free']:.1f} % | {notes} |")
    lines += [f"| head chunk corrupted in transit | - | - | - | - | - | - | - | detected by the content hash, "
              f"downloaded again ({corrupted['refetches']} refetch), head {'ok' if corrupted['head_ok'] else 'BROKEN'} |",
              f"| first address unavailable | - | - | - | - | - | - | - | moved to the next address after "
              f"{address['failovers']} failover(s), {address['seconds'] * 1e3:.0f} ms |",
              f"| peer that never answers | - | - | - | - | - | - | - | {silent['status']} after "
              f"{silent['seconds']:.2f} s (deadline 1 s) |", "",
              "## Bad inputs", "",
              f"Hostile messages sent to a serving server ({args.per_kind} of each kind, from qpart.testbed.hostile), "
              f"with the status each got. Afterwards {alive['answered']} inferences from 4 fresh sessions got "
              f"{sum(alive['errors'].values())} errors.", "",
              "| kind | tried | statuses |", "|---|---|---|"]
    for kind, statuses in hostile.items():
        lines.append(f"| {kind} | {sum(statuses.values())} | " +
                     ", ".join(f"{code} {n}" for code, n in sorted(statuses.items(), key=lambda kv: -kv[1])) + " |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

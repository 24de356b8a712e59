"""Load, faults and bad input, measured, written as docs/reliability.md.

    python bench/reliability.py [--models model-repo] [--out docs/reliability.md] [--sessions 64] [--seconds 20]

Every figure comes from real server processes and device clients on this machine
(qpart.testbed.reliability and qpart.testbed.faults); the line of each table says what measured it.
"""
import argparse
import pathlib
import tempfile
import time

from qpart.common import data
from qpart.device.client import ServerClient
from qpart.testbed import attacks, bench, faults, reliability
from qpart.testbed.processes import ServerProcess, peak_memory_kb
from qpart.v1 import service_pb2 as spb

FAULTS = {   # name -> (scenario, inputs it runs, what the notes column says)
    "replica killed mid-run (two addresses)": (
        faults.replica_switch, slice(0, 300), lambda f: f"finished on the {f['ended_on']}, {f['failovers']} failover(s)"),
    "server killed and restarted mid-run": (
        faults.server_restart, slice(300, 500), lambda f: "same address, retried with backoff until it was back"),
    "graceful shutdown with a stream in flight": (
        faults.graceful_shutdown, slice(0, 200),
        lambda f: f"health while draining: {f['health_while_draining']}; a new call: {f['new_call_while_draining']}"),
}


def measure(args) -> dict:
    images, _ = data.load_split("test", args.data)
    x = data.to_float(images[:500])
    with ServerProcess(args.models) as server:
        held = reliability.load(server.target, args.sessions, args.seconds)
        held["peak_memory_mb"] = peak_memory_kb(server.pid) / 1024
        client = ServerClient(server.target)
        valid = [client.plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=c, weight_bits=[5], activation_bits=[5]))).plan_id for c in (0, 7, 12)]
        client.close()
        hostile = reliability.bad_inputs(server.target, valid, args.per_kind)
        address = faults.unavailable_address(server.port)
        alive = reliability.load(server.target, 4, 2.0, processes=1)   # the server still serves after all of it
    with tempfile.TemporaryDirectory() as tmp:
        shed = reliability.overload(args.models, pathlib.Path(tmp) / "server.log")
    attacked = attacks.under_attack(args.models, sessions=8, seconds=15)
    return {"held": held, "hostile": hostile, "address": address, "alive": alive, "shed": shed, "attacked": attacked,
            "faults": {name: scenario(args.models, x[inputs]) for name, (scenario, inputs, _) in FAULTS.items()},
            "corrupted": faults.corrupted_chunk(args.models), "silent": faults.silent_peer()}


def _load_tables(r: dict) -> list[str]:
    held, shed = r["held"], r["shed"]
    return ["## Load held", "",
            "Each session is a device with its own connection: it plans once (lenet split after its convolutions, cut 7), fetches the "
            "head, then classifies one input at a time for the whole period (qpart.testbed.loadgen).", "",
            "| sessions | seconds | requests | answered | errors | p50 ms | p99 ms | answers/s | server peak memory |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {held['sessions']} | {held['seconds']} | {held['requests']} | {held['answered']} | "
            f"{sum(held['errors'].values())} | {held['p50_ms']:.0f} | {held['p99_ms']:.0f} | {held['throughput_per_s']} | "
            f"{held['peak_memory_mb']:.0f} MB |", "",
            "## Past capacity", "",
            "One compute slot, two waiting places, 48 sessions: the rest is refused at once with RESOURCE_EXHAUSTED "
            "(the time is the server's own, from a batch's arrival to its refusal, in its JSON log).", "",
            "| sessions | answered | refused | other errors | refusal p99 (server) | health after | "
            "log lines without request id |", "|---|---|---|---|---|---|---|",
            f"| {shed['sessions']} | {shed['answered']} | {shed['errors'].get('RESOURCE_EXHAUSTED', 0)} | "
            f"{sum(v for k, v in shed['errors'].items() if k != 'RESOURCE_EXHAUSTED')} | {shed['refused_p99_ms']:.2f} ms | "
            f"{shed['health_after']} | {shed['logged_without_request_id']} |", ""]


def _fault_table(r: dict) -> list[str]:
    lines = ["## Faults injected", "",
             "A device classifies a run of test images (lenet, cut 7, paced as a board of 1 GMAC/s, about 8 ms per "
             "input with its encoding) while the fault strikes; its answers are compared with a fault-free run. Counted at the device: answers delivered to "
             "the caller, answers that arrived for an input that had one already, inputs handed again to a reopened "
             "stream (they had no answer yet). Counted from the servers' own debug logs, which name the request ids of every "
             "batch the tail ran for: inputs the tail ran for, and those it ran for more than once (a batch computed "
             "before the kill whose answer never left).", "",
             "| fault | inputs | delivered | lost | arrived twice at the device | computed by a server | computed "
             "twice | streams resent | inputs resent | agree with fault-free | notes |", "|" + "---|" * 11]
    for name, f in r["faults"].items():
        lines.append(f"| {name} | {f['inputs']} | {f['delivered']} | {f['lost']} | {f['arrived_twice']} | "
                     f"{f['computed']} | {f['computed_twice']} | {f['resent_streams']} | {f['resent_inputs']} | "
                     f"{100 * f['agree_with_fault_free']:.1f} % | {FAULTS[name][2](f)} |")
    c, a, s = r["corrupted"], r["address"], r["silent"]
    dash = "- | " * 9
    return lines + [
        f"| head chunk corrupted in transit | {dash}detected by the content hash, downloaded again "
        f"({c['refetches']} refetch), head {'ok' if c['head_ok'] else 'BROKEN'} |",
        f"| first address unavailable | {dash}moved to the next address after {a['failovers']} failover(s), "
        f"{a['seconds'] * 1e3:.0f} ms |",
        f"| peer that never answers | {dash}{s['status']} after {s['seconds']:.2f} s (deadline 1 s) |", ""]


def _hostile_table(r: dict, per_kind: int) -> list[str]:
    alive = r["alive"]
    lines = ["## Bad inputs", "",
             f"Hostile messages sent to a serving server ({per_kind} of each kind, from qpart.testbed.hostile), "
             f"with the status each got. Afterwards {alive['answered']} inferences from 4 fresh sessions got "
             f"{sum(alive['errors'].values())} errors.", "", "| kind | tried | statuses |", "|---|---|---|"]
    for kind, statuses in r["hostile"].items():
        lines.append(f"| {kind} | {sum(statuses.values())} | " +
                     ", ".join(f"{code} {n}" for code, n in sorted(statuses.items(), key=lambda kv: -kv[1])) + " |")
    return lines + [""]


def _attack_table(r: dict) -> list[str]:
    a, good = r["attacked"], r["attacked"]["good"]
    lines = ["## Under attack", "",
             f"A hostile client on one connection runs each attack (20 times each; 125 idle streams once) against a "
             f"server (`--stream-idle-s {attacks.IDLE_S:g}`) while {good['sessions']} good device sessions classify "
             f"(qpart.testbed.attacks). The attacks took {a['attack_s']:.1f} s. The good devices: {good['answered']} "
             f"answers, {sum(good['errors'].values())} errors, p50 {good['p50_ms']:.0f} ms, p99 {good['p99_ms']:.0f} ms. "
             f"Server peak memory {a['memory_before_mb']:.0f} MB before the attacks, {a['memory_peak_mb']:.0f} MB after.",
             "", "| attack | statuses |", "|---|---|"]
    for name, counts in a["attacks"].items():
        lines.append(f"| {name} | " + ", ".join(f"{code} {n}" for code, n in sorted(counts.items(), key=lambda kv: -kv[1]))
                     + " |")
    return lines + [""]


def markdown(r: dict, args, minutes: float) -> str:
    m = bench.machine()
    fs = r["faults"].values()
    headline = (f"**Inputs lost: {sum(f['lost'] for f in fs)}. Answers that arrived twice at a device: "
                f"{sum(f['arrived_twice'] for f in fs)}. Inputs a server computed twice: "
                f"{sum(f['computed_twice'] for f in fs)} (of {sum(f['resent_inputs'] for f in fs)} sent again).**")
    lines = ["# Reliability", "",
             f"Produced by `python bench/reliability.py --models {args.models} --sessions {args.sessions} --seconds "
             f"{args.seconds:g}` on {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, "
             f"{m['date']} ({minutes:.1f} minutes). Server and devices are separate processes on loopback; every "
             "figure below is counted by the code named beside it.", "", headline, ""]
    return "\n".join(lines + _load_tables(r) + _fault_table(r) + _hostile_table(r, args.per_kind) + _attack_table(r))


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
    text = markdown(measure(args), args, (time.perf_counter() - started) / 60)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Many devices on one server: dynamic batching across devices off and on, in the same run.

    python bench/fleet.py [--models model-repo] [--sessions 8,64,256] [--processes 1,2] [--seconds 15]
                          [--out docs/benchmarks/fleet.md]

For each number of device sessions and of server processes (--processes: one port shared with
SO_REUSEPORT), qpart-server without and then with dynamic batching (--batch-max-inputs,
--batch-delay-ms) serves the load generator (qpart.testbed.loadgen: sessions in
4 processes, each planning a fixed lenet split, fetching the head and classifying Fashion-MNIST test
images one at a time on its own connection). Reported per run: answers/s over the timed period,
latency p50/p99, errors, inputs lost and answered twice, top-1 accuracy of the answers (an answer
routed to the wrong device would lower it), and CPU seconds per answer of the server process and of
the load generator, read from the kernel: on one machine the devices' own work bounds what any
server change can gain, and these two figures say by how much.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from qpart.testbed.processes import ServerProcess

# every session may hold a stream: the per-host stream bound (3/4 of --max-streams) would refuse
# sessions of one load generator host otherwise
CAPACITY = ("--workers", "320", "--max-streams", "300", "--max-streams-per-client", "300")


def _stat(pid: int) -> list[str]:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (a server of several processes), live ones only."""
    children = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(map(cpu_seconds, children))


def one_run(models: pathlib.Path, sessions: int, seconds: float, flags: list[str]) -> dict:
    warmup = 5 + sessions / 32
    with ServerProcess(models, 0, *CAPACITY, *flags) as server:
        load = subprocess.Popen([sys.executable, "-m", "qpart.testbed.loadgen", "--server", server.target, "--sessions",
                                 str(sessions), "--seconds", str(seconds), "--warmup", str(warmup)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(warmup)                          # the server's CPU over the timed period, as the load generator's
        before = cpu_seconds(server.pid)
        time.sleep(seconds)
        server_cpu = cpu_seconds(server.pid) - before
        out, err = load.communicate(timeout=600)
    if load.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err[-2000:]}")
    result = json.loads(out)
    answered = max(result["answered"], 1)
    result["server_cpu_ms"] = 1e3 * server_cpu / answered
    result["loadgen_cpu_ms"] = 1e3 * result["cpu_s"] / answered
    return result


def row(sessions: int, processes: int, mode: str, r: dict) -> str:
    errors = sum(r["errors"].values())
    return (f"| {sessions} | {processes} | {mode} | {r['throughput_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {errors} | "
            f"{r['lost']} | {r['doubled']} | {r['accuracy']} | {r['server_cpu_ms']:.2f} | {r['loadgen_cpu_ms']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--sessions", default="8,64,256", help="device sessions, comma-separated")
    parser.add_argument("--processes", default="1,2", help="server processes (--processes), comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per run")
    parser.add_argument("--max-inputs", type=int, default=256, help="--batch-max-inputs of the batching server")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="--batch-delay-ms of the batching server")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/benchmarks/fleet.md"))
    args = parser.parse_args()
    started = time.monotonic()
    lines = ["| sessions | server processes | batching | answers/s | p50 ms | p99 ms | errors | lost | doubled "
             "| accuracy % | server CPU ms/answer | load generator CPU ms/answer |", "|" + "---|" * 12]
    results = {}
    counts = [int(p) for p in args.processes.split(",")]
    for sessions in (int(s) for s in args.sessions.split(",")):
        for processes in counts:
            for mode, flags in (("off", []), ("on", ["--batch-max-inputs", str(args.max_inputs), "--batch-delay-ms",
                                                      str(args.delay_ms)])):
                results[sessions, processes, mode] = r = one_run(args.models, sessions, args.seconds,
                                                                 ["--processes", str(processes), *flags])
                lines.append(row(sessions, processes, mode, r))
                print(lines[-1], flush=True)
    summary = []
    for sessions in sorted({s for s, _, _ in results}):
        off, on = results[sessions, counts[0], "off"], results[sessions, counts[0], "on"]
        ceiling = (off["server_cpu_ms"] + off["loadgen_cpu_ms"]) / off["loadgen_cpu_ms"]
        more = "".join(f" With {p} server processes: {results[sessions, p, 'off']['throughput_per_s'] / off['throughput_per_s']:.2f}x "
                       f"(batching off) and {results[sessions, p, 'on']['throughput_per_s'] / on['throughput_per_s']:.2f}x "
                       f"(on) the answers per second of {counts[0]}, p99 {results[sessions, p, 'off']['p99_ms']:.0f} and "
                       f"{results[sessions, p, 'on']['p99_ms']:.0f} ms." for p in counts[1:])
        summary.append(f"- {sessions} sessions, {counts[0]} server process(es): batching on answers "
                       f"{on['throughput_per_s'] / off['throughput_per_s']:.2f}x as many inputs per second, p99 "
                       f"{off['p99_ms']:.0f} -> {on['p99_ms']:.0f} ms, server CPU per answer {off['server_cpu_ms']:.2f} -> "
                       f"{on['server_cpu_ms']:.2f} ms. The load generator spends {off['loadgen_cpu_ms']:.2f} ms of CPU per "
                       f"answer on the same cores, so even a server that cost nothing could answer at most "
                       f"{ceiling:.2f}x as many here.{more}")
    text = "\n".join([
        "# Many devices on one server", "",
        f"Command: `python bench/fleet.py --models {args.models} --sessions {args.sessions} --processes {args.processes} "
        f"--seconds {args.seconds:g}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; {(time.monotonic() - started) / 60:.1f} minutes. "
        f"Server and load generator share the machine.  ",
        f"Server: `qpart-server {' '.join(CAPACITY)} --processes N` (N processes on one port, SO_REUSEPORT; each "
        f"with cores / N torch threads), batching on adds `--batch-max-inputs {args.max_inputs} "
        f"--batch-delay-ms {args.delay_ms:g}`. Each session: a fixed lenet plan (cut 7, 8-bit weights and "
        f"activations), one Fashion-MNIST test image per request, its own connection, one Infer stream per request.", "",
        "## Summary", "", *summary, "", "## Runs", "", *lines, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

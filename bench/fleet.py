"""Many devices on one server: dynamic batching across devices off and on, in the same run.

    python bench/fleet.py [--models model-repo] [--sessions 8,64,256] [--seconds 15] [--out docs/benchmarks/fleet.md]

For each number of device sessions, a qpart-server process without and then with dynamic batching
(--batch-max-inputs, --batch-delay-ms) serves the load generator (qpart.testbed.loadgen: sessions in
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


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(models: pathlib.Path, sessions: int, seconds: float, batching: list[str]) -> dict:
    warmup = 5 + sessions / 32
    with ServerProcess(models, 0, *CAPACITY, *batching) as server:
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


def row(sessions: int, mode: str, r: dict) -> str:
    errors = sum(r["errors"].values())
    return (f"| {sessions} | {mode} | {r['throughput_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {errors} | "
            f"{r['lost']} | {r['doubled']} | {r['accuracy']} | {r['server_cpu_ms']:.2f} | {r['loadgen_cpu_ms']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--sessions", default="8,64,256", help="device sessions, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per run")
    parser.add_argument("--max-inputs", type=int, default=256, help="--batch-max-inputs of the batching server")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="--batch-delay-ms of the batching server")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/benchmarks/fleet.md"))
    args = parser.parse_args()
    started = time.monotonic()
    lines = ["| sessions | batching | answers/s | p50 ms | p99 ms | errors | lost | doubled | accuracy % "
             "| server CPU ms/answer | load generator CPU ms/answer |", "|" + "---|" * 11]
    results = {}
    for sessions in (int(s) for s in args.sessions.split(",")):
        for mode, flags in (("off", []), ("on", ["--batch-max-inputs", str(args.max_inputs), "--batch-delay-ms",
                                                  str(args.delay_ms)])):
            results[sessions, mode] = r = one_run(args.models, sessions, args.seconds, flags)
            lines.append(row(sessions, mode, r))
            print(lines[-1], flush=True)
    summary = []
    for sessions in sorted({s for s, _ in results}):
        off, on = results[sessions, "off"], results[sessions, "on"]
        ceiling = (off["server_cpu_ms"] + off["loadgen_cpu_ms"]) / off["loadgen_cpu_ms"]
        summary.append(f"- {sessions} sessions: batching on answers {on['throughput_per_s'] / off['throughput_per_s']:.2f}x "
                       f"as many inputs per second, p99 {off['p99_ms']:.0f} -> {on['p99_ms']:.0f} ms, server CPU per "
                       f"answer {off['server_cpu_ms']:.2f} -> {on['server_cpu_ms']:.2f} ms. The load generator spends "
                       f"{off['loadgen_cpu_ms']:.2f} ms of CPU per answer on the same cores, so even a server that "
                       f"cost nothing could answer at most {ceiling:.2f}x as many here.")
    text = "\n".join([
        "# Many devices on one server", "",
        f"Command: `python bench/fleet.py --models {args.models} --sessions {args.sessions} --seconds {args.seconds:g}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; {(time.monotonic() - started) / 60:.1f} minutes. "
        f"Server and load generator share the machine.  ",
        f"Server: `qpart-server {' '.join(CAPACITY)}`, batching on adds `--batch-max-inputs {args.max_inputs} "
        f"--batch-delay-ms {args.delay_ms:g}`. Each session: a fixed lenet plan (cut 7, 8-bit weights and "
        f"activations), one Fashion-MNIST test image per request, its own connection, one Infer stream per request.", "",
        "## Summary", "", *summary, "", "## Runs", "", *lines, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

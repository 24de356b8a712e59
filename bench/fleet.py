"""Capacity per core: the server on a core of its own against a load generator that costs only its gRPC client.

    python bench/fleet.py [--models model-repo] [--sessions 8,64,256] [--seconds 8] [--against COMMIT]
                          [--profile SECONDS] [--out docs/benchmarks/fleet.md]

For lenet (cut 7) and resnet8-96 (cut 3; Fashion-MNIST resized to 96x96 by the model's preprocessing), 8-bit
weights and activations, qpart-server (--torch-threads 1) runs pinned to core 0 and the load generator
(qpart.testbed.replay: pre-encoded activation messages replayed on grpc.aio, each session on a connection of
its own, ping-pong) to core 1. Each model's messages are recorded once: 64 test images through the head, with
the top-1 qpart's whole path gives each, which every answer is checked against. In the same run:
- qpart, batching off and on (--batch-max-inputs 256 --batch-delay-ms 2), one stream per device session,
  and, at the middle session count, a stream per request;
- with --against COMMIT, qpart-server as it was at that commit (a git worktree of it; grpc's thread pool before
  qpart-server moved to grpc.aio: --against 1c9c17c) and as it is, alternated --repeats times at the middle
  session count, batching off and on, a stream per device, so that a machine whose speed drifts affects both;
- the floor: qpart.testbed.echo (a bare gRPC server answering each message with a reply of the qpart answer's
  size), thread pool with a stream per device and per request, and grpc.aio with a stream per device;
- the compute floor (resnet8-96): the tail alone in torch on core 0, one thread, at the batch sizes the
  batcher formed (qpart_tail_runs_total{inputs}), per input.
Server CPU per answer is the server process's CPU time over the timed period (/proc) over the answers in it.
"""
import argparse
import contextlib
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from qpart.common import data, messages
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.report import RunReport
from qpart.testbed import replay
from qpart.testbed.processes import ServerProcess, free_port
from qpart.v1 import service_pb2 as spb

SERVER_CPUS, LOAD_CPUS = {0}, {1}
CAPACITY = ("--workers", "320", "--max-streams", "300", "--max-streams-per-client", "300", "--max-queued", "512",
            "--torch-threads", "1")
BATCHING = ("--batch-max-inputs", "256", "--batch-delay-ms", "2")
MODELS = (("lenet", 7), ("resnet8-96", 3))
RECORDED = 64


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail_runs(port: int) -> dict[int, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {int(m[1]): float(m[2]) for m in re.finditer(r'qpart_tail_runs_total\{inputs="(\d+)"\} (\S+)', text)}


def record(target: str, model: str, cut: int, path: pathlib.Path, data_dir) -> int:
    """Plan, fetch the head, encode RECORDED test images and answer them through qpart; returns the answer's size."""
    with ServerClient(target, timeout_s=60) as client, tempfile.TemporaryDirectory() as cache:
        agent = DeviceAgent(client, HeadCache(cache), backend="numpy", streams="call")
        plan = client.plan(spb.PlanRequest(model=model, policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=cut, weight_bits=[8], activation_bits=[8])))
        executor, _ = agent.obtain_head(plan)
        info = client.list_models(model)[0]
        images = data.load_split("test", data_dir)[0][:RECORDED]
        x = messages.preprocessing_from_pb(info.preprocessing).apply(images)
        encoded = [agent.encode(executor, x[i:i + 1], agent.crossing(plan)) for i in range(RECORDED)]
        before = client.bytes["Infer"].received
        labels = agent.classify(plan, executor, x, RunReport.for_plan(plan)).argmax(axis=1)
        answer = (client.bytes["Infer"].received - before) / RECORDED - 5
        replay.record(path, plan.plan_id, encoded, labels.tolist())
        return int(round(answer))


def measure(target: str, pid: int, messages_file, sessions: int, mode: str, seconds: float, echo: bool,
            metrics_port: int | None = None) -> dict:
    start_at = time.monotonic() + 2.0 + sessions / 64
    until = start_at + seconds
    load = subprocess.Popen([sys.executable, "-m", "qpart.testbed.replay", "--target", target, "--messages",
                             str(messages_file), "--sessions", str(sessions), "--mode", mode, "--start-at",
                             str(start_at), "--until", str(until), *(["--echo"] if echo else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, LOAD_CPUS))
    time.sleep(max(start_at - time.monotonic(), 0))
    before, runs_before = cpu_seconds(pid), tail_runs(metrics_port) if metrics_port else {}
    time.sleep(max(until - time.monotonic(), 0))
    server_cpu = cpu_seconds(pid) - before
    runs = {k: v - runs_before.get(k, 0) for k, v in tail_runs(metrics_port).items()} if metrics_port else {}
    out, err = load.communicate(timeout=300)
    if load.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err[-2000:]}")
    r = json.loads(out)
    answered = max(r["answered"], 1)
    r.update(server_cpu_ms=1e3 * server_cpu / answered, load_cpu_ms=1e3 * r["cpu_s"] / answered,
             per_core_s=answered / seconds / max(server_cpu / seconds, 1e-9), runs={k: v for k, v in runs.items() if v})
    return r


def echo_server(reply_bytes: int, aio: bool):
    process = subprocess.Popen([sys.executable, "-m", "qpart.testbed.echo", "--reply-bytes", str(reply_bytes),
                                *(["--aio"] if aio else [])], stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: os.sched_setaffinity(0, SERVER_CPUS))
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"the echo server did not start: {line!r}")
    return process, line.split()[-1]


def server_flags(batching: str) -> tuple[list[str], int]:
    """qpart-server's flags for a run (batching "on" or "off") and the free port its /metrics is served on."""
    metrics_port = free_port()
    return [*CAPACITY, "--metrics-port", str(metrics_port), *(BATCHING if batching == "on" else ())], metrics_port


@contextlib.contextmanager
def server_at(commit: str):
    """The environment that runs qpart-server as it was at `commit`: a git worktree of it, importable as qpart."""
    root = pathlib.Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as work:
        tree, path = pathlib.Path(work) / "tree", pathlib.Path(work) / "path"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
        try:
            (path / "qpart").mkdir(parents=True)
            for part in ("common", "server", "device", "cli", "testbed"):
                (path / "qpart" / part).symlink_to(tree / part)
            (path / "qpart" / "v1").symlink_to(tree / "protos" / "qpart" / "v1")
            yield {**os.environ, "PYTHONPATH": str(path)}
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)


def alternate(args, model: str, file: pathlib.Path, sessions: int, results: dict, lines: list) -> None:
    """qpart-server as it is and as it was at --against, alternated --repeats times at one session count, batching
    off and on: a machine whose speed drifts between runs affects both alike."""
    with server_at(args.against) as env:
        for repeat in range(args.repeats):
            for batching in ("off", "on"):
                for who in ("now", "before"):
                    flags, metrics_port = server_flags(batching)
                    with ServerProcess(args.models, 0, *flags, cpus=SERVER_CPUS,
                                       env=env if who == "before" else None) as server:
                        r = measure(server.target, server.pid, file, sessions, "device", args.seconds, False,
                                    metrics_port)
                    results.setdefault(("alternated", who, batching), []).append(r)
                    name = "qpart" if who == "now" else f"qpart-server at {args.against}"
                    lines.append(row(model, f"{name}, batching {batching}, alternated {repeat + 1}", "device", r))
                    print(lines[-1], flush=True)


def side_by_side(results: dict, batching: str, against: str, sessions: int) -> str:
    def spread(who: str, key: str) -> str:
        values = [r[key] for r in results["alternated", who, batching]]
        digits = 3 if key == "server_cpu_ms" else 0
        return (f"{sum(values) / len(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})")
    runs = len(results["alternated", "now", batching])
    return (f"Alternated with qpart-server at {against}, {runs} runs each at {sessions} "
            f"sessions: server CPU per answer {spread('now', 'server_cpu_ms')} ms now, "
            f"{spread('before', 'server_cpu_ms')} ms before; answers/s per server core {spread('now', 'per_core_s')} "
            f"now, {spread('before', 'per_core_s')} before (mean, lowest-highest).")


def torch_floor(models: pathlib.Path, model: str, cut: int, runs: dict[int, float], repeats: int = 30) -> float:
    """Seconds per input of the tail alone in torch (one thread, core 0) over the runs the batcher formed."""
    import torch
    from qpart.server.models.repository import ModelRepository
    torch.set_num_threads(1)
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, SERVER_CPUS)
    try:
        served = ModelRepository(models).get(model)
        tail, shapes = served.tail(cut), served.profile.cut(cut).shapes
        seconds = {}
        with torch.inference_mode():
            for size in runs:
                x = [torch.randn(size, *shape) for shape in shapes]                 # each [size, *sample_shape]
                tail(*x)
                began = time.perf_counter()
                for _ in range(repeats):
                    tail(*x)
                seconds[size] = (time.perf_counter() - began) / repeats
        return sum(runs[s] * seconds[s] for s in runs) / sum(runs[s] * s for s in runs)
    finally:
        os.sched_setaffinity(0, own)


def profile(pid: int, seconds: float, top: int = 18) -> list[str]:
    """py-spy on the server for `seconds` (sampling, the process not paused): the share of the samples in which
    each function is on the stack (inclusive) and at its top (self), the most inclusive first."""
    with tempfile.TemporaryDirectory() as work:
        out = pathlib.Path(work) / "stacks.txt"
        spy = shutil.which("py-spy", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy; the dev extra has it)")
        subprocess.run([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "--nonblocking", "--gil",
                        "-f", "raw", "-o", str(out)], check=True, capture_output=True,
                       preexec_fn=lambda: os.sched_setaffinity(0, LOAD_CPUS))
        inclusive, own, total = {}, {}, 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [re.sub(r" \((.*/)?(qpart|site-packages)/", " (", f) for f in stack.split(";")]
            total += int(count)
            for f in set(frames):
                inclusive[f] = inclusive.get(f, 0) + int(count)
            own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    rows = ["| function (file:line) | on the stack % | at the top % |", "|---|---|---|"]
    for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        rows.append(f"| `{f}` | {100 * n / total:.1f} | {100 * own.get(f, 0) / total:.1f} |")
    return rows


def run_model(args, model: str, cut: int, work: pathlib.Path, lines: list, summary: list) -> None:
    counts = [int(s) for s in args.sessions.split(",")]
    middle = counts[len(counts) // 2]
    file = work / f"{model}.npz"
    results = {}
    for batching in ("off", "on"):
        flags, metrics_port = server_flags(batching)
        with ServerProcess(args.models, 0, *flags, cpus=SERVER_CPUS) as server:
            if not file.exists():
                reply_bytes = record(server.target, model, cut, file, args.data)
            if args.profile and model == "lenet":
                start_at = time.monotonic() + 3
                load = subprocess.Popen([sys.executable, "-m", "qpart.testbed.replay", "--target", server.target,
                                         "--messages", str(file), "--sessions", str(middle), "--start-at",
                                         str(start_at), "--until", str(start_at + args.profile)],
                                        stdout=subprocess.DEVNULL,
                                        preexec_fn=lambda: os.sched_setaffinity(0, LOAD_CPUS))
                time.sleep(3)
                args.profile_lines += [
                    f"The server, lenet, {middle} sessions, a stream per device, batching {batching} (py-spy, "
                    f"{args.profile:g} s, 250 samples/s, the stacks of the thread holding the GIL: the Python side "
                    f"of the CPU, not gRPC's C threads):", "", *profile(server.pid, args.profile), ""]
                load.wait()
            for sessions in counts:
                for mode in ("device", "request") if sessions == middle else ("device",):
                    r = measure(server.target, server.pid, file, sessions, mode, args.seconds, False, metrics_port)
                    results["qpart", batching, mode, sessions] = r
                    lines.append(row(model, f"qpart, batching {batching}", mode, r))
                    print(lines[-1], flush=True)
    if args.against:
        alternate(args, model, file, middle, results, lines)
    for aio in (False, True):
        process, target = echo_server(reply_bytes, aio)
        try:
            for sessions in counts:
                for mode in ("device", "request") if not aio else ("device",):
                    r = measure(target, process.pid, file, sessions, mode, args.seconds, True)
                    results["echo-aio" if aio else "echo", "", mode, sessions] = r
                    lines.append(row(model, "echo, grpc.aio" if aio else "echo, thread pool", mode, r))
                    print(lines[-1], flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    floor = results["echo", "", "device", middle]["server_cpu_ms"]
    for batching in ("off", "on"):
        r = results["qpart", batching, "device", middle]
        summary.append(f"- {model} (cut {cut}), {middle} sessions, batching {batching}: server CPU "
                       f"{r['server_cpu_ms']:.3f} ms per answer, {r['server_cpu_ms'] / floor:.2f}x the "
                       f"stream-per-device "
                       f"echo floor ({floor:.3f} ms; stream per request "
                       f"{results['echo', '', 'request', middle]['server_cpu_ms']:.3f} ms, grpc.aio stream per device "
                       f"{results['echo-aio', '', 'device', middle]['server_cpu_ms']:.3f} ms); a stream per request "
                       f"costs qpart {results['qpart', batching, 'request', middle]['server_cpu_ms']:.3f} ms.")
        if args.against:
            summary.append(f"  {side_by_side(results, batching, args.against, middle)}")
    if model != "lenet":
        on = results["qpart", "on", "device", middle]
        seconds = torch_floor(args.models, model, cut, on["runs"])
        mean = sum(k * v for k, v in on["runs"].items()) / max(sum(on["runs"].values()), 1)
        summary.append(f"- {model}, batching on, {middle} sessions: the batcher ran the tail "
                       f"{sum(on['runs'].values()):.0f} "
                       f"times, {mean:.1f} inputs on average; torch alone on the same core at those batch sizes "
                       f"costs {1e3 * seconds:.3f} ms per input, the server {on['server_cpu_ms']:.3f} ms per answer: "
                       f"{on['server_cpu_ms'] / (1e3 * seconds):.2f}x.")


def row(model: str, server: str, mode: str, r: dict) -> str:
    errors = sum(r["errors"].values())
    return (f"| {model} | {server} | {mode} | {r['sessions']} | {r['answered'] / r['seconds']:.0f} | "
            f"{r['per_core_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {errors} | {r['lost']} | "
            f"{r['doubled']} | "
            f"{r['wrong']} | {r['server_cpu_ms']:.3f} | {r['load_cpu_ms']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--data", help="Fashion-MNIST directory (default: $QPART_DATA or the Debian package's)")
    parser.add_argument("--sessions", default="8,64,256", help="device sessions, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
    parser.add_argument("--model", action="append", help="NAME:CUT (default lenet:7 and resnet8-96:3)")
    parser.add_argument("--profile", type=float, default=0.0,
                        help="seconds of py-spy on the lenet server under load (0: no profile)")
    parser.add_argument("--against", metavar="COMMIT",
                        help="also run qpart-server as it was at this git commit, beside this one (device streams)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of each server with --against")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/benchmarks/fleet.md"))
    args = parser.parse_args()
    args.profile_lines = []
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this benchmark pins the server and the load to different cores: it needs 2")
    os.sched_setaffinity(0, LOAD_CPUS)
    started = time.monotonic()
    models = [(m.split(":")[0], int(m.split(":")[1])) for m in args.model] if args.model else MODELS
    lines = ["| model | server | stream per | sessions | answers/s | answers/s per server core | p50 ms | p99 ms "
             "| errors | lost | doubled | wrong | server CPU ms/answer | load CPU ms/answer |", "|" + "---|" * 14]
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        for model, cut in models:
            run_model(args, model, cut, pathlib.Path(work), lines, summary)
    text = "\n".join([
        "# Capacity per core", "",
        f"Command: `python bench/fleet.py --models {args.models} --sessions {args.sessions} --seconds {args.seconds:g}"
        f"{f' --against {args.against} --repeats {args.repeats}' if args.against else ''}{f' --profile {args.profile:g}' if args.profile else ''}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; {(time.monotonic() - started) / 60:.1f} minutes. "
        f"Server on core 0 (`qpart-server {' '.join(CAPACITY)}`, batching on adds `{' '.join(BATCHING)}`), load "
        f"generator on core 1 (qpart.testbed.replay: pre-encoded messages on grpc.aio, a connection per session, "
        f"ping-pong). resnet8-96: Fashion-MNIST resized to 96x96 by the model's preprocessing.", "",
        "## Summary", "", *summary, "", *(["## Profile", "", *args.profile_lines] if args.profile else []),
        "## Runs", "", *lines, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Load generator: many device sessions against one server, each with its own connection.

    python -m qpart.testbed.loadgen --server HOST:PORT --sessions 64 --seconds 20 [--model lenet]

Sessions are spread over several processes (so that the Python interpreter is not the bottleneck),
each running its sessions as threads. A session plans once (a fixed split plan), fetches
the head, and then classifies one input at a time for the given time: Fashion-MNIST test images
(preprocessed as the server's ModelInfo says) when the data set is there, so that an answer routed to
the wrong device would show as lost accuracy, else random data. It prints one JSON object: requests,
answers, errors by status code, answers that arrived twice (dropped by the agent), inputs neither
answered nor refused (lost), top-1 accuracy of the answers, latency percentiles of answered requests
and of refused or shed ones (RESOURCE_EXHAUSTED, after which the session backs off briefly;
DEADLINE_EXCEEDED with --deadline-ms, when the server sheds what cannot make it), throughput over
the timed period (after every session has its head) and the load generator's CPU seconds in it.
"""
import argparse
import collections
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

from qpart.common import data, messages, runtime
from qpart.common.errors import DeadlineExceeded, QpartError, ResourceExhausted
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.v1 import service_pb2 as spb


IMAGES: tuple[np.ndarray, np.ndarray] | None = None    # (uint8 [N, H, W], labels [N]), read once before the fork


def session(args, seed: int, start_at: float, until: float, out: dict, lock: threading.Lock) -> None:
    rng = np.random.default_rng(seed)
    client = ServerClient(args.server, timeout_s=30, token=args.token, retries=3)
    with tempfile.TemporaryDirectory() as cache:
        try:
            agent = DeviceAgent(client, HeadCache(cache), deadline_s=args.deadline_ms / 1e3)
            plan = client.plan(spb.PlanRequest(model=args.model, policy=spb.FIXED, fixed=spb.FixedPlan(
                cut=args.cut, weight_bits=[8], activation_bits=[8])))
            executor, _ = agent.obtain_head(plan)
            info = client.list_models(args.model)[0]
            shape = (1, *info.input.shape)
            preprocess = messages.preprocessing_from_pb(info.preprocessing)
            i = seed * 7919
            while time.monotonic() < until:
                label = None
                if IMAGES is not None:
                    i = (i + 1) % len(IMAGES[0])
                    x, label = preprocess.apply(IMAGES[0][i:i + 1]), int(IMAGES[1][i])
                else:
                    x = rng.random(shape, dtype=np.float32)
                started = time.perf_counter()
                report = RunReport.for_plan(plan)
                try:
                    scores = agent.classify(plan, executor, x, report)
                    with lock:
                        if time.monotonic() >= start_at:
                            out["latency"].append(time.perf_counter() - started)
                            out["doubled"] += report.duplicates_dropped
                            out["lost"] += len(x) - len(scores)
                            out["labelled"] += label is not None
                            out["correct"] += label is not None and int(scores[0].argmax()) == label
                except (ResourceExhausted, DeadlineExceeded) as e:
                    with lock:
                        out["shed"].append(time.perf_counter() - started)
                        out["errors"][e.status] += 1
                    if isinstance(e, ResourceExhausted):
                        time.sleep(0.05)
        except QpartError as e:
            with lock:
                out["errors"][e.status] += 1
        finally:
            client.close()


def worker(args, first_seed: int, sessions: int, start_at: float, until: float, queue) -> None:
    runtime.freeze_long_lived()
    out = {"latency": [], "shed": [], "errors": collections.Counter(), "doubled": 0, "lost": 0, "labelled": 0,
           "correct": 0}
    lock = threading.Lock()
    threads = [threading.Thread(target=session, args=(args, first_seed + i, start_at, until, out, lock))
               for i in range(sessions)]
    for t in threads:
        t.start()
    time.sleep(max(start_at - time.monotonic(), 0))
    cpu = time.process_time()
    for t in threads:
        t.join()
    out["cpu_s"] = time.process_time() - cpu        # this process's CPU over the timed period
    queue.put(out)


def percentile(values, q):
    return float(np.percentile(values, q)) if values else None


def run(args) -> dict:
    global IMAGES
    if IMAGES is None and not args.random:
        try:
            IMAGES = data.load_split("test", args.data)
        except QpartError:
            IMAGES = None                               # no data set here: random inputs, accuracy not counted
    start_at = time.monotonic() + args.warmup        # sessions start, plan and fetch within the first seconds
    until = start_at + args.seconds
    queue = multiprocessing.Queue()
    per_process = [args.sessions // args.processes + (i < args.sessions % args.processes) for i in range(args.processes)]
    processes = [multiprocessing.Process(target=worker, args=(args, 1000 * i, n, start_at, until, queue))
                 for i, n in enumerate(per_process) if n]
    for p in processes:
        p.start()
    parts = [queue.get() for _ in processes]
    for p in processes:
        p.join()
    elapsed = args.seconds
    latency = [v for part in parts for v in part["latency"]]
    shed = [v for part in parts for v in part["shed"]]
    errors = sum((collections.Counter(part["errors"]) for part in parts), collections.Counter())
    labelled = sum(part["labelled"] for part in parts)
    return {"sessions": args.sessions, "seconds": round(elapsed, 1), "answered": len(latency),
            "requests": len(latency) + sum(errors.values()), "errors": dict(errors),
            "doubled": sum(part["doubled"] for part in parts), "lost": sum(part["lost"] for part in parts),
            "cpu_s": round(sum(part["cpu_s"] for part in parts), 2),
            "accuracy": round(100 * sum(part["correct"] for part in parts) / labelled, 2) if labelled else None,
            "p50_ms": percentile(latency, 50) and percentile(latency, 50) * 1e3,
            "p99_ms": percentile(latency, 99) and percentile(latency, 99) * 1e3,
            "shed_p99_ms": percentile(shed, 99) and percentile(shed, 99) * 1e3,
            "throughput_per_s": round(len(latency) / elapsed, 1),
            "mean_ms": statistics.fmean(latency) * 1e3 if latency else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpart.testbed.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="host:port (several separated by commas)")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--cut", type=int, default=7, help="nodes on the device (default 7: lenet's conv part)")
    parser.add_argument("--token")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds for sessions to plan and fetch, not timed")
    parser.add_argument("--data", help="Fashion-MNIST directory (default: $QPART_DATA or the Debian package's)")
    parser.add_argument("--random", action="store_true", help="random inputs instead of test images")
    parser.add_argument("--deadline-ms", type=float, default=0.0,
                        help="each request's deadline at the server (InferRequest.deadline_s), ms; 0: none")
    args = parser.parse_args(argv)
    json.dump(run(args), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

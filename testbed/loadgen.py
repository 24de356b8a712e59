"""Load generator: many device sessions against one server, each with its own connection.

    python -m qpart.testbed.loadgen --server HOST:PORT --sessions 64 --seconds 20 [--model lenet]

Sessions are spread over several processes (so that the Python interpreter is not the bottleneck),
each running its sessions as threads. A session plans once (a fixed split plan), fetches
the head, and then classifies one input at a time with random data for the given time. It prints one
JSON object: requests, answers, errors by status code, latency percentiles of answered requests and of
refused ones (RESOURCE_EXHAUSTED, after which the session backs off briefly), and throughput.
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

from qpart.common import runtime
from qpart.common.errors import QpartError, ResourceExhausted
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.v1 import service_pb2 as spb


def session(args, seed: int, until: float, out: dict, lock: threading.Lock) -> None:
    rng = np.random.default_rng(seed)
    client = ServerClient(args.server, timeout_s=30, token=args.token, retries=3)
    with tempfile.TemporaryDirectory() as cache:
        try:
            agent = DeviceAgent(client, HeadCache(cache))
            plan = client.plan(spb.PlanRequest(model=args.model, policy=spb.FIXED, fixed=spb.FixedPlan(
                cut=args.cut, weight_bits=[8], activation_bits=[8])))
            executor, _ = agent.obtain_head(plan)
            shape = (1, *client.list_models(args.model)[0].input.shape)
            while time.monotonic() < until:
                x = rng.random(shape, dtype=np.float32)
                started = time.perf_counter()
                try:
                    agent.classify(plan, executor, x, RunReport.for_plan(plan))
                    with lock:
                        out["latency"].append(time.perf_counter() - started)
                except ResourceExhausted:
                    with lock:
                        out["shed"].append(time.perf_counter() - started)
                        out["errors"]["RESOURCE_EXHAUSTED"] += 1
                    time.sleep(0.05)
        except QpartError as e:
            with lock:
                out["errors"][e.status] += 1
        finally:
            client.close()


def worker(args, first_seed: int, sessions: int, until: float, queue) -> None:
    runtime.freeze_long_lived()
    out = {"latency": [], "shed": [], "errors": collections.Counter()}
    lock = threading.Lock()
    threads = [threading.Thread(target=session, args=(args, first_seed + i, until, out, lock)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(out)


def percentile(values, q):
    return float(np.percentile(values, q)) if values else None


def run(args) -> dict:
    until = time.monotonic() + args.seconds + 5    # sessions start, plan and fetch within the first seconds
    queue = multiprocessing.Queue()
    per_process = [args.sessions // args.processes + (i < args.sessions % args.processes) for i in range(args.processes)]
    processes = [multiprocessing.Process(target=worker, args=(args, 1000 * i, n, until, queue))
                 for i, n in enumerate(per_process) if n]
    started = time.monotonic()
    for p in processes:
        p.start()
    parts = [queue.get() for _ in processes]
    for p in processes:
        p.join()
    elapsed = time.monotonic() - started
    latency = [v for part in parts for v in part["latency"]]
    shed = [v for part in parts for v in part["shed"]]
    errors = sum((collections.Counter(part["errors"]) for part in parts), collections.Counter())
    return {"sessions": args.sessions, "seconds": round(elapsed, 1), "answered": len(latency),
            "requests": len(latency) + sum(errors.values()), "errors": dict(errors),
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
    args = parser.parse_args(argv)
    json.dump(run(args), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

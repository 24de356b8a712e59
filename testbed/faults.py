"""Fault scenarios with the figures they produce: a replica killed mid-run, a server killed and
restarted, a graceful shutdown with a stream in flight, a corrupted head chunk, an unreachable
address, a peer that never answers. The fault tests assert on these figures and bench/reliability.py
turns them into docs/reliability.md.

Each scenario counts, per input, what really happened on both sides: answers that arrived at the
device more than once (the agent keeps the first and counts the rest), inputs it sent again on a new
stream, and how often a server ran the tail for each input (read from the servers' own debug logs,
which name the request ids of every batch the tail ran for).
"""
import collections
import json
import logging
import socket
import tempfile
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qpart.common.errors import QpartError, Unavailable
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.testbed.processes import ServerProcess, free_port
from qpart.v1 import service_pb2 as spb

SPLIT = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(cut=7, weight_bits=[6], activation_bits=[6]))
SPLIT_INPUT_SHAPE = (1, 28, 28)   # lenet's input; cut 7 sends the flattened [400] features after conv2
LOGGED = ("--no-measure-speed", "--cold-heads", "--grace", "0", "--json-logs")


def computed_counts(records) -> collections.Counter:
    """How often the tail ran for each request id, from the core's debug records (dicts of JSON log lines)."""
    counts = collections.Counter()
    for record in records:
        for first, last in record.get("computed", ()):
            counts.update(range(first, last + 1))
    return counts


def _log_records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


class _LoggedServers:
    """Server processes whose JSON debug logs (one line per batch the tail ran for) land in a temp dir."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.logs: list[str] = []
        self.processes: list[ServerProcess] = []

    def start(self, models_dir, port: int) -> ServerProcess:
        path = f"{self.dir.name}/server{len(self.logs)}.log"
        self.logs.append(path)
        with open(path, "w") as log:
            process = ServerProcess(models_dir, port, *LOGGED, log_level="DEBUG", stderr=log)
        self.processes.append(process)
        return process

    def computed(self) -> collections.Counter:
        return sum((computed_counts(_log_records(path)) for path in self.logs), collections.Counter())

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self.dir.cleanup()


@dataclass
class Run:
    """A device classifying in the background (paced as a board of 1 GMAC/s: about 8 ms per input with its
    encoding), for faults to hit."""
    thread: threading.Thread
    report: RunReport
    result: dict
    client: ServerClient

    def wait_for(self, answers: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.report.batch_latency_s) < answers:
            if time.monotonic() > deadline:
                raise TimeoutError("the run did not get going")
            time.sleep(0.01)

    def finish(self, expected: np.ndarray, computed: collections.Counter, timeout_s: float = 120) -> dict:
        """Plain figures of the run against the fault-free predictions and the servers' computation counts."""
        self.thread.join(timeout_s)
        self.client.close()
        scores, n = self.result.get("scores"), self.result["inputs"]
        delivered = 0 if scores is None else len(scores)
        return {"inputs": n, "delivered": delivered, "lost": n - delivered, "error": self.result.get("error"),
                "arrived_twice": self.report.duplicates_dropped, "resent_streams": self.report.resent_streams,
                "resent_inputs": self.report.resent_inputs, "failovers": self.client.failovers,
                "computed": sum(1 for i in range(n) if computed[i]),
                "computed_twice": sum(1 for i in range(n) if computed[i] > 1),
                "agree_with_fault_free": None if scores is None else float(np.mean(scores.argmax(axis=1) == expected))}


def start_run(target: str, x: np.ndarray, retries: int = 10) -> Run:
    client = ServerClient(target, timeout_s=20, retries=retries, backoff_s=0.1, backoff_max_s=1.0)
    agent = DeviceAgent(client, HeadCache(None), emulate_macs_per_second=1e9)
    plan = client.plan(SPLIT)
    executor, _ = agent.obtain_head(plan)
    report = RunReport.for_plan(plan)
    result = {"inputs": len(x)}

    def work():
        try:
            result["scores"] = agent.classify(plan, executor, x, report)
        except QpartError as e:
            result["error"] = e.status
    thread = threading.Thread(target=work)
    thread.start()
    return Run(thread, report, result, client)


def reference_predictions(target: str, x: np.ndarray) -> np.ndarray:
    """The fault-free answers, with request ids far from the run's (so the servers' counts keep apart)."""
    client = ServerClient(target, timeout_s=30)
    plan = client.plan(SPLIT)
    agent = DeviceAgent(client, HeadCache(None))
    executor, _ = agent.obtain_head(plan)
    scores = agent.classify(plan, executor, x, RunReport.for_plan(plan), batch_size=50, first_id=1 << 40)
    client.close()
    return scores.argmax(axis=1)


def replica_switch(models_dir, x: np.ndarray, kill_after: int = 60) -> dict:
    """Two replicas; the one the device uses is killed (SIGKILL) mid-run."""
    servers = _LoggedServers()
    try:
        a, b = servers.start(models_dir, free_port()), servers.start(models_dir, free_port())
        expected = reference_predictions(b.target, x)
        run = start_run(f"{a.target},{b.target}", x)
        run.wait_for(kill_after)
        a.kill()
        run.thread.join(120)
        outcome = run.finish(expected, servers.computed())
        outcome["ended_on"] = "second replica" if run.client.target == b.target else "first replica"
        return outcome
    finally:
        servers.close()


def server_restart(models_dir, x: np.ndarray, kill_after: int = 40) -> dict:
    """One server, killed (SIGKILL) mid-run and started again on the same address."""
    servers = _LoggedServers()
    try:
        port = free_port()
        first = servers.start(models_dir, port)
        expected = reference_predictions(first.target, x)
        run = start_run(first.target, x, retries=15)
        run.wait_for(kill_after)
        first.kill()
        servers.start(models_dir, port)
        run.thread.join(120)
        return run.finish(expected, servers.computed())
    finally:
        servers.close()


class _Computed(logging.Handler):
    """Collects the in-process core's debug records of the batches the tail ran for."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(getattr(record, "fields", {}))


def graceful_shutdown(models_dir, x: np.ndarray, stop_after: int = 20) -> dict:
    """SIGTERM-style stop while a stream is running: health, new calls, the in-flight stream."""
    core_log, handler = logging.getLogger("qpart.server.core"), _Computed()
    level = core_log.level
    core_log.addHandler(handler)
    core_log.setLevel(logging.DEBUG)
    try:
        running = RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, warm_heads=False))
        target = f"127.0.0.1:{running.port}"
        expected = reference_predictions(target, x)
        run = start_run(target, x, retries=0)
        run.wait_for(stop_after)
        stopper = threading.Thread(target=running.stop, args=(30, 1.0))   # 1 s of notice, then 30 s of grace
        stopper.start()
        time.sleep(0.3)
        health = _health(target)
        time.sleep(1.2)                                   # past the notice: new work is refused now
        late = ServerClient(target, timeout_s=5, retries=0)
        try:
            late.list_models()
            new_call = "served"
        except Unavailable:
            new_call = "UNAVAILABLE"
        late.close()
        run.thread.join(120)
        outcome = run.finish(expected, computed_counts(handler.records))
        stopper.join(60)
        return outcome | {"health_while_draining": health, "new_call_while_draining": new_call}
    finally:
        core_log.removeHandler(handler)
        core_log.setLevel(level)


def _health(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2.HealthCheckResponse.ServingStatus.Name(
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
        except grpc.RpcError as e:
            return f"refused ({e.code().name})"


def corrupted_chunk(models_dir) -> dict:
    """The first head chunk arrives with a flipped byte."""
    running = RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, warm_heads=False))
    original, calls = running.core.head_chunks, []

    def corrupting(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            if not calls:
                data = bytearray(chunk.data)
                data[len(data) // 2] ^= 0xFF
                chunk = type(chunk)(chunk.content_hash, chunk.total_bytes, chunk.offset, bytes(data))
            calls.append(1)
            yield chunk
    running.core.head_chunks = corrupting
    try:
        client = ServerClient(f"127.0.0.1:{running.port}", timeout_s=20)
        plan = client.plan(SPLIT)
        executor, _ = DeviceAgent(client, HeadCache(None)).obtain_head(plan)
        client.close()
        return {"refetches": client.refetches, "head_ok": executor.macs > 0}
    finally:
        running.stop(0, notice=0)


def unavailable_address(live_port: int) -> dict:
    dead = free_port()
    client = ServerClient(f"127.0.0.1:{dead},127.0.0.1:{live_port}", timeout_s=5, retries=3, backoff_s=0.05)
    started = time.perf_counter()
    models = len(client.list_models())
    client.close()
    return {"models": models, "failovers": client.failovers, "seconds": time.perf_counter() - started}


def silent_peer(timeout_s: float = 1.0) -> dict:
    """A peer that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: [listener.accept() for _ in range(8)], daemon=True).start()
    client = ServerClient(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=timeout_s, retries=0)
    started = time.perf_counter()
    try:
        client.plan(spb.PlanRequest(model="lenet"))
        status = "OK"
    except QpartError as e:
        status = e.status
    client.close()
    listener.close()
    return {"status": status, "seconds": time.perf_counter() - started}

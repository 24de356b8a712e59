"""Fault, load and bad-input scenarios with the figures they produce; the fault tests assert on them
and bench/reliability.py turns them into docs/reliability.md.

Each scenario runs real server processes (or an in-process server where it needs to reach inside)
and real device clients, and returns plain numbers.
"""
import collections
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qpart.common.errors import QpartError, Unavailable
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.demo import LISTENING, stop_server
from qpart.server.main import RunningServer
from qpart.server.settings import ServerSettings
from qpart.v1 import service_pb2 as spb

SPLIT = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(partition_point=3, weight_bits=[6],
                                                                            activation_bits=6))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_process(models_dir, port: int, *extra: str, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "qpart.server.main", "--models", str(models_dir), "--port",
                                str(port), "--no-measure-speed", "--cold-heads", "--grace", "0", *extra],
                               stdout=subprocess.PIPE, stderr=stderr, text=True)
    if not LISTENING.search(process.stdout.readline()):
        process.kill()
        raise RuntimeError("qpart-server did not start")
    return process


def peak_memory_kb(pid: int) -> int:
    return int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM")))


@dataclass
class Run:
    """A device classifying in the background (head paced to ~5 ms per input), for faults to hit."""
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

    def finish(self, timeout_s: float = 120) -> dict:
        self.thread.join(timeout_s)
        scores = self.result.get("scores")
        self.client.close()
        return {"inputs": self.result["inputs"], "answered": 0 if scores is None else len(scores),
                "error": self.result.get("error"), "resent_streams": self.report.resent_streams,
                "duplicates_dropped": self.report.duplicates_dropped, "failovers": self.client.failovers,
                "predictions": None if scores is None else scores.argmax(axis=1)}


def start_run(target: str, x: np.ndarray, retries: int = 10) -> Run:
    client = ServerClient(target, timeout_s=20, retries=retries, backoff_s=0.1, backoff_max_s=1.0)
    agent = DeviceAgent(client, HeadCache(None), emulate_macs_per_second=50e6)
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
    client = ServerClient(target, timeout_s=30)
    plan = client.plan(SPLIT)
    agent = DeviceAgent(client, HeadCache(None))
    executor, _ = agent.obtain_head(plan)
    scores = agent.classify(plan, executor, x, RunReport.for_plan(plan), batch_size=50)
    client.close()
    return scores.argmax(axis=1)


def _outcome(run: dict, expected: np.ndarray) -> dict:
    predictions = run.pop("predictions")
    run["lost"] = run["inputs"] - run["answered"]
    run["answered_twice"] = 0   # the agent keeps one answer per request id; later ones are dropped and counted
    run["agree_with_fault_free"] = None if predictions is None else float(np.mean(predictions == expected))
    return run


def replica_switch(models_dir, x: np.ndarray, kill_after: int = 60) -> dict:
    """Two replicas; the one the device uses is killed mid-run."""
    port_a, port_b = free_port(), free_port()
    a, b = server_process(models_dir, port_a), server_process(models_dir, port_b)
    try:
        expected = reference_predictions(f"127.0.0.1:{port_b}", x)
        run = start_run(f"127.0.0.1:{port_a},127.0.0.1:{port_b}", x)
        run.wait_for(kill_after)
        a.kill()
        outcome = run.finish()
        outcome["ended_on"] = "second replica" if run.client.target.endswith(str(port_b)) else "first replica"
        return _outcome(outcome, expected)
    finally:
        stop_server(a)
        stop_server(b)


def server_restart(models_dir, x: np.ndarray, kill_after: int = 40) -> dict:
    """One server, killed mid-run and started again on the same address."""
    port = free_port()
    process = server_process(models_dir, port)
    try:
        expected = reference_predictions(f"127.0.0.1:{port}", x)
        run = start_run(f"127.0.0.1:{port}", x, retries=15)
        run.wait_for(kill_after)
        process.kill()
        process.wait()
        process = server_process(models_dir, port)
        return _outcome(run.finish(), expected)
    finally:
        stop_server(process)


def graceful_shutdown(models_dir, x: np.ndarray, stop_after: int = 20) -> dict:
    """SIGTERM-style stop while a stream is running: health, new calls, the in-flight stream."""
    running = RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, warm_heads=False))
    target = f"127.0.0.1:{running.port}"
    expected = reference_predictions(target, x)
    run = start_run(target, x, retries=0)
    run.wait_for(stop_after)
    stopper = threading.Thread(target=running.stop, args=(30, 1.0))   # 1 s of notice, then 30 s of grace
    stopper.start()
    time.sleep(0.3)
    with grpc.insecure_channel(target) as channel:
        try:
            health = health_pb2.HealthCheckResponse.ServingStatus.Name(
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
        except grpc.RpcError as e:
            health = f"refused ({e.code().name})"
    time.sleep(1.2)                                   # past the notice: new work is refused now
    late = ServerClient(target, timeout_s=5, retries=0)
    try:
        late.list_models()
        new_call = "served"
    except Unavailable:
        new_call = "UNAVAILABLE"
    late.close()
    outcome = _outcome(run.finish(), expected)
    stopper.join(60)
    return outcome | {"health_while_draining": health, "new_call_while_draining": new_call}


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


def load(target: str, sessions: int, seconds: float, processes: int = 4) -> dict:
    result = subprocess.run([sys.executable, "-m", "qpart.device.loadgen", "--server", target, "--sessions",
                             str(sessions), "--processes", str(processes), "--seconds", str(seconds)],
                            capture_output=True, text=True, timeout=seconds + 180)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout)


def overload(models_dir, log_path, sessions: int = 48, seconds: float = 4.0) -> dict:
    """One compute slot and two waiting places against many sessions: refusals, timed by the server."""
    port = free_port()
    with open(log_path, "w") as stderr:
        process = server_process(models_dir, port, "--compute-slots", "1", "--max-queued", "2", "--json-logs",
                                 stderr=stderr)
    try:
        result = load(f"127.0.0.1:{port}", sessions, seconds, processes=3)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2.HealthCheckResponse.ServingStatus.Name(
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    entries = [json.loads(line) for line in open(log_path) if line.startswith("{")]
    refused = [e["refused_after_ms"] for e in entries if e.get("rpc") == "Infer" and e.get("code") == "RESOURCE_EXHAUSTED"]
    return result | {"refused_logged": len(refused), "refused_p99_ms": float(np.percentile(refused, 99)) if refused else None,
                     "health_after": health, "logged_without_request_id": sum(1 for e in entries
                                                                             if "rpc" in e and e["request_id"] == "-")}


def bad_inputs(target: str, valid_plan_ids: list[str], per_kind: int = 60) -> dict[str, dict[str, int]]:
    """Hostile messages of each kind against a live server: {kind: {status: count}}."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from qpart.server import hostile
    from qpart.v1 import service_pb2_grpc
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = service_pb2_grpc.SplitInferenceStub(channel)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def record(kind: str, call) -> None:
        try:
            call()
            counts[kind]["OK"] += 1
        except grpc.RpcError as e:
            counts[kind][e.code().name] += 1

    def raw(method: str, streaming_in: bool, streaming_out: bool):
        path = f"/qpart.v1.SplitInference/{method}"
        kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                (True, True): channel.stream_stream}[(streaming_in, streaming_out)]
        call = kind(path, request_serializer=None, response_deserializer=None)
        return lambda blob: (list(call(iter([blob]), timeout=30)) if streaming_in else
                             list(call(blob, timeout=30)) if streaming_out else call(blob, timeout=30))

    kinds = {
        "Plan: random fields": (hostile.plan_requests(["fc6", "lenet", "vgg8"]),
                                lambda m: stub.Plan(m, timeout=30)),
        "FetchHead: forged plan ids and offsets": (
            st.builds(lambda p, o, c: spb.FetchHeadRequest(plan_id=p, offset=o, max_chunk_bytes=c),
                      hostile.plan_ids(valid_plan_ids), hostile.u64, hostile.u32),
            lambda m: list(stub.FetchHead(m, timeout=30))),
        "Infer: inconsistent, truncated, oversized batches": (
            st.lists(hostile.infer_requests(valid_plan_ids), min_size=1, max_size=3),
            lambda m: list(stub.Infer(iter(m), timeout=30))),
        "ListModels: random names": (st.builds(lambda n: spb.ListModelsRequest(name=n), st.text(max_size=70)),
                                     lambda m: stub.ListModels(m, timeout=30)),
        "Probe: oversized replies": (st.builds(lambda p, r: spb.ProbeRequest(payload=p, reply_bytes=r),
                                               st.binary(max_size=64), hostile.u32),
                                     lambda m: stub.Probe(m, timeout=30)),
        "raw bytes that are not the message": (
            st.tuples(st.sampled_from([("Plan", False, False), ("ListModels", False, False), ("Probe", False, False),
                                       ("FetchHead", False, True), ("Infer", True, True)]),
                      st.binary(min_size=1, max_size=300)),
            lambda m: raw(*m[0])(m[1])),
    }
    def firing(kind, strategy, send):
        @settings(max_examples=per_kind, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def fire(message):
            record(kind, lambda: send(message))
        return fire
    for kind, (strategy, send) in kinds.items():
        firing(kind, strategy, send)()
    channel.close()
    return {kind: dict(c) for kind, c in counts.items()}

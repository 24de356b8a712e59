"""Load and bad-input scenarios with the figures they produce: many device sessions on one server,
shedding past capacity, hostile messages of every kind. The tests assert on them and
bench/reliability.py turns them into docs/reliability.md (with the fault scenarios of
qpart.testbed.faults).
"""
import collections
import json
import subprocess
import sys

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qpart.testbed.processes import ServerProcess, free_port
from qpart.v1 import service_pb2 as spb


def load(target: str, sessions: int, seconds: float, processes: int = 4) -> dict:
    result = subprocess.run([sys.executable, "-m", "qpart.testbed.loadgen", "--server", target, "--sessions",
                             str(sessions), "--processes", str(processes), "--seconds", str(seconds)],
                            capture_output=True, text=True, timeout=seconds + 180)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout)


def overload(models_dir, log_path, sessions: int = 48, seconds: float = 4.0) -> dict:
    """One compute slot and two waiting places against many sessions: refusals, timed by the server."""
    with open(log_path, "w") as stderr:
        server = ServerProcess(models_dir, free_port(), "--no-measure-speed", "--cold-heads", "--grace", "0",
                               "--compute-slots", "1", "--max-queued", "2", "--json-logs", log_level="INFO",
                               stderr=stderr)
    try:
        result = load(server.target, sessions, seconds, processes=3)
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2.HealthCheckResponse.ServingStatus.Name(
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
    finally:
        server.stop(30)
    entries = [json.loads(line) for line in open(log_path) if line.startswith("{")]
    refused = [e["refused_after_ms"] for e in entries if e.get("rpc") == "Infer" and e.get("code") == "RESOURCE_EXHAUSTED"]
    return result | {"refused_logged": len(refused), "refused_p99_ms": float(np.percentile(refused, 99)) if refused else None,
                     "health_after": health, "logged_without_request_id": sum(1 for e in entries
                                                                             if "rpc" in e and e["request_id"] == "-")}


def bad_inputs(target: str, valid_plan_ids: list[str], per_kind: int = 60) -> dict[str, dict[str, int]]:
    """Hostile messages of each kind against a live server: {kind: {status: count}}."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from qpart.testbed import hostile
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

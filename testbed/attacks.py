"""A hostile client against a live server while well-behaved devices run: each attack the hostile-client
issue found, with the status it now gets, and what the good devices saw meanwhile (the tests assert on
it; bench/reliability.py reports it).
"""
import collections
import json
import subprocess
import sys
import threading
import time

import grpc

from qpart.testbed.processes import ServerProcess, free_port, peak_memory_kb
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc

IDLE_S = 3.0     # the attacked server's --stream-idle-s, short enough to see idle streams cut within a run


def _status(call) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def _idle_streams(stub, n: int, wait_s: float) -> collections.Counter:
    """n Infer streams on one connection that never send: refused past the per-connection limit, cancelled
    by the server once idle."""
    stop = threading.Event()

    def idle():
        stop.wait(wait_s)
        return
        yield
    calls = [stub.Infer(idle(), timeout=wait_s + 30) for _ in range(n)]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(c.done() for c in calls):
        time.sleep(0.1)
    stop.set()
    return collections.Counter(c.code().name if c.done() else "STILL OPEN" for c in calls)


def _other(i: int) -> int:
    """A weight width other than the real plan's 8."""
    return i % 15 + 1 + (i % 15 + 1 >= 8)


def attacks(stub, fixed_plan: spb.PlanResponse, vgg8_plan: spb.PlanResponse) -> dict[str, collections.Counter]:
    fetch_tiny = spb.FetchHeadRequest(plan_id=fixed_plan.plan_id, max_chunk_bytes=1)
    token, _, mac = fixed_plan.plan_id.rpartition(":")
    a = vgg8_plan.activations[0]
    big = spb.ActivationBatch(request_ids=range(1024), tensors=[spb.TensorBatch(
        name=a.name, sample_shape=a.sample_shape, bits=a.bits, data=b"")])
    cases = {
        "Plan with clock_hz 1e200 (overflowed to INTERNAL)": lambda i: stub.Plan(spb.PlanRequest(
            model="lenet", device=spb.DeviceCapabilities(clock_hz=1e200, cycles_per_mac=5)), timeout=30),
        "Plan naming a 20 KB model": lambda i: stub.Plan(spb.PlanRequest(model="A" * 20480), timeout=30),
        "ListModels with a 10 KB name": lambda i: stub.ListModels(spb.ListModelsRequest(name="B" * 10240), timeout=30),
        "FetchHead asking for 1-byte chunks": lambda i: [None for _ in stub.FetchHead(fetch_tiny, timeout=30)],
        "made-up plan ids (each another fixed split)": lambda i: list(stub.FetchHead(spb.FetchHeadRequest(
            plan_id=f"{token.rsplit(':', 4)[0]}:{_other(i)},{_other(i)}:8:t:{token.rsplit(':', 1)[1]}:{mac}"),
            timeout=30)),
        "1,024 inputs into vgg8 next to its input": lambda i: list(stub.Infer(iter([spb.InferRequest(
            plan_id=vgg8_plan.plan_id, batch=big)]), timeout=30)),
        "Plan listing 100,000 held heads": lambda i: stub.Plan(spb.PlanRequest(
            model="lenet", held_heads=[f"{j:064x}" for j in range(100_000)]), timeout=30),
    }
    results = {name: collections.Counter(_status(lambda: case(i)) for i in range(20)) for name, case in cases.items()}
    results["125 idle Infer streams on one connection"] = _idle_streams(stub, 125, IDLE_S + 3)
    return results


def under_attack(models_dir, sessions: int = 8, seconds: float = 12.0) -> dict:
    """Good devices (qpart.testbed.loadgen) for `seconds` while the attacks run; the server's memory before and
    after, each attack's statuses, and the good devices' errors and latency."""
    server = ServerProcess(models_dir, free_port(), "--no-measure-speed", "--stream-idle-s", str(IDLE_S),
                           "--max-message-mb", "64")
    try:
        channel = grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 << 20)])
        stub = service_pb2_grpc.SplitInferenceStub(channel)
        fixed = stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=7, weight_bits=[8], activation_bits=[8])), timeout=30)
        vgg8 = stub.Plan(spb.PlanRequest(model="vgg8", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=2, weight_bits=[8], activation_bits=[2])), timeout=30)
        before_kb = peak_memory_kb(server.pid)
        good = subprocess.Popen([sys.executable, "-m", "qpart.testbed.loadgen", "--server", server.target,
                                 "--sessions", str(sessions), "--processes", "2", "--seconds", str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)                       # the sessions plan and fetch their heads first
        started = time.monotonic()
        results = attacks(stub, fixed, vgg8)
        attack_s = time.monotonic() - started
        out, err = good.communicate(timeout=seconds + 180)
        if good.returncode != 0:
            raise RuntimeError(err[-2000:])
        load = json.loads(out)
        channel.close()
        return {"attacks": {k: dict(v) for k, v in results.items()}, "attack_s": attack_s, "good": load,
                "memory_before_mb": before_kb / 1024, "memory_peak_mb": peak_memory_kb(server.pid) / 1024}
    finally:
        server.stop(10)

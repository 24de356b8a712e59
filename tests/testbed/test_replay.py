"""The capacity benchmark's parts: replayed Infer messages are valid InferRequests with fresh ids, the echo floor
answers them, and replaying against qpart (batching off and on) gets each input's own answer."""
import json
import subprocess
import sys
import time

import grpc
import numpy as np

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.report import RunReport
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.testbed import replay
from qpart.v1 import service_pb2 as spb


def test_a_replayed_message_is_the_infer_request_it_stands_for():
    tensors = [spb.TensorBatch(name="x", sample_shape=[3, 2], bits=4, data=b"\x01\x02\x03")]
    part = spb.ActivationBatch(tensors=tensors).SerializeToString()
    for request_id, plan_id in ((1, b"plan-a"), (300, b""), (1 << 40, b"p" * 200)):
        parsed = spb.InferRequest.FromString(replay.message(request_id, part, plan_id))
        assert parsed.plan_id == plan_id.decode() and list(parsed.batch.request_ids) == [request_id]
        assert list(parsed.batch.tensors) == tensors


def run_replay(target, file, sessions, mode, seconds, echo=False) -> dict:
    start_at = time.monotonic() + 1.5
    out = subprocess.run([sys.executable, "-m", "qpart.testbed.replay", "--target", target, "--messages", str(file),
                          "--sessions", str(sessions), "--mode", mode, "--start-at", str(start_at), "--until",
                          str(start_at + seconds), *(["--echo"] if echo else [])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_replay_against_qpart_and_the_echo_floor(server, models_dir, model_inputs, tmp_path):
    x, _ = model_inputs("lenet", 16)
    with ServerClient(f"127.0.0.1:{server.port}", timeout_s=30) as client:
        agent = DeviceAgent(client, HeadCache(tmp_path / "heads"), backend="numpy")
        plan = client.plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=7, weight_bits=[8], activation_bits=[8])))
        executor, _ = agent.obtain_head(plan)
        encoded = [agent.encode(executor, x[i:i + 1], agent.crossing(plan)) for i in range(len(x))]
        labels = agent.classify(plan, executor, x, RunReport.for_plan(plan)).argmax(axis=1)
        labels[3] = (labels[3] + 1) % 10            # one recorded label wrong: the replay must notice it
        agent.close()
    file = tmp_path / "lenet.npz"
    replay.record(file, plan.plan_id, encoded, labels.tolist())
    inputs, loaded, plan_id = replay.load(file)
    assert len(inputs) == 16 and plan_id == plan.plan_id.encode() and np.array_equal(loaded, labels)
    for mode in ("device", "request"):
        r = run_replay(f"127.0.0.1:{server.port}", file, 4, mode, 1.0)
        assert r["answered"] > 20 and r["errors"] == {} and r["lost"] == 0 and r["doubled"] == 0, r
        assert 0 < r["wrong"] < r["answered"] / 4, r              # input 3 alone, 1 in 16
    echo = subprocess.Popen([sys.executable, "-m", "qpart.testbed.echo", "--reply-bytes", "70"],
                            stdout=subprocess.PIPE, text=True)
    try:
        target = echo.stdout.readline().split()[-1]
        r = run_replay(target, file, 4, "device", 1.0, echo=True)
        assert r["answered"] > 20 and r["errors"] == {} and r["lost"] == 0, r
    finally:
        echo.terminate()
        echo.wait(timeout=30)
    batching = RunningServer(ServerSettings(models=models_dir, port=0, batch_max_inputs=8, batch_delay_ms=2,
                                            measure_speed=False, warm_heads=False))
    try:
        target = f"127.0.0.1:{batching.port}"
        r = run_replay(target, file, 4, "device", 1.0)
        assert r["answered"] > 20 and r["errors"] == {} and r["lost"] == 0 and r["doubled"] == 0, r
        assert 0 < r["wrong"] < r["answered"] / 4, r
        assert batching.core.batcher.merged > 0          # the event loop's lanes ran streams' batches together
        with grpc.insecure_channel(target) as channel:             # bytes that are no InferRequest: refused by name
            call = channel.stream_stream(replay.INFER_PATH)(iter([b"\xff\xff"]), timeout=10)
            try:
                next(call)
                raise AssertionError("a malformed message was answered")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "InferRequest" in e.details(), e
    finally:
        batching.stop(0, notice=0)

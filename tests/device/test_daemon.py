"""The device daemon in this process: its configuration, the observed-reuse replanning, and its local
endpoint (classify, status, health, metrics, refusals). tests/device/test_clean_install.py runs it as
a separate process in a virtualenv without torch."""
import time
import urllib.request

import grpc
import numpy as np
import pytest

from qpart.common import health
from qpart.common.costmodel import LinkProfile
from qpart.common.errors import InvalidArgument
from qpart.device import config as device_config
from qpart.device import daemon
from qpart.device.config import DeviceConfig
from qpart.device.split_client import SplitClient
from qpart.testbed.processes import free_port
from qpart.v1 import agent_pb2 as apb
from qpart.v1 import agent_pb2_grpc as agrpc
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc


@pytest.mark.parametrize("extra, message", [
    ('models = ["lenet"]\nbudegt = 2.0', "unknown key.*budegt"),
    ('models = ["lenet"]\nbudget = "two"', "`budget` must be a float"),
    ("models = []", "needs `models`"),
    ('models = ["lenet"]\nbudget = 2\nrate_window_s = 0', "rate_window_s"),
    ('models = ["lenet"]\nreplan_factor = 1', "replan_factor"),
    ('models = ["lenet"', "device.toml"),
])
def test_config_refuses_unknown_keys_wrong_types_and_ranges(tmp_path, extra, message):
    path = tmp_path / "device.toml"
    path.write_text(f'server = "127.0.0.1:1"\n{extra}\n')
    with pytest.raises(InvalidArgument, match=message):
        device_config.load(path)


def test_example_config_documents_every_key():
    """deploy/device.toml sets every key, each under a comment, and loads."""
    import pathlib
    path = pathlib.Path(__file__).parents[2] / "deploy" / "device.toml"
    loaded = device_config.load(path)
    lines = path.read_text().splitlines()
    keys = [line.split("=")[0].strip() for line in lines if "=" in line and not line.startswith("#")]
    assert sorted(keys) == sorted(f.name for f in __import__("dataclasses").fields(DeviceConfig))
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{line}: no comment above it"
    assert loaded.models == ["resnet8-96"]


class FakeClient:
    def __init__(self):
        self.asked = []

    def replan(self, expected_inputs):
        self.asked.append(expected_inputs)

    class plan:
        cut = 3


def test_reuse_follows_the_observed_request_rate():
    config = DeviceConfig(server="x:1", models=["m"], plan_lifetime_s=100.0, rate_window_s=10.0, initial_reuse=50)
    session = daemon.ModelSession(config, "m", FakeClient())
    session.plan(0.0, "start")
    assert session.client.asked == [50]                  # nothing observed yet: the configured first guess
    for i in range(40):                                  # 20 requests per second for 2 s
        session.observe(0.05 * (i + 1))
    # 20/s over a 100 s lifetime is ~2,000 inputs, 40x the first guess: planned again for the observed reuse
    assert len(session.client.asked) == 2 and 1000 <= session.client.asked[1] <= 3000
    for t in np.arange(2.0, 60.0, 1.0):                   # the rate falls to 1/s
        session.observe(float(t))
    assert session.client.asked[-1] <= 200, session.client.asked
    session.observe(200.0)                                # the plan aged out
    assert session.plans == len(session.client.asked) and session.planned_at == 200.0


@pytest.fixture(scope="module")
def running(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("daemon")
    settings = DeviceConfig(server=f"127.0.0.1:{server.port}", models=["lenet", "resnet8-96"], budget=2.0,
                            listen=f"unix:{root}/agent.sock", cache_dir=str(root / "heads"), metrics_port=free_port(),
                            rate_mbps=2.0, rtt_ms=10.0, backend="numpy", replan_factor=1e6)   # one plan
    started = daemon.RunningDaemon(settings)
    yield started
    started.stop(0)


def test_daemon_classifies_pixels_tensors_and_images(running, model_inputs, data_dir):
    from PIL import Image
    import io
    from qpart.common import data
    images, labels = data.load_split("test", data_dir)
    target = running.config.listen
    assert health.is_serving(target) and health.is_serving(target, service="qpart.v1.LocalAgent")
    x, truth = model_inputs("resnet8-96", 40)
    with grpc.insecure_channel(target) as channel:
        stub = agrpc.LocalAgentStub(channel)
        pixels = [stub.Classify(apb.ClassifyRequest(model="resnet8-96", pixels=apb.Tensor(
            shape=[28, 28], data=images[i].astype("<f4").tobytes()))) for i in range(40)]
        tensors = [stub.Classify(apb.ClassifyRequest(model="resnet8-96", tensor=apb.Tensor(
            shape=list(x.shape[1:]), data=x[i].astype("<f4").tobytes()))) for i in range(40)]
        png = io.BytesIO()
        Image.fromarray(images[0]).save(png, format="PNG")
        encoded = stub.Classify(apb.ClassifyRequest(image=png.getvalue()))           # the first model: lenet
        same = stub.Classify(apb.ClassifyRequest(model="lenet", pixels=apb.Tensor(
            shape=[28, 28], data=images[0].astype("<f4").tobytes())))
        status = stub.Status(apb.StatusRequest())
    assert [r.label for r in pixels] == [r.label for r in tensors]     # the card's preprocessing, applied here
    assert np.mean(np.array([r.label for r in pixels]) == truth) >= 0.6
    assert pixels[0].num_nodes > 0 and len(pixels[0].scores) == 10 and pixels[0].class_name
    assert encoded.label == same.label and np.allclose(encoded.scores, same.scores)
    by_model = {m.model: m for m in status.models}
    assert set(by_model) == {"lenet", "resnet8-96"}
    resnet = by_model["resnet8-96"]           # no head when the plan sends the input (an image file, say)
    assert resnet.inputs == 80 and resnet.backend == ("numpy" if resnet.plan.cut else "none")
    assert by_model["resnet8-96"].plan.cut == pixels[0].cut and by_model["lenet"].plans >= 1
    assert abs(by_model["lenet"].planned_at - time.time()) < 600
    assert status.uplink_bps == 2e6 and status.macs_per_second > 0
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{running.config.metrics_port}/metrics", timeout=5).read().decode()
    assert 'qpart_device_requests_total{model="resnet8-96",code="OK"} 80.0' in metrics
    assert 'qpart_device_plans_total{model="lenet",reason="start"}' in metrics


@pytest.mark.parametrize("request_, code, message", [
    (apb.ClassifyRequest(model="nope", pixels=apb.Tensor(shape=[2, 2], data=bytes(16))), "NOT_FOUND", "not 'nope'"),
    (apb.ClassifyRequest(model="lenet"), "INVALID_ARGUMENT", "give an input"),
    (apb.ClassifyRequest(pixels=apb.Tensor(shape=[2, 2], data=bytes(12))), "INVALID_ARGUMENT", "takes 16 bytes"),
    (apb.ClassifyRequest(pixels=apb.Tensor(shape=[1 << 20, 1 << 20], data=b"")), "INVALID_ARGUMENT", "too large"),
    (apb.ClassifyRequest(pixels=apb.Tensor(shape=[1, 1], data=np.float32([300]).tobytes())), "INVALID_ARGUMENT",
     "0..255"),
    (apb.ClassifyRequest(tensor=apb.Tensor(shape=[1, 2, 2], data=bytes(16))), "INVALID_ARGUMENT", "input"),
    (apb.ClassifyRequest(image=b"not a png"), "INVALID_ARGUMENT", "not a valid PNG, JPEG or WEBP file"),
])
def test_daemon_refuses_bad_requests_by_name(running, request_, code, message):
    with grpc.insecure_channel(running.config.listen) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            agrpc.LocalAgentStub(channel).Classify(request_, timeout=30)
    assert raised.value.code().name == code and message in raised.value.details(), raised.value.details()


def test_daemon_listens_only_locally(server, tmp_path):
    settings = DeviceConfig(server=f"127.0.0.1:{server.port}", models=["lenet"], listen="0.0.0.0:5000",
                            rate_mbps=1.0, measure_compute=False, cache_dir=str(tmp_path))
    with pytest.raises(InvalidArgument, match="loopback"):
        daemon.RunningDaemon(settings, daemon=object())


def test_the_library_plans_again_before_its_plan_id_expires(models_dir, model_inputs, tmp_path):
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    server = RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, plan_id_ttl_s=61.5))
    x, _ = model_inputs("lenet", 4)
    try:
        with SplitClient(f"127.0.0.1:{server.port}", "lenet", 2.0, link=LinkProfile(rate_bps=2e6, rtt_s=0.01),
                         cache_dir=tmp_path, measure_compute=False, backend="numpy") as split:
            first = split.plan
            assert 60 <= first.plan_id_expires_at - time.time() <= 62       # whole seconds, truncated
            split.classify(x[0])
            time.sleep(2.0)                          # now within a minute of the expiry: the next call plans again
            split.classify(x[1])
            assert split.plan.plan_id != first.plan_id and split.plan.plan_id_expires_at > first.plan_id_expires_at
        server.core.signer.ttl_s = 0.5               # ids issued from now on expire at once: they are refused
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.SplitInferenceStub(channel)
            late = stub.Plan(spb.PlanRequest(model="lenet", policy=spb.DEVICE_ONLY), timeout=30)
            time.sleep(1.6)
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.FetchHead(spb.FetchHeadRequest(plan_id=late.plan_id), timeout=30))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "call Plan again" in refused.value.details()
    finally:
        server.stop(0, notice=0)

"""Issue 24 replayed against the device daemon over its real local API (qpart.v1.LocalAgent): the inputs a
hostile application sent get the status the server gives the same input, cost the daemon (this process)
less than MAX_EXTRA at its peak, and the daemon serves the next request.

Before the fix (measured the same way): the three huge headers got INTERNAL (Pillow's
DecompressionBombError), the 8,192 x 8,192 PNG of zeros was classified at +599 MiB peak and the 5,000 x
5,000 RGB one at +933 MiB; a tensor of NaN was classified (OK).
"""
import grpc
import numpy as np
import pytest

from qpart.common import guard, images
from qpart.device import daemon
from qpart.device.config import DeviceConfig
from qpart.v1 import agent_pb2 as apb
from qpart.v1 import agent_pb2_grpc as agrpc
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc
from tests.common import crafted

MODEL = "resnet8-96"                 # 3 x 96 x 96 inputs: the camera stand-in
MAX_EXTRA = 64 * crafted.MIB         # what a refused input may add to the daemon's peak resident set
CODINGS = {"PNG": images.PNG, "JPEG": images.JPEG, "WEBP": images.WEBP}


@pytest.fixture(scope="module")
def agent(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("guarded")
    settings = DeviceConfig(server=f"127.0.0.1:{server.port}", models=[MODEL], budget=2.0,
                            listen=f"unix:{root}/agent.sock", cache_dir=str(root / "heads"), rate_mbps=2.0, rtt_ms=10.0,
                            backend="numpy", measure_compute=False, replan_factor=1e6)
    running = daemon.RunningDaemon(settings)
    channel = grpc.insecure_channel(settings.listen)
    yield agrpc.LocalAgentStub(channel), running
    channel.close()
    running.stop(0)


@pytest.fixture(scope="module")
def server_stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield service_pb2_grpc.SplitInferenceStub(channel)


def _status(call) -> tuple[str, str]:
    try:
        call()
    except grpc.RpcError as e:
        return e.code().name, e.details()
    return "OK", ""


def _server_status(stub, bits: int, tensor: spb.TensorBatch) -> tuple[str, str]:
    """What the server answers for one input sent at cut 0 (the input itself) under a fixed plan at `bits`."""
    plan = stub.Plan(spb.PlanRequest(model=MODEL, policy=spb.FIXED, fixed=spb.FixedPlan(cut=0, activation_bits=[bits])),
                     timeout=60)
    (a,) = plan.activations
    tensor.name, tensor.sample_shape[:], tensor.bits = a.name, a.sample_shape, bits
    batch = spb.ActivationBatch(request_ids=[0], tensors=[tensor])
    return _status(lambda: list(stub.Infer(iter([spb.InferRequest(plan_id=plan.plan_id, batch=batch)]), timeout=60)))


def _still_serving(stub) -> None:
    pixels = np.full((96, 96, 3), 128, np.float32)
    answer = stub.Classify(apb.ClassifyRequest(pixels=apb.Tensor(shape=[96, 96, 3], data=pixels.tobytes())), timeout=60)
    assert len(answer.scores) == 10


@pytest.mark.parametrize("name", list(crafted.OVERSIZED))
def test_oversized_images_get_the_servers_status_at_bounded_memory(agent, server_stub, name):
    stub, _ = agent
    make, fmt = crafted.OVERSIZED[name]
    data = make()
    width, height = name.split()[1].split("x")
    (code, details), grew = crafted.peak_increase(lambda: _status(
        lambda: stub.Classify(apb.ClassifyRequest(image=data), timeout=60)))
    server = _server_status(server_stub, 8, spb.TensorBatch(coding=CODINGS[fmt], data=images.FRAME.pack(len(data)) + data))
    assert code == server[0] == "INVALID_ARGUMENT", (code, details, server)
    assert f"declares {width}x{height} pixels; at most 4096 per side" in details, details
    assert grew < MAX_EXTRA, f"{name}: the daemon's peak grew by {grew / crafted.MIB:.1f} MiB"
    print(f"{name} ({len(data):,} bytes): {code}, peak +{grew / crafted.MIB:.1f} MiB; the server: {server[0]}")
    _still_serving(stub)


def test_a_tensor_of_nan_gets_the_servers_status(agent, server_stub):
    stub, _ = agent
    nan = np.full((3, 96, 96), np.nan, np.float32).tobytes()
    (code, details), grew = crafted.peak_increase(lambda: _status(
        lambda: stub.Classify(apb.ClassifyRequest(tensor=apb.Tensor(shape=[3, 96, 96], data=nan)), timeout=60)))
    server = _server_status(server_stub, 32, spb.TensorBatch(coding=0, data=nan))
    assert code == server[0] == "INVALID_ARGUMENT", (code, details, server)
    assert "the tensor holds 27648 NaN and 0 infinite value(s) of 27648 (the first at index [0, 0, 0])" in details
    assert "holds 27648 NaN" in server[1], server
    assert grew < MAX_EXTRA, grew
    inf = np.float32([[0, 1], [np.inf, 2]]).tobytes()
    code, details = _status(lambda: stub.Classify(apb.ClassifyRequest(pixels=apb.Tensor(shape=[2, 2], data=inf))))
    assert code == "INVALID_ARGUMENT" and "the pixels holds 0 NaN and 1 infinite value(s) of 4 (the first at index " \
                                          "[1, 0])" in details, details
    _still_serving(stub)


def test_an_image_within_the_limits_is_classified_like_its_pixels(agent):
    stub, running = agent
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (120, 160, 3), np.uint8)
    png = _encode(pixels)
    by_file = stub.Classify(apb.ClassifyRequest(image=png), timeout=60)
    by_pixels = stub.Classify(apb.ClassifyRequest(pixels=apb.Tensor(shape=[120, 160, 3], data=pixels.astype(
        np.float32).tobytes())), timeout=60)
    assert by_file.label == by_pixels.label and np.allclose(by_file.scores, by_pixels.scores)
    assert running.daemon.max_head_memory == 256 * crafted.MIB      # a quarter of rpi4's 1 GiB
    assert running.daemon.sessions[MODEL].client.agent.max_head_memory == running.daemon.max_head_memory
    status = stub.Status(apb.StatusRequest(), timeout=30)
    assert status.state == apb.DAEMON_READY and status.attempts == 1 and not status.waiting_for


def _encode(pixels: np.ndarray) -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()


def test_the_limits_the_daemon_applies_are_the_ones_agent_proto_states():
    import pathlib
    proto = (pathlib.Path(__file__).parents[2] / "protos" / "qpart" / "v1" / "agent.proto").read_text()
    limits = guard.LIMITS
    assert limits.max_side == 4096 and limits.max_pixels == 2 ** 21 and limits.max_file_bytes == 4 * crafted.MIB
    for stated in ("at most 4 MiB", "at most 4,096 pixels", "2,097,152 (2^21) pixels in all",
                   f"{guard.DECODE_BYTES_PER_PIXEL} bytes a pixel ({limits.max_decode_bytes // crafted.MIB} MiB)",
                   f"{'Two' if daemon.IMAGES_AT_ONCE == 2 else daemon.IMAGES_AT_ONCE} images are decoded at once",
                   f"at most {daemon.MAX_TENSOR_BYTES // 4:,} values"):
        assert stated in " ".join(word for word in proto.split() if word != "//"), stated

"""Fuzzing: every decoder and every RPC gets random, truncated, oversized and inconsistent input.
Nothing crashes, nothing allocates past a bound, every RPC gets a status that names the problem, and
other devices are served meanwhile."""
import lzma
import threading
import tracemalloc
import zlib

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qpart.common import lossless, images, network, packing, tensors
from qpart.common.errors import QpartError
from qpart.device.head import HeadExecutor
from qpart.server.serving.auth import Authenticator, Identity
from qpart.server.models.heads import build_head
from qpart.server.models.split import Split
from qpart.server.planning.plans import PlanSpec
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc
from qpart.testbed import hostile as fuzzing

MEMORY_BOUND = 16 << 20    # bytes any single hostile input may make Python allocate
BAD_INPUT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                   grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])


def bounded(fn, *args):
    """fn(*args) returns or raises a QpartError, and allocates less than MEMORY_BOUND in Python."""
    tracemalloc.start()
    try:
        fn(*args)
    except QpartError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, peak


@FUZZ
@given(fuzzing.packed_tensors())
def test_tensor_decoder(msg):
    bounded(tensors.decode, msg)


@FUZZ
@given(fuzzing.network_specs())
def test_network_description(spec):
    bounded(network.analyze, spec, 1 << 20)


@FUZZ
@given(st.integers(0, 2**40), st.lists(st.integers(0, 2**20), max_size=4), st.integers(0, 40), st.integers(0, 5000))
def test_activation_batch_checks(n, shape, bits, data_len):
    bounded(tensors.check_batch, n, shape, bits, data_len)


def check_and_uncode(n, shape, bits, data, coding):
    elements = tensors.check_batch(n, shape, bits, len(data), tensors.DEFAULT_MAX_ELEMENTS, coding)
    tensors.uncode(data, coding, packing.packed_size(elements, bits))


@FUZZ
@given(st.integers(1, 64), st.lists(st.integers(1, 64), min_size=1, max_size=3), st.integers(1, 16),
       st.one_of(st.binary(max_size=2048), st.builds(lambda raw, cut: zlib.compress(raw)[:cut],
                                                     st.binary(max_size=40000), st.integers(0, 50000))),
       st.integers(0, 3))
def test_zlib_activation_decoder(n, shape, bits, data, coding):
    """Random and truncated zlib streams of any claimed size (some inflating far past the declared one)."""
    bounded(check_and_uncode, n, shape, bits, data, coding)


def _raw_lzma(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])


@FUZZ
@given(st.integers(1, 5000), st.integers(1, 16), st.integers(0, 4),
       st.one_of(st.binary(max_size=2048),
                 st.builds(lambda raw, cut, z: (zlib.compress(raw) if z else _raw_lzma(raw))[:cut],
                           st.one_of(st.binary(max_size=4000), st.builds(bytes, st.integers(0, 1 << 22))),
                           st.integers(0, 50000), st.booleans())))
def test_head_tensor_decoders(n, bits, coding, data):
    """Random and truncated zlib and LZMA2 streams for a head tensor of any declared size (some inflating far
    past it: up to 4 MiB of zeros for a tensor of a few bytes)."""
    bounded(lossless.decode_codes, data, coding, n, bits)


def _image_block(coding: int, quality: int) -> bytes:
    codes = np.random.default_rng(quality).integers(0, 256, (1, 1, 12, 10), dtype=np.uint8)
    return images.encode(codes, coding, quality)


IMAGE_BLOCKS = {c: _image_block(c, 50) for c in images.available()}


@FUZZ
@given(st.sampled_from(sorted(IMAGE_BLOCKS)), st.data())
def test_image_decoders(coding, data):
    """Valid image files with bytes overwritten or cut off, and random bytes, declared as one 12x10 input."""
    blob = bytearray(IMAGE_BLOCKS[coding])
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    for candidate in (bytes(blob), bytes(blob[:data.draw(st.integers(0, len(blob)))]), data.draw(st.binary(max_size=600))):
        bounded(tensors.decode_message, candidate, coding, 1, (1, 12, 10), tensors.quant.params_for_range(0, 1, 8))


@pytest.fixture(scope="module")
def head_bytes(repo):
    model = repo.get("lenet")
    return build_head(model, Split(7, (5, 5), (5,))).SerializeToString()


@FUZZ
@given(data=st.data())
def test_head_decoder(head_bytes, data):
    blob = bytearray(head_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    for candidate in (bytes(blob), bytes(blob[:cut]), data.draw(st.binary(max_size=512))):
        try:
            HeadExecutor.from_bytes(candidate, max_elements=1 << 20)
        except QpartError:
            pass


@FUZZ
@given(st.text(max_size=200))
def test_plan_ids(token):
    bounded(PlanSpec.parse, token)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["authorization", "x-other"]), st.text(max_size=80)), max_size=3),
       st.lists(st.text(max_size=20), max_size=2))
def test_authentication(metadata, names):
    auth = Authenticator({"0" * 64: Identity("d", frozenset({"*"}), "cn")}, mutual_tls=True)
    bounded(auth.identify, metadata, names)


class GoodTraffic(threading.Thread):
    """Another device, classifying all along: it must see no error while the fuzzing runs."""

    def __init__(self, target: str, plan_id: str):
        super().__init__(daemon=True)
        self.stub = service_pb2_grpc.SplitInferenceStub(grpc.insecure_channel(target))
        self.plan_id, self.stop, self.answers, self.errors = plan_id, threading.Event(), 0, []

    def run(self):
        batch = spb.ActivationBatch(request_ids=[0, 1], tensors=[spb.TensorBatch(
            name="flatten1", sample_shape=[400], bits=5, data=bytes(500))])
        while not self.stop.is_set():
            try:
                self.answers += len(list(self.stub.Infer(iter([spb.InferRequest(plan_id=self.plan_id, batch=batch)]),
                                                         timeout=30)))
                self.stub.Plan(spb.PlanRequest(model="fc6"), timeout=30)
            except grpc.RpcError as e:
                self.errors.append(e)


@pytest.fixture(scope="module")
def rpc(server, catalogs):
    target = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(target)
    stub = service_pb2_grpc.SplitInferenceStub(channel)
    valid = [stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=c, weight_bits=[5], activation_bits=[5])), timeout=30).plan_id for c in (0, 7, 12)]
    traffic = GoodTraffic(target, valid[1])
    traffic.start()
    yield stub, channel, valid
    traffic.stop.set()
    traffic.join(30)
    assert traffic.answers > 0 and not traffic.errors, traffic.errors[:3]
    channel.close()


def status(call) -> grpc.StatusCode:
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        assert e.code() in BAD_INPUT_CODES, (e.code(), e.details())
        assert e.details()
        return e.code()


@FUZZ
@given(data=st.data())
def test_rpcs_with_hostile_messages(rpc, data):
    stub, channel, valid = rpc
    models = ["fc6", "lenet", "vgg8"]
    what = data.draw(st.sampled_from(["plan", "fetch", "infer", "list", "probe", "bytes"]))
    if what == "plan":
        status(lambda: stub.Plan(data.draw(fuzzing.plan_requests(models)), timeout=30))
    elif what == "fetch":
        request = spb.FetchHeadRequest(plan_id=data.draw(fuzzing.plan_ids(valid)), offset=data.draw(fuzzing.u64),
                                       max_chunk_bytes=data.draw(fuzzing.u32))
        status(lambda: list(stub.FetchHead(request, timeout=30)))
    elif what == "infer":
        requests = data.draw(st.lists(fuzzing.infer_requests(valid), min_size=1, max_size=3))
        status(lambda: list(stub.Infer(iter(requests), timeout=30)))
    elif what == "list":
        status(lambda: stub.ListModels(spb.ListModelsRequest(name=data.draw(st.text(max_size=70))), timeout=30))
    elif what == "probe":
        status(lambda: stub.Probe(spb.ProbeRequest(payload=data.draw(st.binary(max_size=64)),
                                                   reply_bytes=data.draw(fuzzing.u32)), timeout=30))
    else:
        method = data.draw(st.sampled_from(["Plan", "ListModels", "Probe", "FetchHead", "Infer"]))
        blob = data.draw(st.binary(min_size=1, max_size=300))
        path = f"/qpart.v1.SplitInference/{method}"
        if method == "Infer":
            call = channel.stream_stream(path, request_serializer=None, response_deserializer=None)
            code = status(lambda: list(call(iter([blob]), timeout=30)))
        elif method == "FetchHead":
            call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            code = status(lambda: list(call(blob, timeout=30)))
        else:
            call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            code = status(lambda: call(blob, timeout=30))
        assert code in BAD_INPUT_CODES | {grpc.StatusCode.OK}


def test_server_memory_stays_bounded(rpc):
    """After all that, a burst of the largest hostile batches the limits allow leaves memory where it was."""
    stub, _, valid = rpc
    def rss():
        return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS"))) * 1024
    before = rss()
    for _ in range(50):
        batch = spb.ActivationBatch(request_ids=range(1024), tensors=[spb.TensorBatch(
            name="flatten1", sample_shape=[1 << 20], bits=16, data=bytes(1 << 20))])
        assert status(lambda: list(stub.Infer(iter([spb.InferRequest(plan_id=valid[1], batch=batch)]), timeout=30))) \
            == grpc.StatusCode.INVALID_ARGUMENT
    assert rss() - before < 64 << 20

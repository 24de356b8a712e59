import subprocess
import sys
import textwrap

import numpy as np
import pytest

from qpart.common.errors import InvalidArgument, ResourceExhausted
from qpart.device import head as head_module
from qpart.device.head import HeadExecutor
from qpart.server.models.heads import build_head
from qpart.server.models.split import Split
from tests.common import crafted


@pytest.fixture(scope="module")
def head(repo):
    model = repo.get("lenet")
    return build_head(model, Split(9, (8, 8, 8), (8,)))      # conv part and fc1 on the device


def test_valid_head_runs_like_the_float_model(repo, head, test_set):
    x = test_set[0][:64]
    executor = HeadExecutor.from_bytes(head.SerializeToString())
    model = repo.get("lenet")
    (reference,) = model.module(0, 9)(__import__("torch").from_numpy(x))
    reference = reference.numpy()
    (out,) = executor.run(x)
    assert out.shape == (64, 120) and executor.outputs == model.profile.cut(9).tensors
    assert np.abs(out - reference).max() < 0.05 * np.abs(reference).max()   # 8-bit weights: close, not equal


def _tampered(head, mutate):
    copy = type(head)()
    copy.CopyFrom(head)
    mutate(copy)
    return copy.SerializeToString()


@pytest.mark.parametrize("mutate, match", [
    (lambda h: setattr(h, "format_version", 9), "format version"),
    (lambda h: h.parameters.pop(), "do not match"),
    (lambda h: h.parameters.add().CopyFrom(h.parameters[0]), "do not match"),
    (lambda h: setattr(h.parameters[0], "name", "0.bogus"), "do not match"),
    (lambda h: h.parameters[0].shape.__setitem__(0, 7), "expected"),
    (lambda h: setattr(h.parameters[0], "data", h.parameters[0].data[:-3]), "take|inflate"),
    (lambda h: setattr(h.parameters[0], "coding", 9), "unknown coding"),
    (lambda h: setattr(h.parameters[0], "bits", 17), "bit width"),
    (lambda h: h.network.outputs.__setitem__(0, "nowhere"), "output 'nowhere' is not the input or a node"),
    (lambda h: setattr(h.network.nodes[0].conv2d, "in_channels", 3), "input"),
    (lambda h: h.network.nodes[3].inputs.__setitem__(0, "fc9"), "reads 'fc9'"),
    (lambda h: h.network.input_shape.extend([1 << 30]), "elements; the limit is"),
])
def test_tampered_heads_are_rejected(head, mutate, match):
    with pytest.raises(InvalidArgument, match=match):
        HeadExecutor.from_bytes(_tampered(head, mutate))


def test_garbage_bytes_are_rejected():
    with pytest.raises(InvalidArgument, match="do not parse"):
        HeadExecutor.from_bytes(b"\xff\xff\xff\xff")


MIB = 1 << 20


def test_a_head_that_would_decode_past_the_memory_bound_is_refused_before_anything_is_inflated():
    """Issue 24: 39.6 KB declaring four 8,192 x 8,192 LZMA2-coded layers; the decoder inflated and kept them
    (+526 MiB peak, measured before the fix, and accepted). Now refused from the declared shapes and bits."""
    data = crafted.bomb_head()
    assert len(data) < 40_000
    refused, grew = crafted.peak_increase(lambda: HeadExecutor.from_bytes(data, backend="numpy", max_memory=256 * MIB))
    assert isinstance(refused, ResourceExhausted), refused
    assert ("head tensor 'fc0.weight' [8192, 8192] at 8 bits keeps 320.0 MiB and takes 512.0 MiB more while "
            "decoded: 832.0 MiB with the tensors before it; this device allows a head 256.0 MiB") in str(refused)
    assert grew < 16 * MIB, grew


def test_the_memory_bound_counts_every_tensor_of_the_head():
    data = crafted.random_head(layers=4, width=512, bits=8)     # each layer keeps 1.25 MiB, 2 MiB more decoding
    with pytest.raises(ResourceExhausted, match=r"'fc2.weight' \[512, 512\] at 8 bits keeps 1.2 MiB and takes 2.0 MiB "
                                                r"more while decoded: 5.8 MiB with the tensors before it; this device "
                                                r"allows a head 5.0 MiB"):
        HeadExecutor.from_bytes(data, backend="numpy", max_memory=5 * MIB)
    assert HeadExecutor.from_bytes(data, backend="numpy", max_memory=7 * MIB).memory == 7 * MIB
    assert head_module.memory_bound(1 << 30) == 256 * MIB          # a quarter of the profile's memory (rpi4: 1 GiB)
    assert head_module.memory_bound(0) == head_module.DEFAULT_MAX_MEMORY == 256 * MIB   # unknown memory


def test_the_agent_bounds_the_heads_it_fetches():
    import hashlib
    from qpart.device.agent import DeviceAgent
    from qpart.device.cache import HeadCache
    from qpart.v1 import service_pb2 as spb
    data = crafted.random_head(layers=2, width=512, bits=8)

    class Server:
        def fetch_head(self, plan, max_bytes):
            return data
    agent = DeviceAgent(None, HeadCache(None), backend="numpy", max_head_memory=4 * MIB)    # needs 4.5 MiB
    agent.client = Server()
    plan = spb.PlanResponse(model="m", cut=2, head_hash=hashlib.sha256(data).hexdigest(), head_bytes=len(data))
    with pytest.raises(ResourceExhausted, match="'fc1.weight'"):
        agent.obtain_head(plan)
    agent.max_head_memory = 5 * MIB
    assert agent.obtain_head(plan)[0].memory == 4.5 * MIB


_DECODE = textwrap.dedent("""
    import gc, sys
    from qpart.device.head import HeadExecutor
    from qpart.v1 import network_pb2 as pb
    import torch
    head = pb.Head.FromString(open(sys.argv[1], "rb").read())      # the serialized head is bounded apart
    def kib(field):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")
    before = kib("VmRSS")
    executor = HeadExecutor(head, backend=sys.argv[2], max_memory=1 << 40)
    print((kib("VmHWM") - before) * 1024, executor.memory)
""")


@pytest.mark.parametrize("bits, backend", [(8, "numpy"), (2, "torch"), (12, "numpy"), (32, "torch")])
def test_what_a_head_costs_to_decode_stays_within_its_declared_bound(tmp_path, bits, backend):
    """check_memory's figure bounds the real peak (a fresh process: no freed heap to reuse unseen)."""
    (tmp_path / "head").write_bytes(crafted.random_head(layers=4, width=1024, bits=bits))
    done = subprocess.run([sys.executable, "-c", _DECODE, str(tmp_path / "head"), backend], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grew, bound = map(int, done.stdout.split())
    assert 0 < grew <= bound, (grew, bound)
    print(f"{bits} bits on {backend}: decoding took {grew / MIB:.1f} MiB of the {bound / MIB:.1f} MiB declared")

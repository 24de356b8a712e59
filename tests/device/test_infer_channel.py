"""One long-lived Infer stream per device session and plan (qpart.device.infer_channel): every classify of a
plan goes on it; a broken stream, the server's drain, its idle limit and a plan change each leave every input
answered exactly once, with the outputs a stream per call gives."""
import threading
import time

import numpy as np
import pytest

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.report import RunReport
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb

CUT3 = spb.FixedPlan(cut=3, weight_bits=[8], activation_bits=[8])
CUT7 = spb.FixedPlan(cut=7, weight_bits=[8], activation_bits=[8])


def start(models_dir, **settings) -> RunningServer:
    return RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, load_window_s=0, **settings))


class Device:
    """An agent with its head for one fixed lenet plan; `reference` answers the same inputs a stream per call."""

    def __init__(self, target: str, tmp_path, fixed=CUT7, streams="session", retries=6):
        self.client = ServerClient(target, timeout_s=30, retries=retries, backoff_s=0.05)
        self.agent = DeviceAgent(self.client, HeadCache(tmp_path / "heads"), backend="numpy", streams=streams)
        self.plan = self.client.plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=fixed))
        self.executor, _ = self.agent.obtain_head(self.plan)

    def classify(self, x, **kwargs) -> tuple[np.ndarray, RunReport]:
        report = RunReport.for_plan(self.plan)
        return self.agent.classify(self.plan, self.executor, x, report, **kwargs), report

    def close(self):
        self.agent.close()
        self.client.close()


@pytest.fixture(scope="module")
def reference(server, model_inputs, tmp_path_factory):
    """lenet's first 300 test inputs and their outputs at cut 7 and cut 3, each input on a stream of its own."""
    x, _ = model_inputs("lenet", 300)
    out = {}
    for name, fixed in (("cut7", CUT7), ("cut3", CUT3)):
        device = Device(f"127.0.0.1:{server.port}", tmp_path_factory.mktemp(name), fixed, streams="call")
        out[name] = device.classify(x, batch_size=1)[0]
        device.close()
    return x, out


def test_every_classify_call_goes_on_one_stream(server, reference, tmp_path):
    x, expected = reference
    device = Device(f"127.0.0.1:{server.port}", tmp_path)
    scores = np.concatenate([device.classify(x[i:i + 1])[0] for i in range(40)]
                            + [device.classify(x[40:], window=8, first_id=40)[0]])
    assert device.agent.channel(device.plan).counters.streams == 1
    np.testing.assert_array_equal(scores, expected["cut7"])
    device.close()


def test_a_stream_broken_mid_way_resends_exactly_the_unanswered_inputs(models_dir, reference, tmp_path):
    x, expected = reference
    first, second = start(models_dir), start(models_dir)
    device = Device(f"127.0.0.1:{first.port},127.0.0.1:{second.port}", tmp_path)
    channel = device.agent.channel(device.plan)
    encoded = [device.agent.encode(device.executor, x[i:i + 1], device.agent.crossing(device.plan))
               for i in range(len(x))]
    answered, cut = threading.Event(), threading.Event()
    infer = first.core.infer

    def held(*args, **kwargs):       # the first server answers one input, then holds the next until it is stopped
        if answered.is_set():
            cut.wait(10)
        answered.set()
        return infer(*args, **kwargs)
    first.core.infer = held
    futures = [channel.submit([i], encoded[i]) for i in range(len(x))]
    futures[0].result(timeout=30)
    threading.Timer(0.5, cut.set).start()         # the held handler lets go after the stop has cut its stream
    first.stop(0, notice=0)                       # no grace: the stream is cut wherever it is
    answers = [f.result(timeout=60).response for f in futures]
    assert [a.results[0].request_id for a in answers] == list(range(len(x)))
    scores = np.stack([np.asarray(a.results[0].outputs[0].values, np.float32) for a in answers])
    np.testing.assert_array_equal(scores, expected["cut7"])
    answered_first = len(x) - channel.counters.resent_inputs
    assert channel.counters.resent_streams == 1 and 1 <= answered_first <= 2, channel.counters
    assert channel.counters.duplicates == 0
    device.close()
    second.stop(0, notice=0)


def test_a_draining_server_ends_the_stream_after_an_answer_and_the_rest_go_elsewhere(models_dir, reference,
                                                                                        tmp_path):
    x, expected = reference
    first, second = start(models_dir, grace_s=0.4), start(models_dir)
    device = Device(f"127.0.0.1:{first.port},127.0.0.1:{second.port}", tmp_path)
    channel = device.agent.channel(device.plan)
    encoded = [device.agent.encode(device.executor, x[i:i + 1], device.agent.crossing(device.plan))
               for i in range(len(x))]
    futures, stopped = [], threading.Event()

    def keep_sending():                            # a camera: frames keep coming through the drain
        while not stopped.is_set() or len(futures) % len(x):
            futures.append(channel.submit([len(futures)], encoded[len(futures) % len(x)]))
            time.sleep(0.0005)
    sender = threading.Thread(target=keep_sending)
    sender.start()
    while not futures:
        time.sleep(0.01)
    futures[0].result(timeout=30)
    first.stop(notice=0)            # drain: after 0.2 s the stream ends after its current answer, not cut mid-batch
    stopped.set()
    sender.join(60)
    scores = np.stack([np.asarray(f.result(timeout=60).response.results[0].outputs[0].values, np.float32)
                       for f in futures])
    np.testing.assert_array_equal(scores, np.concatenate([expected["cut7"]] * (len(futures) // len(x))))
    assert channel.counters.resent_streams == 1 and 1 <= channel.counters.resent_inputs < len(futures)
    assert channel.counters.duplicates == 0 and device.client.target.endswith(f":{second.port}")
    assert channel.counters.broken == {"UNAVAILABLE": 1}          # ended by the drain, between two answers
    device.close()
    second.stop(0, notice=0)


def test_an_idle_stream_is_reopened_whoever_ends_it(models_dir, reference, tmp_path):
    x, expected = reference
    running = start(models_dir, stream_idle_s=0.6)
    device = Device(f"127.0.0.1:{running.port}", tmp_path)
    assert device.agent.max_batch(device.plan) and device.agent._limits.stream_idle_s == pytest.approx(0.6)
    channel = device.agent.channel(device.plan)
    assert channel.idle_s == pytest.approx(0.3)   # the device ends its own stream first
    a = device.classify(x[:5])[0]
    time.sleep(0.45)
    b = device.classify(x[5:10], first_id=5)[0]
    assert channel.counters.streams == 2 and running.core.streams.expired == 0
    channel.idle_s = 60.0                         # now the server's watchdog cancels it
    time.sleep(2.0)
    assert running.core.streams.expired == 1
    c = device.classify(x[10:20], first_id=10)[0]
    assert channel.counters.streams == 3 and channel.counters.resent_inputs == 0
    np.testing.assert_array_equal(np.concatenate([a, b, c]), expected["cut7"][:20])
    device.close()
    running.stop(0, notice=0)


def test_a_plan_change_opens_a_stream_for_the_new_plan(server, reference, tmp_path):
    x, expected = reference
    device = Device(f"127.0.0.1:{server.port}", tmp_path)
    other = device.client.plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=CUT3))
    other_head, _ = device.agent.obtain_head(other)
    got7 = [device.classify(x[:50])[0]]
    got3 = device.agent.classify(other, other_head, x[:50], RunReport.for_plan(other))
    got7.append(device.classify(x[50:100], first_id=50)[0])
    np.testing.assert_array_equal(np.concatenate(got7), expected["cut7"][:100])
    np.testing.assert_array_equal(got3, expected["cut3"][:50])
    assert device.agent.channel(device.plan).counters.streams == 1
    assert device.agent.channel(other).counters.streams == 1
    device.close()

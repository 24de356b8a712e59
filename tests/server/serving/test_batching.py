"""Dynamic batching across devices: the batcher's rules on their own, then a server that batches answering
several devices over gRPC exactly as one that does not."""
import threading
import time

import numpy as np
import pytest

from qpart.common.errors import ResourceExhausted
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.serving.batching import TailBatcher
from qpart.v1 import service_pb2 as spb


def doubling(runs: list[int], delay_s: float = 0.02):
    def compute(x):
        runs.append(len(x[0]))
        time.sleep(delay_s)
        return [x[0] * 2, x[0].sum(axis=1)], delay_s, 0.0
    return compute


def submit_all(batcher, compute, sources: int, n: int, limit: int = 1024) -> dict[int, object]:
    results, threads = {}, []
    for s in range(sources):
        x = np.full((n, 3), float(s), np.float32)                         # [n, 3], every value the source's number
        threads.append(threading.Thread(target=lambda s=s, x=x: results.__setitem__(
            s, batcher.run(("m", "v", 1), compute, [x], n, limit, source=s))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_streams_share_runs_and_each_gets_its_own_rows():
    runs: list[int] = []
    batcher = TailBatcher(max_inputs=64, max_delay_s=0.05)
    results = submit_all(batcher, doubling(runs), sources=8, n=3)
    for s, item in results.items():
        assert item.outputs[0].shape == (3, 3) and (item.outputs[0] == 2 * s).all()
        assert (item.outputs[1] == 3 * s).all()
    assert sum(runs) == 24 and len(runs) < 8 and batcher.merged >= 2, runs


def test_a_run_never_exceeds_the_input_cap_or_the_tails_bound():
    runs: list[int] = []
    submit_all(TailBatcher(max_inputs=5, max_delay_s=0.05), doubling(runs), sources=8, n=2)
    assert sum(runs) == 16 and max(runs) <= 4, runs
    runs.clear()
    submit_all(TailBatcher(max_inputs=64, max_delay_s=0.05), doubling(runs), sources=8, n=2, limit=6)
    assert sum(runs) == 16 and max(runs) <= 6, runs


def test_a_lone_stream_never_waits_for_company():
    batcher = TailBatcher(max_inputs=64, max_delay_s=0.5)
    x = np.ones((1, 3), np.float32)
    started = time.perf_counter()
    for _ in range(3):
        batcher.run(("m", "v", 1), doubling([], 0.0), [x], 1, 1024, source=7)
    assert time.perf_counter() - started < 0.25


def test_an_error_in_a_shared_run_reaches_every_member():
    def refuse(x):
        time.sleep(0.02)
        raise ResourceExhausted("no compute slot")
    batcher, errors = TailBatcher(max_inputs=64, max_delay_s=0.05), []

    def one(s):
        with pytest.raises(ResourceExhausted):
            batcher.run(("m", "v", 1), refuse, [np.zeros((1, 3), np.float32)], 1, 1024, source=s)
        errors.append(s)
    threads = [threading.Thread(target=one, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(errors) == [0, 1, 2, 3]


def test_a_batching_server_answers_several_devices_like_one_that_does_not(models_dir, model_inputs, server):
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    batching = RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, batch_max_inputs=256,
                                            batch_delay_ms=20))
    x, labels = model_inputs("lenet", 240)
    request = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(cut=7, weight_bits=[8, 8],
                                                                                activation_bits=[8]))

    def run(port: int, part: slice, out: dict, key) -> None:
        with ServerClient(f"127.0.0.1:{port}", timeout_s=60) as client:
            out[key] = DeviceAgent(client, HeadCache(None), backend="numpy").run(request, x[part], labels[part],
                                                                               batch_size=4)
    try:
        parts = [slice(i * 60, (i + 1) * 60) for i in range(4)]
        alone, together = {}, {}
        for i, part in enumerate(parts):
            run(server.port, part, alone, i)
        threads = [threading.Thread(target=run, args=(batching.port, part, together, i)) for i, part in enumerate(parts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(together) == [0, 1, 2, 3]
        for i in range(4):
            assert together[i].predictions == alone[i].predictions
            assert together[i].duplicates_dropped == 0 and len(together[i].predictions) == 60
        assert batching.core.batcher.merged > 0 and batching.core.batcher.runs < 60
    finally:
        batching.stop(0, notice=0)

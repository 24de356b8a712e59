"""Dynamic batching across devices: the batcher's rules on their own, then a server that batches answering
several devices over gRPC exactly as one that does not."""
import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from qpart.common.errors import DeadlineExceeded, ResourceExhausted
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.serving import batching as batching_mod
from qpart.server.serving.admission import Admission
from qpart.server.serving.batching import Item, TailBatcher
from qpart.server.serving.observe import Metrics
from qpart.server.planning.patterns import ModelSpeed
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc


def doubling(runs: list[int], delay_s: float = 0.02):
    def tail(x):
        runs.append(len(x[0]))
        time.sleep(delay_s)
        return [x[0] * 2, x[0].sum(axis=1)]
    return tail


KEY = ("m", "v", 1)


def together(batcher, items: list[Item], tail, slot, limit: int = 1024, loop: bool = False) -> dict:
    """Each item through batcher.run (run_alone without a batcher) on a thread of its own, or (loop) through
    batcher.arun on one event loop with a thread pool: source -> (the item or the error raised,
    time.perf_counter() when the call returned)."""
    results = {}
    if loop:
        async def main():
            with ThreadPoolExecutor(4) as pool:
                async def one(item):
                    try:
                        results[item.source] = (await batcher.arun(KEY, item, tail, slot, limit, pool),
                                                time.perf_counter())
                    except Exception as e:  # noqa: BLE001 - the test looks at it
                        results[item.source] = (e, time.perf_counter())
                await asyncio.gather(*(one(i) for i in items))
        asyncio.run(main())
        return results

    def one(item):
        try:
            results[item.source] = (batcher.run(KEY, item, tail, slot, limit) if batcher is not None
                                    else batching_mod.run_alone(item, tail, slot), time.perf_counter())
        except Exception as e:  # noqa: BLE001
            results[item.source] = (e, time.perf_counter())
    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def submit_all(batcher, tail, sources: int, n: int, limit: int = 1024, deadline_s: float = math.inf,
               slots: int = 2, loop: bool = False) -> dict[int, object]:
    items = [Item([np.full((n, 3), float(s), np.float32)], n, s, time.perf_counter() + deadline_s)    # [n, 3]
             for s in range(sources)]
    return {s: r for s, (r, _) in together(batcher, items, tail, Admission(slots, max_queued=1000).slot, limit,
                                           loop).items()}


@pytest.mark.parametrize("loop", [False, True], ids=["threads", "event-loop"])
def test_streams_share_runs_and_each_gets_its_own_rows(loop):
    runs: list[int] = []
    batcher = TailBatcher(max_inputs=64, max_delay_s=0.05)
    results = submit_all(batcher, doubling(runs), sources=8, n=3, loop=loop)
    for s, item in results.items():
        assert item.outputs[0].shape == (3, 3) and (item.outputs[0] == 2 * s).all()
        assert (item.outputs[1] == 3 * s).all()
    assert sum(runs) == 24 and len(runs) < 8 and batcher.merged >= 2, runs
    assert sorted(batcher.sizes.elements()) == sorted(runs)          # the runs by size, as /metrics exports them
    metrics = Metrics()
    metrics.watch_batcher(batcher)
    exported = {int(s.labels["inputs"]): s.value for f in metrics.registry.collect() if f.name == "qpart_tail_runs"
                for s in f.samples if s.name == "qpart_tail_runs_total"}
    assert exported == {size: float(count) for size, count in batcher.sizes.items()}


@pytest.mark.parametrize("loop", [False, True], ids=["threads", "event-loop"])
def test_a_run_never_exceeds_the_input_cap_or_the_tails_bound(loop):
    runs: list[int] = []
    submit_all(TailBatcher(max_inputs=5, max_delay_s=0.05), doubling(runs), sources=8, n=2, loop=loop)
    assert sum(runs) == 16 and max(runs) <= 4, runs
    runs.clear()
    submit_all(TailBatcher(max_inputs=64, max_delay_s=0.05), doubling(runs), sources=8, n=2, limit=6, loop=loop)
    assert sum(runs) == 16 and max(runs) <= 6, runs


def test_a_lone_stream_never_waits_for_company():
    batcher, slot = TailBatcher(max_inputs=64, max_delay_s=0.5), Admission(1, 10).slot
    x = np.ones((1, 3), np.float32)
    for _ in range(3):
        batcher.run(("m", "v", 1), Item([x], 1, source=7), doubling([], 0.0), slot, 1024)
    assert batcher.waits == 0 and batcher.runs == 3
    batcher.run(("m", "v", 1), Item([x], 1, source=8), doubling([], 0.0), slot, 1024)   # another stream is active:
    assert batcher.waits == 1                                                          # now a leader waits for it


@pytest.mark.parametrize("loop", [False, True], ids=["threads", "event-loop"])
def test_an_error_in_a_shared_run_reaches_every_member(loop):
    runs = []

    def refuse(x):
        runs.append(len(x[0]))
        time.sleep(0.02)
        raise ResourceExhausted("no compute slot")
    items = [Item([np.zeros((1, 3), np.float32)], 1, s) for s in range(4)]
    results = together(TailBatcher(max_inputs=64, max_delay_s=0.05), items, refuse, Admission(1, 10).slot, loop=loop)
    assert sorted(results) == [0, 1, 2, 3] and sum(runs) == 4
    assert all(isinstance(r, ResourceExhausted) for r, _ in results.values()), results


@pytest.mark.parametrize("batching", ["off", "threads", "event-loop"])
def test_work_that_cannot_make_its_deadline_is_shed_and_nothing_starts_late(batching):
    """One slot, a 30 ms tail, 12 batches due within 100-155 ms: a few run (at most 155 / 30), each started
    early enough to finish by its deadline at the tail's measured speed; the rest are shed, and learn it
    around their deadline, not after a late computation."""
    slot, started, done = Admission(1, max_queued=100).slot, {}, {}

    def tail(x):
        started[int(x[0][0, 0])] = time.perf_counter()
        time.sleep(0.03)
        return [x[0]]

    now = time.perf_counter()                        # later sources have later deadlines
    items = [batching_mod.Item([np.full((1, 3), float(s), np.float32)], 1, s, now + 0.1 + 0.005 * s, 0.03)
             for s in range(12)]
    results = together(None if batching == "off" else TailBatcher(1, 0.0), items, tail, slot,
                       loop=batching == "event-loop")
    for item in items:
        outcome, when = results[item.source]
        done[item.source] = (("shed", when - item.deadline) if isinstance(outcome, DeadlineExceeded)
                             else ("answered", item.deadline))
    answered = {s: deadline for s, (what, deadline) in done.items() if what == "answered"}
    assert 1 <= len(answered) <= 6 and len(done) == 12 and sorted(started) == sorted(answered), done
    # admitted early enough: the tail's first line runs a thread switch after admission (2 ms allowed for it)
    assert all(started[s] + 0.03 <= deadline + 0.002 for s, deadline in answered.items()), (started, answered)
    assert all(late < 0.25 for what, late in done.values() if what == "shed"), done


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


@pytest.mark.parametrize("batch_max_inputs", [0, 64])
def test_a_loaded_server_sheds_what_would_be_late_and_keeps_the_stream(models_dir, batch_max_inputs):
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    from tests.server.serving.test_bad_input import good_batch
    server = RunningServer(ServerSettings(models=models_dir, port=0, measure_speed=False, compute_slots=1,
                                          batch_max_inputs=batch_max_inputs, batch_delay_ms=1))
    real = server.core._run_tail

    def slow(session, x):          # a tail of 20 ms whatever the batch: 8 devices due in 60 ms cannot all run alone
        time.sleep(0.02)
        return real(session, x)
    server.core._run_tail = slow
    lenet = server.core.repository.get("lenet")
    server.core.models.set_speed(None, {(lenet.name, lenet.version): ModelSpeed({7: 0.02})})   # as timed at start-up
    outcomes, deadline_s = [], 0.06
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.SplitInferenceStub(channel)
            plan = stub.Plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
                cut=7, weight_bits=[8, 8], activation_bits=[8])), timeout=30)

            def device(d):
                sent = []

                def requests():
                    for i in range(10):
                        batch = good_batch(plan, 1)
                        batch.request_ids[:] = [d * 100 + i]
                        sent.append(time.perf_counter())
                        yield spb.InferRequest(plan_id=plan.plan_id, batch=batch, deadline_s=deadline_s)
                for i, response in enumerate(stub.Infer(requests(), timeout=60)):
                    outcomes.append((response, time.perf_counter() - sent[i]))
            threads = [threading.Thread(target=device, args=(d,)) for d in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with pytest.raises(grpc.RpcError) as bad:
                list(stub.Infer(iter([spb.InferRequest(plan_id=plan.plan_id, batch=good_batch(plan, 1),
                                                       deadline_s=float("nan"))]), timeout=30))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "deadline_s" in bad.value.details()
    finally:
        server.stop(0, notice=0)
    batcher = server.core.batcher
    shed = [(r, t) for r, t in outcomes if r.status_code]
    answered = [(r, t) for r, t in outcomes if not r.status_code]
    assert len(outcomes) == 80                                         # every request got a response, streams lived
    if batch_max_inputs:                       # the 8 devices' batches run together: 20 ms for all, most in time
        assert len(answered) > len(shed) and batcher.merged > 0, [r.status_message for r, _ in shed]
    else:                                      # one at a time: 140 ms for the last of 8, so many are shed
        assert len(shed) >= 8 and len(answered) >= 1, [r.server_queue_s for r, _ in outcomes]
    assert all(r.status_code == 4 and "shed" in r.status_message and not r.results for r, _ in shed)
    assert all(len(r.results) == 1 and r.server_queue_s + r.server_compute_s <= deadline_s for r, _ in answered)
    assert all(r.server_queue_s < deadline_s + 0.1 for r, _ in shed)    # shed promptly, by the server's clock


def test_a_released_slot_goes_to_the_earliest_deadline_and_skips_one_that_gave_up():
    admission, order = Admission(1, max_queued=10), []
    hold = admission.slot()
    hold.__enter__()

    def wait(name, start_by):
        try:
            with admission.slot(start_by):
                order.append(name)
        except DeadlineExceeded:
            order.append(f"{name} shed")
    now = time.perf_counter()
    threads = [threading.Thread(target=wait, args=args) for args in
               (("late", now + 30), ("soon", now + 20), ("gone", now + 0.05), ("none", math.inf))]
    for t in threads:
        t.start()
    time.sleep(0.3)                                   # "gone" gives up at its deadline while the slot is held
    assert order == ["gone shed"] and admission.waiting == 3
    hold.__exit__(None, None, None)
    for t in threads:
        t.join(10)
    assert order == ["gone shed", "soon", "late", "none"] and admission.running == 0 and admission.waiting == 0

"""The stream-and-resend protocol of Infer: batches out in order, at most `window` in flight, each answer checked
against the request ids it must carry; an answer for an input that has one already is dropped (counted), never
used twice.

over_channel: on the device session's long-lived stream for the plan (qpart.device.infer_channel, the default),
which resends what a broken stream left unanswered. send: one stream for this call alone (the one-shot form,
DeviceAgent(streams="call")); the caller (DeviceAgent.classify) reopens a broken one for exactly the inputs
without an answer."""
import collections
import concurrent.futures
import dataclasses
import threading
import time

import numpy as np

from qpart.common.errors import DeadlineExceeded, Internal, QpartError
from qpart.device.linkwatch import round_sample
from qpart.v1 import service_pb2 as spb


def encode_once(agent, executor, x, start, batch_size, crossing, encoded, report) -> float:
    """Run the head and pack the batch at `start` unless `encoded` holds it already (a resend); returns when
    this began (perf_counter)."""
    began = time.perf_counter()
    if start not in encoded:
        encoded[start] = agent.encode(executor, x[start:start + batch_size], crossing)
        for j, tb in enumerate(encoded[start][:len(report.crossing)]):    # what crossed, measured
            report.crossing[j]["sent_bytes"] += len(tb.data)
        report.device_compute_s += time.perf_counter() - began
    return began


def send(agent, plan, executor, x, pending, encoded, answers, report, batch_size, window, crossing, first_id,
         observe=None, stop=None) -> None:
    """One Infer stream: send the batches starting at `pending` (encoding each once: `encoded` keeps them for
    resends), at most `window` in flight, and file each answer under its input's index in `answers`."""
    sent_at: dict[int, float] = {}
    wire: dict[int, tuple[float, int]] = {}      # batch -> (handed to gRPC, request bytes)
    slots = threading.Semaphore(window)
    failed = threading.Event()

    def requests():
        for b, start in enumerate(pending):
            while not slots.acquire(timeout=0.1):
                if failed.is_set():
                    return
            if stop is not None and start not in encoded and stop():
                return                       # batches sent before (a resend) still go: the answers stay a prefix
            sent_at[b] = encode_once(agent, executor, x, start, batch_size, crossing, encoded, report)
            end = min(start + batch_size, len(x))
            if report.resent_streams:         # a stream opened again: these inputs are sent a second time
                report.resent_inputs += end - start
            request = spb.InferRequest(plan_id=plan.plan_id if b == 0 else "", deadline_s=agent.deadline_s,
                                       batch=spb.ActivationBatch(request_ids=range(first_id + start, first_id + end),
                                                                 tensors=encoded[start]))
            if observe is not None:
                wire[b] = (time.perf_counter(), request.ByteSize())
            yield request

    last_answer = 0.0
    try:
        for b, response in enumerate(agent.client.infer(requests(), timeout_s=agent.stream_timeout(len(pending) * batch_size))):
            now = time.perf_counter()
            report.batch_latency_s.append(now - sent_at[b])
            slots.release()
            if observe is not None:
                handed, up = wire[b]
                observe(round_sample(handed, last_answer, now, up, response))
            last_answer = now
            expected = list(range(first_id + pending[b], first_id + min(pending[b] + batch_size, len(x))))
            if response.status_code:
                raise DeadlineExceeded(f"the server shed inputs {expected[0]}-{expected[-1]}: "
                                       f"{response.status_message[:200]}")
            if [r.request_id for r in response.results] != expected:
                raise Internal("the server answered a batch with other request ids than were sent")
            for r in response.results:
                if r.request_id - first_id in answers:
                    report.duplicates_dropped += 1
                elif not r.outputs:
                    raise Internal(f"the server's answer for input {r.request_id} carries no output")
                else:
                    answers[r.request_id - first_id] = np.asarray(r.outputs[0].values, np.float32)
            report.server_compute_s += response.server_compute_s
    except QpartError:
        failed.set()
        raise


def over_channel(agent, channel, executor, x, starts, encoded, answers, report, batch_size, window, crossing,
                 first_id, observe=None, stop=None) -> None:
    """The same batches on the agent's long-lived stream for the plan (qpart.device.infer_channel), which resends
    what a broken stream left unanswered itself: at most `window` of this call's batches in flight."""
    before = dataclasses.replace(channel.counters)
    flight: collections.deque = collections.deque()      # (batch start, Future) in send order

    def collect() -> None:
        start, future = flight.popleft()
        end = min(start + batch_size, len(x))
        try:
            answer = future.result(timeout=agent.stream_timeout(end - start))
        except concurrent.futures.TimeoutError:
            channel.cancel(DeadlineExceeded("no answer in time"))
            raise DeadlineExceeded(f"no answer for inputs {first_id + start}-{first_id + end - 1} within "
                                   f"{agent.stream_timeout(end - start):.0f} s") from None
        response = answer.response
        if response.status_code:
            raise DeadlineExceeded(f"the server shed inputs {first_id + start}-{first_id + end - 1}: "
                                   f"{response.status_message[:200]}")
        report.batch_latency_s.append(answer.latency_s)
        if observe is not None:
            observe(answer.sample)
        for r in response.results:
            if not r.outputs:
                raise Internal(f"the server's answer for input {r.request_id} carries no output")
            answers[r.request_id - first_id] = np.asarray(r.outputs[0].values, np.float32)
        report.server_compute_s += response.server_compute_s

    try:
        for start in starts:
            if stop is not None and stop():
                break
            while len(flight) >= window:
                collect()
            encode_once(agent, executor, x, start, batch_size, crossing, encoded, report)
            end = min(start + batch_size, len(x))
            flight.append((start, channel.submit(range(first_id + start, first_id + end), encoded[start],
                                                 agent.deadline_s)))
        while flight:
            collect()
    finally:
        report.resent_streams += channel.counters.resent_streams - before.resent_streams
        report.resent_inputs += channel.counters.resent_inputs - before.resent_inputs
        report.duplicates_dropped += channel.counters.duplicates - before.duplicates

"""One long-lived Infer stream per device session and plan: inputs go out on it as they come, answers are
matched to them in order by request id.

- Broken stream (server restart, drain, a replica gone, the server's idle watchdog): the channel connects
  again (ServerClient.failover: next address, back-off) and sends exactly the batches still without an
  answer, in their order, the first one carrying the plan id. An answered batch is never sent again, so
  nothing is answered twice; an answer whose ids are not the oldest unanswered batch's is dropped and
  counted (`duplicates`), never used.
- Idle: the server cancels a stream idle for ServerLimits.stream_idle_s; the channel ends its own stream once
  it has been idle for half that, and opens the next one when there is something to send.
- Plan change: one stream carries one plan (the server refuses another plan id on it); DeviceAgent keeps a
  channel per plan id and half-closes the old one, whose answers still arrive.
- Errors other than UNAVAILABLE / a broken stream (an expired plan: FAILED_PRECONDITION; bad input) fail every
  batch still waiting, as their QpartError; the channel opens a new stream for the next batch.
"""
import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc

from qpart.common.errors import Cancelled, Internal, QpartError, Unavailable
from qpart.common.rpc import from_rpc_error
from qpart.device.client import GRPC_FRAME_BYTES, ServerClient, message_bytes
from qpart.device.linkwatch import LinkSample, round_sample
from qpart.v1 import service_pb2 as spb

log = logging.getLogger("qpart.device.channel")
_END = object()


@dataclass
class Answer:
    response: spb.InferResponse
    sample: LinkSample               # the round as the link monitor sees it
    latency_s: float                 # submitted -> answered (resends included)


@dataclass
class _Batch:
    ids: list[int]
    tensors: list                    # spb.TensorBatch, kept for resends
    deadline_s: float
    future: Future = field(default_factory=Future)
    submitted: float = 0.0           # perf_counter at submit
    handed: float = 0.0              # perf_counter when last handed to gRPC
    up: int = 0                      # request bytes (the message, as the one-shot stream counts them)


@dataclass
class ChannelCounters:
    streams: int = 0                 # streams opened
    resent_streams: int = 0          # streams opened to resend batches a broken one left unanswered
    resent_inputs: int = 0           # inputs sent a second (or later) time
    duplicates: int = 0              # answers dropped: their ids were not the oldest unanswered batch's
    broken: collections.Counter = field(default_factory=collections.Counter)   # streams ended early, by status


class InferChannel:
    def __init__(self, client: ServerClient, plan_id: str, idle_s: float = 30.0):
        """idle_s: end the stream after this many seconds without traffic (half the server's stream_idle_s)."""
        self.client, self.plan_id, self.idle_s = client, plan_id, idle_s
        self.counters = ChannelCounters()
        self._lock = threading.Lock()
        self._waiting: collections.deque[_Batch] = collections.deque()   # sent, unanswered, in send order
        self._queue: queue.SimpleQueue | None = None                      # the open stream's requests
        self._call = None
        self._first = True               # the next message opens its stream: it carries the plan id
        self._last = 0.0                 # monotonic time of the last send or answer
        self._failures = 0               # broken streams since the last answer
        self._closed = False
        self._reader: threading.Thread | None = None     # the open stream's answer reader
        client.open_streams.add(self)

    def submit(self, ids, tensors, deadline_s: float = 0.0) -> Future:
        """Send one batch; the Future resolves to an Answer (or raises the batch's QpartError)."""
        batch = _Batch(list(ids), list(tensors), deadline_s, submitted=time.perf_counter())
        with self._lock:
            if self._closed:
                raise Cancelled("this Infer channel is closed")
            if (self._queue is not None and not self._waiting
                    and time.monotonic() - self._last > self.idle_s):   # quiet for long: the server may cancel it
                self._half_close_locked()
                self._call = None
            if self._call is None:
                self._open_locked()
            self._waiting.append(batch)
            if self._queue is not None:      # else a broken stream is being replaced: it resends every batch
                self._send_locked(batch)
        return batch.future

    def close(self, wait_s: float = 5.0) -> None:
        """Half-close: the batches already sent are still answered; nothing more can be submitted. Waits up to
        wait_s for the server to end the stream."""
        with self._lock:
            self._closed = True
            if not self._waiting:
                self._half_close_locked()
            reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(wait_s)

    def cancel(self, error: QpartError | None = None) -> None:
        """End the stream now; every batch still waiting fails with `error` (Cancelled by default)."""
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
            self._half_close_locked()
            self._fail_locked(error or Cancelled("the Infer channel was cancelled"))
        if call is not None:
            call.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # --- the stream ----------------------------------------------------------------------------------
    def _open_locked(self) -> None:
        requests: queue.SimpleQueue = queue.SimpleQueue()
        counter = self.client.bytes["Infer"]

        def messages():
            while (item := requests.get()) is not _END:
                request, size = item
                counter.sent += size
                yield request
        call = self.client.stub.Infer(messages(), metadata=self.client.metadata)
        self._queue, self._call, self._first = requests, call, True
        self.counters.streams += 1
        self._last = time.monotonic()
        self._reader = threading.Thread(target=self._read, args=(call,), name="qpart-infer-channel", daemon=True)
        self._reader.start()

    def _send_locked(self, batch: _Batch) -> None:
        request = spb.InferRequest(plan_id=self.plan_id if self._first else "", deadline_s=batch.deadline_s,
                                   batch=spb.ActivationBatch(request_ids=batch.ids, tensors=batch.tensors))
        self._first = False
        batch.handed, batch.up = time.perf_counter(), request.ByteSize()
        self._last = time.monotonic()
        self._queue.put((request, batch.up + GRPC_FRAME_BYTES))

    def _half_close_locked(self) -> None:
        if self._queue is not None:
            self._queue.put(_END)        # half-close: the server answers what it has read, then ends the stream
        self._queue = None

    def _fail_locked(self, error: QpartError) -> None:
        while self._waiting:
            batch = self._waiting.popleft()
            if not batch.future.done():
                batch.future.set_exception(error)

    def _read(self, call) -> None:
        counter = self.client.bytes["Infer"]
        last_answer = 0.0
        try:
            for response in call:
                now = time.perf_counter()
                counter.received += message_bytes(response)
                with self._lock:
                    if self._call is not call:
                        return            # a newer stream owns the waiting batches
                    self._last = time.monotonic()
                    ids = [r.request_id for r in response.results]
                    if not self._waiting or (ids and ids != self._waiting[0].ids):
                        self.counters.duplicates += 1
                        continue
                    batch = self._waiting.popleft()
                    self._failures = 0
                    if self._closed and not self._waiting:
                        self._half_close_locked()
                sample = round_sample(batch.handed, last_answer, now, batch.up, response)
                last_answer = now
                batch.future.set_result(Answer(response, sample, now - batch.submitted))
            error: QpartError = Unavailable("the server ended the Infer stream with batches unanswered")
        except grpc.RpcError as e:
            error = from_rpc_error(e)
        except Exception as e:  # noqa: BLE001 - a failed stream fails its batches, never the reader silently
            error = Internal(f"the Infer stream failed: {type(e).__name__}: {e}"[:300])
        self._broken(call, error)

    def _broken(self, call, error: QpartError) -> None:
        """The stream `call` ended: resend what it left unanswered on a new one, or fail it. A cancel seen here
        is the server's (its idle watchdog, a drain past its grace): cancel() lets go of the call first."""
        with self._lock:
            if self._call is not call:
                return
            self._half_close_locked()        # lets gRPC's request thread go
            self._call = None
            if not self._waiting:
                return
            self.counters.broken[error.status] += 1
            if not isinstance(error, (Unavailable, Cancelled)) or self._failures >= self.client.retries:
                self._fail_locked(error)
                return
            self._failures += 1
            attempt, self._call = self._failures - 1, call      # held: no submit opens a stream meanwhile
        log.info("Infer stream broke (%s: %s); resending %d batch(es)", error.status, str(error)[:120],
                 len(self._waiting))
        try:
            self.client.check_tls()
        except QpartError as e:
            error = e
        else:
            self.client.failover(attempt)
        with self._lock:
            if self._call is not call:
                return
            self._call = None
            if error.status == "UNAUTHENTICATED":
                self._fail_locked(error)
                return
            try:
                self._open_locked()
            except Exception as e:  # noqa: BLE001 - e.g. the client was closed meanwhile
                self._call = None
                self._fail_locked(Unavailable(f"cannot open an Infer stream: {e}"[:300]))
                return
            self.counters.resent_streams += 1
            for batch in self._waiting:
                self.counters.resent_inputs += len(batch.ids)
                self._send_locked(batch)
            if self._closed:
                self._half_close_locked()

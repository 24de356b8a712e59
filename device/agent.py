"""The device agent: plan, obtain the head (cache or download), run it and stream the activations.

`DeviceAgent.run` does one whole job and returns a RunReport (qpart.device.report) with the plan, the bytes
each RPC moved (gRPC messages, counted exactly), timings and, when labels are given, the measured accuracy.
The Infer stream's protocol is qpart.device.streaming (one long-lived stream per plan:
qpart.device.infer_channel); an emulated board's pacing qpart.device.emulation.
"""
import collections
import logging
import math
import threading
import time

import numpy as np

from qpart.common import images, packing, quant, tensors
from qpart.common.errors import FailedPrecondition, Internal, InvalidArgument
from qpart.device import netstat, streaming
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.emulation import BoardEmulation
from qpart.device.head import DEFAULT_MAX_MEMORY, HeadExecutor
from qpart.device.infer_channel import InferChannel
from qpart.device.report import HeadReport, RunReport
from qpart.v1 import service_pb2 as spb

log = logging.getLogger("qpart.device.agent")
MAX_CHANNELS = 4      # plans whose Infer streams one agent keeps open at once


def activation_params(encoding: spb.ActivationEncoding) -> quant.QuantParams | None:
    """The plan's static quantizer of one crossing tensor, validated (None for float32)."""
    bits = quant.check_bits(encoding.bits, f"the plan's bit width of tensor {encoding.name[:64]!r}")
    if bits == quant.FLOAT_BITS:
        return None
    if not (math.isfinite(encoding.scale) and encoding.scale > 0) or encoding.zero_point > (1 << bits) - 1:
        raise InvalidArgument(f"the plan's scale or zero point of tensor {encoding.name[:64]!r} is invalid")
    return quant.QuantParams(bits, np.array([encoding.scale], np.float32), np.array([encoding.zero_point], np.int64))


def activation_coding(encoding: spb.ActivationEncoding) -> tuple[int, int]:
    """(coding, quality) the plan asks for one crossing tensor, checked against what this device can do."""
    coding = encoding.coding
    if coding not in (tensors.RAW, tensors.ZLIB) and coding not in images.available():
        raise InvalidArgument(f"the plan asks for coding {coding} of tensor {encoding.name[:64]!r}, which this device "
                              f"cannot encode (0: raw, 1: zlib; image codings here: {sorted(images.available())})")
    if coding in images.LOSSY and not 1 <= encoding.quality <= 100:
        raise InvalidArgument(f"the plan's {images.NAMES[coding]} quality {encoding.quality} is not 1 to 100")
    return coding, encoding.quality


class DeviceAgent:
    def __init__(self, client: ServerClient, cache: HeadCache, max_head_bytes: int = 256 << 20,
                 max_elements: int = tensors.DEFAULT_MAX_ELEMENTS, emulate_macs_per_second: float = 0.0,
                 backend: str = "auto", deadline_s: float = 0.0, max_head_memory: int = DEFAULT_MAX_MEMORY,
                 streams: str = "session"):
        if streams not in ("session", "call"):
            raise InvalidArgument(f"streams must be 'session' or 'call', got {streams!r}")
        self.client = client
        self.cache = cache
        self.max_head_bytes = max_head_bytes    # refuse heads larger than this, bytes
        self.max_elements = max_elements        # refuse tensors with more elements than this
        self.max_head_memory = max_head_memory  # refuse heads whose parameters cost more memory than this, bytes
        self.backend = backend                  # head executor: auto, numpy or torch (qpart.device.backends)
        # > 0: each batch's answer is of use only this many seconds after the server reads it
        # (InferRequest.deadline_s); a batch the server sheds raises DeadlineExceeded
        self.deadline_s = deadline_s
        # > 0: emulate a slower board by stretching the device's work to this rate (never faster than real)
        self.emulate_macs_per_second = emulate_macs_per_second
        self.emulation = BoardEmulation(emulate_macs_per_second) if emulate_macs_per_second > 0 else None
        # set: classify gets raw uint8 images and preprocesses each batch, as the device's own timed work (the plan
        # prices it); None: the inputs come preprocessed
        self.preprocessing = None
        self._limits: spb.ServerLimits | None = None   # the server's, fetched once when first needed
        # "session": every classify of a plan goes on one Infer stream kept open (qpart.device.infer_channel);
        # "call": a stream of its own per classify call (the one-shot form)
        self.streams = streams
        self._channels: collections.OrderedDict[str, InferChannel] = collections.OrderedDict()   # by plan id
        self._channels_lock = threading.Lock()
        self._baseline = self._counters() if client is not None else None   # bytes before this agent's first call

    def run_head(self, executor: HeadExecutor, x: np.ndarray) -> list[np.ndarray]:
        started = time.perf_counter()
        out = executor.run(x)
        if self.emulation is not None:
            self.emulation.head(executor.macs * len(x), started)
        return out

    def plan(self, request: spb.PlanRequest) -> spb.PlanResponse:
        request.held_heads[:] = self.cache.held()
        return self.client.plan(request)

    def obtain_head(self, plan: spb.PlanResponse) -> tuple[HeadExecutor | None, HeadReport]:
        if plan.cut == 0:
            return None, HeadReport()
        report = HeadReport(content_hash=plan.head_hash, bytes=plan.head_bytes)
        data = self.cache.get(plan.head_hash)
        report.cache_hit = data is not None
        if data is None:
            started = time.perf_counter()
            data = self.client.fetch_head(plan, self.max_head_bytes)
            report.fetch_s = time.perf_counter() - started
            self.cache.put(plan.head_hash, data)
        executor = HeadExecutor.from_bytes(data, self.max_elements, self.backend, self.max_head_memory)
        crossing = [a.name for a in plan.activations] or None
        if executor.head.model != plan.model or executor.head.cut != plan.cut or \
                (crossing is not None and list(executor.outputs) != crossing):
            raise InvalidArgument("the head does not belong to the plan")
        report.parameters = executor.weight_count
        report.float32_bytes = 4 * executor.weight_count
        report.backend, report.weight_bytes = executor.backend.name, executor.backend.weight_bytes
        return executor, report

    def classify(self, plan: spb.PlanResponse, executor: HeadExecutor | None, x: np.ndarray, report: RunReport,
                 batch_size: int = 1, window: int = 1, first_id: int = 0, observe=None, stop=None,
                 replan=None) -> np.ndarray:
        """The model's first output [n, *shape] (a classifier's scores) for inputs x [n, *input_shape]; at most
        `window` batches in flight. Input i travels with request id first_id + i.

        Every input gets exactly one answer: when a stream breaks (server restart, switch to another
        replica) the inputs without an answer are sent again on a new stream (report.resent_inputs), and
        an answer for an input that has one already is dropped (counted in report.duplicates_dropped).
        observe(LinkSample) is called for every answered batch (qpart.device.linkwatch). With stop, no new
        batch starts once stop() is true: the batches already out are answered and the result holds the
        first k <= n inputs' outputs (a prefix), the rest to be sent on another plan. With replan (a callable
        returning a fresh (plan, executor)), a plan id the server refuses mid-stream (FAILED_PRECONDITION: it
        expired, or its key was rotated) is planned again once, and the inputs without an answer are sent on the
        new plan (report.replans).
        """
        answers: dict[int, np.ndarray] = {}            # input index -> scores
        try:
            return self._classify(plan, executor, x, report, batch_size, window, first_id, observe, stop, answers)
        except FailedPrecondition as e:
            if replan is None or not plan.activations:
                raise
            done = len(answers)                          # answers come in order: a prefix of the inputs
            if sorted(answers) != list(range(done)):
                raise
            log.info("the server refused the plan id mid-stream (%s): planning again for the %d inputs left",
                     str(e)[:120], len(x) - done)
            report.replans += 1
            plan, executor = replan()
            rest = self.classify(plan, executor, x[done:], report, batch_size, window, first_id + done, observe, stop)
            report.inputs += done
            head = np.stack([answers[i] for i in range(done)]) if done else rest[:0]
            return np.concatenate([head, rest]) if len(rest) else head

    def _classify(self, plan, executor, x, report, batch_size, window, first_id, observe, stop, answers) -> np.ndarray:
        if not plan.activations:             # nothing crosses: the device runs the whole model
            scores = []
            for start in range(0, len(x), batch_size):
                if stop is not None and stop():
                    break
                began = time.perf_counter()
                scores.append(self.run_head(executor, self.prepare(x[start:start + batch_size]))[0])
                elapsed = time.perf_counter() - began
                report.device_compute_s += elapsed
                report.batch_latency_s.append(elapsed)
            report.inputs, report.batches = sum(len(c) for c in scores), len(report.batch_latency_s)
            return np.concatenate(scores) if scores else np.zeros((0,), np.float32)
        crossing = self.crossing(plan)
        batch_size = min(batch_size, self.max_batch(plan))
        starts = list(range(0, len(x), batch_size))
        encoded: dict[int, list] = {}                  # batch start -> packed tensors (kept for resends)

        def unanswered() -> list[int]:
            return [s for s in starts if any(i not in answers for i in range(s, min(s + batch_size, len(x))))]

        def send_unanswered() -> None:
            pending = unanswered()
            if pending:
                self._stream(plan, executor, x, pending, encoded, answers, report, batch_size, window, crossing,
                             first_id, observe, stop)

        def count_resend() -> None:
            report.resent_streams += 1

        if self.streams == "session":
            streaming.over_channel(self, self.channel(plan), executor, x, starts, encoded, answers, report,
                                   batch_size, window, crossing, first_id, observe, stop)
        else:
            self.client.with_failover(send_unanswered, on_retry=count_resend)
        if len(answers) != len(x) and (stop is None or sorted(answers) != list(range(len(answers)))):
            raise Internal(f"the server answered {len(answers)} of {len(x)} inputs")
        report.inputs, report.batches = len(answers), -(-len(answers) // batch_size)
        for c in report.crossing:
            c["bytes_per_input"] = c["sent_bytes"] / report.inputs if report.inputs else None
        if not answers:
            return np.zeros((0,), np.float32)
        return np.stack([answers[i] for i in range(len(answers))])

    @staticmethod
    def crossing(plan: spb.PlanResponse) -> list[tuple]:
        """What encode needs of each tensor crossing the plan's cut: name, sample shape, bits, quantizer, coding."""
        return [(a.name, tuple(a.sample_shape), a.bits, activation_params(a), *activation_coding(a))
                for a in plan.activations]

    def channel(self, plan: spb.PlanResponse) -> InferChannel:
        """The long-lived Infer stream for this plan; the MAX_CHANNELS most recently used plans keep theirs, an
        older one is half-closed (its answers still arrive)."""
        with self._channels_lock:
            channel = self._channels.get(plan.plan_id)
            if channel is None or channel.closed:
                idle = (self._limits.stream_idle_s if self._limits is not None else 0) or 60.0
                channel = self._channels[plan.plan_id] = InferChannel(self.client, plan.plan_id, idle / 2)
            self._channels.move_to_end(plan.plan_id)
            while len(self._channels) > MAX_CHANNELS:
                self._channels.popitem(last=False)[1].close(wait_s=0)
            return channel

    def close(self) -> None:
        """Half-close every Infer stream this agent holds open and wait (a few seconds at most) for them to end."""
        with self._channels_lock:
            channels, self._channels = list(self._channels.values()), collections.OrderedDict()
        for channel in channels:
            channel.close()

    def max_batch(self, plan: spb.PlanResponse) -> int:
        """Most inputs one activation message may carry: the server's limits (inputs, elements, message bytes,
        the plan's max_batch_inputs) and this client's message limit, for this plan's tensors."""
        if self._limits is None:
            self._limits = self.client.limits()
        limits = self._limits
        elements = sum(math.prod(a.sample_shape) for a in plan.activations)
        packed = sum(tensors.message_bound(a.sample_shape, a.bits, a.coding) for a in plan.activations) + 16
        message = min(limits.max_message_bytes or self.client.max_message_bytes, self.client.max_message_bytes) - 4096
        return max(1, min(limits.max_batch_inputs or 1 << 30, (limits.max_batch_elements or 1 << 62) // max(elements, 1),
                          message // packed, plan.max_batch_inputs or 1 << 30))

    def encode(self, executor: HeadExecutor | None, chunk: np.ndarray, crossing: list) -> list[spb.TensorBatch]:
        """Run the head on a chunk of inputs and pack each crossing tensor as the plan says (cut 0: the input)."""
        chunk = self.prepare(chunk)
        outputs = self.run_head(executor, chunk) if executor is not None else [chunk]
        batches, started = [], time.perf_counter()
        for (name, shape, bits, params, coding, quality), value in zip(crossing, outputs, strict=True):
            if value.shape[1:] != shape:
                raise InvalidArgument(f"the head produced {list(value.shape[1:])} for {name!r}, the plan expects "
                                      f"{list(shape)}")
            data = tensors.encode_message(value, params, coding, quality)
            if coding == tensors.ZLIB and len(data) >= packing.packed_size(value.size, bits):
                coding, data = tensors.RAW, tensors.encode_batch(value, params)   # zlib would not shrink it
            batches.append(spb.TensorBatch(name=name, sample_shape=shape, bits=bits, coding=coding, data=data))
        self._pace(started)
        return batches

    def prepare(self, chunk: np.ndarray) -> np.ndarray:
        """Raw images through the model's preprocessing when this agent is given it (else the chunk as is)."""
        if self.preprocessing is None:
            return chunk
        started = time.perf_counter()
        out = self.preprocessing.apply(chunk)
        self._pace(started)
        return out

    def _pace(self, started: float) -> None:
        if self.emulation is not None:           # preprocessing and encoding take as long as on the board too
            self.emulation.work(started)

    def _stream(self, *args, **kwargs) -> None:
        streaming.send(self, *args, **kwargs)

    def stream_timeout(self, inputs: int) -> float:
        return self.client.timeout_s + inputs * 0.5

    def _counters(self) -> tuple[dict, object]:
        """gRPC message bytes per RPC and the kernel's TCP byte counts so far."""
        return ({rpc: (b.sent, b.received) for rpc, b in self.client.bytes.items()},
                netstat.tcp_bytes(self.client.port))

    def model_info(self, name: str) -> spb.ModelInfo:
        return self.client.list_models(name)[0]

    def run(self, request: spb.PlanRequest, x: np.ndarray, labels: np.ndarray | None = None,
            batch_size: int = 1, window: int = 1, keep_scores: bool = False) -> RunReport:
        """Plan (a fixed plan too: request.policy FIXED), obtain the head, classify x; keep_scores: the report holds
        every input's first output (report.scores), not only the top-1 labels."""
        started = time.perf_counter()
        before, tcp_before = self._baseline or self._counters()   # the first run also counts what came before it
        self._baseline = None
        asked = time.perf_counter()
        plan = self.plan(request)
        planned = time.perf_counter()
        executor, head_report = self.obtain_head(plan)
        report = RunReport.for_plan(plan, head_report, plan_s=planned - asked,
                                    emulated_macs_per_second=self.emulate_macs_per_second)

        def replan() -> tuple:
            fresh = self.plan(request)
            return fresh, self.obtain_head(fresh)[0]
        scores = self.classify(plan, executor, x, report, batch_size, window, replan=replan)
        predictions = scores.argmax(axis=1)
        report.predictions = predictions.tolist()
        if keep_scores:
            report.scores = scores.tolist()
        if labels is not None:
            report.accuracy = 100.0 * float(np.mean(predictions == labels))
        report.wire = {rpc: {"sent": b.sent - before.get(rpc, (0, 0))[0], "received": b.received - before.get(rpc, (0, 0))[1]}
                       for rpc, b in self.client.bytes.items()}
        tcp_after = netstat.tcp_bytes(self.client.port)
        if tcp_before is not None and tcp_after is not None:
            delta = tcp_after - tcp_before
            report.tcp = {"sent": delta.sent, "received": delta.received}
        report.total_s = time.perf_counter() - started
        return report



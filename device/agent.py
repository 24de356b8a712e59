"""The device agent: plan, obtain the head (cache or download), run it and stream the activations.

`DeviceAgent.run` does one whole job and returns a RunReport with the plan, the bytes each RPC moved
(gRPC messages, counted exactly), timings and, when labels are given, the measured accuracy.
"""
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from google.protobuf import json_format

from qpart.common import images, packing, policies, quant, tensors
from qpart.common.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, QpartError
from qpart.device import backends, netstat
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.head import DEFAULT_MAX_MEMORY, HeadExecutor
from qpart.device.linkwatch import LinkSample
from qpart.v1 import service_pb2 as spb

log = logging.getLogger("qpart.device.agent")


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


@dataclass
class HeadReport:
    content_hash: str = ""
    bytes: int = 0                # size of the serialized head
    cache_hit: bool = False
    fetch_s: float = 0.0          # download time (0 on a cache hit)
    parameters: int = 0           # weight and bias elements in the head
    float32_bytes: int = 0        # the same parameters as float32
    backend: str = ""             # what runs it: numpy, torch or torch-cuda
    weight_bytes: int = 0         # its parameters as the backend holds them in memory


@dataclass
class RunReport:
    model: str
    policy: str
    cut: int                      # the device ran nodes[0:cut]
    num_nodes: int
    weight_bits: list[int]        # of the device-side weight nodes
    activation_bits: list[int]    # of the tensors crossing the cut
    crossing: list[dict]          # per crossing tensor: name, shape, bits, bytes per input (packed), coding
    predicted: dict               # the server's PlanPrediction, as a dict
    head: HeadReport
    candidates: list[dict] = field(default_factory=list)  # what the planner weighed, when asked to explain
    inputs: int = 0
    batches: int = 0
    accuracy: float | None = None           # percent top-1 when labels were given
    predictions: list[int] = field(default_factory=list)
    wire: dict = field(default_factory=dict)  # rpc -> {"sent": bytes, "received": bytes} of gRPC messages
    tcp: dict | None = None                  # {"sent", "received"}: TCP payload bytes from the kernel (None: unknown)
    emulated_macs_per_second: float = 0.0   # > 0: device compute was stretched to this rate (emulated board)
    reason: str = ""                        # the server's one line on why it chose this split
    server_speed: dict = field(default_factory=dict)   # the server's own timings the plan rests on (ServerSpeed)
    plan_s: float = 0.0                     # the Plan RPC, round trip, as this device timed it
    plan_decision_s: float = 0.0            # of which the server's planner took this long to choose
    device_compute_s: float = 0.0           # head compute plus packing, all inputs
    server_compute_s: float = 0.0           # tail compute the server reported, all inputs
    batch_latency_s: list[float] = field(default_factory=list)  # send of a batch -> its answer
    resent_streams: int = 0                 # streams opened again after a server became unavailable
    resent_inputs: int = 0                  # inputs handed to such a stream to send again (they had no answer)
    duplicates_dropped: int = 0             # answers that arrived for inputs that had one already (never used)
    replans: int = 0                        # plans asked for again when the server refused the plan id mid-stream
    total_s: float = 0.0                    # wall time of plan + head + all inferences

    @classmethod
    def for_plan(cls, plan: spb.PlanResponse, head: "HeadReport | None" = None, **fields) -> "RunReport":
        return cls(model=plan.model, policy=policies.from_enum(plan.policy), cut=plan.cut, num_nodes=plan.num_nodes,
                   weight_bits=list(plan.weight_bits), activation_bits=[a.bits for a in plan.activations],
                   crossing=[{"name": a.name, "shape": list(a.sample_shape), "bits": a.bits,
                              "bytes": packing.packed_size(math.prod(a.sample_shape), a.bits),
                              "coding": tensors.coding_label(a.coding, a.quality)} for a in plan.activations],
                   predicted=_message_dict(plan.predicted), head=head or HeadReport(), reason=plan.reason,
                   plan_decision_s=plan.decision_seconds, server_speed=_message_dict(plan.server_speed),
                   candidates=[_message_dict(c) for c in plan.candidates], **fields)

    def as_dict(self) -> dict:
        return asdict(self)

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.batch_latency_s, q)) if self.batch_latency_s else 0.0


class DeviceAgent:
    def __init__(self, client: ServerClient, cache: HeadCache, max_head_bytes: int = 256 << 20,
                 max_elements: int = tensors.DEFAULT_MAX_ELEMENTS, emulate_macs_per_second: float = 0.0,
                 backend: str = "auto", deadline_s: float = 0.0, max_head_memory: int = DEFAULT_MAX_MEMORY):
        self.client = client
        self.cache = cache
        self.max_head_bytes = max_head_bytes    # refuse heads larger than this, bytes
        self.max_elements = max_elements        # refuse tensors with more elements than this
        self.max_head_memory = max_head_memory  # refuse heads whose parameters cost more memory than this, bytes
        self.backend = backend                  # head executor: auto, numpy or torch (qpart.device.backends)
        # > 0: each batch's answer is of use only this many seconds after the server reads it
        # (InferRequest.deadline_s); a batch the server sheds raises DeadlineExceeded
        self.deadline_s = deadline_s
        # > 0: emulate a slower board by stretching each head run to macs / this rate (never faster than real)
        self.emulate_macs_per_second = emulate_macs_per_second
        self._host_macs_per_second = 0.0        # this machine's rate, to stretch encoding as well (emulation only)
        # set: classify gets raw uint8 images and preprocesses each batch, as the device's own timed work (the plan
        # prices it); None: the inputs come preprocessed
        self.preprocessing = None
        self._limits: spb.ServerLimits | None = None   # the server's, fetched once when first needed
        self._baseline = self._counters() if client is not None else None   # bytes before this agent's first call

    def run_head(self, executor: HeadExecutor, x: np.ndarray) -> list[np.ndarray]:
        started = time.perf_counter()
        out = executor.run(x)
        if self.emulate_macs_per_second > 0:
            time.sleep(pacing_seconds(executor.macs * len(x), self.emulate_macs_per_second,
                                      time.perf_counter() - started))
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
        crossing = [(a.name, tuple(a.sample_shape), a.bits, activation_params(a), *activation_coding(a))
                    for a in plan.activations]
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

        self.client.with_failover(send_unanswered, on_retry=count_resend)
        if len(answers) != len(x) and (stop is None or sorted(answers) != list(range(len(answers)))):
            raise Internal(f"the server answered {len(answers)} of {len(x)} inputs")
        report.inputs, report.batches = len(answers), -(-len(answers) // batch_size)
        if not answers:
            return np.zeros((0,), np.float32)
        return np.stack([answers[i] for i in range(len(answers))])

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
            batches.append(spb.TensorBatch(name=name, sample_shape=shape, bits=bits, coding=coding,
                                           data=tensors.encode_message(value, params, coding, quality)))
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
        """Emulating a board: work other than the head (preprocessing, encoding) takes as long as on the board too,
        as the planner prices it (its seconds here in this machine's MAC-equivalents, at the board's rate)."""
        if self.emulate_macs_per_second > 0:
            elapsed = time.perf_counter() - started
            time.sleep(pacing_seconds(elapsed * self.host_macs_per_second(), self.emulate_macs_per_second, elapsed))

    def host_macs_per_second(self) -> float:
        """This machine's MAC rate as the server measures its own (torch where installed, else numpy): the rate
        the planner converts encoding seconds to MAC-equivalents at."""
        if not self._host_macs_per_second:
            try:
                from qpart.common import torchnet
                self._host_macs_per_second = torchnet.mac_rate()
            except ImportError:
                self._host_macs_per_second = backends.mac_rate("numpy")
        return self._host_macs_per_second

    def _stream(self, plan, executor, x, pending, encoded, answers, report, batch_size, window, crossing, first_id,
                observe=None, stop=None):
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
                began = time.perf_counter()
                if start not in encoded:
                    encoded[start] = self.encode(executor, x[start:start + batch_size], crossing)
                    report.device_compute_s += time.perf_counter() - began
                sent_at[b] = began
                end = min(start + batch_size, len(x))
                if report.resent_streams:         # a stream opened again: these inputs are sent a second time
                    report.resent_inputs += end - start
                request = spb.InferRequest(plan_id=plan.plan_id if b == 0 else "", deadline_s=self.deadline_s,
                                           batch=spb.ActivationBatch(request_ids=range(first_id + start, first_id + end),
                                                                     tensors=encoded[start]))
                if observe is not None:
                    wire[b] = (time.perf_counter(), request.ByteSize())
                yield request

        last_answer = 0.0
        try:
            for b, response in enumerate(self.client.infer(requests(), timeout_s=self.stream_timeout(len(pending) * batch_size))):
                now = time.perf_counter()
                report.batch_latency_s.append(now - sent_at[b])
                slots.release()
                if observe is not None:
                    handed, up = wire[b]
                    began = max(handed, last_answer)
                    observe(LinkSample(time.time(), up, response.ByteSize(),
                                       now - began - response.server_compute_s - response.server_queue_s,
                                       overlapped=began > handed))
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

    def stream_timeout(self, inputs: int) -> float:
        return self.client.timeout_s + inputs * 0.5

    def _counters(self) -> tuple[dict, object]:
        """gRPC message bytes per RPC and the kernel's TCP byte counts so far."""
        return ({rpc: (b.sent, b.received) for rpc, b in self.client.bytes.items()},
                netstat.tcp_bytes(self.client.port))

    def model_info(self, name: str) -> spb.ModelInfo:
        return self.client.list_models(name)[0]

    def run(self, request: spb.PlanRequest, x: np.ndarray, labels: np.ndarray | None = None,
            batch_size: int = 1, window: int = 1) -> RunReport:
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


def pacing_seconds(macs: int, macs_per_second: float, elapsed_s: float) -> float:
    """How long to wait after a head run of `macs` MACs that took elapsed_s, for it to take as long as on a
    board of macs_per_second (0 when this machine was slower still: emulation never speeds anything up)."""
    return max(macs / macs_per_second - elapsed_s, 0.0)


def _message_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

"""Observability: Prometheus metrics and structured logs with request ids, for every RPC.

Logs are quiet by default: one line per RPC, written when it ends (logger qpart.rpc), at INFO for a plan
handed out and for any RPC that did not end OK, and at DEBUG for the rest (FetchHead, Infer, Probe,
ListModels...: an idle device's link probes alone would write a line every few seconds); `--log-level
DEBUG` shows every one. The figures timed at start and the drain at stop are logged at INFO by
qpart.server; the "listening" line goes to stdout.

Metrics (at http://HOST:PORT/metrics with --metrics-port):
  qpart_requests_total{rpc,code}          RPCs handled, by status code
  qpart_rpc_seconds{rpc}                  time to handle an RPC (a whole stream for streaming RPCs)
  qpart_infer_queue_seconds               time a batch waited for a compute slot
  qpart_infer_compute_seconds             time the tail ran for a batch
  qpart_infer_transfer_seconds            server time of a batch outside queue and compute (decode, answer)
  qpart_bytes_total{rpc,direction}        message bytes received and sent
  qpart_inferences_total{model}           inputs classified
  qpart_plans_total{model,policy,cut}     plans handed out
  qpart_plan_bits_total{model,tensor,bits}          bit widths in those plans (tensor: weights, activation)
  qpart_shed_total                        batches refused at capacity
  qpart_tail_runs_total{inputs}           tail runs of the dynamic batcher, by the inputs each ran (batching on)
"""
import collections
import contextvars
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from qpart.common import policies
from qpart.common.errors import QpartError
from qpart.server.planning.plans import PlanSigner, PlanSpec

REQUEST_ID = contextvars.ContextVar("request_id", default="-")
_CALL = contextvars.ContextVar("call", default=None)
_REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
log = logging.getLogger("qpart.rpc")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("qpart_requests", "RPCs handled, by method and status code", ["rpc", "code"], registry=r)
        self.latency = Histogram("qpart_rpc_seconds", "Time to handle an RPC (a whole stream for streaming RPCs)",
                                 ["rpc"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("qpart_infer_queue_seconds", "Time a batch waited for a compute slot",
                               buckets=LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("qpart_infer_compute_seconds", "Time the tail ran for a batch",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.transfer = Histogram("qpart_infer_transfer_seconds",
                                  "Server time of a batch outside queue and compute: decoding it, encoding the answer",
                                  buckets=LATENCY_BUCKETS, registry=r)
        self.bytes = Counter("qpart_bytes", "Message bytes, by RPC and direction", ["rpc", "direction"], registry=r)
        self.inferences = Counter("qpart_inferences", "Inputs classified", ["model"], registry=r)
        self.plans = Counter("qpart_plans", "Plans handed out", ["model", "policy", "cut"], registry=r)
        self.bits = Counter("qpart_plan_bits", "Bit widths in the plans handed out", ["model", "tensor", "bits"],
                            registry=r)
        self.shed = Counter("qpart_shed", "Batches refused because the server was at capacity", registry=r)
        self.streams = Gauge("qpart_open_streams", "Streaming RPCs in progress", registry=r)
        self._children: dict[tuple, object] = {}   # labelled series resolved once (labels() locks and checks)

    def child(self, metric, *labels):
        key = (metric._name, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def watch_batcher(self, batcher) -> None:
        """Export the batcher's tail runs by size (qpart_tail_runs_total{inputs}), read when scraped."""
        class Runs:
            def collect(self):
                family = CounterMetricFamily("qpart_tail_runs", "Tail runs of the dynamic batcher, by inputs run",
                                             labels=["inputs"])
                for size, runs in sorted(batcher.sizes.copy().items()):
                    family.add_metric([str(size)], runs)
                yield family
        self.registry.register(Runs())

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Start the /metrics endpoint; returns the HTTP server (call shutdown() to stop it)."""
        started = start_http_server(port, addr=host, registry=self.registry)
        return started[0] if isinstance(started, tuple) else started


@dataclass
class Call:
    rpc: str
    request_id: str
    started: float
    fields: dict = field(default_factory=dict)
    arrivals: collections.deque = field(default_factory=collections.deque)   # Infer: when each request arrived
    last_arrival: float = 0.0


class RpcObserver:
    """Gives each call a request id (the caller's x-request-id, or a fresh one), records its metrics and
    writes one structured log line when it ends."""

    STREAMING = ("FetchHead", "Infer", "ProbeStream")
    LOGGED_AT_INFO = ("Plan",)     # a plan handed out; other RPCs that end OK are logged at DEBUG

    def __init__(self, metrics: Metrics | None = None):
        self.metrics = metrics

    def begin(self, rpc: str, context) -> Call:
        given = dict(context.invocation_metadata() or ()).get(_REQUEST_ID_HEADER, "")
        request_id = given if isinstance(given, str) and _VALID_ID.match(given) else uuid.uuid4().hex[:16]
        REQUEST_ID.set(request_id)
        call = Call(rpc, request_id, time.perf_counter())
        _CALL.set(call)
        if self.metrics and rpc in self.STREAMING:
            self.metrics.streams.inc()
        return call

    def annotate(self, **fields) -> None:
        call = _CALL.get()
        if call is not None:
            call.fields.update(fields)

    def received(self, rpc: str, message) -> None:
        if self.metrics:
            self.metrics.child(self.metrics.bytes, rpc, "received").inc(message.ByteSize())
        call = _CALL.get()
        if call is None or rpc != "Infer":
            return
        call.last_arrival = time.perf_counter()
        call.arrivals.append(call.last_arrival)
        if "model" not in call.fields and message.plan_id:
            try:
                spec = PlanSpec.parse(PlanSigner.unverified_token(message.plan_id))   # for the log line only
                call.fields.update(model=spec.model, cut=spec.split.cut)
            except QpartError:
                pass   # the core refuses the plan id; the log line shows its status

    def sent(self, rpc: str, message) -> None:
        if self.metrics:
            self.metrics.child(self.metrics.bytes, rpc, "sent").inc(message.ByteSize())
        if rpc == "Plan":
            self._planned(message)
        elif rpc == "Infer":
            self._answered(message)

    def _planned(self, plan) -> None:
        policy = policies.from_enum(plan.policy)
        activation_bits = [a.bits for a in plan.activations]
        self.annotate(model=plan.model, policy=policy, cut=plan.cut, weight_bits=list(plan.weight_bits),
                      activation_bits=activation_bits)
        if self.metrics:
            self.metrics.plans.labels(plan.model, policy, str(plan.cut)).inc()
            for bits in plan.weight_bits:
                self.metrics.bits.labels(plan.model, "weights", str(bits)).inc()
            for bits in activation_bits:
                self.metrics.bits.labels(plan.model, "activation", str(bits)).inc()

    def _answered(self, response) -> None:
        call = _CALL.get()
        if call is None:
            return
        arrived = call.arrivals.popleft() if call.arrivals else time.perf_counter()
        call.fields["inputs"] = call.fields.get("inputs", 0) + len(response.results)
        if self.metrics:
            m = self.metrics
            m.queue.observe(response.server_queue_s)
            m.compute.observe(response.server_compute_s)
            m.transfer.observe(max(time.perf_counter() - arrived - response.server_queue_s
                                   - response.server_compute_s, 0.0))
            m.child(m.inferences, call.fields.get("model", "")).inc(len(response.results))

    def end(self, call: Call, code: str) -> None:
        seconds = time.perf_counter() - call.started
        if call.rpc == "Infer" and code == "RESOURCE_EXHAUSTED":
            call.fields["refused_after_ms"] = round((time.perf_counter() - call.last_arrival) * 1e3, 3)
            if self.metrics:
                self.metrics.shed.inc()
        if self.metrics:
            self.metrics.requests.labels(call.rpc, code).inc()
            self.metrics.latency.labels(call.rpc).observe(seconds)
            if call.rpc in self.STREAMING:
                self.metrics.streams.dec()
        log.log(logging.INFO if code != "OK" or call.rpc in self.LOGGED_AT_INFO else logging.DEBUG,
                "%s %s in %.1f ms", call.rpc, code, seconds * 1e3,
                extra={"request_id": call.request_id,
                       "fields": {"rpc": call.rpc, "code": code, "ms": round(seconds * 1e3, 3), **call.fields}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                 "request_id": getattr(record, "request_id", REQUEST_ID.get())}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestIdFilter(logging.Filter):
    """Stamps records with the request id of the call being handled in the emitting thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

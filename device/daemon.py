"""`qpart-device serve --config device.toml`: the device daemon.

It keeps a plan and a head per configured model and serves applications on the board through
qpart.v1.LocalAgent on a unix socket or a local address, with grpc.health.v1 beside it and,
optionally, Prometheus /metrics. How many inputs a head is priced for comes from what the daemon
observes: the request rate over `rate_window_s` times the plan's lifetime; a model is planned again
when its plan outlives `plan_lifetime_s` or that estimate moves by `replan_factor`. SIGTERM flips
health to NOT_SERVING and lets in-flight requests finish within `grace_s`.
"""
import collections
import dataclasses
import logging
import math
import pathlib
import threading
import time
from concurrent import futures

import grpc
import numpy as np

from qpart.common import profiles
from qpart.common.costmodel import LinkProfile
from qpart.common.errors import InvalidArgument, NotFound, QpartError
from qpart.common.rpc import lenient_deserializer, servicer_method
from qpart.device import backends, probe, telemetry
from qpart.device.client import ServerClient, TlsSettings
from qpart.device.linkwatch import MonitorSettings
from qpart.device.config import DeviceConfig
from qpart.device.split_client import SplitClient
from qpart.v1 import agent_pb2 as apb

log = logging.getLogger("qpart.device.daemon")
MAX_TENSOR_BYTES = 64 << 20


class ModelSession:
    """One model: its SplitClient (plan and head), the requests observed, and when to plan again."""

    def __init__(self, config: DeviceConfig, model: str, client: SplitClient):
        self.config, self.model, self.client = config, model, client
        self.arrivals: collections.deque = collections.deque()
        self.planned_at, self.plans, self.inputs, self.expected = 0.0, 0, 0, config.initial_reuse
        self.planned_unix, self.started = 0.0, None      # started: the first plan, when observing began
        self._lock = threading.Lock()

    def rate(self, now: float) -> float:
        """Requests per second over the observation window (0 before the first)."""
        while self.arrivals and self.arrivals[0] < now - self.config.rate_window_s:
            self.arrivals.popleft()
        if self.started is None:
            return 0.0
        span = min(self.config.rate_window_s, max(now - self.started, 1e-3))
        return len(self.arrivals) / span

    def expected_reuse(self, now: float) -> int:
        observed = self.rate(now) * self.config.plan_lifetime_s
        return max(1, round(observed)) if self.arrivals else self.config.initial_reuse

    def plan(self, now: float, reason: str) -> None:
        self.expected = self.expected_reuse(now)
        self.client.replan(expected_inputs=self.expected)
        self.planned_at, self.planned_unix, self.inputs = now, time.time(), 0
        self.started = now if self.started is None else self.started
        self.plans += 1
        telemetry.METRICS.replans.inc((self.model, reason))
        log.info("planned %s (%s): cut %d, head priced for %d inputs", self.model, reason, self.client.plan.cut,
                 self.expected)

    def observe(self, now: float) -> None:
        """Note a request; plan again when the plan has aged out or the expected reuse moved enough."""
        with self._lock:
            self.arrivals.append(now)
            if now - self.planned_at > self.config.plan_lifetime_s:
                self.plan(now, "lifetime")
            else:
                ratio = self.expected_reuse(now) / self.expected
                if len(self.arrivals) >= 10 and max(ratio, 1 / ratio) >= self.config.replan_factor:
                    self.plan(now, "rate")

    def classified(self) -> None:
        with self._lock:
            self.inputs += 1

    def status(self, now: float) -> apb.ModelStatus:
        with self._lock:
            status = apb.ModelStatus(model=self.model, planned_at=self.planned_unix, inputs=self.inputs,
                                     request_rate=self.rate(now), expected_reuse=self.expected, plans=self.plans,
                                     backend=self.client.backend)
            status.plan.CopyFrom(self.client.plan)
        status.plan.ClearField("candidates")
        return status


def _tensor(msg: apb.Tensor, what: str) -> np.ndarray:
    shape = [int(d) for d in msg.shape]
    if not shape or any(d < 1 for d in shape) or math.prod(shape) * 4 > MAX_TENSOR_BYTES:
        raise InvalidArgument(f"the {what} shape {shape[:8]} is empty or too large")
    if len(msg.data) != 4 * math.prod(shape):
        raise InvalidArgument(f"a {what} of shape {shape} takes {4 * math.prod(shape)} bytes, got {len(msg.data)}")
    return np.frombuffer(msg.data, "<f4").astype(np.float32).reshape(shape)


class LocalAgentServicer:
    def __init__(self, daemon: "DeviceDaemon"):
        self.daemon = daemon

    @servicer_method
    def Classify(self, request: apb.ClassifyRequest, context):
        started = time.perf_counter()
        model = request.model or self.daemon.config.models[0]
        label = model if model in self.daemon.sessions else "(unknown)"     # bounded label values
        try:
            response = self._classify(request, started)
        except QpartError as e:
            telemetry.METRICS.requests.inc((label, e.status))
            raise
        telemetry.METRICS.requests.inc((label, "OK"))
        telemetry.METRICS.latency.observe(response.seconds)
        return response

    def _classify(self, request: apb.ClassifyRequest, started: float) -> apb.ClassifyResponse:
        session = self.daemon.session(request.model)
        kind = request.WhichOneof("input")
        if kind is None:
            raise InvalidArgument("give an input: image bytes, pixels or the input tensor")
        if kind == "pixels":
            x = _tensor(request.pixels, "pixels")
            if (x < 0).any() or (x > 255).any():
                raise InvalidArgument("pixels must lie in 0..255")
            x = x.astype(np.uint8)
        else:
            x = request.image if kind == "image" else _tensor(request.tensor, "tensor")
        session.observe(time.monotonic())
        result = session.client.classify(x)
        session.classified()
        plan = session.client.plan
        return apb.ClassifyResponse(label=result.label, class_name=result.class_name, scores=result.scores.tolist(),
                                    cut=plan.cut, num_nodes=plan.num_nodes, seconds=time.perf_counter() - started)

    @servicer_method
    def Status(self, request: apb.StatusRequest, context):
        now = time.monotonic()
        return apb.StatusResponse(models=[s.status(now) for s in self.daemon.sessions.values()],
                                  macs_per_second=self.daemon.device.macs_per_second,
                                  uplink_bps=self.daemon.link.uplink_bps, rtt_s=self.daemon.link.rtt_s)


class DeviceDaemon:
    def __init__(self, config: DeviceConfig):
        self.config = config
        token = pathlib.Path(config.token_file).read_text().strip() if config.token_file else None
        self.tls = (TlsSettings(*(pathlib.Path(p) if p else None for p in (config.tls_ca, config.tls_cert,
                                                                           config.tls_key)), config.tls_server_name or None)
                    if config.tls_ca or config.tls_cert else None)
        self.device = profiles.load_device(config.profile)
        if config.measure_compute:
            names = backends.installed() if config.backend == "auto" else [config.backend]
            self.device = dataclasses.replace(self.device, macs_per_second=max(backends.mac_rate(n) for n in names))
        self.link = self._link(token)
        self.sessions = {m: ModelSession(config, m, SplitClient(
            config.server, m, config.budget, self.device, link=self.link, policy=config.policy, token=token,
            tls=self.tls, cache_dir=config.cache_dir, backend=config.backend, measure_compute=False,
            timeout_s=config.timeout_s, retries=config.retries, expected_inputs=config.initial_reuse,
            deadline_s=config.deadline_ms / 1e3,
            adapt=MonitorSettings(probe_interval_s=config.link_probe_s) if config.follow_link and not config.rate_mbps
            else False))
            for m in config.models}
        for session in self.sessions.values():
            session.plan(time.monotonic(), "start")

    def _link(self, token) -> LinkProfile:
        if self.config.rate_mbps:
            return LinkProfile(rate_bps=self.config.rate_mbps * 1e6, rtt_s=self.config.rtt_ms / 1e3)
        client = ServerClient(self.config.server, timeout_s=self.config.timeout_s, token=token, tls=self.tls,
                              retries=self.config.retries)
        try:
            return probe.measure_link(client)
        finally:
            client.close()

    def session(self, model: str) -> ModelSession:
        model = model or self.config.models[0]
        if model not in self.sessions:
            raise NotFound(f"this daemon serves {', '.join(self.sessions)}, not {model[:64]!r}")
        return self.sessions[model]

    def close(self) -> None:
        for session in self.sessions.values():
            session.client.close()


class RunningDaemon:
    """The daemon's gRPC server (LocalAgent and health) and metrics endpoint, started."""

    def __init__(self, config: DeviceConfig, daemon: DeviceDaemon | None = None):
        self.config, self.daemon = config, daemon or DeviceDaemon(config)
        self.health = telemetry.Health()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        servicer = LocalAgentServicer(self.daemon)
        handlers = {m.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name), request_deserializer=lenient_deserializer(getattr(apb, m.input_type.name)),
            response_serializer=getattr(apb, m.output_type.name).SerializeToString)
            for m in apb.DESCRIPTOR.services_by_name["LocalAgent"].methods}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("qpart.v1.LocalAgent", handlers),
                                              self.health.handler()))
        if config.listen.startswith("unix:"):
            pathlib.Path(config.listen[5:]).parent.mkdir(parents=True, exist_ok=True)
        elif not config.listen.startswith(("127.", "localhost:", "[::1]:")):
            raise InvalidArgument(f"listen {config.listen!r}: the daemon listens on unix:PATH or a loopback address")
        self.port = self.server.add_insecure_port(config.listen)
        if self.port == 0:
            raise InvalidArgument(f"cannot listen on {config.listen}")
        self.metrics = telemetry.serve(config.metrics_port, config.metrics_host) if config.metrics_port else None
        self.server.start()
        self.health.set(True)

    def stop(self, grace: float | None = None) -> None:
        self.health.set(False)
        self.server.stop(self.config.grace_s if grace is None else grace).wait()
        if self.metrics is not None:
            self.metrics.shutdown()
        self.daemon.close()


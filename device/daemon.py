"""`qpart-device serve --config device.toml`: the device daemon.

It keeps a plan and a head per configured model and serves applications on the board through
qpart.v1.LocalAgent on a unix socket or a local address, with grpc.health.v1 beside it and,
optionally, Prometheus /metrics. How many inputs a head is priced for comes from what the daemon
observes: the request rate over `rate_window_s` times the plan's lifetime; a model is planned again
when its plan outlives `plan_lifetime_s` or that estimate moves by `replan_factor`. SIGTERM flips
health to NOT_SERVING and lets in-flight requests finish within `grace_s`.

When the server cannot be reached at start, the daemon serves anyway: Status says WAITING (the last
failure, the attempts, when the next is due) and Classify answers UNAVAILABLE, while it tries again
with a backoff doubling from `start_retry_s` up to `start_retry_max_s`; once every model is planned,
Status says READY and health SERVING. Inputs pass the input guard the server applies too
(qpart.common.guard): image files are checked from their header before a pixel is decoded, at most
IMAGES_AT_ONCE of them decoded and preprocessed at once; tensors for their shape and finiteness.
Heads are bounded by what they decode to (qpart.device.head, `max_head_memory_mb`).
"""
import collections
import dataclasses
import logging
import pathlib
import queue
import random
import threading
import time
from concurrent import futures

import grpc

from qpart.common import guard, profiles
from qpart.common.costmodel import LinkProfile
from qpart.common.errors import (DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, QpartError,
                                 Unavailable)
from qpart.common.rpc import lenient_deserializer, servicer_method
from qpart.device import compute, head, probe, telemetry
from qpart.device.client import ServerClient, TlsSettings
from qpart.device.linkwatch import MonitorSettings
from qpart.device.config import DeviceConfig
from qpart.device.split_client import SplitClient
from qpart.v1 import agent_pb2 as apb

log = logging.getLogger("qpart.device.daemon")
MAX_TENSOR_BYTES = 64 << 20     # a pixels or tensor input, as float32 bytes
MAX_PROMPT_BYTES = 4096         # a Generate prompt, UTF-8 bytes
IMAGES_AT_ONCE = 2              # image and pixel inputs decoded and preprocessed at once; others wait their turn


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


class LocalAgentServicer:
    def __init__(self, daemon: "DeviceDaemon"):
        self.daemon = daemon

    @servicer_method
    def Classify(self, request: apb.ClassifyRequest, context):
        started = time.perf_counter()
        model = request.model or self.daemon.config.models[0]
        label = model if model in self.daemon.config.models else "(unknown)"     # bounded label values
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
        values = MAX_TENSOR_BYTES // 4
        if kind == "tensor":
            x = guard.float_tensor(request.tensor.shape, request.tensor.data, "the tensor",
                                   session.client.info.input.shape, values)
        else:
            with self.daemon.decoding:        # what an image costs here is bounded by the guard's limits
                if kind == "image":
                    pixels = guard.decode_image(request.image)
                else:
                    pixels = guard.check_pixels(guard.float_tensor(request.pixels.shape, request.pixels.data,
                                                                   "the pixels", max_elements=values))
                x = session.client.inputs(pixels)[0][0]            # the model's preprocessing: [C, H, W]
        session.observe(time.monotonic())
        result = session.client.classify(x)
        session.classified()
        plan = session.client.plan
        return apb.ClassifyResponse(label=result.label, class_name=result.class_name, scores=result.scores.tolist(),
                                    cut=plan.cut, num_nodes=plan.num_nodes, seconds=time.perf_counter() - started)

    @servicer_method
    def Generate(self, request: apb.GenerateTextRequest, context):
        started = time.perf_counter()
        model = request.model or self.daemon.config.models[0]
        label = model if model in self.daemon.config.models else "(unknown)"
        try:
            yield from self._generate(request, started)
        except QpartError as e:
            telemetry.METRICS.requests.inc((label, e.status))
            raise
        telemetry.METRICS.requests.inc((label, "OK"))
        telemetry.METRICS.latency.observe(time.perf_counter() - started)

    def _generate(self, request: apb.GenerateTextRequest, started: float):
        session = self.daemon.session(request.model)
        info = session.client.info
        if info.task != "language-model":
            raise FailedPrecondition(f"model {info.name!r} is not a language model; use Classify")
        if not 1 <= len(request.prompt.encode("utf-8")) <= MAX_PROMPT_BYTES:
            raise InvalidArgument(f"the prompt must be 1 to {MAX_PROMPT_BYTES} bytes of UTF-8 text")
        session.observe(time.monotonic())
        tokens: queue.Queue = queue.Queue()
        done: dict = {}

        def run():
            try:
                done["text"] = session.client.generate(
                    request.prompt, request.max_new_tokens or 64, request.temperature, request.seed,
                    stop_at_end=not request.through_end, on_token=tokens.put)
            except BaseException as e:        # raised again in the RPC's thread
                done["error"] = e
            tokens.put(None)
        threading.Thread(target=run, name="qpart-generate", daemon=True).start()
        first = 0.0
        for token in iter(tokens.get, None):
            first = first or time.perf_counter() - started
            yield apb.GenerateTextResponse(token=token)
        if "error" in done:
            raise done["error"]
        out, plan = done["text"], session.client.plan
        session.classified()
        yield apb.GenerateTextResponse(
            done=True, text=out.text, tokens=len(out.tokens), cut=plan.cut, num_nodes=plan.num_nodes,
            first_token_s=first,
            seconds=time.perf_counter() - started, resent_contexts=out.generated.resent_contexts)

    @servicer_method
    def Status(self, request: apb.StatusRequest, context):
        now, daemon = time.monotonic(), self.daemon
        sessions, link, waiting = daemon.sessions, daemon.link, daemon.state == apb.DAEMON_WAITING
        return apb.StatusResponse(
            models=[sessions[m].status(now) if m in sessions else apb.ModelStatus(model=m) for m in daemon.config.models],
            macs_per_second=daemon.device.macs_per_second, uplink_bps=link.uplink_bps if link else 0.0,
            rtt_s=link.rtt_s if link else 0.0, state=daemon.state, attempts=daemon.attempts,
            waiting_for=daemon.waiting_for if waiting else "",
            next_attempt_s=max(daemon.next_attempt - now, 0.0) if waiting else 0.0)


class DeviceDaemon:
    def __init__(self, config: DeviceConfig):
        self.config = config
        self.token = pathlib.Path(config.token_file).read_text().strip() if config.token_file else None
        self.tls = (TlsSettings(*(pathlib.Path(p) if p else None for p in (config.tls_ca, config.tls_cert,
                                                                           config.tls_key)), config.tls_server_name or None)
                    if config.tls_ca or config.tls_cert else None)
        self.device = profiles.load_device(config.profile)
        self.backend = config.backend
        if config.measure_compute:       # auto resolves to the fastest backend, which runs the heads and prices plans
            found = compute.measure(config.backend)
            self.backend = found.backend
            log.info("measured compute %s", found.describe())
            if found.warning:
                log.warning("%s; plans are priced with the profile's rate", found.warning)
            if found.macs_per_second:
                self.device = dataclasses.replace(self.device, macs_per_second=found.macs_per_second,
                                                  seconds_per_node=found.seconds_per_node)
        self.max_head_memory = (int(config.max_head_memory_mb * 2**20) if config.max_head_memory_mb
                                else head.memory_bound(self.device.memory_bytes))
        self.decoding = threading.BoundedSemaphore(IMAGES_AT_ONCE)
        self.link: LinkProfile | None = None
        self.sessions: dict[str, ModelSession] = {}
        self.state, self.attempts, self.waiting_for, self.next_attempt = apb.DAEMON_WAITING, 0, "", 0.0
        try:
            self.connect()
        except (Unavailable, DeadlineExceeded) as e:          # anything else is a configuration to mend: raised
            self.waiting_for = f"{config.server}: {e.status}: {str(e)[:300]}"
            log.warning("cannot reach the server (%s); serving Status and trying again", self.waiting_for)

    def _client(self, model: str, link: LinkProfile) -> SplitClient:
        config = self.config
        client = SplitClient(
            config.server, model, config.budget, self.device, link=link, policy=config.policy, token=self.token,
            tls=self.tls, cache_dir=config.cache_dir, backend=self.backend, measure_compute=False,
            timeout_s=config.timeout_s, retries=config.retries, expected_inputs=config.initial_reuse,
            deadline_s=config.deadline_ms / 1e3,
            adapt=MonitorSettings(probe_interval_s=config.link_probe_s) if config.follow_link and not config.rate_mbps
            else False)
        client.agent.max_head_memory = self.max_head_memory
        return client

    def connect(self) -> None:
        """One attempt to reach the server: measure the link (unless configured) and plan every model, on new
        channels; the daemon turns READY only when all of it succeeded, and raises what the server answered."""
        self.attempts += 1
        link = self.link or self._link(self.token)
        sessions = {m: ModelSession(self.config, m, self._client(m, link)) for m in self.config.models}
        try:
            for session in sessions.values():
                session.plan(time.monotonic(), "start")
        except BaseException:
            for session in sessions.values():
                session.client.close()
            raise
        self.link, self.sessions, self.state = link, sessions, apb.DAEMON_READY

    def wait_for_server(self, stop: threading.Event, on_ready) -> None:
        """Try again until connected (then on_ready()) or stopped: the waits double from start_retry_s up to
        start_retry_max_s, each drawn from its upper half so that a fleet of boards does not return at once."""
        delay = self.config.start_retry_s
        while self.state != apb.DAEMON_READY:
            wait = delay * random.uniform(0.5, 1.0)
            self.next_attempt = time.monotonic() + wait
            if stop.wait(wait):
                return
            try:
                self.connect()
            except Exception as e:             # QpartError from the server; anything else is logged, and tried again
                self.waiting_for = f"{self.config.server}: {getattr(e, 'status', type(e).__name__)}: {str(e)[:300]}"
                log.warning("still waiting for the server after %d attempts: %s", self.attempts, self.waiting_for,
                            exc_info=not isinstance(e, QpartError))
                delay = min(2 * delay, self.config.start_retry_max_s)
        log.info("reached the server after %d attempt(s)", self.attempts)
        on_ready()

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
        if model not in self.config.models:
            raise NotFound(f"this daemon serves {', '.join(self.config.models)}, not {model[:64]!r}")
        if self.state != apb.DAEMON_READY:
            raise Unavailable(f"the daemon is waiting for the server ({self.waiting_for}); attempt {self.attempts + 1} "
                              f"in {max(self.next_attempt - time.monotonic(), 0):.1f} s")
        return self.sessions[model]

    def close(self) -> None:
        for session in self.sessions.values():
            session.client.close()


class RunningDaemon:
    """The daemon's gRPC server (LocalAgent and health) and metrics endpoint, started."""

    def __init__(self, config: DeviceConfig, daemon: DeviceDaemon | None = None):
        owned = daemon is None                 # a daemon given by the caller stays the caller's to close
        self.config, self.daemon = config, daemon or DeviceDaemon(config)
        self.health = telemetry.Health()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.metrics, self._stopping, self._waiter = None, threading.Event(), None
        try:
            self._start(config)
        except BaseException:              # a later step failed: what was built does not outlive the error
            self.server.stop(0).wait()
            if self.metrics is not None:
                self.metrics.shutdown()
            if owned:
                self.daemon.close()
            raise

    def _start(self, config: DeviceConfig) -> None:
        servicer = LocalAgentServicer(self.daemon)
        handlers = {m.name: (grpc.unary_stream_rpc_method_handler if m.server_streaming else
                             grpc.unary_unary_rpc_method_handler)(
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
        if self.daemon.state == apb.DAEMON_READY:
            self.health.set(True)
        else:                                   # SERVING once the server is reached
            self._waiter = threading.Thread(target=self.daemon.wait_for_server, args=(
                self._stopping, lambda: self.health.set(not self._stopping.is_set())), daemon=True,
                name="qpart-wait-for-server")
            self._waiter.start()

    def stop(self, grace: float | None = None) -> None:
        self._stopping.set()
        if self._waiter is not None:        # an attempt under way ends within the client's timeout; not waited for
            self._waiter.join(timeout=1.0)
        self.health.set(False)
        self.server.stop(self.config.grace_s if grace is None else grace).wait()
        if self.metrics is not None:
            self.metrics.shutdown()
        self.daemon.close()


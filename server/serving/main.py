"""qpart-server: serve a model repository over gRPC.

    qpart-server --models ./model-repo --port 50051

Besides qpart.v1.SplitInference it serves grpc.health.v1 (overall and per service) and server
reflection. SIGTERM or SIGINT flips health to NOT_SERVING, lets in-flight RPCs finish within the
grace period and exits with status 0; a stop still unfinished 10 s after the notice and grace have
passed ends the process with status 1 and every thread's stack on stderr. Every option is a field of
ServerSettings (qpart.server.serving.settings).
"""
import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qpart.common import config, runtime
from qpart.common.errors import FailedPrecondition, InvalidArgument, QpartError
from qpart.server.serving.core import QpartCore
from qpart.server.serving.observe import JsonFormatter, Metrics, RpcObserver, configure_logging
from qpart.server.serving import aio
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2

log = logging.getLogger("qpart.server")
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["SplitInference"].full_name
STOP_MARGIN_S = 10.0   # s a stop may run past the drain notice and grace before the process ends with status 1
PLAINTEXT_TOKENS = ("INSECURE: device tokens (--devices) over plaintext on %s: every token crosses the network "
                    "readable by anyone on the path, who can then use it; serve TLS (--tls-cert, --tls-key)")


class RunningServer:
    """A started gRPC server with its health servicer; `port` is the bound port. The server is grpc.aio on an
    event loop of its own thread (qpart.server.serving.aio); the caller's thread is free."""

    def __init__(self, settings: ServerSettings, core: QpartCore | None = None):
        self.settings = settings
        credentials = server_credentials(settings)
        self.core = core or QpartCore(settings)
        self.server = self.metrics_server = None
        self._stopped = threading.Event()
        self.loop = aio.LoopThread()
        self.pool = futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="qpart")
        try:
            self._start(settings, credentials)
        except BaseException:              # a later step failed: nothing started here outlives the error
            self._release()
            raise

    def _release(self) -> None:
        if self.server is not None:
            self.loop.call(self.server.stop(0))
        self.core.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self.loop.close()
        # grpc's teardown of the server (its completion queue, its poller thread) runs here, on this thread, once
        # the loop's thread has ended: never on the loop's thread, whichever thread dropped the last reference
        self.server = None
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, settings: ServerSettings, credentials) -> None:
        if settings.devices is not None and credentials is None:
            log.warning(PLAINTEXT_TOKENS, settings.host)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        if settings.measure_speed:
            self.core.measure_speed()
        if settings.warm_heads:
            log.info("built %d catalog heads", self.core.warm_heads())
        options = [("grpc.max_receive_message_length", settings.max_message_bytes),
                   ("grpc.max_send_message_length", settings.max_message_bytes),
                   # ping idle connections, so that a device that vanished lets its streams go
                   ("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000),
                   ("grpc.keepalive_permit_without_calls", 1),
                   ("grpc.http2.min_ping_interval_without_data_ms", 10_000)]
        if settings.reuse_port:                 # --processes: siblings bind the same port
            options.append(("grpc.so_reuseport", 1))
        if settings.max_connection_age_s > 0:   # in-flight calls get the drain grace to finish
            options += [("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(settings.grace_s * 1000))]
        self.metrics = Metrics()
        if self.core.batcher is not None:
            self.metrics.watch_batcher(self.core.batcher)
        self.loop.call(self._serve(settings, credentials, options))
        self.metrics_server = self.metrics.serve(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _serve(self, settings: ServerSettings, credentials, options: list) -> None:
        self.server = grpc.aio.server(options=options,
                                      maximum_concurrent_rpcs=settings.max_streams or max(settings.workers - 8, 1))
        aio.add_to_server(aio.AioServicer(self.core, RpcObserver(self.metrics), self.pool), self.server, self.pool)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        address = f"{settings.host}:{settings.port}"
        try:
            self.port = (self.server.add_secure_port(address, credentials) if credentials
                         else self.server.add_insecure_port(address))
        except RuntimeError:              # grpc.aio raises where the thread-pool server returned 0
            self.port = 0
        if self.port == 0:
            raise FailedPrecondition(f"cannot listen on {address}: the address is taken or not local")
        await self.server.start()

    def _set_health(self, status) -> None:
        for service in ("", SERVICE_NAME):
            self.loop.call(self.health.set(service, status))

    def stop(self, grace: float | None = None, notice: float | None = None) -> None:
        """Health flips to NOT_SERVING and the server keeps serving for `notice` seconds (load balancers
        stop sending work); then new RPCs are refused and in-flight ones get `grace` seconds to finish."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        time.sleep(self.settings.drain_notice_s if notice is None else notice)
        grace = self.settings.grace_s if grace is None else grace
        self.core.drain(grace)
        self.loop.call(self.server.stop(grace))
        try:
            self._release()
        finally:
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until stop() has stopped the server (or `timeout` seconds); whether it has."""
        return self._stopped.wait(timeout)


def _read(path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read the {what} {path}: {e.strerror or e}") from None


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mutual TLS (client certificates required) with a client CA."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise InvalidArgument("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise InvalidArgument("TLS needs both --tls-cert and --tls-key")
    client_ca = _read(settings.tls_client_ca, "client CA certificate (--tls-client-ca)") if settings.tls_client_ca else None
    key, cert = _read(settings.tls_key, "TLS key (--tls-key)"), _read(settings.tls_cert, "TLS certificate (--tls-cert)")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def parse_args(argv=None) -> ServerSettings:
    parser = argparse.ArgumentParser(prog="qpart-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_arguments(parser, ServerSettings)
    return config.from_args(ServerSettings, parser.parse_args(argv))


def main(argv=None) -> int:
    settings = parse_args(argv)
    configure_logging(settings.log_level, settings.json_logs)
    if settings.processes > 1:
        from qpart.server.serving import processes
        return processes.serve(settings, sys.argv[1:] if argv is None else list(argv))
    try:
        running = RunningServer(settings)
    except QpartError as e:
        print(f"qpart-server: {e.status}: {e}", file=sys.stderr)
        return 2
    runtime.freeze_long_lived()
    names = ", ".join(running.core.repository.names()) or "no models"
    security = ("mutual TLS" if settings.tls_client_ca else "TLS" if settings.tls_cert else "plaintext") + (
        ", device tokens" if settings.devices else "")
    metrics = f", metrics on {settings.metrics_host}:{settings.metrics_port}" if settings.metrics_port else ""
    listening = f"qpart-server listening on {settings.host}:{running.port} serving {names} ({security}{metrics})"
    if settings.json_logs:      # stdout carries JSON lines only, like the logs
        record = logging.LogRecord("qpart.server", logging.INFO, __file__, 0, listening, None, None)
        record.fields = {"event": "listening", "host": settings.host, "port": running.port}
        listening = JsonFormatter().format(record)
    stopping = threading.Event()

    def on_signal(signum, _frame):
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: draining for up to %.1f s", signum, settings.grace_s)
            # A stop that cannot finish (the drain, grpc's teardown, the interpreter's exit) still ends the process
            # in bounded time: every thread's stack goes to stderr and the exit status is 1.
            faulthandler.dump_traceback_later(settings.drain_notice_s + settings.grace_s + STOP_MARGIN_S, exit=True)
            threading.Thread(target=running.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(listening, flush=True)     # after the handlers: a SIGTERM from then on drains
    while not running.wait(0.5):    # timed: a signal another thread took runs its handler here within 0.5 s
        pass
    # Stopped: drained, released, logs written. The interpreter's own teardown (grpc's C core freed at a time and
    # on a thread its garbage collector picks) has nothing left to do for this process, and is skipped.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

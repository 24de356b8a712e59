"""qpart-server: serve a model repository over gRPC.

    qpart-server --models ./model-repo --port 50051

Besides qpart.v1.SplitInference it serves grpc.health.v1 (overall and per service) and server
reflection. SIGTERM or SIGINT flips health to NOT_SERVING, lets in-flight RPCs finish within the
grace period and exits.
"""
import argparse
import logging
import pathlib
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qpart.common import runtime
from qpart.common.costmodel import ServerProfile
from qpart.server.core import QpartCore
from qpart.server.observe import Metrics, RpcObserver, configure_logging
from qpart.server.servicer import SplitInferenceServicer, add_to_server
from qpart.server.settings import ServerSettings
from qpart.v1 import service_pb2

log = logging.getLogger("qpart.server")
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["SplitInference"].full_name


class RunningServer:
    """A started gRPC server with its health servicer; `port` is the bound port."""

    def __init__(self, settings: ServerSettings, core: QpartCore | None = None):
        self.settings = settings
        self.core = core or QpartCore(settings)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        if settings.measure_speed:
            self.core.measure_speed()
        if settings.warm_heads:
            log.info("built %d catalog heads", self.core.warm_heads())
        options = [("grpc.max_receive_message_length", settings.max_message_bytes),
                   ("grpc.max_send_message_length", settings.max_message_bytes)]
        self.metrics = Metrics()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.workers), options=options,
                                  maximum_concurrent_rpcs=settings.max_streams or max(settings.workers - 8, 1))
        add_to_server(SplitInferenceServicer(self.core, RpcObserver(self.metrics)), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        address = f"{settings.host}:{settings.port}"
        credentials = server_credentials(settings)
        self.port = (self.server.add_secure_port(address, credentials) if credentials
                     else self.server.add_insecure_port(address))
        if self.port == 0:
            raise SystemExit(f"cannot listen on {settings.host}:{settings.port}")
        self.metrics_server = self.metrics.serve(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
        self.server.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def _set_health(self, status) -> None:
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def stop(self, grace: float = 5.0, notice: float | None = None) -> None:
        """Health flips to NOT_SERVING and the server keeps serving for `notice` seconds (load balancers
        stop sending work); then new RPCs are refused and in-flight ones get `grace` seconds to finish."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        time.sleep(self.settings.drain_notice_s if notice is None else notice)
        self.server.stop(grace).wait()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()

    def wait(self) -> None:
        self.server.wait_for_termination()


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mutual TLS (client certificates required) with a client CA."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise SystemExit("TLS needs both --tls-cert and --tls-key")
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


def parse_args(argv=None) -> tuple[ServerSettings, argparse.Namespace]:
    defaults = ServerSettings(models=pathlib.Path("model-repo"))
    parser = argparse.ArgumentParser(prog="qpart-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, required=True, help="model repository directory")
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port, 0 for any free one (default %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="concurrent RPC handler threads")
    parser.add_argument("--max-message-mb", type=float, default=defaults.max_message_bytes / 2**20,
                        help="largest gRPC message either way, MiB (default %(default)s)")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch, help="most inputs per activation batch")
    parser.add_argument("--torch-threads", type=int, default=0, help="intra-op threads for the tail (0: torch default)")
    parser.add_argument("--price-per-second", type=float, default=defaults.profile.price_per_second,
                        help="server cost μ per busy second, used by the planner")
    parser.add_argument("--server-macs-per-second", type=float, default=0.0,
                        help="measured tail MAC rate for the planner (0: Table II's 3 GHz at 1.25 cycles/MAC)")
    parser.add_argument("--no-measure-speed", action="store_true",
                        help="price the tail with --server-macs-per-second (or Table II) instead of timing the tail "
                             "from each cut at start-up (after 10 ms idle, as a device's next input arrives)")
    parser.add_argument("--cold-heads", action="store_true",
                        help="build heads on first request instead of building every catalog head at start-up")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight RPCs get at shutdown")
    parser.add_argument("--drain-notice", type=float, default=defaults.drain_notice_s,
                        help="at shutdown, seconds health reports NOT_SERVING before new RPCs are refused")
    g = parser.add_argument_group("security")
    g.add_argument("--tls-cert", type=pathlib.Path, help="server certificate chain (PEM): serve TLS only")
    g.add_argument("--tls-key", type=pathlib.Path, help="the server certificate's private key (PEM)")
    g.add_argument("--tls-client-ca", type=pathlib.Path,
                   help="CA certificate (PEM) of device certificates: mutual TLS, a device certificate is required")
    g.add_argument("--devices", type=pathlib.Path,
                   help="devices file (TOML): bearer tokens (as SHA-256), allowed models, certificate names; "
                        "every RPC must then carry `authorization: Bearer <token>`")
    g = parser.add_argument_group("load")
    g.add_argument("--compute-slots", type=int, default=0, help="batches running the tail at once (0: CPU cores)")
    g.add_argument("--max-queued", type=int, default=defaults.max_queued,
                   help="batches waiting for a slot; more are refused with RESOURCE_EXHAUSTED at once")
    g.add_argument("--max-streams", type=int, default=0,
                   help="concurrent RPCs before RESOURCE_EXHAUSTED (0: --workers minus 8)")
    g = parser.add_argument_group("observability")
    g.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0: off)")
    g.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint")
    g.add_argument("--json-logs", action="store_true", help="one JSON object per log line, with request ids")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    settings = ServerSettings(
        models=args.models, host=args.host, port=args.port, workers=args.workers,
        max_message_bytes=int(args.max_message_mb * 2**20), max_batch=args.max_batch, torch_threads=args.torch_threads,
        measure_speed=not args.no_measure_speed, warm_heads=not args.cold_heads, drain_notice_s=args.drain_notice,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, devices=args.devices,
        compute_slots=args.compute_slots, max_queued=args.max_queued, max_streams=args.max_streams,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host, json_logs=args.json_logs,
        profile=ServerProfile(price_per_second=args.price_per_second, macs_per_second=args.server_macs_per_second))
    return settings, args


def main(argv=None) -> int:
    settings, args = parse_args(argv)
    configure_logging(args.log_level, settings.json_logs)
    running = RunningServer(settings)
    runtime.freeze_long_lived()
    names = ", ".join(running.core.repository.names()) or "no models"
    security = ("mutual TLS" if settings.tls_client_ca else "TLS" if settings.tls_cert else "plaintext") + (
        ", device tokens" if settings.devices else "")
    metrics = f", metrics on {settings.metrics_host}:{settings.metrics_port}" if settings.metrics_port else ""
    print(f"qpart-server listening on {settings.host}:{running.port} serving {names} ({security}{metrics})", flush=True)
    stopping = threading.Event()

    def on_signal(signum, _frame):
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: draining for up to %.1f s", signum, args.grace)
            threading.Thread(target=running.stop, args=(args.grace,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

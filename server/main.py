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
from concurrent import futures

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qpart.common.costmodel import ServerProfile
from qpart.server.core import QpartCore
from qpart.server.servicer import SplitInferenceServicer
from qpart.server.settings import ServerSettings
from qpart.v1 import service_pb2, service_pb2_grpc

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
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.workers), options=options)
        service_pb2_grpc.add_SplitInferenceServicer_to_server(SplitInferenceServicer(self.core), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        self.port = self.server.add_insecure_port(f"{settings.host}:{settings.port}")
        if self.port == 0:
            raise SystemExit(f"cannot listen on {settings.host}:{settings.port}")
        self.server.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def _set_health(self, status) -> None:
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def stop(self, grace: float = 5.0) -> None:
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


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
                        help="price the tail with --server-macs-per-second (or Table II) instead of timing each layer "
                             "at start-up")
    parser.add_argument("--cold-heads", action="store_true",
                        help="build heads on first request instead of building every catalog head at start-up")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight RPCs get at shutdown")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    settings = ServerSettings(
        models=args.models, host=args.host, port=args.port, workers=args.workers,
        max_message_bytes=int(args.max_message_mb * 2**20), max_batch=args.max_batch, torch_threads=args.torch_threads,
        measure_speed=not args.no_measure_speed, warm_heads=not args.cold_heads,
        profile=ServerProfile(price_per_second=args.price_per_second, macs_per_second=args.server_macs_per_second))
    return settings, args


def main(argv=None) -> int:
    settings, args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    running = RunningServer(settings)
    names = ", ".join(running.core.repository.names()) or "no models"
    print(f"qpart-server listening on {settings.host}:{running.port} serving {names}", flush=True)
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

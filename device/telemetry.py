"""The daemon's health (grpc.health.v1, answered here so that a board needs no extra package) and its
Prometheus metrics (the text format, served by the standard library's HTTP server).

Metrics at http://HOST:PORT/metrics:
  qpart_device_requests_total{model,code}    requests from applications, by status
  qpart_device_request_seconds               time from a request's arrival to its answer (histogram)
  qpart_device_plans_total{model,reason}     plans made: at start, when a plan aged out, when the rate moved
"""
import http.server
import threading

import grpc

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
SERVICES = ("", "qpart.v1.LocalAgent")


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...]):
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, key: tuple, by: float = 1.0) -> None:
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + by

    def text(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self.values.items()):
            labels = ",".join(f'{k}="{v}"' for k, v in zip(self.labels, key))
            lines.append(f"{self.name}{{{labels}}} {value}")
        return lines


class Histogram:
    def __init__(self, name: str, help: str, buckets=LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts, self.total, self.n = [0] * len(buckets), 0.0, 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.total += value
            self.n += 1
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self.counts[i] += 1

    def text(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        lines += [f'{self.name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        return lines + [f'{self.name}_bucket{{le="+Inf"}} {self.n}', f"{self.name}_sum {self.total}",
                        f"{self.name}_count {self.n}"]


class Metrics:
    def __init__(self):
        self.requests = Counter("qpart_device_requests_total", "Requests from applications, by model and status",
                                ("model", "code"))
        self.latency = Histogram("qpart_device_request_seconds", "Time from a request's arrival to its answer")
        self.replans = Counter("qpart_device_plans_total", "Plans made, by model and reason", ("model", "reason"))

    def text(self) -> str:
        return "\n".join(self.requests.text() + self.latency.text() + self.replans.text()) + "\n"


METRICS = Metrics()


def serve(port: int, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """Serve METRICS at http://host:port/metrics from a background thread; shutdown() stops it."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = METRICS.text().encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _service(request: bytes) -> str | None:
    """The `service` field (1, a string) of a grpc.health.v1.HealthCheckRequest, decoded by hand."""
    if not request:
        return ""
    if request[0] != 0x0A or len(request) < 2 or request[1] & 0x80 or len(request) != 2 + request[1]:
        return None
    return request[2:].decode("utf-8", "replace")


class Health:
    """grpc.health.v1.Health/Check for the overall server ("") and qpart.v1.LocalAgent."""

    def __init__(self):
        self.serving = False

    def set(self, serving: bool) -> None:
        self.serving = serving

    def check(self, request: bytes, context) -> bytes:
        service = _service(request)
        if service is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a HealthCheckRequest")
        if service not in SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return bytes([0x08, SERVING if self.serving else NOT_SERVING])

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(self.check, request_deserializer=None,
                                                         response_serializer=None)})

"""`qpart-server --processes N`: N server processes on one port (SO_REUSEPORT), as gRPC's multiprocessing
example does. Python runs one thread at a time per process; N processes use N cores.

The parent picks the port (a free one for --port 0, held open with SO_REUSEPORT until every child has
bound it), starts the children as `qpart-server ... --processes 1 --reuse-port --port P`, prints one
"listening" line when all of them listen, forwards SIGTERM and SIGINT (each child drains as one server
does) and exits when they have. A child that fails to start stops the rest. Each child has its own caches,
batcher, load window, stream limits and metrics: with --metrics-port M, child i serves its own /metrics on
port M + i (M to M + N - 1; scrape them all and sum), which the listening line and a log line at start
say. Plan ids are signed with the repository's shared key, so any child serves any plan.
"""
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import threading

from qpart.common import runtime
from qpart.server.serving.settings import ServerSettings

log = logging.getLogger("qpart.server")


def reserve_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG


def metrics_ports(settings: ServerSettings) -> list[int]:
    """The /metrics port of each child: --metrics-port + i (none when metrics are off)."""
    return [settings.metrics_port + i for i in range(settings.processes)] if settings.metrics_port else []


def child_args(settings: ServerSettings, argv: list[str], port: int, index: int) -> list[str]:
    """The child's command line: the parent's, with the later flags winning."""
    extra = ["--processes", "1", "--reuse-port", "--port", str(port)]
    if settings.metrics_port:
        extra += ["--metrics-port", str(settings.metrics_port + index)]
    if not settings.torch_threads:
        extra += ["--torch-threads", str(max(1, runtime.usable_cores() // settings.processes))]
    return [sys.executable, "-m", "qpart.server.serving.main", *argv, *extra]


def serve(settings: ServerSettings, argv: list[str]) -> int:
    try:
        holder = reserve_port(settings.host, settings.port)
    except OSError as e:
        print(f"qpart-server: FAILED_PRECONDITION: cannot listen on {settings.host}:{settings.port}: {e.strerror}",
              file=sys.stderr)
        return 2
    port = holder.getsockname()[1]
    ports = metrics_ports(settings)
    if port in ports:
        holder.close()
        print(f"qpart-server: INVALID_ARGUMENT: --processes {settings.processes} serve metrics on ports {ports[0]}-"
              f"{ports[-1]} (--metrics-port + i), which takes the gRPC port {port}: move --metrics-port", file=sys.stderr)
        return 2
    children = [subprocess.Popen(child_args(settings, argv, port, i), stdout=subprocess.PIPE, text=True,
                                 preexec_fn=_die_with_parent) for i in range(settings.processes)]
    stopping = threading.Event()

    def stop(signum=signal.SIGTERM, _frame=None):
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    lines = [child.stdout.readline() for child in children]       # each child prints one line when it listens
    holder.close()
    if not all("listening" in line for line in lines) or any(c.poll() is not None for c in children):
        stop()
        for child in children:
            child.wait()
        print(f"qpart-server: FAILED_PRECONDITION: {sum('listening' not in l for l in lines)} of "
              f"{len(children)} server processes did not start", file=sys.stderr)
        return 2
    first = lines[0].rstrip("\n")
    if ports:
        log.info("%d processes on port %d; each serves its own /metrics: process i on %s:%d + i (ports %d-%d)",
                 len(children), port, settings.metrics_host, ports[0], ports[0], ports[-1],
                 extra={"fields": {"event": "metrics_ports", "metrics_ports": ports, "pids": [c.pid for c in children]}})
        first = first.replace(f"metrics on {settings.metrics_host}:{ports[0]}",
                              f"metrics on {settings.metrics_host}:{ports[0]}-{ports[-1]}, one port per process", 1)
    print(first.replace(f":{port} ", f":{port} ({len(children)} processes, pids "
                        f"{','.join(str(c.pid) for c in children)}) ", 1), flush=True)
    for child in children:     # keep their stdout drained
        threading.Thread(target=lambda c=child: [None for _ in c.stdout], daemon=True).start()
    codes = [child.wait() for child in children]
    return 0 if stopping.is_set() else max(codes)

"""Start qpart-server (and the testbed's delay relay) as child processes and wait until they serve.

The one place the harness, the demo and the tests start a server: on a free port of loopback, on a
given port, or inside a testbed network namespace.
"""
import os
import re
import socket
import subprocess
import sys

from qpart.common import health
from qpart.common.errors import FailedPrecondition

LISTENING = re.compile(r"listening on (\S+):(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_namespace(namespace: str | None, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command] if namespace else list(command)


class ServerProcess:
    """qpart-server as a child process; `target` is host:port once it listens (and, outside a namespace,
    reports SERVING on grpc.health.v1)."""

    def __init__(self, models, port: int = 0, *extra: str, host: str | None = None, namespace: str | None = None,
                 log_level: str = "WARNING", stderr=subprocess.DEVNULL, cpus: set[int] | None = None,
                 env: dict | None = None):
        """cpus: the cores the server may run on (sched_setaffinity), all by default; env: its environment (this
        process's by default)."""
        command = [sys.executable, "-m", "qpart.server.serving.main", "--models", str(models), "--port", str(port),
                   "--log-level", log_level, *(["--host", host] if host else []), *extra]
        self.process = subprocess.Popen(in_namespace(namespace, *command), stdout=subprocess.PIPE, stderr=stderr,
                                        text=True, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
                                        env=env)
        line = self.process.stdout.readline()
        match = LISTENING.search(line)
        if not match:
            self.kill()
            raise FailedPrecondition(f"qpart-server did not start (it printed {line.strip()!r})")
        self.port = int(match.group(2))
        self.target = f"{'127.0.0.1' if match.group(1) in ('0.0.0.0', '[::]') else match.group(1)}:{self.port}"
        if namespace is None and not health.wait_serving(self.target):
            self.kill()
            raise FailedPrecondition(f"qpart-server at {self.target} did not report SERVING")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after timeout_s; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no drain."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RelayProcess:
    """The testbed's user-space delay relay (qpart testbed relay) in a namespace, until stopped."""

    def __init__(self, namespace: str, listen: str, to: str, state_file):
        self.process = subprocess.Popen(in_namespace(namespace, sys.executable, "-m", "qpart.cli.main", "testbed",
                                                     "relay", "--listen", listen, "--to", to, "--state",
                                                     str(state_file)),
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if "relay" not in self.process.stdout.readline():
            self.stop()
            raise FailedPrecondition("the testbed relay did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def peak_memory_kb(pid: int) -> int:
    """The process's peak resident memory (VmHWM), kB."""
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM")))

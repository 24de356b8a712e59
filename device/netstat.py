"""The TCP payload bytes this process exchanged with a server port, read from the kernel (iproute2 `ss`).

gRPC's HTTP/2 framing, headers, pings and window updates are all in these counts: they are the
bytes that crossed the wire (retransmissions included in `sent`). Linux only; None elsewhere.
"""
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

_COUNTER = re.compile(r"\b(bytes_sent|bytes_received):(\d+)")
_PID = re.compile(r"pid=(\d+),")


@dataclass(frozen=True)
class TcpBytes:
    sent: int
    received: int

    def __sub__(self, other: "TcpBytes") -> "TcpBytes":
        return TcpBytes(self.sent - other.sent, self.received - other.received)


def tcp_bytes(port: int, pid: int | None = None) -> TcpBytes | None:
    """Sum over this process's TCP sockets whose peer port is `port` (sockets already closed are not seen)."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        out = subprocess.run([ss, "-tinpH", "state", "all", "dport", "=", f":{port}"], capture_output=True,
                             text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sent = received = 0
    owned = False
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):           # a socket line; its details follow on an indented line
            owned = str(pid) in _PID.findall(line)
            continue
        if owned:
            counters = dict(_COUNTER.findall(line))
            sent += int(counters.get("bytes_sent", 0))
            received += int(counters.get("bytes_received", 0))
    return TcpBytes(sent, received)

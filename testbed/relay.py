"""A TCP relay that adds what a kernel without netem cannot: propagation delay, jitter and the
serialization time of every message (netem's `delay` and `rate` semantics), in each direction.

Where the kernel has netem the testbed does not need it. Where it has only tbf/htb, tbf keeps the
sustained rate honest in the kernel (TCP/IP headers included) while this relay holds each chunk
until the emulated link has serialized it (bytes * 8 / rate after the link is free) plus the one-way
delay and jitter, preserving order. tbf alone would let a message smaller than its bucket through
with no serialization delay at all. Loss cannot be emulated here: TCP would hide it; use netem.

The shape is read from the testbed's state file and re-read when the file changes, so rate changes
(fading) apply to a running relay.
"""
import collections
import json
import logging
import pathlib
import random
import socket
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("qpart.relay")
CHUNK = 1448           # one TCP segment: the relay is store-and-forward per segment, like a link per packet
MAX_QUEUED = 4 << 20   # bytes held per direction before the reader waits (backpressure)


@dataclass(frozen=True)
class Shape:
    rate_bps: float = 0.0     # 0: no serialization delay
    delay_s: float = 0.0      # one-way propagation delay per direction
    jitter_s: float = 0.0     # uniform jitter added to the delay, +- this much (order is kept)


class ShapeSource:
    """The current Shape, from a JSON state file ({"rate_mbit", "delay_ms", "jitter_ms"}) or fixed."""

    def __init__(self, path: pathlib.Path | None = None, fixed: Shape | None = None):
        self.path, self._shape, self._mtime, self._checked = path, fixed or Shape(), None, 0.0
        self._lock = threading.Lock()

    def get(self) -> Shape:
        if self.path is None:
            return self._shape
        now = time.monotonic()
        with self._lock:
            if now - self._checked > 0.05:
                self._checked = now
                try:
                    mtime = self.path.stat().st_mtime_ns
                    if mtime != self._mtime:
                        state = json.loads(self.path.read_text())
                        self._shape = Shape(state.get("rate_mbit", 0) * 1e6, state.get("delay_ms", 0) / 1e3,
                                            state.get("jitter_ms", 0) / 1e3)
                        self._mtime = mtime
                except (OSError, ValueError) as e:
                    log.warning("cannot read %s: %s", self.path, e)
            return self._shape


SPIN_S = 0.0003  # the last stretch before releasing a message's end is spun, not slept


def _wait_until(deadline: float, precise: bool) -> None:
    """Sleep until the monotonic deadline. time.sleep wakes ~0.1 ms late; for the end of a message that
    would hide the serialization time of short messages (at 100 Mbit/s, 3 KB serialize in 0.25 ms), so
    there the last SPIN_S is spun instead."""
    wait = deadline - time.monotonic()
    if wait <= 0:
        return
    if not precise:
        time.sleep(wait)
        return
    if wait > SPIN_S:
        time.sleep(wait - SPIN_S)
    while time.monotonic() < deadline:
        pass


class _Direction:
    """One direction of one connection: read, schedule, release in order."""

    def __init__(self, source: socket.socket, sink: socket.socket, shapes: ShapeSource, rng: random.Random):
        self.source, self.sink, self.shapes, self.rng = source, sink, shapes, rng
        self.queue: collections.deque = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.free_at = 0.0        # when the emulated link finishes serializing what it has
        self.last_release = 0.0
        self.closed = False

    def read(self) -> None:
        try:
            while data := self.source.recv(CHUNK):
                now = time.monotonic()
                shape = self.shapes.get()
                start = max(now, self.free_at)
                self.free_at = start + (len(data) * 8 / shape.rate_bps if shape.rate_bps else 0.0)
                jitter = self.rng.uniform(-shape.jitter_s, shape.jitter_s) if shape.jitter_s else 0.0
                release = max(self.last_release, self.free_at + max(shape.delay_s + jitter, 0.0))
                self.last_release = release
                with self.cond:
                    while self.queued > MAX_QUEUED:
                        self.cond.wait()
                    self.queue.append((release, data))
                    self.queued += len(data)
                    self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closed:
                        self.cond.wait()
                    if not self.queue:
                        break
                    release, data = self.queue.popleft()
                    last = not self.queue      # the end of what the sender has written so far
                    self.queued -= len(data)
                    self.cond.notify_all()
                _wait_until(release, precise=last)
                self.sink.sendall(data)
            self.sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Relay:
    """Listen on `listen`, forward each connection to `target` through an emulated link."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], shapes: ShapeSource, seed: int = 0):
        self.target, self.shapes = target, shapes
        self.rng = random.Random(seed)
        self.listener = socket.create_server(listen, reuse_port=False)
        self.port = self.listener.getsockname()[1]

    def serve_forever(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def start(self) -> "Relay":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target)
        except OSError as e:
            log.warning("cannot reach %s: %s", self.target, e)
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for direction in (_Direction(client, server, self.shapes, self.rng),
                          _Direction(server, client, self.shapes, self.rng)):
            for fn in (direction.read, direction.write):
                threading.Thread(target=fn, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

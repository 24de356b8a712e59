"""Admission control: a few batches run the tail at once, a bounded number wait, the rest are refused
at once with RESOURCE_EXHAUSTED, so that an overloaded server answers quickly instead of queueing
without bound."""
import contextlib
import heapq
import itertools
import math
import threading
import time

from qpart.common.errors import DeadlineExceeded, ResourceExhausted


class Admission:
    """Slots for tail runs, handed out earliest deadline first (batches without a deadline after those with
    one, in arrival order). A released slot goes straight to the next waiter in that order, which alone is
    woken (a condition shared by every waiter would wake them all at each release)."""

    def __init__(self, slots: int, max_queued: int, max_wait_s: float = 10.0):
        self.slots = slots              # batches computing at once
        self.max_queued = max_queued    # batches allowed to wait for a slot
        self.max_wait_s = max_wait_s    # a batch waiting longer than this is refused
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: list[list] = []  # heap of [start-by time, arrival number, Event, state]
        self._arrivals = itertools.count()
        self.waiting = 0
        self.running = 0
        self.refused = 0
        self.shed = 0

    @contextlib.contextmanager
    def slot(self, start_by: float = math.inf):
        """Yields the seconds spent waiting for the slot. start_by (time.perf_counter() seconds): the latest
        start that is still of use; a batch that cannot start by then raises DeadlineExceeded."""
        started = time.perf_counter()
        with self._lock:
            if self._free > 0:                  # then no one waits: a released slot goes to a waiter first
                self._free -= 1
                self.running += 1
                me = None
            elif self.waiting >= self.max_queued:
                self.refused += 1
                raise ResourceExhausted(f"the server is at capacity ({self.running} batches running, "
                                        f"{self.waiting} waiting); retry later")
            else:
                me = [start_by, next(self._arrivals), threading.Event(), _WAITING]
                heapq.heappush(self._waiters, me)
                self.waiting += 1
        if me is not None:
            self._wait(me, started, min(started + self.max_wait_s, start_by))
        try:
            yield time.perf_counter() - started
        finally:
            self._release()

    def _wait(self, me: list, started: float, give_up: float) -> None:
        me[2].wait(max(give_up - time.perf_counter(), 0))
        with self._lock:
            if me[3] is _GRANTED:
                return
            me[3] = _GONE                  # left in the heap; _release skips it
            self.waiting -= 1
            if me[0] <= started + self.max_wait_s:
                self.shed += 1
                raise DeadlineExceeded(f"shed: no compute slot in time for the deadline ({self.running} batches "
                                       f"running, {self.waiting} waiting)")
            self.refused += 1
            raise ResourceExhausted(f"no compute slot within {self.max_wait_s:g} s; retry later")

    def _release(self) -> None:
        with self._lock:
            while self._waiters:
                nxt = heapq.heappop(self._waiters)
                if nxt[3] is _WAITING:     # the slot passes to it: running stays, one fewer waits
                    nxt[3] = _GRANTED
                    self.waiting -= 1
                    nxt[2].set()
                    return
            self.running -= 1
            self._free += 1


_WAITING, _GRANTED, _GONE = "waiting", "granted", "gone"


class Stream:
    def __init__(self, client: str, connection: str, cancel):
        self.client, self.connection, self.cancel = client, connection, cancel
        self.last = time.monotonic()
        self.expired = False

    def touch(self) -> None:
        self.last = time.monotonic()


class StreamGuard:
    """Streams open per client and per connection, each bounded, and a watchdog that cancels streams idle for
    longer than idle_s: no client can hold every stream slot, and a stream that sends nothing lets its slot go."""

    def __init__(self, per_client: int, per_connection: int, idle_s: float):
        self.per_client, self.per_connection, self.idle_s = per_client, per_connection, idle_s
        self._streams: set[Stream] = set()
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._stopped = threading.Event()
        self.expired = 0

    def stop(self) -> None:
        """End the watchdog (the server stopped): it does not outlive the server."""
        self._stopped.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)

    @contextlib.contextmanager
    def open(self, client: str, connection: str, cancel):
        """A stream for `client` (whom it counts against: Authenticator.stream_owner) on `connection` (the peer);
        cancel() ends it."""
        stream = Stream(client, connection, cancel)
        with self._lock:
            by_client = sum(s.client == client for s in self._streams)
            by_connection = sum(s.connection == connection for s in self._streams)
            if by_connection >= self.per_connection:
                raise ResourceExhausted(f"this connection has {by_connection} streams open; the limit is "
                                        f"{self.per_connection} per connection")
            if by_client >= self.per_client:
                raise ResourceExhausted(f"this client ({client[:80]}) has {by_client} streams open; the limit is "
                                        f"{self.per_client}")
            self._streams.add(stream)
            if self._watchdog is None and self.idle_s > 0 and not self._stopped.is_set():
                self._watchdog = threading.Thread(target=self._watch, name="qpart-stream-watchdog", daemon=True)
                self._watchdog.start()
        try:
            yield stream
        finally:
            with self._lock:
                self._streams.discard(stream)

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.idle_s / 4)):
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._streams if not s.expired and now - s.last > self.idle_s]
                for s in idle:
                    s.expired = True
                self.expired += len(idle)
            for s in idle:
                s.cancel()

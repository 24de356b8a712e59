"""Admission control: a few batches run the tail at once, a bounded number wait, the rest are refused
at once with RESOURCE_EXHAUSTED, so that an overloaded server answers quickly instead of queueing
without bound."""
import contextlib
import threading
import time

from qpart.common.errors import ResourceExhausted


class Admission:
    def __init__(self, slots: int, max_queued: int, max_wait_s: float = 10.0):
        self.slots = slots              # batches computing at once
        self.max_queued = max_queued    # batches allowed to wait for a slot
        self.max_wait_s = max_wait_s    # a batch waiting longer than this is refused
        self._free = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = 0
        self.refused = 0

    @contextlib.contextmanager
    def slot(self):
        """Yields the seconds spent waiting for the slot."""
        with self._lock:
            if self.waiting >= self.max_queued:
                self.refused += 1
                raise ResourceExhausted(f"the server is at capacity ({self.running} batches running, "
                                        f"{self.waiting} waiting); retry later")
            self.waiting += 1
        started = time.perf_counter()
        try:
            acquired = self._free.acquire(timeout=self.max_wait_s)
        finally:
            with self._lock:
                self.waiting -= 1
        if not acquired:
            with self._lock:
                self.refused += 1
            raise ResourceExhausted(f"no compute slot within {self.max_wait_s:g} s; retry later")
        with self._lock:
            self.running += 1
        try:
            yield time.perf_counter() - started
        finally:
            with self._lock:
                self.running -= 1
            self._free.release()

"""The server's current load, as the planner prices it.

The tails are timed once at start-up on an idle server (qpart.server.serving.speed). Under load a
device waits for a compute slot and shares the cores, so its batch takes longer than that. Every
answered batch whose tail was timed gives one ratio: what the server spent on it (queue_s +
compute_s) over what the idle timing says n inputs take. The load factor is the median ratio of the
batches answered in the last `window_s` seconds when that median is at least IDLE_SPREAD, else 1:
the idle timing is the median of runs that vary 2-4x from start to start (qpart.server.serving.speed), so a
smaller ratio says nothing about load. With no batch in the window it is 1. Plan multiplies the
server's time by it, so that a busy server hands out plans that keep more on the device.
"""
import statistics
import threading
import time
from collections import deque

MAX_SAMPLES = 4096     # ratios kept at most (the oldest go first)
IDLE_SPREAD = 2.0      # median ratios below this count as an idle server


class ServerLoad:
    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s          # 0: off, the factor is always 1
        self._samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)   # (time.monotonic(), ratio)
        self._lock = threading.Lock()

    def observe(self, inputs: int, server_s: float, idle_s_per_input: float) -> None:
        """One answered batch: `server_s` its queue + compute seconds, against the idle timing per input."""
        if self.window_s <= 0 or idle_s_per_input <= 0 or inputs <= 0:
            return
        with self._lock:
            self._samples.append((time.monotonic(), server_s / (inputs * idle_s_per_input)))

    def factor(self, now: float | None = None) -> float:
        if self.window_s <= 0:
            return 1.0
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._samples and self._samples[0][0] < now - self.window_s:
                self._samples.popleft()
            ratios = [r for _, r in self._samples]
        median = statistics.median(ratios) if ratios else 1.0
        return median if median >= IDLE_SPREAD else 1.0


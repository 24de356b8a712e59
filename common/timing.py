"""Robust speed figures: repeated timings with a median and a spread, outliers refused, and the machine's load.

Every speed figure that prices a plan (the server's tails and codecs, a device's MAC rate) comes from
here. One timing is not a figure: a descheduled vCPU, a page fault or another process stretches a run
by 10-100x now and then (four server starts here timed one tail at 1.7, 134, 1.8 and 11.5 ms). So a
figure is the median of several runs taken in rounds, with its spread (interquartile range over the
median) beside it, after samples further than OUTLIER_MADS scaled median absolute deviations from the
median are refused; and it is taken when the machine is idle (other processes' share of the CPU, from
/proc/stat), or marked as taken under load.
"""
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass

OUTLIER_MADS = 5.0          # samples further than this many scaled MADs from the median are refused
MAD_SCALE = 1.4826          # MAD -> standard deviation of a normal distribution
BUSY_THRESHOLD = 0.25       # other processes' CPU share above which the machine counts as busy (0-1)
MAX_SPREAD = 0.5            # a figure whose interquartile range exceeds this fraction of its median is re-timed


@dataclass(frozen=True)
class Timing:
    """One figure from repeated runs: the median and quartiles of the samples kept, seconds (or any unit)."""
    median: float        # the figure: median of the kept samples
    low: float           # lower quartile of the kept samples
    high: float          # upper quartile of the kept samples
    samples: int         # samples kept
    refused: int = 0     # samples refused as outliers

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0: every run alike)."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0

    @classmethod
    def of(cls, samples) -> "Timing":
        """The figure of some samples: outliers refused (beyond OUTLIER_MADS scaled MADs), then quartiles."""
        values = sorted(float(s) for s in samples)
        if not values:
            raise ValueError("a timing needs at least one sample")
        mid = statistics.median(values)
        mad = max(MAD_SCALE * statistics.median(abs(v - mid) for v in values), 1e-3 * abs(mid))   # a floor: 0.1 %
        tolerance = OUTLIER_MADS * mad if mad > 0 else math.inf
        kept = [v for v in values if abs(v - mid) <= tolerance]
        low, median, high = _quartiles(kept)
        return cls(median, low, high, len(kept), len(values) - len(kept))

    def scaled(self, factor: float) -> "Timing":
        return Timing(self.median * factor, self.low * factor, self.high * factor, self.samples, self.refused)

    def describe(self, unit: float = 1e-3, name: str = "ms") -> str:
        """e.g. '1.742 ms (spread 6%, 9 runs)', or '... 2 refused' when outliers were."""
        refused = f", {self.refused} refused" if self.refused else ""
        return f"{self.median / unit:.3f} {name} (spread {100 * self.spread:.0f}%, {self.samples} runs{refused})"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Timing":
        """From as_dict's output, checked: finite non-negative numbers with low <= median <= high."""
        try:
            t = cls(float(d["median"]), float(d["low"]), float(d["high"]), int(d["samples"]), int(d.get("refused", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a timing: {e}") from None
        if not all(math.isfinite(v) and v >= 0 for v in (t.median, t.low, t.high)) or not t.low <= t.median <= t.high \
                or t.samples < 1 or t.refused < 0:
            raise ValueError(f"not a valid timing: {d!r:.200}")
        return t


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def rate(fn, work: float, windows: int = 9, window_s: float = 0.03, clock=time.perf_counter) -> Timing:
    """Timing of `work` units per second of fn() (MACs, say), one sample per window of ~window_s seconds."""
    fn()                                    # allocations that happen once
    samples = []
    for _ in range(windows):
        runs, started = 0, clock()
        while True:
            fn()
            runs += 1
            elapsed = clock() - started
            if elapsed >= window_s:
                break
        samples.append(runs * work / elapsed)
    return Timing.of(samples)


def in_range(what: str, value: float, low: float, high: float, unit: str = "") -> str:
    """'' when low <= value <= high, else a warning that names the figure and the range it left."""
    if math.isfinite(value) and low <= value <= high:
        return ""
    return f"{what}: {value:.4g}{unit} is outside the sane range {low:.3g}-{high:.3g}{unit}; refused"


class CpuLoad:
    """Other processes' share of this machine's CPU, from /proc/stat less this process's own time.

    `busy(window_s)` samples over a window and returns 0 (idle) to 1 (every core busy with others' work);
    None where /proc is not there (the caller then measures without knowing)."""

    def __init__(self, stat_path: str = "/proc/stat", self_path: str = "/proc/self/stat"):
        self.stat_path, self.self_path = stat_path, self_path

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open(self.stat_path) as f:
                cpu = [float(v) for v in f.readline().split()[1:]]
            with open(self.self_path) as f:
                own = f.read().rsplit(")", 1)[1].split()       # after the command name, which may hold spaces
        except (OSError, ValueError, IndexError):
            return None
        idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0.0)   # idle + iowait
        total = sum(cpu[:8])                                # guest time is inside user already
        return total, total - idle, float(own[11]) + float(own[12])   # utime + stime (fields 14, 15)

    def busy(self, window_s: float = 0.25) -> float | None:
        before = self._read()
        time.sleep(window_s)
        after = self._read()
        if before is None or after is None or after[0] <= before[0]:
            return None
        total, busy, own = (a - b for a, b in zip(after, before))
        return min(max((busy - own) / total, 0.0), 1.0)

    def wait_for_idle(self, max_wait_s: float, threshold: float = BUSY_THRESHOLD, window_s: float = 0.25,
                      sleep=time.sleep) -> float | None:
        """Wait (at most max_wait_s) until others use less than `threshold` of the CPU; returns the last reading."""
        waited, reading = 0.0, self.busy(window_s)
        while reading is not None and reading > threshold and waited < max_wait_s:
            step = min(1.0, max_wait_s - waited)
            sleep(step)
            waited += step + window_s
            reading = self.busy(window_s)
        return reading


def machine() -> dict:
    """What a speed profile holds for: processor model, cores, architecture (not the host name: replicas on
    identical machines share one profile)."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model[:120], "cores": os.cpu_count() or 1, "arch": os.uname().machine}

"""Passive link estimation: what the device's own inference traffic says about the link it planned for.

Every answered batch is one sample: the bytes its request and answer carried and the time they spent on
the network, which is the batch's round trip (from the moment its request was handed to gRPC, after the
head ran) less the server's time (InferResponse.server_queue_s + server_compute_s, reported by the
server with every answer). A batch sent while the one before it was still out waited behind it; its
time from that one's answer is transfer only, without a round trip.

For each sample the monitor prices the same bytes on the link the plan assumed; the ratio of that
price to what the network took says how much faster (> 1) or slower (< 1) the link is now. Small
transfers drown in round-trip jitter (4.6 KB at 20 Mbit/s is 1.8 ms; a busy server or scheduler adds
more), so the decision uses the ratio with `jitter_s` added to both times, which only a change that is
large against the jitter moves past `factor`. A change is *lasting* when that damped median of the last
`window` samples since the plan is beyond `factor` either way; the monitor then offers the planned link
with its rates scaled by the undamped median ratio of the samples that show the change (one sent
before it would pull the estimate back; the round trip is kept), which is what the device plans with
next. No traffic, no samples: a device whose plan sends nothing probes the idle link every
`probe_interval_s` with one small unary Probe (`probe_sample`), judged by the same rule.
"""
import collections
import logging
import statistics
import time
from dataclasses import dataclass, replace

from qpart.common.costmodel import LinkProfile
from qpart.common.errors import QpartError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkSample:
    at: float            # time.time() when the answer arrived
    up_bytes: int        # the request message, bytes
    down_bytes: int      # the answer message, bytes
    seconds: float       # network time: round trip less the server's time (transfer only when overlapped)
    overlapped: bool     # the batch waited behind the previous one, so no round trip is in `seconds`


def round_sample(handed: float, previous_answer: float, now: float, up_bytes: int, response) -> LinkSample:
    """The link's share of one answered batch: handed to gRPC at `handed`, answered at `now` (perf_counter);
    when it waited behind the previous answer (at previous_answer), only the transfer is in the seconds."""
    began = max(handed, previous_answer)
    return LinkSample(time.time(), up_bytes, response.ByteSize(),
                      now - began - response.server_compute_s - response.server_queue_s, overlapped=began > handed)


@dataclass(frozen=True)
class MonitorSettings:
    factor: float = 2.0          # a rate this many times faster or slower than planned is a change
    window: int = 5              # samples whose median decides (all taken since the plan)
    jitter_s: float = 0.005      # round-trip variation a change must stand out from, s (added to both times)
    min_transfer_s: float = 0.001   # transfer times below this are not resolved (the link is at least that fast)
    probe_interval_s: float = 2.0   # with no traffic for this long, probe the link actively


def transfer_seconds(link: LinkProfile, up_bytes: int, down_bytes: int) -> float:
    return 8 * up_bytes / link.uplink_bps + 8 * down_bytes / link.downlink_bps


class LinkMonitor:
    def __init__(self, planned: LinkProfile, settings: MonitorSettings = MonitorSettings()):
        self.settings = settings
        self.failing = False          # the last idle-link probe could not reach the server
        self.reset(planned)

    def reset(self, planned: LinkProfile) -> None:
        """A new plan: judge the traffic from now on against the link it was made for."""
        self.planned = planned
        # the last `window` samples and, per sample, (speed ratio, damped ratio): all a decision reads
        self.samples: collections.deque[LinkSample] = collections.deque(maxlen=self.settings.window)
        self.ratios: collections.deque[tuple[float, float]] = collections.deque(maxlen=self.settings.window)
        self.since = time.time()

    def _ratios(self, sample: LinkSample) -> tuple[float, float]:
        predicted = transfer_seconds(self.planned, sample.up_bytes, sample.down_bytes)
        transfer = max(sample.seconds - (0.0 if sample.overlapped else self.planned.rtt_s), self.settings.min_transfer_s)
        jitter = self.settings.jitter_s
        return predicted / transfer, (predicted + jitter) / (transfer + jitter)

    def add(self, sample: LinkSample) -> None:
        self.samples.append(sample)
        self.ratios.append(self._ratios(sample))

    def ratio(self) -> float | None:
        """The median speed ratio (now / planned) of the last `window` samples; None with fewer."""
        if len(self.ratios) < self.settings.window:
            return None
        return statistics.median(r for r, _ in self.ratios)

    def _beyond(self, damped: float) -> bool:
        return not 1.0 / self.settings.factor < damped < self.settings.factor

    def first_evidence(self) -> float:
        """When the change showed: the arrival of the earliest sample of the deciding window that is beyond
        `factor` by itself."""
        return next((s.at for s, (_, d) in zip(self.samples, self.ratios) if self._beyond(d)), self.samples[-1].at)

    def changed(self) -> LinkProfile | None:
        """The link as the traffic shows it, when it differs lastingly from the planned one; else None."""
        if len(self.ratios) < self.settings.window or not self._beyond(statistics.median(d for _, d in self.ratios)):
            return None
        return scaled(self.planned, statistics.median(r for r, d in self.ratios if self._beyond(d)))

    def idle(self, now: float | None = None) -> bool:
        """No sample for probe_interval_s (or since the plan, when there was none)."""
        last = self.samples[-1].at if self.samples else self.since
        return (now or time.time()) - last >= self.settings.probe_interval_s

    def judge(self, probe: LinkSample) -> LinkProfile | None:
        """The link an active probe shows, when it differs from the planned one by the same rule as traffic."""
        self.since = time.time()
        ratio, damped = self._ratios(probe)
        return scaled(self.planned, ratio) if self._beyond(damped) else None

    def probe(self, client, probe_sample) -> tuple[LinkProfile, float] | None:
        """Probe the idle link once (probe_sample(client, planned link) -> LinkSample): (the link it shows, when
        the probe began) when it differs from the planned one; None when not, or when the server cannot be
        reached now (the plan runs on; the next probe tries again)."""
        try:
            sample = probe_sample(client, self.planned)
        except QpartError as e:        # the first failure is worth a warning; its repeats are not
            log.log(logging.DEBUG if self.failing else logging.WARNING, "idle-link probe failed: %s", e)
            self.failing = True
            return None
        if self.failing:
            log.info("idle-link probes reach the server again")
            self.failing = False
        link = self.judge(sample)
        return (link, sample.at) if link is not None else None


def scaled(link: LinkProfile, ratio: float) -> LinkProfile:
    """The link with both rates multiplied by ratio (a bandwidth and SNR link becomes a fixed rate)."""
    return replace(link, rate_bps=link.uplink_bps * ratio, bandwidth_hz=0.0, snr_db=0.0, rayleigh_fading=False,
                   downlink_rate_bps=link.downlink_rate_bps * ratio if link.downlink_rate_bps else 0.0)

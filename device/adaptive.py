"""Plans that follow the link: a stream of inputs classified on one plan after another as the link changes.

    run = AdaptiveRun(agent, request, link)      # request: a PlanRequest; link: what it was priced with
    report = run.run(x, labels)                  # report.phases: one per plan used, in order

While a plan is in use its traffic feeds a LinkMonitor (qpart.device.linkwatch); when the monitor sees a
lasting change (or, for a plan that sends nothing, an active probe on an idle link shows one) no new
batch starts, the batches already out are answered, and the device plans again with the link it now
sees, obtains that plan's head (from its cache when held) and goes on with the next input. Inputs are
sent in order and each is answered once: the switch happens between batches.
"""
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from qpart.common import messages
from qpart.common.costmodel import LinkProfile
from qpart.device import probe
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.linkwatch import LinkMonitor, MonitorSettings
from qpart.v1 import service_pb2 as spb


@dataclass
class Phase:
    trigger: str                  # why this plan: "start", or the change that was seen ("traffic ...", "probe ...")
    visible_at: float             # time.time() the change first showed: the earliest answer of the deciding
                                  # window that was beyond the factor by itself, or the probe's start
    detected_at: float            # time.time() the change was decided (the start of the run for the first phase)
    planned_at: float             # time.time() the new plan was in hand
    ready_at: float               # time.time() its head was loaded (the first input of the phase starts here)
    ended_at: float = 0.0         # time.time() the last input of the phase was answered
    link_mbps: float = 0.0        # uplink rate the plan was priced with, Mbit/s
    rtt_ms: float = 0.0           # round trip it was priced with, ms
    cut: int = 0                  # nodes[0:cut] on the device
    num_nodes: int = 0
    weight_bits: list[int] = field(default_factory=list)
    activation_bits: list[int] = field(default_factory=list)
    up_bytes_per_input: int = 0   # the plan's bytes sent per input
    head_bytes: int = 0
    head_cache_hit: bool = False
    predicted_ms: float = 0.0     # the plan's predicted time per input (head download spread over its reuse)
    predicted_head_ms: float = 0.0   # of which the head's download (and its round trip) spread over its reuse
    measured_ms: float = 0.0      # this phase's wall time per input, head fetch excluded
    inputs: int = 0
    first_input: int = 0          # index of the phase's first input in the run


@dataclass
class AdaptiveReport:
    phases: list[Phase]
    predictions: list[int]
    inputs: int = 0
    accuracy: float | None = None
    resent_inputs: int = 0        # inputs sent again after a broken stream (each answered once all the same)
    duplicates_dropped: int = 0   # answers that arrived for inputs answered already

    def as_dict(self) -> dict:
        return asdict(self)


class AdaptiveRun:
    def __init__(self, agent: DeviceAgent, request: spb.PlanRequest, link: LinkProfile,
                 settings: MonitorSettings = MonitorSettings(), probe_sample=probe.probe_sample):
        self.agent, self.request, self.settings = agent, request, settings
        self.monitor = LinkMonitor(link, settings)
        self.probe_sample = probe_sample        # (client, planned link) -> LinkSample: the idle link's probe
        self._change: tuple[LinkProfile, str, float, float] | None = None   # (link, trigger, visible at, decided at)
        self._lock = threading.Lock()

    def _saw(self, link: LinkProfile, trigger: str, visible_at: float) -> None:
        with self._lock:
            if self._change is None:
                self._change = (link, trigger, visible_at, time.time())

    def _observe(self, sample) -> None:
        self.monitor.add(sample)
        link = self.monitor.changed()
        if link is not None:
            self._saw(link, f"traffic: {self.monitor.ratio():.2f}x the planned rate",
                      self.monitor.first_evidence())

    def _probe_while_idle(self, done: threading.Event) -> None:
        """For a plan that sends nothing: probe the idle link every probe_interval_s until done or a change."""
        while not done.wait(self.settings.probe_interval_s):
            seen = self.monitor.probe(self.agent.client, self.probe_sample)
            if seen is not None:
                link, began = seen
                self._saw(link, f"probe: {link.uplink_bps / 1e6:.2f} Mbit/s", began)
                return

    def _plan(self, link: LinkProfile, trigger: str, visible_at: float, detected_at: float, first: int) -> tuple:
        self.request.link.CopyFrom(messages.link_to_pb(link))
        plan = self.agent.plan(self.request)
        held = plan.head_hash in self.request.held_heads
        reuse = max(self.request.inferences_per_head, 1)
        head_share = 0.0 if held or not plan.head_bytes else (8 * plan.head_bytes / link.downlink_bps + link.rtt_s) / reuse
        planned = time.time()
        executor, head = self.agent.obtain_head(plan)
        self.monitor.reset(link)
        p = plan.predicted
        phase = Phase(trigger, visible_at, detected_at, planned, time.time(), link_mbps=link.uplink_bps / 1e6,
                      rtt_ms=link.rtt_s * 1e3, cut=plan.cut, num_nodes=plan.num_nodes,
                      weight_bits=list(plan.weight_bits), activation_bits=[a.bits for a in plan.activations],
                      up_bytes_per_input=int(p.uplink_bytes), head_bytes=head.bytes, head_cache_hit=head.cache_hit,
                      predicted_ms=p.total_time_s * 1e3, predicted_head_ms=head_share * 1e3, first_input=first)
        return plan, executor, phase

    def run(self, x: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1,
            window: int = 1) -> AdaptiveReport:
        """Classify x [n, *input_shape] in order, planning again at each lasting change of the link."""
        report = AdaptiveReport([], [])
        answered, scores = 0, []
        now = time.time()
        plan, executor, phase = self._plan(self.monitor.planned, "start", now, now, 0)
        while True:
            stats = RunReport.for_plan(plan)
            done = threading.Event()
            prober = None
            if not plan.activations:
                prober = threading.Thread(target=self._probe_while_idle, args=(done,), daemon=True)
                prober.start()
            try:
                out = self.agent.classify(plan, executor, x[answered:], stats, batch_size, window, first_id=answered,
                                          observe=self._observe, stop=lambda: self._change is not None)
            finally:
                done.set()
                if prober is not None:
                    prober.join()
            phase.ended_at, phase.inputs = time.time(), len(out)
            phase.measured_ms = (phase.ended_at - phase.ready_at) / max(len(out), 1) * 1e3
            report.phases.append(phase)
            report.resent_inputs += stats.resent_inputs
            report.duplicates_dropped += stats.duplicates_dropped
            if len(out):
                scores.append(out)
            answered += len(out)
            if answered >= len(x) or self._change is None:
                break
            plan, executor, phase = self._plan(*self._change, answered)
            self._change = None
        predictions = np.concatenate([s.argmax(axis=1) for s in scores]) if scores else np.zeros(0, np.int64)
        report.predictions, report.inputs = predictions.tolist(), len(predictions)
        if labels is not None and len(predictions):
            report.accuracy = 100.0 * float(np.mean(predictions == labels[:len(predictions)]))
        return report

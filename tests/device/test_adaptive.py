"""Plans that follow the link: the monitor's rules on their own, then runs over real gRPC whose planned link
is wrong from the start, so that the device must notice (from its traffic, or by probing when its plan
sends nothing) and plan again, answering every input once. The shaped 20 -> 1 -> 20 Mbit/s experiment is
bench/link_change.py (needs root)."""
import time

import numpy as np
import pytest

from qpart.common import messages, policies
from qpart.common.costmodel import DeviceProfile, LinkProfile
from qpart.device.adaptive import AdaptiveRun
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.linkwatch import LinkMonitor, LinkSample, MonitorSettings, scaled
from qpart.v1 import service_pb2 as spb

MBIT = 1e6


def sample(seconds: float, up: int = 10_000, down: int = 100, overlapped: bool = False) -> LinkSample:
    return LinkSample(0.0, up, down, seconds, overlapped)


def test_a_lasting_slowdown_is_seen_and_priced():
    link = LinkProfile(rate_bps=20 * MBIT, rtt_s=0.010)
    monitor = LinkMonitor(link, MonitorSettings(factor=2.0, window=3))
    at_1mbit = 0.010 + 8 * 10_100 / MBIT                 # what 10,100 bytes take at 1 Mbit/s, plus the round trip
    monitor.add(sample(at_1mbit))
    monitor.add(sample(at_1mbit))
    assert monitor.changed() is None                      # two samples are not lasting
    monitor.add(sample(at_1mbit))
    seen = monitor.changed()
    assert seen is not None and seen.uplink_bps == pytest.approx(1 * MBIT, rel=1e-6) and seen.rtt_s == 0.010


def test_one_slow_answer_is_not_a_change_and_the_planned_rate_is_none():
    link = LinkProfile(rate_bps=20 * MBIT, rtt_s=0.010)
    monitor = LinkMonitor(link, MonitorSettings(factor=2.0, window=3))
    transfer = 8 * 10_100 / (20 * MBIT)
    for seconds in (0.010 + transfer, 0.5, 0.010 + transfer * 1.1, 0.010 + transfer * 0.9):
        monitor.add(sample(seconds))
        assert monitor.changed() is None
    assert monitor.ratio() == pytest.approx(1.0, rel=0.15)


def test_overlapped_batches_carry_no_round_trip_and_unresolved_ones_count_as_fast():
    link = LinkProfile(rate_bps=10 * MBIT, rtt_s=0.050)
    monitor = LinkMonitor(link, MonitorSettings(window=1, min_transfer_s=0.002))
    monitor.add(sample(8 * 10_100 / (5 * MBIT), overlapped=True))     # transfer only, at 5 Mbit/s
    assert monitor.ratio() == pytest.approx(0.5)
    monitor.add(sample(0.050))                                         # all round trip: at least 2 ms of transfer
    assert monitor.ratio() == pytest.approx(8 * 10_100 / (10 * MBIT) / 0.002)


def test_a_probe_is_judged_and_scaling_keeps_the_downlink_share():
    monitor = LinkMonitor(LinkProfile(rate_bps=1 * MBIT, downlink_rate_bps=4 * MBIT), MonitorSettings(factor=2.0))
    assert monitor.judge(sample(8 * 10_000 / (1.5 * MBIT), down=0)) is None
    assert monitor.judge(sample(8 * 10_000 / (20 * MBIT), down=0)).uplink_bps == pytest.approx(20 * MBIT)
    faster = scaled(monitor.planned, 10.0)
    assert (faster.uplink_bps, faster.downlink_bps) == (10 * MBIT, 40 * MBIT)


def _request(model: str, link: LinkProfile, policy: str) -> spb.PlanRequest:
    request = spb.PlanRequest(model=model, device=messages.device_to_pb(DeviceProfile(macs_per_second=3e9)),
                              link=messages.link_to_pb(link), accuracy_budget=1.0, inferences_per_head=100,
                              policy=policies.to_enum(policy))
    if policy == policies.FIXED:      # the same split whatever the link: every phase must answer alike
        request.fixed.CopyFrom(spb.FixedPlan(cut=7, weight_bits=[8], activation_bits=[8]))
    return request


def test_traffic_faster_than_planned_brings_a_new_plan_and_every_input_once(client, model_inputs, catalogs):
    x, y = model_inputs("lenet", 120)
    slow = LinkProfile(rate_bps=0.05 * MBIT, rtt_s=0.0)     # loopback is far faster than this
    run = AdaptiveRun(DeviceAgent(client, HeadCache(None)), _request("lenet", slow, policies.FIXED), slow,
                      MonitorSettings(factor=2.0, window=3))
    report = run.run(x, y, batch_size=4)
    assert len(report.phases) >= 2, report.phases
    assert report.phases[1].trigger.startswith("traffic") and report.phases[1].link_mbps > 0.1
    assert [p.first_input for p in report.phases] == [0] + list(np.cumsum([p.inputs for p in report.phases[:-1]]))
    assert sum(p.inputs for p in report.phases) == report.inputs == len(x) and report.duplicates_dropped == 0
    whole = DeviceAgent(client, HeadCache(None)).run(_request("lenet", slow, policies.FIXED), x, y, 4)
    assert report.predictions == whole.predictions


def test_a_plan_that_sends_nothing_probes_the_idle_link(client, model_inputs, catalogs):
    x, y = model_inputs("lenet", 300)
    probes = []

    def measure(_client, planned):
        probes.append(planned)
        return LinkSample(time.time(), 100_000, 100, 0.5 + 8 * 100_100 / (100 * MBIT), False)   # 100 Mbit/s, 0.5 s round trip

    slow = LinkProfile(rate_bps=0.001 * MBIT, rtt_s=0.5)     # nothing but the whole model on the device pays
    agent = DeviceAgent(client, HeadCache(None), emulate_macs_per_second=1e8)   # ~3 ms per lenet input
    run = AdaptiveRun(agent, _request("lenet", slow, policies.QPART), slow,
                      MonitorSettings(probe_interval_s=0.2), probe_sample=measure)
    report = run.run(x, y, batch_size=1)
    first = report.phases[0]
    assert first.cut == first.num_nodes and first.activation_bits == []
    assert report.phases[1].trigger.startswith("probe") and report.phases[1].link_mbps == pytest.approx(100)
    assert probes[0] == slow and report.inputs == len(x)
    assert report.phases[1].planned_at - report.phases[1].detected_at < 2.0


def test_the_change_shows_at_the_first_sample_beyond_the_factor():
    monitor = LinkMonitor(LinkProfile(rate_bps=20 * MBIT, rtt_s=0.010), MonitorSettings(window=5))
    for at, mbit in enumerate((20, 20, 1, 1, 1)):
        monitor.add(LinkSample(float(at), 10_000, 100, 0.010 + 8 * 10_100 / (mbit * MBIT), False))
    assert monitor.changed() is not None and monitor.first_evidence() == 2.0


def test_the_library_plans_again_when_its_traffic_shows_another_link(server, model_inputs, catalogs, tmp_path):
    from qpart.device import SplitClient
    x, _ = model_inputs("lenet", 12)
    slow = LinkProfile(rate_bps=0.05 * MBIT, rtt_s=0.0)      # loopback is far faster
    with SplitClient(f"127.0.0.1:{server.port}", "lenet", 1.0, link=slow, policy="server_only", cache_dir=tmp_path,
                     measure_compute=False, backend="numpy", adapt=MonitorSettings(window=3)) as split:
        first = split.plan
        results = [split.classify(x[i]) for i in range(3)]       # three answers: the monitor decides
        after = split.plan                                      # the next use plans for the link as measured
        assert after is not first                  # a new Plan call (the same split: its id may be the same)
        assert split.measured()[1].uplink_bps > 20 * slow.uplink_bps          # the link the new plan is priced for
        assert len(results) == 3 and len(split.classify(x[3:12])) == 9


def test_the_estimate_leaves_out_the_samples_sent_before_the_change():
    monitor = LinkMonitor(LinkProfile(rate_bps=20 * MBIT, rtt_s=0.010), MonitorSettings(window=5))
    for mbit in (20, 20, 1, 1, 1):
        monitor.add(sample(0.010 + 8 * 10_100 / (mbit * MBIT)))
    assert monitor.changed().uplink_bps == pytest.approx(1 * MBIT, rel=1e-6)

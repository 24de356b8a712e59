"""The server's speed figures: the same plan after every restart, robust timings, a profile replicas share.

Clocks and the machine's load are stubbed: a busy start stretches every timing 30x (busy loops on
both cores), and the stub load says so until it ends."""
import dataclasses
import itertools
import json
import logging
import shutil
import time

import numpy as np
import pytest
import torch

from qpart.common import profiles
from qpart.common.costmodel import LinkProfile, Objective
from qpart.common.timing import CpuLoad, Timing
from qpart.server.planning.planner import PlanRequest
from qpart.server.serving import speed, speed_profile
from qpart.server.serving.core import QpartCore
from qpart.server.serving.settings import ServerSettings

BUSY_FACTOR = 30.0


class StubLoad(CpuLoad):
    """Others keep the machine busy for the first `busy_readings` readings, then leave; nobody sleeps."""

    def __init__(self, busy_readings: int = 0):
        super().__init__()
        self.left = busy_readings

    def busy(self, window_s: float = 0.25) -> float:
        if self.left > 0:
            self.left -= 1
            return 0.95
        return 0.02

    def wait_for_idle(self, max_wait_s, threshold=0.25, window_s=0.25, sleep=None):
        return super().wait_for_idle(max_wait_s, threshold, 0.0, sleep=lambda s: None)


class NoisyClock:
    """perf_counter as timing on a noisy machine sees it: each interval stretched by a random factor (lognormal,
    and a 50x stall one reading in 12), and BUSY_FACTOR times while the stub load says others are busy."""

    def __init__(self, seed: int, load: StubLoad):
        self.rng, self.load = np.random.default_rng(seed), load
        self.now, self.last = 0.0, time.perf_counter()

    def __call__(self) -> float:
        real = time.perf_counter()
        factor = float(np.exp(self.rng.normal(0, 0.1))) * (50.0 if self.rng.random() < 1 / 12 else 1.0)
        self.now += (real - self.last) * factor * (BUSY_FACTOR if self.load.left > 0 else 1.0)
        self.last = real
        return self.now


REQUESTS = [PlanRequest("lenet", profiles.load_device(device), LinkProfile(rate_bps=mbps * 1e6, rtt_s=0.005),
                        budget, objective=objective, inferences_per_head=reuse)
            for device in ("rpi4", "jetson-orin-nano", "paper-table2") for mbps in (1, 20, 100) for budget in (0.5, 2.0)
            for objective in (Objective(), Objective(1, 0, 0)) for reuse in (1, 1000)]


def plans(core: QpartCore) -> list[tuple]:
    chosen = [core.models.plan(r).chosen for r in REQUESTS]
    return [(c.spec.split, c.coding) for c in chosen]


@pytest.fixture(scope="module")
def codec_tables():
    return speed.activation_codec_costs(repeats=3), speed.zlib_costs(repeats=3)


@pytest.fixture(autouse=True)
def timed_codecs_once(codec_tables, monkeypatch):
    """The codec tables are timed once for this module (they are not what these tests are about)."""
    monkeypatch.setattr(speed, "activation_codec_costs", lambda: codec_tables[0])
    monkeypatch.setattr(speed, "zlib_costs", lambda: codec_tables[1])


@pytest.fixture
def repo_dir(models_dir, catalogs, tmp_path):
    shutil.copytree(models_dir / "lenet", tmp_path / "repo" / "lenet")
    return tmp_path / "repo"


def start(repo_dir, seed: int, busy_readings: int = 0, **settings) -> tuple[QpartCore, object, StubLoad]:
    """A server start (what RunningServer does before it listens): its core, the speed figures it priced with
    and the stub load it saw."""
    core = QpartCore(ServerSettings(models=repo_dir, port=0, speed_idle_wait_s=5, **settings))
    load = StubLoad(busy_readings)
    return core, core.measure_speed(clock=NoisyClock(seed, load), load=load), load


def test_four_restarts_give_the_same_plans_also_after_a_busy_start(repo_dir):
    starts = [start(repo_dir, seed, busy_readings=3 if seed in (0, 2) else 0) for seed in range(4)]
    try:
        first = plans(starts[0][0])
        assert [p.source for _, p, _ in starts] == ["measured"] + ["profile file"] * 3
        assert not starts[0][1].provisional                  # the first waited for the busy loops to end
        for core, _, _ in starts[1:]:
            assert plans(core) == first
        assert {c.spec.split.cut for c in (starts[0][0].models.plan(r).chosen for r in REQUESTS)} != {0}
    finally:
        for core, _, _ in starts:
            core.close()


def test_figures_taken_on_a_busy_machine_are_provisional_and_timed_again_when_idle(repo_dir, caplog):
    idle, _, _ = start(repo_dir, 0, remeasure_speed=True)
    expected = plans(idle)
    idle.close()
    (repo_dir / speed_profile.FILE_NAME).unlink()
    with caplog.at_level(logging.WARNING, "qpart.server.speed"):
        core, profile, load = start(repo_dir, 1, busy_readings=10 ** 6, speed_recheck_s=0.05)   # busy beyond the wait
    try:
        assert profile.provisional and "provisional" in caplog.text
        assert not (repo_dir / speed_profile.FILE_NAME).exists()           # never shared
        slow = profile.tails_for(core.repository.get("lenet"))
        assert plans(core) != expected                                     # what timing a busy machine does
        load.left = 0                                                      # the busy loops end
        core._recheck.join(timeout=120)
        retimed = core.models.get("lenet").server_speed
        assert not retimed.provisional and retimed.measured_at > profile.measured_at
        fresh = retimed.tails_for(core.repository.get("lenet"))
        assert fresh.keys() == slow.keys() and fresh != slow                # the plans are priced with new figures
        stored = speed_profile.read(repo_dir / speed_profile.FILE_NAME,
                                    speed_profile.machine_key(torch.get_num_threads(), torch.__version__))
        assert stored.tails_for(core.repository.get("lenet")) == fresh      # shared once timed on the idle machine
    finally:
        core.close()


def test_stalls_are_refused_and_the_medians_stand(repo, catalogs):
    model = repo.get("lenet")
    readings = itertools.accumulate(0.05 if i % 8 == 7 else 1e-3 for i in itertools.count())   # every 8th: a stall
    figures, warnings = speed.tail_timings(model, catalogs["lenet"].cuts, idle_s=0, rounds=9,
                                           clock=lambda: next(readings))
    assert figures and not warnings
    for t in figures.values():
        assert t.median == pytest.approx(1e-3) and t.spread == pytest.approx(0, abs=1e-9)
    assert sum(t.refused for t in figures.values()) > 0


def test_a_later_cut_timed_slower_than_an_earlier_one_is_refused_by_name(repo, catalogs, monkeypatch):
    model = repo.get("lenet")
    cuts = [c for c in catalogs["lenet"].cuts if model.profile.cut(c).runs_tail]
    late = max(cuts)
    monkeypatch.setattr(speed, "_tail_rounds", lambda m, cs, idle_s, rounds, clock, positions=None: {
        c: Timing.of([0.05 if c == late else 1e-3] * 5) for c in cs})
    figures, warnings = speed.tail_timings(model, cuts)
    assert len(warnings) == 1 and f"the tail from cut {late}" in warnings[0] and "refused" in warnings[0]
    assert figures[late].median == pytest.approx(1e-3)


def test_a_mac_rate_out_of_any_sane_range_is_refused_and_the_profile_rate_prices(repo_dir, caplog):
    ticks = itertools.count(0.0, 100.0)                    # every reading 100 s after the last: ~1e4 MAC/s
    core = QpartCore(ServerSettings(models=repo_dir, port=0, speed_idle_wait_s=0, remeasure_speed=True))
    with caplog.at_level(logging.WARNING, "qpart.server.speed"):
        profile = core.measure_speed(clock=lambda: next(ticks), load=StubLoad())
    core.close()
    assert profile.mac_rate.median == 0 and "the server's MAC rate" in caplog.text
    assert core.models.get("lenet").codec.mac_rate == core.settings.profile.mac_rate


def test_replicas_sharing_a_profile_file_give_the_same_plans(models_dir, catalogs, tmp_path):
    shared = tmp_path / "speed.json"
    cores = []
    for i in range(2):                                     # two replicas, each with its own copy of the repository
        shutil.copytree(models_dir / "lenet", tmp_path / f"replica{i}" / "lenet")
        cores.append(start(tmp_path / f"replica{i}", seed=i, busy_readings=3 * (1 - i), speed_profile=shared)[0])
    try:
        assert plans(cores[0]) == plans(cores[1])
        assert cores[1].models.get("lenet").server_speed.source == "profile file"
        assert not (tmp_path / "replica1" / speed_profile.FILE_NAME).exists()
    finally:
        for core in cores:
            core.close()


def test_the_first_writer_wins_and_later_ones_adopt_its_figures(repo_dir, tmp_path):
    core, first, _ = start(repo_dir, 0, remeasure_speed=True)
    core.close()
    path, key = tmp_path / "speed.json", "a machine"
    other = dataclasses.replace(first.copy(), mac_rate=Timing.of([1.0e9] * 3), source="measured")
    assert speed_profile.share(path, key, first) is first
    adopted = speed_profile.share(path, key, other)
    assert adopted.mac_rate == first.mac_rate and adopted.source == "profile file"
    assert speed_profile.share(path, key, other, replace=True).mac_rate == other.mac_rate


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": 99, "profiles": {}})])
def test_an_unreadable_or_foreign_profile_file_is_reported_and_timed_over(repo_dir, text, caplog):
    (repo_dir / speed_profile.FILE_NAME).write_text(text)
    with caplog.at_level(logging.WARNING, "qpart.server.speed"):
        core, profile, _ = start(repo_dir, 0)
    core.close()
    assert profile.source == "measured" and profile.tails_for(core.repository.get("lenet"))
    assert "cannot be read" in caplog.text
    assert speed_profile.read(repo_dir / speed_profile.FILE_NAME, "another machine") is None


def test_an_invalid_entry_for_this_machine_is_not_trusted(repo_dir, caplog):
    start(repo_dir, 0)[0].close()
    path = repo_dir / speed_profile.FILE_NAME
    data = json.loads(path.read_text())
    entry = next(iter(data["profiles"].values()))
    entry["tails"]["lenet"]["cuts"] = {"3": {"median": -1, "low": 0, "high": 1, "samples": 3}}
    path.write_text(json.dumps(data))
    assert speed_profile.read(path, next(iter(data["profiles"]))) is None


def test_a_plan_reports_the_timings_behind_it_and_no_head_bytes_when_held(client):
    from qpart.v1 import service_pb2 as spb
    timed = client.plan(spb.PlanRequest(model="lenet", policy=spb.SERVER_ONLY, accuracy_budget=2)).server_speed
    assert timed.source in ("measured", "profile file") and timed.macs_per_second > 0
    assert timed.tail_runs > 0 and timed.tail_seconds > 0 and timed.tail_spread >= 0
    assert timed.measured_at <= time.time() and 0 <= timed.busy_while_timed <= 1
    request = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(cut=3, weight_bits=[8],
                                                                                    activation_bits=[8]))
    plan = client.plan(request)
    assert plan.head_bytes > 0 and plan.predicted.head_bytes == plan.head_bytes
    request.held_heads.append(plan.head_hash)
    held = client.plan(request)
    assert held.head_bytes == plan.head_bytes and held.predicted.head_bytes == 0
    assert held.predicted.downlink_time_s < plan.predicted.downlink_time_s


def test_every_plan_prices_the_devices_preprocessing_at_its_speed(repo_dir):
    core, profile, _ = start(repo_dir, 0)
    try:
        served = core.models.get("lenet")
        assert profile.timed(served.model).preprocess.median > 0
        assert served.speed.preprocess_seconds == profile.timed(served.model).preprocess.median
        request = dataclasses.replace(REQUESTS[0], explain=True)
        before = {(c.spec.split, c.coding): c.costs.device_time_s for c in core.models.plan(request).candidates}
        slower = dataclasses.replace(served.speed, preprocess_seconds=served.speed.preprocess_seconds + 0.01)
        core.models.set_speed(served.codec, {(served.name, served.version): slower}, profile)
        after = {(c.spec.split, c.coding): c.costs.device_time_s for c in core.models.plan(request).candidates}
        extra = 0.01 * served.codec.mac_rate / request.device.mac_rate     # the same work on the device
        assert before.keys() == after.keys() and len(before) > 3
        for key, seconds in before.items():
            assert after[key] - seconds == pytest.approx(extra, rel=1e-6)
    finally:
        core.close()

"""Robust speed figures: medians and spreads, outliers refused, the machine's load read from /proc."""
import itertools

import pytest

from qpart.common import timing
from qpart.common.timing import CpuLoad, Timing


def test_a_stalled_run_is_refused_and_the_median_stands():
    t = Timing.of([1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 50.0, 1.0])
    assert t.refused == 1 and t.samples == 8
    assert t.median == pytest.approx(1.0, abs=0.01) and t.spread < 0.05
    assert "refused" in t.describe()


def test_identical_runs_have_no_spread_and_keep_every_sample():
    t = Timing.of([2e-3] * 5)
    assert (t.median, t.spread, t.samples, t.refused) == (2e-3, 0.0, 5, 0)


def test_a_timing_read_back_is_checked():
    t = Timing.of([1.0, 1.1, 1.2])
    assert Timing.from_dict(t.as_dict()) == t
    for bad in ({"median": float("nan"), "low": 0, "high": 1, "samples": 3}, {"median": 1, "low": 2, "high": 3, "samples": 3},
                {"median": 1, "low": 0, "high": 2, "samples": 0}, {"median": "fast"}, {}):
        with pytest.raises(ValueError):
            Timing.from_dict(bad)


def test_a_rate_follows_the_clock_it_is_given():
    ticks = itertools.count(0.0, 0.01)                 # every clock reading 10 ms after the last
    rate = timing.rate(lambda: None, work=1000, windows=5, window_s=0.03, clock=lambda: next(ticks))
    assert rate.median == pytest.approx(1000 * 3 / 0.03) and rate.samples == 5


def test_a_figure_out_of_its_sane_range_is_named():
    assert timing.in_range("MAC rate", 2e9, 1e7, 1e14) == ""
    warning = timing.in_range("the server's MAC rate", 1.7e5, 1e7, 1e14, unit=" MAC/s")
    assert "the server's MAC rate" in warning and "refused" in warning


class Readings(CpuLoad):
    """Cumulative /proc readings (total, busy, own) played back in order."""

    def __init__(self, readings):
        super().__init__()
        self.readings = iter(readings)

    def _read(self):
        return next(self.readings)


def test_others_busy_share_leaves_out_this_process():
    load = Readings([(100.0, 10.0, 5.0), (200.0, 110.0, 55.0)])     # 100 ticks: 100 busy, 50 of them ours
    assert load.busy(window_s=0) == pytest.approx(0.5)
    assert Readings([None, None]).busy(window_s=0) is None           # no /proc: unknown


def test_waiting_for_idle_stops_once_others_leave(monkeypatch):
    busy = iter([0.9, 0.8, 0.1, 0.9])
    load = CpuLoad()
    monkeypatch.setattr(load, "busy", lambda window_s=0.25: next(busy))
    slept = []
    assert load.wait_for_idle(30, sleep=slept.append) == 0.1 and len(slept) == 2
    busy = iter([0.9] * 100)
    slept = []
    assert load.wait_for_idle(3, sleep=slept.append) == 0.9 and sum(slept) <= 3      # gives up after max_wait_s


def test_this_machine_reads_as_a_share_between_0_and_1():
    reading = CpuLoad().busy(0.05)
    assert reading is None or 0.0 <= reading <= 1.0

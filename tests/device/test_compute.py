"""The device's compute: auto runs the backend its own timing found fastest, and the plan is priced with it."""
import itertools
import json

import numpy as np
import pytest

from qpart.common.timing import Timing
from qpart.device import backends, compute
from qpart.device import main as device_main


def stub_rates(monkeypatch, rates: dict) -> None:
    monkeypatch.setattr(compute, "backend_rate", lambda name, **kw: Timing.of([rates[name]] * 3))


@pytest.mark.parametrize("rates, expected", [({"numpy": 5e9, "torch": 1e9}, "numpy"),
                                             ({"numpy": 1e9, "torch": 5e9}, "torch")])
def test_auto_is_the_backend_its_timing_found_fastest(monkeypatch, rates, expected):
    stub_rates(monkeypatch, rates)
    found = compute.measure("auto")
    assert found.backend == expected and found.macs_per_second == rates[expected] and not found.warning
    assert found.rates == rates


def test_a_rate_out_of_any_sane_range_is_refused_by_name(monkeypatch):
    stub_rates(monkeypatch, {"numpy": 10.0, "torch": 2e9})            # 10 MAC/s: a stalled timing
    found = compute.measure("auto")
    assert found.backend == "torch" and found.macs_per_second == 2e9 and "numpy" in found.warning
    stub_rates(monkeypatch, {"numpy": 10.0, "torch": 1e17})
    found = compute.measure("auto")
    assert found.macs_per_second == 0 and "torch" in found.warning      # the plan is priced with the profile


def test_the_benchmark_head_runs_alike_on_every_backend():
    spec, profile, params = compute.benchmark_head()
    x = np.random.default_rng(0).random((2, *profile.input_shape), np.float32)
    outs = [backends.make(spec, profile, params, name).run(x)[0] for name in backends.installed()]
    assert outs[0].shape == (2, 64)
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-4, atol=1e-4)
    assert sum(n.macs for n in profile.nodes) > 4e6
    assert compute.backend_rate("numpy", windows=2, window_s=0.01).median > 0


class Slow:
    """A backend whose runs read `seconds` on the stub clock."""

    def __init__(self, name, seconds, clock):
        self.name, self.seconds, self.clock = name, seconds, clock

    def run(self, x):
        self.clock.now += self.seconds


def test_auto_per_head_picks_by_median_not_by_a_lucky_run():
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now
    clock = Clock()
    steady = Slow("steady", 1.0, clock)
    lucky = Slow("lucky", 2.0, clock)
    runs = itertools.count()
    original = lucky.run
    lucky.run = lambda x: (original(x), setattr(clock, "now", clock.now - (1.9 if next(runs) == 3 else 0)))
    assert backends.fastest([lucky, steady], np.zeros(1), rounds=7, clock=clock) is steady


def test_the_head_runs_on_the_backend_the_plan_was_priced_with(monkeypatch, server, tmp_path):
    runs = {}
    for fastest, rates in (("numpy", {"numpy": 4e9, "torch": 1e9}), ("torch", {"numpy": 1e9, "torch": 2e9})):
        stub_rates(monkeypatch, rates)
        out = tmp_path / f"{fastest}.json"
        code = device_main.main(["--server", f"127.0.0.1:{server.port}", "--model", "lenet", "--cut", "3",
                                 "--count", "8", "--no-cache", "--quiet", "--json", str(out)])
        assert code == 0
        report = json.loads(out.read_text())
        assert report["measured"]["backend"] == fastest and report["measured"]["macs_per_second"] == rates[fastest]
        assert report["split"]["head"]["backend"].startswith(fastest)        # what runs is what was priced
        runs[fastest] = report["split"]["predicted"]["device_time_s"]
    assert runs["numpy"] / runs["torch"] == pytest.approx(2e9 / 4e9, rel=1e-3)  # the same work at the rate sent
    # (rel 1e-3: the per-input terms beside the MACs are priced from timings and differ by microseconds)

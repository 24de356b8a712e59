import math

import numpy as np
import pytest

from qpart.common import profiles
from qpart.common.costmodel import (DeviceProfile, LinkProfile, Objective, ServerProfile, Workload, predict,
                                    shannon_rate)
from qpart.common.errors import InvalidArgument, NotFound

TABLE2 = DeviceProfile(clock_hz=200e6, cycles_per_mac=5, energy_coefficient=1e-28, tx_power_w=1.0)
SERVER = ServerProfile(clock_hz=3e9, cycles_per_mac=1.25, price_per_second=2.0)


def test_equations_with_table_ii_parameters():
    work = Workload(device_macs=1e6, server_macs=4e6, head_bytes=0, uplink_bytes=1000, downlink_bytes=56,
                    runs_tail=True)
    c = predict(work, TABLE2, LinkProfile(rate_bps=200e6, rtt_s=0.002), SERVER, Objective(1, 1, 1))
    assert c.device_time_s == pytest.approx(5 * 1e6 / 200e6)                     # eq 5
    assert c.device_energy_j == pytest.approx(1e-28 * 200e6 ** 2 * 5 * 1e6)      # eq 6
    assert c.server_time_s == pytest.approx(1.25 * 4e6 / 3e9)                    # eq 7
    assert c.server_cost == pytest.approx(2.0 * c.server_time_s)                 # eq 8
    assert c.uplink_time_s == pytest.approx(8000 / 200e6)                        # eq 15, D_A
    assert c.tx_energy_j == pytest.approx(1.0 * (c.uplink_time_s + c.downlink_time_s))   # eq 16
    assert c.rtt_time_s == pytest.approx(0.002)
    assert c.total_time_s == pytest.approx(c.device_time_s + c.uplink_time_s + c.downlink_time_s
                                           + c.server_time_s + c.rtt_time_s)
    assert c.objective == pytest.approx(c.total_time_s + c.device_energy_j + c.tx_energy_j + c.server_cost)


def test_head_reuse_and_held_heads():
    work = Workload(0, 1e6, 1_000_000, 100, 50, True)
    link = LinkProfile(rate_bps=8e6, rtt_s=0.01)
    one = predict(work, TABLE2, link, SERVER, Objective())
    many = predict(work, TABLE2, link, SERVER, Objective(), inferences_per_head=100)
    held = predict(work, TABLE2, link, SERVER, Objective(), head_held=True)
    assert one.downlink_time_s == pytest.approx((1_000_000 + 50) * 8 / 8e6)
    assert many.downlink_time_s == pytest.approx((10_000 + 50) * 8 / 8e6)
    assert held.downlink_time_s == pytest.approx(50 * 8 / 8e6)
    assert one.rtt_time_s == pytest.approx(0.02) and many.rtt_time_s == pytest.approx(0.0101)
    assert held.rtt_time_s == pytest.approx(0.01)


def test_a_streamed_answer_overlaps_the_servers_work():
    link = LinkProfile(rate_bps=1e6, rtt_s=0.01)
    slow = Workload(0, 0, 0, 100, 50, True, server_seconds=0.1, streamed_bytes=5_000)     # 40 ms of stream
    fast = Workload(0, 0, 0, 100, 50, True, server_seconds=0.01, streamed_bytes=5_000)
    hidden, outlasts = (predict(w, TABLE2, link, SERVER, Objective()) for w in (slow, fast))
    assert hidden.downlink_time_s == pytest.approx(50 * 8 / 1e6)                  # all behind 100 ms of work
    assert outlasts.downlink_time_s == pytest.approx((50 + 5_000) * 8 / 1e6 - 0.01)
    assert outlasts.total_time_s == pytest.approx(800e-6 + (50 + 5_000) * 8 / 1e6 + 0.01)
    assert hidden.tx_energy_j == pytest.approx(1.0 * (100 + 50 + 5_000) * 8 / 1e6)  # the radio sends all of it


def test_arrays_price_like_scalars():
    rows = [(1e5, 2e5, 0, 800, 56, True), (3e5, 0, 50_000, 0, 0, False)]
    arrays = Workload(*(np.array(col) for col in zip(*rows)))
    link = LinkProfile(rate_bps=5e6, rtt_s=0.01)
    together = predict(arrays, TABLE2, link, SERVER, Objective(), 10, np.array([False, True]))
    for i, row in enumerate(rows):
        alone = predict(Workload(*row), TABLE2, link, SERVER, Objective(), 10, [False, True][i])
        row_costs = together.at(i)
        for name in ("device_time_s", "uplink_time_s", "downlink_time_s", "server_time_s", "rtt_time_s",
                     "device_energy_j", "tx_energy_j", "server_cost", "objective"):
            assert getattr(row_costs, name) == pytest.approx(float(getattr(alone, name))), name


def test_shannon_rate_and_rayleigh_fading():
    assert shannon_rate(10e6, 10 * math.log10(3)) == pytest.approx(10e6 * 2)     # log2(1 + 3) = 2
    g = np.random.default_rng(0).exponential(1.0, 400_000)
    for snr_db in (0, 10, 20):
        monte_carlo = 1e6 * np.mean(np.log2(1 + 10 ** (snr_db / 10) * g))
        assert shannon_rate(1e6, snr_db, rayleigh=True) == pytest.approx(monte_carlo, rel=0.01)
        assert shannon_rate(1e6, snr_db, rayleigh=True) < shannon_rate(1e6, snr_db)   # Jensen
    assert LinkProfile(rate_bps=0, bandwidth_hz=1e6, snr_db=10).uplink_bps == pytest.approx(shannon_rate(1e6, 10))


def test_measured_mac_rate_wins():
    device = DeviceProfile(clock_hz=1e9, cycles_per_mac=1.0, macs_per_second=5e9)
    assert device.mac_rate == 5e9


@pytest.mark.parametrize("bad", [dict(clock_hz=-1), dict(tx_power_w=float("nan")), dict(cycles_per_mac=0, clock_hz=0)])
def test_invalid_device_profiles(bad):
    with pytest.raises(InvalidArgument):
        DeviceProfile(**bad)


def test_invalid_links():
    with pytest.raises(InvalidArgument, match="rate"):
        LinkProfile(rate_bps=0)
    with pytest.raises(InvalidArgument):
        LinkProfile(rtt_s=-1)


def test_bundled_profiles(tmp_path):
    names = profiles.bundled()
    assert {"paper-table2", "rpi4", "rpi5", "jetson-orin-nano"} <= set(names)
    table2 = profiles.load_device("paper-table2")
    assert (table2.clock_hz, table2.cycles_per_mac, table2.tx_power_w) == (200e6, 5.0, 1.0)
    for name in names:
        assert profiles.load_device(name).mac_rate > 0
        comments = [line for line in (profiles.PROFILE_DIR / f"{name}.toml").read_text().splitlines()
                    if line.startswith("#")]
        assert any("Source" in line or "brief" in line or "data sheet" in line for line in comments), name
    custom = tmp_path / "board.toml"
    custom.write_text('clock_hz = 1e9\ncycles_per_mac = 2\n')
    assert profiles.load_device(str(custom)).name == "board"
    custom.write_text('clock_hz = 1e9\nturbo = true\n')
    with pytest.raises(InvalidArgument, match="unknown field"):
        profiles.load_device(str(custom))
    with pytest.raises(NotFound):
        profiles.load_device("nope")

from qpart.device import backends, probe


def test_measured_compute_and_link(client):
    assert probe.measure_mac_rate("numpy", seconds=0.05) > 1e6
    assert backends.mac_rate("torch", seconds=0.05) > 1e6
    link = probe.measure_link(client, repeats=2)
    assert link.rtt_s > 0 and link.uplink_bps > 1e6 and link.downlink_bps > 1e6
    sent = client.bytes["Probe"].sent
    assert 2 * probe.SMALL_PROBE <= sent <= 2 * 2 * (probe.SMALL_PROBE + probe.MAX_PROBE) + 4096   # sized, counted

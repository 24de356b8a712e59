from qpart.device import probe


def test_measured_compute_and_link(client):
    assert probe.measure_mac_rate(seconds=0.05) > 1e6
    link = probe.measure_link(client, probe_bytes=64 << 10, repeats=2)
    assert link.rtt_s > 0 and link.uplink_bps > 1e6 and link.downlink_bps > 1e6
    assert client.bytes["Probe"].sent >= 2 * (64 << 10)

"""Measure what the device can do: its head executor's MAC rate and the link to the server."""
import statistics
import time

from qpart.common.costmodel import LinkProfile
from qpart.common.torchnet import mac_rate as measure_mac_rate
from qpart.device.client import ServerClient

__all__ = ["measure_mac_rate", "measure_link"]


def measure_link(client: ServerClient, probe_bytes: int = 256 << 10, repeats: int = 3) -> LinkProfile:
    """Round-trip time as an inference stream sees it (median of empty round trips on one stream, the
    first, which opens the stream, left out); uplink and downlink rates from probe_bytes each way,
    less the unary call's own round trip."""
    def best(payload: int, reply: int) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.probe(payload, reply)
            times.append(time.perf_counter() - started)
        return min(times)
    rtt = statistics.median(client.probe_round_trips(12)[2:])
    unary = best(0, 0)
    up = best(probe_bytes, 0)
    down = best(0, probe_bytes)
    return LinkProfile(rate_bps=8 * probe_bytes / max(up - unary, 1e-6),
                       downlink_rate_bps=8 * probe_bytes / max(down - unary, 1e-6), rtt_s=rtt)

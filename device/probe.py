"""Measure what the device can do: its head executor's MAC rate and the link to the server."""
import statistics
import time

from qpart.common.costmodel import LinkProfile
from qpart.device.backends import mac_rate as measure_mac_rate
from qpart.device.client import ServerClient, message_bytes
from qpart.device.linkwatch import LinkSample
from qpart.v1 import service_pb2 as spb

__all__ = ["measure_mac_rate", "measure_link", "probe_sample"]


SMALL_PROBE = 8 << 10      # bytes each way of the first probe, which sizes the second
PROBE_SECONDS = 0.15       # the second probe moves about this much traffic each way, at the first's rate
MAX_PROBE = 256 << 10


def fastest_probe(client: ServerClient, payload: int, reply: int, repeats: int) -> float:
    """Seconds of the fastest of `repeats` unary Probe calls sending `payload` bytes, asking `reply` back."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.probe(payload, reply)
        times.append(time.perf_counter() - started)
    return min(times)


def measure_link(client: ServerClient, repeats: int = 2) -> LinkProfile:
    """Round-trip time as an inference stream sees it (median of empty round trips on one stream, the
    first two, which open the stream, left out); uplink and downlink rates from probes sized to the
    link (a small one, then one of about PROBE_SECONDS at the rate the small one showed), less the
    unary call's own round trip. All of it is counted in client.bytes like any RPC; at most ~1 s of
    traffic whatever the link."""
    def best(payload: int, reply: int) -> float:
        return fastest_probe(client, payload, reply, repeats)

    def rates(size: int, unary: float) -> tuple[float, float]:
        return (8 * size / max(best(size, 0) - unary, 1e-6), 8 * size / max(best(0, size) - unary, 1e-6))

    rtt = statistics.median(client.probe_round_trips(10)[2:])
    unary = best(0, 0)
    up, down = rates(SMALL_PROBE, unary)
    size = int(min(max(min(up, down) * PROBE_SECONDS / 8, SMALL_PROBE), MAX_PROBE))
    up, down = rates(size, unary)
    return LinkProfile(rate_bps=up, downlink_rate_bps=down, rtt_s=rtt)


def probe_sample(client: ServerClient, link: LinkProfile, seconds: float = 0.05, repeats: int = 2) -> LinkSample:
    """A light probe of an idle link for qpart.device.linkwatch: the fastest of `repeats` unary Probe calls
    carrying about `seconds` of upload at the link's planned rate (8 KiB to 256 KiB), as one sample."""
    size = int(min(max(link.uplink_bps * seconds / 8, SMALL_PROBE), MAX_PROBE))
    began = time.time()
    best = fastest_probe(client, size, 0, repeats)
    up = message_bytes(spb.ProbeRequest(payload=bytes(size)))
    return LinkSample(began, up, message_bytes(spb.ProbeResponse(received_bytes=size)), best, overlapped=False)

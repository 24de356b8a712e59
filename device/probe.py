"""Measure what the device can do: its head executor's MAC rate and the link to the server."""
import statistics
import time

import torch

from qpart.common.costmodel import LinkProfile
from qpart.device.client import ServerClient


def measure_mac_rate(seconds: float = 0.3, width: int = 512, batch: int = 8) -> float:
    """MACs per second of a float32 torch linear layer, batch `batch`, measured over ~`seconds`."""
    layer = torch.nn.Linear(width, width).eval()
    x = torch.randn(batch, width)
    with torch.inference_mode():
        layer(x)
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            layer(x)
            runs += 1
    return runs * batch * width * width / (time.perf_counter() - started)


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

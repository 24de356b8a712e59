"""Board emulation: head runs are stretched to the profile's MAC rate, never sped up. The arithmetic is
tested; how closely sleep() keeps to it on a busy machine is not (the benchmark reports measured times)."""
import time

import numpy as np
import pytest

from qpart.device.agent import DeviceAgent
from qpart.device.emulation import pacing_seconds
from qpart.device.cache import HeadCache
from qpart.device.head import HeadExecutor
from qpart.server.models.heads import build_head
from qpart.server.models.split import Split


@pytest.mark.parametrize("macs, rate, elapsed, wait", [
    (833_040, 20e6, 0.0, 0.041652),     # 2 x 416,520 MACs at 20 MMAC/s
    (833_040, 20e6, 0.010, 0.031652),   # the run itself took 10 ms: only the rest is waited
    (833_040, 20e6, 0.100, 0.0),        # this machine was slower than the board: nothing is added
    (1_000, 1e9, 0.0, 1e-6),
])
def test_pacing_arithmetic(macs, rate, elapsed, wait):
    assert pacing_seconds(macs, rate, elapsed) == pytest.approx(wait, abs=1e-12)


def test_head_runs_are_paced(repo):
    model = repo.get("lenet")
    head = HeadExecutor(build_head(model, Split(model.num_nodes, (8,) * 5, ())))
    agent = DeviceAgent(None, HeadCache(None), emulate_macs_per_second=20e6)
    started = time.perf_counter()
    agent.run_head(head, np.zeros((2, 1, 28, 28), np.float32))
    assert time.perf_counter() - started >= 2 * head.macs / 20e6      # sleep never returns early

import time

import numpy as np

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.head import HeadExecutor
from qpart.server.heads import build_head
from qpart.server.plans import PlanSpec


def test_head_runs_are_paced_to_the_emulated_rate(repo, client):
    model = repo.get("lenet")
    head = HeadExecutor(build_head(model, PlanSpec(model.name, model.version, 6, (8,) * 5, 0)))
    agent = DeviceAgent(client, HeadCache(None), emulate_macs_per_second=20e6)
    x = np.zeros((2, 1, 28, 28), np.float32)
    started = time.perf_counter()
    agent.run_head(head, x)
    elapsed = time.perf_counter() - started
    expected = 2 * head.macs / 20e6                    # 2 x 416,520 MACs at 20 MMAC/s = 41.7 ms
    assert expected <= elapsed < expected + 0.02

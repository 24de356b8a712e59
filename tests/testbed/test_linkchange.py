"""The link drops under a running device on the shaped testbed (tc, namespaces): the device sees it in its
own traffic, plans again for the new rate and answers every input once. Needs root; CI runs as root. The full
20 -> 1 -> 20 Mbit/s experiment with its report is bench/link_change.py."""
import os

import pytest

from qpart.testbed import linkchange

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and run tc")


@needs_root
def test_a_link_drop_brings_a_new_plan_priced_for_the_new_rate(models_dir, data_dir, catalogs):
    config = linkchange.LinkChangeConfig(model="resnet8-96", rates_mbit=(20.0, 1.0), hold_s=(6.0,), tail_s=3.0,
                                         count=500)
    result = linkchange.run(config, models_dir, data_dir, log=lambda _line: None)
    device, (drop,) = result["device"], result["pairs"]
    assert device["inputs"] == 500 and device["duplicates_dropped"] == 0
    assert sum(p["inputs"] for p in device["phases"]) == 500
    assert drop["after"] is not None, device["phases"]
    assert drop["after"]["trigger"].startswith("traffic")
    assert drop["after"]["trigger"] != "start" and drop["plan_after_visible_s"] is not None   # planned again on the
    # drop itself (how soon is the benchmark's figure: bench/link_change.py, docs/benchmarks/link_change.md)
    assert 0.4 < drop["after"]["link_mbps"] < 2.5          # what the traffic showed: tc set 1 Mbit/s
    assert drop["before"]["link_mbps"] > 8                 # the probe at the start saw the 20 Mbit/s link

"""The two-namespace testbed. Needs root (network namespaces, tc); CI runs as root."""
import json
import os
import subprocess
import sys
import time

import pytest

from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.testbed import netns as testbed
from qpart.testbed.bench import NamespacedServer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and run tc")


def test_link_shapes_are_validated():
    with pytest.raises(InvalidArgument):
        testbed.LinkShape(rate_mbit=-1)
    with pytest.raises(InvalidArgument):
        testbed.LinkShape(loss_pct=150)


@pytest.fixture
def bed(tmp_path):
    bed = testbed.Testbed(tmp_path / "state")
    yield bed
    bed.down()


def _start(bed, models_dir) -> NamespacedServer:
    return NamespacedServer(models_dir, bed, 50051, "--cold-heads")


def _device_link(bed, data_dir, tmp_path) -> dict:
    out = tmp_path / "r.json"
    result = subprocess.run(testbed.netns(testbed.DEVICE_NS, sys.executable, "-m", "qpart.device.main", "--server",
                                          bed.device_target(50051), "--model", "fc6", "--measure-link",
                                          "--cut", "0", "--activation-bits", "8", "--count", "5",
                                          "--data", str(data_dir), "--no-cache", "--json", str(out)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())["split"]


@needs_root
def test_namespaces_shaping_and_live_changes(bed, models_dir, data_dir, tmp_path):
    state = bed.up(testbed.LinkShape(rate_mbit=5, delay_ms=10))
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert testbed.SERVER_NS in namespaces and testbed.DEVICE_NS in namespaces
    qdisc = subprocess.run(testbed.netns(testbed.DEVICE_NS, "tc", "qdisc", "show", "dev", testbed.DEVICE_IF),
                           capture_output=True, text=True).stdout
    assert ("netem" if state["netem"] else "tbf") in qdisc and "5Mbit" in qdisc
    if not state["netem"]:
        with pytest.raises(FailedPrecondition, match="no netem"):
            bed.shape(testbed.LinkShape(rate_mbit=5, loss_pct=1))
    processes = _start(bed, models_dir)
    try:
        link = _device_link(bed, data_dir, tmp_path)
        assert link["predicted"]["rtt_time_s"] >= 0.020               # two 10 ms one-way delays
        uplink_s = link["predicted"]["uplink_time_s"]
        assert uplink_s > 0
        bed.shape(testbed.LinkShape(rate_mbit=20, delay_ms=2))        # live: no restart of anything
        time.sleep(0.3)
        faster = _device_link(bed, data_dir, tmp_path)
        assert 0.004 <= faster["predicted"]["rtt_time_s"] < link["predicted"]["rtt_time_s"]
        assert faster["predicted"]["uplink_time_s"] < uplink_s / 1.5  # four times the rate, measured
    finally:
        processes.close()


@needs_root
def test_reshape_changes_only_what_it_is_given(bed):
    bed.up(testbed.LinkShape(rate_mbit=5, delay_ms=10, jitter_ms=1))
    shape = bed.reshape(rate_mbit=20)["shape"]
    assert shape == {"rate_mbit": 20, "delay_ms": 10, "jitter_ms": 1, "loss_pct": 0}
    assert bed.reshape(delay_ms=2)["shape"]["rate_mbit"] == 20


@needs_root
def test_fading_changes_the_rate(bed):
    bed.up(testbed.LinkShape(rate_mbit=10))
    seen = []
    bed.fade(bandwidth_mhz=2, snr_db=10, coherence_ms=50, duration_s=0.4, report=seen.append)
    rates = {line.split("rate=")[1] for line in seen}
    assert len(seen) >= 4 and len(rates) >= 3
    assert bed.state()["shape"]["rate_mbit"] > 0
    bed.down()
    assert not bed.is_up()

"""The link changes under a running device: does it notice, plan again and answer every input once?

A device process in the testbed's device namespace classifies test images with `qpart-device --adapt`
(qpart.device.adaptive) while this harness reshapes the veth live (tc), e.g. 20 -> 1 -> 20 Mbit/s. The
device knows nothing of the schedule: it sees the change in its own traffic (or, on a plan that sends
nothing, in its idle-time probes). The result pairs each change with the device's next plan: when the
change showed in the device's traffic, when the new plan was in hand, and the plan, predicted and
measured time per input before and after. Needs root.
"""
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from qpart.common.errors import FailedPrecondition
from qpart.testbed import netns as testbed
from qpart.testbed.bench import SERVER_PORT, NamespacedServer

READY = "adapting"     # the line the device prints as it starts classifying (qpart.device.main.run_adaptive)


@dataclass(frozen=True)
class LinkChangeConfig:
    model: str = "resnet8-96"
    rates_mbit: tuple[float, ...] = (20.0, 1.0, 20.0)   # the link at the start, then after each change, Mbit/s
    hold_s: tuple[float, ...] = (12.0, 15.0)            # seconds each rate but the last is held
    tail_s: float = 10.0          # seconds the last rate must be in place before the device may run out of inputs
    delay_ms: float = 5.0         # one-way delay, ms (round trip twice that)
    count: int = 5000             # test images the device classifies (it must still be running at the end)
    profile: str = "rpi4"         # the device profile, its speed emulated (--emulate-speed)
    budget: float = 1.0           # accuracy budget, top-1 points
    reuse: int = 100              # inferences each head is priced to be reused for
    batch_size: int = 1           # inputs per activation message (1: each input pays its round trip, as priced)


def run(config: LinkChangeConfig, models_dir: pathlib.Path, data_dir=None, log=print) -> dict:
    if len(config.hold_s) != len(config.rates_mbit) - 1:
        raise FailedPrecondition("give one hold time per rate but the last")
    bed = testbed.Testbed()
    bed.up(testbed.LinkShape(rate_mbit=config.rates_mbit[0], delay_ms=config.delay_ms))
    server = NamespacedServer(models_dir, bed, SERVER_PORT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "device.json"
            command = testbed.netns(
                testbed.DEVICE_NS, sys.executable, "-m", "qpart.device.main", "--server", bed.device_target(SERVER_PORT),
                "--model", config.model, "--profile", config.profile, "--emulate-speed", "--measure-link", "--adapt",
                "--budget", str(config.budget), "--reuse", str(config.reuse), "--count", str(config.count),
                "--batch-size", str(config.batch_size), "--cache", str(pathlib.Path(tmp) / "heads"),
                "--json", str(out), "--quiet", *(["--data", str(data_dir)] if data_dir else []))
            device = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lines = _wait_ready(device)
            changes = []
            for rate, hold in zip(config.rates_mbit[1:], config.hold_s):
                time.sleep(hold)
                bed.reshape(rate_mbit=rate)
                changes.append({"at": time.time(), "rate_mbit": rate})
                log(f"link -> {rate:g} Mbit/s")
            time.sleep(config.tail_s)
            still_running = device.poll() is None
            stdout, stderr = device.communicate(timeout=600)
            if device.returncode != 0:
                raise FailedPrecondition(f"the device failed ({device.returncode}): {stderr.strip()[-2000:]}")
            report = json.loads(out.read_text())["adaptive"]
    finally:
        server.close()
        bed.down()
    return {"config": config.__dict__, "changes": changes, "device": report, "still_running": still_running,
            "device_output": lines + stdout.splitlines(), "pairs": pair_changes(changes, report["phases"])}


def _wait_ready(device: subprocess.Popen, timeout_s: float = 300.0) -> list[str]:
    lines, started = [], time.monotonic()
    while time.monotonic() - started < timeout_s:
        line = device.stdout.readline()
        if not line:
            raise FailedPrecondition(f"the device ended before it began: {device.stderr.read().strip()[-2000:]}")
        lines.append(line.rstrip())
        if line.startswith(READY):
            return lines
    device.kill()
    raise FailedPrecondition(f"the device was not running after {timeout_s:.0f} s")


def pair_changes(changes: list[dict], phases: list[dict]) -> list[dict]:
    """For each link change, the first plan made after it: the phases before and after, and the delays."""
    pairs = []
    for change in changes:
        after = next((i for i, p in enumerate(phases) if p["detected_at"] > change["at"]), None)
        row = {"rate_mbit": change["rate_mbit"], "before": phases[after - 1] if after else phases[-1],
               "after": phases[after] if after is not None else None}
        if after is not None:
            p = phases[after]
            row |= {"visible_s": p["visible_at"] - change["at"], "replanned_s": p["planned_at"] - change["at"],
                    "plan_after_visible_s": p["planned_at"] - p["visible_at"], "head_s": p["ready_at"] - p["planned_at"]}
        pairs.append(row)
    return pairs

"""The device side of `qpart bench`: runs in the device's network namespace, reads a job list as JSON
on stdin and writes raw measurements as JSON on stdout.

mode "calibrate": for each model, time a small whole-model head at batch 1 on this machine; half that
rate caps the emulated boards, so that pacing, not this machine, sets the device time.
mode "measure": measure the link once (probes), then for each cell ask the server for a plan with the
cell's device (speed emulated by pacing, see DeviceAgent), link, budget, objective, head reuse and
policy. Each distinct plan is measured once for all the cells that share it: head downloads (no
cache), accuracy, and lock-step inferences (batch 1, one in flight), the latter in rounds in which
the plans take turns in random order, so that drift of the machine hits every plan alike.
"""
import dataclasses
import json
import statistics
import sys
import tempfile
import time

import numpy as np

from google.protobuf import json_format

from qpart.common import datasets, messages, policies, profiles, runtime, tensors
from qpart.common.costmodel import Objective
from qpart.device import netstat, probe
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.v1 import service_pb2 as spb



def calibrate(client: ServerClient, inputs: dict, models: list[str]) -> dict:
    rates = {}
    for info in client.list_models():
        if info.name not in models:
            continue
        x = inputs[info.name]
        plan = client.plan(spb.PlanRequest(model=info.name, policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=len(info.nodes), weight_bits=[4])))
        agent = DeviceAgent(client, HeadCache(None))
        executor, _ = agent.obtain_head(plan)
        times = []
        for i in range(40):
            started = time.perf_counter()
            executor.run(x[i:i + 1])
            times.append(time.perf_counter() - started)
        # half the warm rate: interleaved with other plans the caches are cold, and pacing must dominate
        rates[info.name] = 0.5 * executor.macs / statistics.median(times[5:])
    return {"macs_per_second": rates}


def _fetches(client: ServerClient, plan: spb.PlanResponse, repeats: int) -> dict:
    seconds, tcp = [], []
    for _ in range(repeats):
        before = netstat.tcp_bytes(client.port)
        started = time.perf_counter()
        client.fetch_head(plan, max_bytes=1 << 30)
        seconds.append(time.perf_counter() - started)
        after = netstat.tcp_bytes(client.port)
        if before is not None and after is not None:
            tcp.append((after - before).received)
    return {"seconds": seconds, "tcp_bytes": tcp, "head_bytes": plan.head_bytes}


class _TimedPlan:
    """One distinct plan, measured in rounds interleaved with the others (drift hits all plans alike)."""

    def __init__(self, client: ServerClient, plan: spb.PlanResponse, emulated: float, cache_dir: str, preprocessing):
        self.client, self.plan = client, plan
        self.agent = DeviceAgent(client, HeadCache(cache_dir), emulate_macs_per_second=emulated)
        self.agent.preprocessing = preprocessing     # rounds get raw images: the device's preprocessing is timed too
        self.executor, _ = self.agent.obtain_head(plan)
        self.latency, self.device_s, self.server_s, self.inputs = [], 0.0, 0.0, 0
        self.message_up = self.message_down = self.tcp_up = self.tcp_down = 0
        self.tcp_known = True

    def round(self, x: np.ndarray) -> None:
        """len(x) - 1 timed inferences of raw images x: the first of each stream opens it and is not counted."""
        report = RunReport.for_plan(self.plan)
        before = self.client.bytes.get("Infer")
        before = (before.sent, before.received) if before else (0, 0)
        tcp_before = netstat.tcp_bytes(self.client.port)
        self.agent.classify(self.plan, self.executor, x, report, batch_size=1, window=1)
        tcp_after = netstat.tcp_bytes(self.client.port)
        self.latency += report.batch_latency_s[1:]
        self.device_s += report.device_compute_s
        self.server_s += report.server_compute_s
        self.inputs += len(x)
        after = self.client.bytes.get("Infer")
        if after is not None:
            self.message_up += after.sent - before[0]
            self.message_down += after.received - before[1]
        if tcp_before is None or tcp_after is None:
            self.tcp_known = False
        else:
            self.tcp_up += (tcp_after - tcp_before).sent
            self.tcp_down += (tcp_after - tcp_before).received

    def result(self) -> dict:
        n = self.inputs
        return {"latency_s": self.latency, "device_compute_s": self.device_s / n, "server_compute_s": self.server_s / n,
                "message_bytes_up": self.message_up / n, "message_bytes_down": self.message_down / n,
                "tcp_bytes_up": self.tcp_up / n if self.tcp_known else None,
                "tcp_bytes_down": self.tcp_down / n if self.tcp_known else None}


def _accuracy(client: ServerClient, plan: spb.PlanResponse, x: np.ndarray, labels: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        agent = DeviceAgent(client, HeadCache(tmp))
        executor, _ = agent.obtain_head(plan)
        report = RunReport.for_plan(plan)
        scores = agent.classify(plan, executor, x, report, batch_size=100, window=2)
    return 100.0 * float(np.mean(scores.argmax(axis=1) == labels))


def measure(client: ServerClient, job: dict, inputs: dict, labels: np.ndarray, raw: dict) -> dict:
    """inputs: per model, the test images preprocessed; raw: per model, (the same images raw, its preprocessing)."""
    rate = job["rate_mbit"] * 1e6
    link = probe.measure_link(client, repeats=3)
    rows, timed, fetch = [], {}, {}
    accuracy = dict(job.get("known_accuracy", {}))     # plans measured at another link rate already
    with tempfile.TemporaryDirectory() as cache_dir:
        for cell in job["cells"]:
            device = profiles.load_device(cell["device"])
            emulated = min(device.mac_rate, job["achievable"][cell["model"]])
            request = spb.PlanRequest(
                model=cell["model"], device=messages.device_to_pb(dataclasses.replace(device, macs_per_second=emulated)),
                link=messages.link_to_pb(link), accuracy_budget=cell["budget"],
                weights=messages.objective_to_pb(Objective(*cell["objective"])), inferences_per_head=cell["reuse"],
                policy=policies.to_enum(cell["policy"]))
            plan = client.plan(request)
            key = f"{plan.plan_id}@{emulated:.6g}"
            x = inputs[cell["model"]]
            if key not in timed:
                timed[key] = _TimedPlan(client, plan, emulated, cache_dir, raw[cell["model"]][1])
            if plan.head_hash and plan.head_hash not in fetch:
                repeats = 1 if plan.head_bytes * 8 / rate > 2.0 else job["fetch_repeats"]
                fetch[plan.head_hash] = _fetches(client, plan, repeats)
            if plan.plan_id not in accuracy:
                accuracy[plan.plan_id] = _accuracy(client, plan, x[:job["accuracy_images"]], labels[:job["accuracy_images"]])
            rows.append(cell | {
                "emulated_macs_per_second": emulated, "emulation_capped": emulated < device.mac_rate,
                "plan_id": plan.plan_id, "inference_key": key, "head_hash": plan.head_hash,
                "head_bytes": plan.head_bytes, "cut": plan.cut, "num_nodes": plan.num_nodes,
                "weight_bits": list(plan.weight_bits), "activation_bits": [a.bits for a in plan.activations],
                "coding": [tensors.coding_label(a.coding, a.quality) for a in plan.activations],
                "predicted": json_format.MessageToDict(plan.predicted, preserving_proto_field_name=True,
                                                       always_print_fields_with_no_presence=True),
                "energy_per_mac": device.energy_coefficient * device.clock_hz ** 2 * device.cycles_per_mac,
                "tx_power_w": device.tx_power_w})
        rounds = job["rounds"]
        per_round = -(-job["inferences"] // rounds) + 1
        order = list(timed.values())
        rng = np.random.default_rng(0)
        for r in range(rounds):
            for i in rng.permutation(len(order)):
                order[i].round(raw[order[i].plan.model][0][r * per_round:(r + 1) * per_round])
    return {"link": dataclasses.asdict(link), "rows": rows,
            "inference": {key: t.result() for key, t in timed.items()}, "fetch": fetch, "accuracy": accuracy}


def main() -> int:
    job = json.load(sys.stdin)
    client = ServerClient(job["target"], timeout_s=600)
    try:
        images, labels = datasets.open_data(job.get("data")).part("test")
        n = max(job.get("accuracy_images", 0), job.get("inferences", 0) + 2 * job.get("rounds", 1), 100)
        raw = {info.name: (images[:n], messages.preprocessing_from_pb(info.preprocessing))
               for info in client.list_models() if info.name in job["models"]}
        inputs = {name: preprocessing.apply(x) for name, (x, preprocessing) in raw.items()}
        runtime.freeze_long_lived()
        result = (calibrate(client, inputs, job["models"]) if job["mode"] == "calibrate"
                  else measure(client, job, inputs, labels[:n], raw))
    finally:
        client.close()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

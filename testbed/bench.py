"""`qpart bench`: the six policies end to end over a shaped link, on a grid of scenarios.

A testbed (two network namespaces on a veth) carries the traffic: the server (and, without netem, the
delay relay) in one namespace, the device worker (qpart.testbed.bench_worker) in the other. For each
link rate the link is reshaped, the worker measures its link with probes, asks the server for a plan
per cell and policy, and measures each distinct plan: head downloads, lock-step inferences (batch 1),
accuracy. A cell is (model, device, rate, budget, head reuse, objective); its time per inference is
the measured inference latency plus the measured head download spread over the reuse.

Board speeds are EMULATED: the device worker paces each head run to the profile's MAC rate, capped at
what this machine achieves for that model (a board faster than this machine cannot be emulated; the
plan is then made for the capped rate and the report says so).
"""
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from qpart.common import policies
from qpart.common.errors import FailedPrecondition
from qpart.server.calibration import build, image_files
from qpart.server.models import repository
from qpart.server.planning import catalog
from qpart.server.training import train
from qpart.testbed import netns as testbed
from qpart.testbed.processes import RelayProcess, ServerProcess

POLICIES = (policies.QPART, *policies.BASELINES)
OBJECTIVES = {"time": (1.0, 0.0, 0.0), "default": (1.0, 1.0, 1.0)}
SERVER_PORT = 50051


@dataclass
class BenchConfig:
    models: tuple[str, ...] = ("fc6", "lenet", "vgg8", "resnet8-96", "mobilenetv2-96")
    devices: tuple[str, ...] = ("paper-table2", "rpi4", "rpi5", "jetson-orin-nano")
    rates_mbit: tuple[float, ...] = (1.0, 5.0, 20.0, 100.0)
    budgets: tuple[float, ...] = (0.5, 1.0, 2.0)
    reuse: tuple[int, ...] = (1, 100)
    objectives: tuple[str, ...] = ("time", "default")
    delay_ms: float = 5.0            # one-way delay each direction (10 ms round trip)
    inferences: int = 40             # timed lock-step inferences per distinct plan
    rounds: int = 5                  # the plans of a link rate take turns this many times (drift hits all alike)
    accuracy_images: int = 500       # test images per distinct plan for its accuracy
    fetch_repeats: int = 3           # downloads per distinct head, median taken (1 for heads over 2 s)
    policies: tuple[str, ...] = POLICIES

    def cells(self) -> list[dict]:
        return [{"model": m, "device": d, "budget": b, "reuse": k, "objective_name": o, "objective": OBJECTIVES[o],
                 "policy": p}
                for m in self.models for d in self.devices for b in self.budgets for k in self.reuse
                for o in self.objectives for p in self.policies]


# CI's grid: rates where transmission dominates and the planner's choices matter most (input widths,
# splits, device-only with reuse); the near-ties at 20-100 Mbit/s are in the full report.
REDUCED = BenchConfig(models=("lenet",), devices=("rpi4", "jetson-orin-nano"), rates_mbit=(1.0, 5.0), budgets=(1.0,),
                      reuse=(100,), objectives=("time",), inferences=12, rounds=3, accuracy_images=200,
                      fetch_repeats=1)


# The camera-sized models (3x96x96 Fashion-MNIST, resized): the two boards that matter, the link rates where
# the planner's choice changes, one budget, heads reused; about 20 minutes on 2 cores.
CAMERA = BenchConfig(models=("resnet8-96", "mobilenetv2-96"), devices=("rpi4", "jetson-orin-nano"),
                     rates_mbit=(1.0, 5.0, 20.0), budgets=(1.0,), reuse=(100,), objectives=("time", "default"),
                     inferences=24, rounds=4, accuracy_images=300, fetch_repeats=1)
GRIDS = {"full": BenchConfig(), "reduced": REDUCED, "camera": CAMERA}


def ensure_models(models_dir: pathlib.Path, names, data_dir=None, log=print) -> None:
    """Train and catalog whatever the grid needs and the repository lacks."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (models_dir / name / repository.NETWORK_FILE).exists():
            log(f"training {name}")
            train.train(name, models_dir, data_dir, train.TrainConfig(progress=False))
        model = repository.load_model(models_dir / name)
        if catalog.current(model) is None:
            log(f"building the catalog of {name}")
            catalog.save(model, build.build(model, data_dir, progress=False))
        image_files.ensure(model, catalog.require(model), data_dir)      # the input as image files (server_only_codec)


class NamespacedServer:
    """The server (and, without netem, the delay relay) in the testbed's server namespace."""

    def __init__(self, models_dir: pathlib.Path, bed: testbed.Testbed, port: int = SERVER_PORT, *extra: str):
        self.server = ServerProcess(models_dir, port, *extra, host="0.0.0.0", namespace=testbed.SERVER_NS)
        self.relay = None
        if not bed.state()["netem"]:
            try:
                self.relay = RelayProcess(testbed.SERVER_NS, f"{testbed.SERVER_IP}:{testbed.RELAY_PORT}",
                                          f"127.0.0.1:{port}", bed.state_file)
            except FailedPrecondition:
                self.server.stop()
                raise

    def close(self) -> None:
        self.server.stop()
        if self.relay is not None:
            self.relay.stop()


def _worker(job: dict) -> dict:
    result = subprocess.run(testbed.netns(testbed.DEVICE_NS, sys.executable, "-m", "qpart.testbed.bench_worker"),
                            input=json.dumps(job), capture_output=True, text=True)
    if result.returncode != 0:
        raise FailedPrecondition(f"the device worker failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def run(config: BenchConfig, models_dir: pathlib.Path, data_dir=None, log=print) -> dict:
    if os.geteuid() != 0:
        raise FailedPrecondition("qpart bench needs root: it builds network namespaces and shapes them with tc")
    started = time.perf_counter()
    ensure_models(models_dir, config.models, data_dir, log)
    bed = testbed.Testbed()
    netem = bed.up(testbed.LinkShape(rate_mbit=max(config.rates_mbit), delay_ms=config.delay_ms))["netem"]
    processes = NamespacedServer(models_dir, bed)
    try:
        target = bed.device_target(SERVER_PORT)
        common = {"target": target, "data": str(data_dir) if data_dir else None, "models": list(config.models)}
        achievable = _worker(common | {"mode": "calibrate"})["macs_per_second"]
        log(f"this machine runs whole-model heads at {', '.join(f'{m} {r / 1e9:.2f} GMAC/s' for m, r in achievable.items())}")
        groups, accuracy = [], {}
        for rate in sorted(config.rates_mbit, reverse=True):   # fastest first: accuracies carry over to slower links
            bed.shape(testbed.LinkShape(rate_mbit=rate, delay_ms=config.delay_ms))
            t0 = time.perf_counter()
            group = _worker(common | {"mode": "measure", "rate_mbit": rate, "achievable": achievable,
                                      "cells": config.cells(), "inferences": config.inferences, "rounds": config.rounds,
                                      "accuracy_images": config.accuracy_images, "fetch_repeats": config.fetch_repeats,
                                      "known_accuracy": accuracy})
            accuracy.update(group["accuracy"])
            group["rate_mbit"] = rate
            groups.append(group)
            log(f"{rate:g} Mbit/s: {len(group['rows'])} runs, {len(group['inference'])} distinct plans measured "
                f"in {time.perf_counter() - t0:.0f} s")
    finally:
        processes.close()
        bed.down()
    results = summarize(config, groups, achievable)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["netem"] = netem
    return results


def _row_metrics(row: dict, group: dict, rate_bps: float) -> dict:
    inference = group["inference"][row["inference_key"]]
    fetch = group["fetch"].get(row["head_hash"]) if row["head_hash"] else None
    k = row["reuse"]
    fetch_s = statistics.median(fetch["seconds"]) if fetch else 0.0
    samples = np.array(inference["latency_s"]) + fetch_s / k        # time per inference, one per timed inference
    p50, p95 = float(np.median(samples)), float(np.quantile(samples, 0.95))
    head_tcp = statistics.fmean(fetch["tcp_bytes"]) if fetch and fetch["tcp_bytes"] else (fetch or {}).get("head_bytes", 0)
    up = inference["tcp_bytes_up"] if inference["tcp_bytes_up"] is not None else inference["message_bytes_up"]
    down = (inference["tcp_bytes_down"] if inference["tcp_bytes_down"] is not None else inference["message_bytes_down"])
    down += head_tcp / k
    energy = row["predicted"]["device_energy_j"] + row["tx_power_w"] * 8 * (up + down) / rate_bps
    cost = inference["server_compute_s"]     # μ = 1 per busy second
    w_time, w_energy, w_cost = row["objective"]
    return {"p50_s": p50, "p95_s": p95, "bytes_up": up, "bytes_down": down, "energy_j": energy,
            "server_cost": cost, "objective": w_time * p50 + w_energy * energy + w_cost * cost,
            "objective_samples": w_time * samples + w_energy * energy + w_cost * cost,
            "predicted_s": row["predicted"]["total_time_s"], "accuracy": group["accuracy"][row["plan_id"]],
            "fetch_s": fetch_s, "device_compute_s": inference["device_compute_s"],
            "server_compute_s": inference["server_compute_s"]}


def summarize(config: BenchConfig, groups: list[dict], achievable: dict) -> dict:
    rows = []
    for group in groups:
        rate_bps = group["rate_mbit"] * 1e6
        for row in group["rows"]:
            rows.append({k: v for k, v in row.items() if k != "predicted"} | {"rate_mbit": group["rate_mbit"]}
                        | {"predicted_detail": row["predicted"]} | _row_metrics(row, group, rate_bps))
    cells: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["device"], row["rate_mbit"], row["budget"], row["reuse"], row["objective_name"])
        cells.setdefault(key, {})[row["policy"]] = row
    rng = np.random.default_rng(0)
    verdicts = [verdict(key, by_policy, rng) for key, by_policy in sorted(cells.items())]
    for row in rows:
        del row["objective_samples"]
    errors = {}
    for policy in config.policies:
        rel = [abs(r["predicted_s"] - r["p50_s"]) / r["p50_s"] for r in rows if r["policy"] == policy]
        errors[policy] = statistics.median(rel) if rel else None
    summary = {}
    for objective in config.objectives:
        mine = [v for v in verdicts if v["cell"]["objective"] == objective]
        summary[objective] = {"cells": len(mine), "qpart_lowest": sum(v["qpart_lowest"] for v in mine),
                              "share": sum(v["qpart_lowest"] for v in mine) / len(mine) if mine else None,
                              "strictly_lowest": sum(v["strictly_lowest"] for v in mine)}
    return {"config": asdict(config), "achievable_macs_per_second": achievable, "rows": rows, "verdicts": verdicts,
            "summary": summary, "median_relative_error": errors, "wire_efficiency": _wire_efficiency(groups),
            "machine": machine()}


CELL_FIELDS = ("model", "device", "rate_mbit", "budget", "reuse", "objective")


def verdict(key: tuple, by_policy: dict, rng: np.random.Generator) -> dict:
    """How QPART fared in one cell: the best baseline's figure, whether QPART's is the strictly lowest
    number, and which baselines (running another plan) are significantly below it."""
    metric = "p50_s" if key[-1] == "time" else "objective"
    qpart = by_policy[policies.QPART]
    ours = qpart[metric]
    others = [p for p in by_policy if p != policies.QPART]
    best_other = min(others, key=lambda p: by_policy[p][metric])
    beaten_by = [p for p in others if by_policy[p]["plan_id"] != qpart["plan_id"]
                 and _significantly_lower(by_policy[p]["objective_samples"], qpart["objective_samples"], rng)]
    return {"cell": dict(zip(CELL_FIELDS, key)), "metric": metric, "qpart": ours, "best_baseline": best_other,
            "baseline_value": by_policy[best_other][metric],
            "strictly_lowest": ours <= by_policy[best_other][metric] * (1 + 1e-9),
            "beaten_by": beaten_by, "qpart_lowest": not beaten_by,
            "same_plan": qpart["plan_id"] == by_policy[best_other]["plan_id"]}


def _significantly_lower(baseline: np.ndarray, ours: np.ndarray, rng: np.random.Generator, resamples: int = 2000) -> bool:
    """Is the baseline's median below ours beyond measurement noise? One-sided 95 % bootstrap of the
    difference of medians (the median of a policy's per-inference samples)."""
    b = np.median(baseline[rng.integers(0, len(baseline), (resamples, len(baseline)))], axis=1)
    q = np.median(ours[rng.integers(0, len(ours), (resamples, len(ours)))], axis=1)
    return bool(np.quantile(b - q, 0.95) < 0)


def _wire_efficiency(groups: list[dict]) -> dict:
    """Per rate: median head download time (minus one round trip) over kernel-counted bits / shaped rate."""
    out = {}
    for group in groups:
        rtt = group["link"]["rtt_s"]
        rate_bps = group["rate_mbit"] * 1e6
        transfers = []
        for head_hash, fetch in group["fetch"].items():
            if fetch["tcp_bytes"] and fetch["head_bytes"] * 8 / rate_bps > 0.05:   # transfers of 50 ms and more
                ideal = statistics.fmean(fetch["tcp_bytes"]) * 8 / rate_bps
                transfers.append({"head_hash": head_hash, "head_bytes": fetch["head_bytes"], "seconds": fetch["seconds"],
                                  "ratio": (statistics.median(fetch["seconds"]) - rtt) / ideal})
        ratios = [t["ratio"] for t in transfers]
        out[str(group["rate_mbit"])] = {"transfers": len(ratios), "median": statistics.median(ratios) if ratios else None,
                                        "max": max(ratios) if ratios else None, "each": transfers}
    return out


def machine() -> dict:
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}

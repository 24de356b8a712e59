"""`qpart demo`: the main job on an embedded default, with server and device as separate processes.

Trains the default model (resnet8-96: a ResNet on Fashion-MNIST resized to 3x96x96, a camera
stand-in) and builds its catalog if they are absent, starts qpart-server on a free local port,
waits for grpc.health.v1 to report SERVING, runs qpart-device (priced as the Raspberry Pi 4
profile, not this host's speed, on a 5 Mbit/s, 10 ms link, half-point budget, the head reused for 100
inputs: there the planner cuts inside resnet8-96 with and without zlib-coded activations) on 1,000 test images with the unsplit comparison, prints the planner's candidates and
choice, what crossed the cut, split vs unsplit accuracy, bytes each way and latency, and stops the
server.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

from qpart.common.errors import FailedPrecondition
from qpart.server.calibration import build, codecs, coding
from qpart.server.models import repository
from qpart.server.planning import catalog
from qpart.server.training import train
from qpart.testbed.processes import ServerProcess


DEFAULT_MODEL = "resnet8-96"
# priced as the Raspberry Pi 4 profile, not this host's measured speed: a fast host would run the whole
# network "on the device" and the demo would show no split
DEVICE = ("--profile", "rpi4", "--no-measure-compute", "--rate-mbps", "5", "--rtt-ms", "10", "--budget", "0.5",
          "--reuse", "100", "--explain")


def run(models: pathlib.Path, model: str = DEFAULT_MODEL, count: int = 1000, data_dir=None,
        device_args=DEVICE) -> dict:
    models.mkdir(parents=True, exist_ok=True)
    if not (models / model / repository.NETWORK_FILE).exists():
        print(f"training {model} into {models} (first run only)", flush=True)
        trained = train.train(model, models, data_dir)
        print(f"trained {model}: float test accuracy {trained.card['float_test_accuracy']:.2f}%", flush=True)
    loaded = repository.load_model(models / model)
    if catalog.current(loaded) is None:
        print(f"building the catalog of {model} (first run, or new weights)", flush=True)
        catalog.save(loaded, build.build(loaded, data_dir))
    coding.ensure(loaded, catalog.require(loaded), data_dir)         # as `qpart catalog` does (once: then current)
    codecs.ensure(loaded, catalog.require(loaded), data_dir)
    with ServerProcess(models) as server:
        target = server.target
        print(f"server process {server.pid} is SERVING on {target}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "report.json"
            command = [sys.executable, "-m", "qpart.device.main", "--server", target, "--model", model,
                       "--count", str(count), "--compare-unsplit", "--quiet", "--json", str(out),
                       "--cache", str(pathlib.Path(tmp) / "cache"), *device_args]
            if data_dir:
                command += ["--data", str(data_dir)]
            print("device:", " ".join(command[2:]), flush=True)
            if subprocess.run(command).returncode != 0:
                raise FailedPrecondition("the device run failed (see above)")
            result = json.loads(out.read_text())
    split, unsplit = result["split"], result["unsplit"]
    sent = sum(v["sent"] for v in split["wire"].values())
    received = sum(v["received"] for v in split["wire"].values())
    latencies = sorted(split["batch_latency_s"])
    print("\n== qpart demo ==")
    drop = split["predicted"].get("accuracy_drop")
    print(f"model {model}, {split['inputs']} test images, {split['policy']} plan: cut {split['cut']} of "
          f"{split['num_nodes']} nodes on the device, weight bits {split['weight_bits']}, activation bits "
          f"{split['activation_bits']}, " + (f"certified drop {drop:.2f} points" if drop is not None else "drop not measured"))
    if split["crossing"]:
        print("crossed the cut per input: " + ", ".join(
            f"{c['name']} {c['shape']} at {c['bits']} bits ({c['bytes']:,} B)" for c in split["crossing"]))
    print(f"accuracy: split {split['accuracy']:.2f}%  unsplit {unsplit['accuracy']:.2f}%  "
          f"(agreement {result['agreement']:.2f}%)")
    head = split["head"]
    shipped = (f"head {head['bytes']:,} bytes for {head['float32_bytes']:,} float32 bytes" if head["bytes"]
               else "no head: the server runs the whole model")
    print(f"bytes (gRPC messages): device -> server {sent:,}, server -> device {received:,} ({shipped})")
    if split["tcp"]:
        print(f"bytes (TCP, from the kernel): device -> server {split['tcp']['sent']:,}, "
              f"server -> device {split['tcp']['received']:,}")
    print(f"latency per image: p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95)] * 1e3:.2f} ms; wall {split['total_s']:.2f} s")
    return result

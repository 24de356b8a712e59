"""`qpart demo`: the main job on an embedded default, with server and device as separate processes.

Trains the default model into the repository if it is absent, starts qpart-server on a free local
port, waits for grpc.health.v1 to report SERVING, runs qpart-device on 1,000 test images with the
unsplit comparison, prints split vs unsplit accuracy, bytes each way and latency, and stops the server.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

from qpart.common import health
from qpart.server import repository, train

LISTENING = re.compile(r"listening on (\S+):(\d+)")


def start_server(models: pathlib.Path, extra_args=()) -> tuple[subprocess.Popen, str]:
    """Start qpart-server on a free port; returns the process and its host:port once it is SERVING."""
    server = subprocess.Popen([sys.executable, "-m", "qpart.server.main", "--models", str(models), "--port", "0",
                               *extra_args], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    match = LISTENING.search(line)
    if not match:
        server.kill()
        raise SystemExit(f"qpart-server did not start: {line!r}")
    target = f"{match.group(1)}:{match.group(2)}"
    if not health.wait_serving(target):
        server.kill()
        raise SystemExit(f"qpart-server at {target} did not report SERVING")
    return server, target


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


DEFAULT_PLAN = ("--partition-point", "3", "--weight-bits", "8", "--activation-bits", "8")


def run(models: pathlib.Path, model: str = "fc6", count: int = 1000, data_dir=None, device_args=DEFAULT_PLAN) -> dict:
    models.mkdir(parents=True, exist_ok=True)
    if not (models / model / repository.NETWORK_FILE).exists():
        print(f"training {model} into {models} (first run only)", flush=True)
        trained = train.train(model, models, data_dir)
        print(f"trained {model}: float test accuracy {trained.card['float_test_accuracy']:.2f}%", flush=True)
    server, target = start_server(models)
    try:
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
                raise SystemExit("qpart demo: the device run failed (see above)")
            result = json.loads(out.read_text())
    finally:
        stop_server(server)
    split, unsplit = result["split"], result["unsplit"]
    sent = sum(v["sent"] for v in split["wire"].values())
    received = sum(v["received"] for v in split["wire"].values())
    latencies = sorted(split["batch_latency_s"])
    print("\n== qpart demo ==")
    print(f"model {model}, {split['inputs']} test images, plan p={split['partition_point']} "
          f"weight bits {split['weight_bits']} activation bits {split['activation_bits']} ({split['policy']})")
    print(f"accuracy: split {split['accuracy']:.2f}%  unsplit {unsplit['accuracy']:.2f}%  "
          f"(agreement {result['agreement']:.2f}%)")
    print(f"bytes (gRPC messages): device -> server {sent:,}, server -> device {received:,} "
          f"(head {split['head']['bytes']:,} of {split['head']['float32_bytes']:,} float32 bytes)")
    if split["tcp"]:
        print(f"bytes (TCP, from the kernel): device -> server {split['tcp']['sent']:,}, "
              f"server -> device {split['tcp']['received']:,}")
    print(f"latency per image: p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95)] * 1e3:.2f} ms; wall {split['total_s']:.2f} s")
    return result

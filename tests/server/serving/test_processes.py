"""qpart-server --processes: several server processes on one port, each serving any plan; stopping the
parent stops them all."""
import argparse
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc

from qpart.common import config
from qpart.server.serving.settings import ServerSettings
from qpart.testbed.processes import ServerProcess, free_port
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc


def _children(pid: int) -> list[int]:
    out = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_two_processes_share_the_port_and_serve_every_plan(models_dir, catalogs):
    base = _two_free_ports()
    with ServerProcess(models_dir, 0, "--processes", "2", "--no-measure-speed", "--cold-heads",
                       "--metrics-port", str(base)) as server:
        children = _children(server.pid)
        assert len(children) == 2
        plan = None
        for _ in range(12):         # new connections: the kernel spreads them over both processes
            channel = grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)])
            stub = service_pb2_grpc.SplitInferenceStub(channel)
            plan = plan or stub.Plan(spb.PlanRequest(model="lenet", policy=spb.SERVER_ONLY, accuracy_budget=100),
                                     timeout=30)
            batch = spb.ActivationBatch(request_ids=[7], tensors=[spb.TensorBatch(
                name=plan.activations[0].name, sample_shape=plan.activations[0].sample_shape,
                bits=plan.activations[0].bits, data=bytes(-(-28 * 28 * plan.activations[0].bits // 8)))])
            (answer,) = stub.Infer(iter([spb.InferRequest(plan_id=plan.plan_id, batch=batch)]), timeout=30)
            assert [r.request_id for r in answer.results] == [7]                 # a plan id from either serves
            channel.close()
        served = [_infer_streams(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
                  for port in (base, base + 1)]
        assert sum(served) == 12 and min(served) > 0, served     # each process answered some (all on one: 1 in 2,048)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(pathlib.Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pathlib.Path(f"/proc/{c}/stat").exists() and " Z " not in pathlib.Path(f"/proc/{c}/stat").read_text()
                   for c in children)


def _infer_streams(scraped: str) -> int:
    """Infer streams a process answered OK, from its /metrics."""
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
                   if line.startswith("qpart_requests_total{") and 'rpc="Infer"' in line and 'code="OK"' in line))


def _two_free_ports() -> int:
    """A port p with p + 1 free too (as --metrics-port for two processes)."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


def test_each_process_serves_its_metrics_on_its_own_port_and_says_so(models_dir, catalogs, tmp_path):
    """--metrics-port M with --processes 2: process i on M + i, said by the listening line, a log line at start
    and the options' help."""
    base = _two_free_ports()
    with (tmp_path / "server.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "qpart.server.serving.main", "--models", str(models_dir),
                                    "--port", "0", "--processes", "2", "--no-measure-speed", "--cold-heads",
                                    "--metrics-port", str(base), "--log-level", "INFO"],
                                   stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            listening = process.stdout.readline()
            assert f"metrics on 127.0.0.1:{base}-{base + 1}, one port per process" in listening, listening
            for port in (base, base + 1):
                scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
                assert "qpart_open_streams" in scraped
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    logged = (tmp_path / "server.log").read_text()
    assert f"each serves its own /metrics: process i on 127.0.0.1:{base} + i (ports {base}-{base + 1})" in logged
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, ServerSettings)
    helped = " ".join(parser.format_help().split())
    assert "process i on --metrics-port + i" in helped and "process i serves its own on this port + i" in helped


def test_metrics_ports_that_take_the_grpc_port_are_refused():
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "qpart.server.serving.main", "--models", "nowhere", "--port",
                             str(port), "--processes", "2", "--metrics-port", str(port - 1)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "INVALID_ARGUMENT" in result.stderr and f"gRPC port {port}" in result.stderr

"""The device as a board gets it: a wheel built from this checkout (`pip wheel`, as the README's "Install"
says), installed with its device extra in a fresh virtualenv (numpy, grpcio, protobuf; no torch); its
console scripts (the device's work, the server's name the extra they lack in one line), then the daemon
against a server in another process, applications classifying through its unix socket, and the README's
library example."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import grpc
import numpy as np
import pytest

from qpart.common import health
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.testbed.processes import ServerProcess, free_port
from qpart.v1 import agent_pb2 as apb
from qpart.v1 import agent_pb2_grpc as agrpc
from qpart.v1 import service_pb2 as spb

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "protos", "common", "device", "server", "cli", "testbed")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> pathlib.Path:
    """A virtualenv from the base interpreter with `pip install 'qpart-*.whl[device]'`, the wheel built by
    `pip wheel` from a copy of the checkout: no torch."""
    root = tmp_path_factory.mktemp("board")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(root / "venv")], check=True)
    pip = str(root / "venv" / "bin" / "pip")
    built = subprocess.run([pip, "wheel", "--quiet", "--no-deps", "-w", str(root / "wheels"), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (root / "wheels").glob("qpart-*-py3-none-any.whl")       # pure Python: one wheel for every board
    installed = subprocess.run([pip, "install", f"{wheel}[device]"], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    assert "does not provide the extra" not in installed.stdout + installed.stderr
    return root / "venv"


def script(venv, name: str, *args: str) -> subprocess.CompletedProcess:
    """A console script of the venv, run as a user runs it (in a folder without a checkout)."""
    return subprocess.run([str(venv / "bin" / name), *args], capture_output=True, text=True, cwd=venv.parent,
                          timeout=120)


def test_the_device_scripts_work_and_the_server_ones_name_the_extra(venv):
    """The device's console scripts answer; every command of the server part ends with one line naming
    qpart[server] and a non-zero status, not a traceback."""
    for name in ("qpart-device", "qpart"):
        helped = script(venv, name, "--help")
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stdout + helped.stderr
    for command in (("qpart-server", "--help"), ("qpart-server", "--models", "model-repo"),
                    ("qpart", "catalog", "fc6"), ("qpart", "plan", "fc6"), ("qpart", "train", "fc6")):
        result = script(venv, *command)
        assert result.returncode == 3 and result.stdout == "", (command, result.stdout, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"{command[0]}: this install lacks ") and "qpart[server]" in line, line


def run_in(venv, code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          cwd=venv.parent, **kw)


def test_the_device_installs_and_imports_without_torch(venv):
    installed = run_in(venv, "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('PIL'))")
    assert installed.stdout.split() == ["None", "None"], installed.stdout + installed.stderr
    imported = run_in(venv, "import sys, qpart.device, qpart.device.daemon, qpart.device.main; "
                            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or "
                            "m.startswith(('qpart.server', 'qpart.testbed', 'qpart.cli'))))")
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stdout + imported.stderr


@pytest.fixture(scope="module")
def server_process(models_dir):
    with ServerProcess(models_dir) as process:
        yield process


def test_daemon_without_torch_serves_a_split(venv, server_process, model_inputs, data_dir, tmp_path):
    from qpart.common import data
    images, _ = data.load_split("test", data_dir)
    x, labels = model_inputs("resnet8-96", 60)
    socket, metrics = tmp_path / "agent.sock", free_port()
    config = tmp_path / "device.toml"
    config.write_text(f'server = "{server_process.target}"\nmodels = ["resnet8-96"]\nbudget = 2.0\n'
                      f'listen = "unix:{socket}"\ncache_dir = "{tmp_path / "heads"}"\nmetrics_port = {metrics}\n'
                      f'rate_mbps = 1.0\nrtt_ms = 20.0\nreplan_factor = 1000000.0\n'
                      # the paper's Table II device, not this machine's measured speed: on a fast CI
                      # host the whole network fits on the "device" and nothing would be split
                      f'profile = "paper-table2"\nmeasure_compute = false\n')
    daemon = subprocess.Popen([str(venv / "bin" / "qpart-device"), "serve", "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert health.wait_serving(f"unix:{socket}", timeout_s=180), daemon.stderr.read() if daemon.poll() else ""
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = agrpc.LocalAgentStub(channel)
            answers = [stub.Classify(apb.ClassifyRequest(pixels=apb.Tensor(
                shape=[28, 28], data=images[i].astype("<f4").tobytes())), timeout=60) for i in range(len(x))]
            with pytest.raises(grpc.RpcError) as no_pillow:
                stub.Classify(apb.ClassifyRequest(image=b"\x89PNG...."), timeout=60)
            (status,) = stub.Status(apb.StatusRequest()).models
        # the input guard's answer (as the server's) where Pillow is missing: the system, not the input, lacks it
        assert no_pillow.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "Pillow" in no_pillow.value.details()
        assert status.backend == "numpy" and status.inputs == len(x) and 0 < status.plan.cut < status.plan.num_nodes
        # the same plan, run here with torch installed: the same answers
        plan = status.plan
        request = spb.PlanRequest(model="resnet8-96", policy=spb.FIXED, fixed=spb.FixedPlan(
            cut=plan.cut, weight_bits=plan.weight_bits, activation_bits=[a.bits for a in plan.activations],
            weight_granularity=plan.weight_granularity))
        with ServerClient(server_process.target, timeout_s=60) as client:
            reference = DeviceAgent(client, HeadCache(None), backend="torch").run(request, x, labels, batch_size=20)
        agreement = np.mean(np.array([a.label for a in answers]) == np.array(reference.predictions))
        assert agreement >= 0.98, agreement
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert "planned resnet8-96 (start)" in daemon.stderr.read()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_the_readme_library_example_runs_as_written(venv, server_process, tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- library-example[^\n]*-->\n```python\n(.*?)```", readme, re.S)
    assert block, "the README lost its library example"
    code = block.group(1).replace("localhost:50051", server_process.target)
    result = run_in(venv, code, env={**os.environ, "HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, last = result.stdout.strip().splitlines()
    assert re.fullmatch(r".+ \[(\d, ){7}\d\]", first), first
    # the plan follows this host's measured speed and link: a head on numpy, or (a slow, busy host) the input sent
    assert re.fullmatch(r"cut [1-9]\d* of \d+ nodes, head on numpy|cut 0 of \d+ nodes, head on none", last), last
    assert (tmp_path / ".cache" / "qpart" / "heads").is_dir() or last.endswith("head on none")   # heads cached

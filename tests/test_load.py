"""64 device sessions against one server on this 2-core machine: no errors, bounded memory."""
import json
import subprocess
import sys

from qpart.server.demo import start_server, stop_server
from qpart.server.reliability import peak_memory_kb


def test_64_sessions(models_dir, catalogs):
    server, target = start_server(models_dir, ["--no-measure-speed"])
    try:
        result = subprocess.run([sys.executable, "-m", "qpart.device.loadgen", "--server", target, "--sessions", "64",
                                 "--processes", "4", "--seconds", "5"], capture_output=True, text=True, timeout=180)
        load = json.loads(result.stdout)
        peak = peak_memory_kb(server.pid)
    finally:
        stop_server(server)
    assert load["errors"] == {} and load["answered"] >= 200, load
    assert load["p99_ms"] < 5000
    assert peak < 1_500_000, f"server peak memory {peak} kB"

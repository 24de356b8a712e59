"""Server and device as separate processes over real sockets, as users run them."""
import json
import socket
import subprocess
import sys
import threading

import pytest

from qpart.testbed.processes import ServerProcess


class CountingProxy:
    """A TCP relay that counts every byte each way: what really crossed the wire."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.to_server = self.to_device = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                device, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(device, server, "to_server"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, device, "to_device"), daemon=True).start()

    def _pump(self, source, sink, counter):
        try:
            while data := source.recv(65536):
                setattr(self, counter, getattr(self, counter) + len(data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture(scope="module")
def server_process(models_dir):
    with ServerProcess(models_dir) as server:
        yield server, server.target


def run_device(target: str, data_dir, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qpart.device.main", "--server", target, "--data", str(data_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_device_reports_the_bytes_that_crossed_the_wire(server_process, data_dir, tmp_path):
    _, target = server_process
    proxy = CountingProxy(int(target.rsplit(":", 1)[1]))
    try:
        out = tmp_path / "report.json"
        result = run_device(f"127.0.0.1:{proxy.port}", data_dir, "--model", "lenet", "--cut", "7",
                            "--weight-bits", "6", "--activation-bits", "5", "--count", "200", "--batch-size", "10",
                            "--cache", str(tmp_path / "cache"), "--json", str(out))
        assert result.returncode == 0, result.stderr
    finally:
        proxy.close()
    report = json.loads(out.read_text())["split"]
    tcp = report["tcp"]
    assert tcp is not None, "ss (iproute2) must be available on the test machine"
    # the device read its socket counters just before closing the channel; closing adds a few bytes (GOAWAY, FIN)
    assert 0 <= proxy.to_server - tcp["sent"] <= 128, (proxy.to_server, tcp)
    assert 0 <= proxy.to_device - tcp["received"] <= 128, (proxy.to_device, tcp)
    messages_sent = sum(v["sent"] for v in report["wire"].values())
    messages_received = sum(v["received"] for v in report["wire"].values())
    assert messages_sent < tcp["sent"] and messages_received < tcp["received"]
    assert report["wire"]["FetchHead"]["received"] > report["head"]["bytes"]
    assert report["accuracy"] > 50
    assert "wire      sent" in result.stdout and "accuracy" in result.stdout


def test_device_errors_are_clear(server_process, data_dir, tmp_path):
    _, target = server_process
    result = run_device(target, data_dir, "--model", "nope", "--count", "1", "--cache", str(tmp_path))
    assert result.returncode == 2
    assert "NOT_FOUND: unknown model 'nope'" in result.stderr
    result = run_device(target, data_dir, "--model", "fc6", "--cut", "2", "--weight-bits", "17",
                        "--count", "1", "--cache", str(tmp_path))
    assert result.returncode == 2 and "--weight-bits" in result.stderr and "got 17" in result.stderr
    result = run_device(target, data_dir, "--model", "fc6", "--cut", "2", "--weight-bits", "4,x",
                        "--count", "1", "--cache", str(tmp_path))
    assert result.returncode == 2 and "--weight-bits" in result.stderr and "Traceback" not in result.stderr


def test_second_run_uses_the_cached_head(server_process, data_dir, tmp_path):
    _, target = server_process
    args = ("--model", "fc6", "--cut", "5", "--weight-bits", "4", "--activation-bits", "8",
            "--count", "20", "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "r.json"))
    first = run_device(target, data_dir, *args)
    assert first.returncode == 0, first.stderr
    head = json.loads((tmp_path / "r.json").read_text())["split"]["head"]
    second = run_device(target, data_dir, *args)
    report = json.loads((tmp_path / "r.json").read_text())["split"]
    assert not head["cache_hit"] and report["head"]["cache_hit"]
    assert "FetchHead" not in report["wire"]


def test_server_shuts_down_on_sigterm(models_dir, tmp_path):
    with open(tmp_path / "server.err", "w") as err:
        server = ServerProcess(models_dir, stderr=err, log_level="INFO")
        code = server.stop(timeout_s=20)
    assert code == 0, (tmp_path / "server.err").read_text()[-4000:]


# qpart-server as its entry point runs it, or with a stop that never finishes (and a 1 s margin instead of 10 s)
SERVER = """
import sys, threading
from qpart.server.serving import main
if sys.argv[1] == "hung":
    main.STOP_MARGIN_S = 1.0
    main.RunningServer.stop = lambda self, *args: threading.Event().wait()
sys.exit(main.main(sys.argv[2:]))
"""


def sigterm_as_it_listens(stop: str, models) -> tuple[int, str]:
    """SIGTERM the moment the listening line is read; the exit code and stderr."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, stop, "--models", str(models), "--port", "0",
                               "--drain-notice", "0", "--grace", "0.5", "--log-level", "INFO", "--no-measure-speed"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in server.stdout.readline()
        server.terminate()
        _, stderr = server.communicate(timeout=20)
    finally:
        server.kill()
    return server.returncode, stderr


def test_a_sigterm_as_soon_as_it_listens_drains_and_exits_0(tmp_path):
    code, stderr = sigterm_as_it_listens("real", tmp_path)
    assert code == 0 and "signal 15: draining" in stderr, stderr


def test_a_stop_that_cannot_finish_still_ends_the_server_with_the_stacks(tmp_path):
    code, stderr = sigterm_as_it_listens("hung", tmp_path)
    assert code == 1, stderr
    assert "Timeout" in stderr and "in wait" in stderr      # faulthandler's dump: the stop thread, stuck in wait


def test_demo_runs_server_and_device_as_processes(models_dir, data_dir):
    result = subprocess.run([sys.executable, "-m", "qpart.cli.main", "demo", "--models", str(models_dir),
                             "--data", str(data_dir), "--count", "100"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "accuracy: split" in result.stdout and "unsplit" in result.stdout and "bytes (gRPC messages): device -> server" in result.stdout

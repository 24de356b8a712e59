"""Issue 25: a daemon started while its server is down waits for it (and says so in Status) instead of
exiting, and serves once the server is up."""
import time

import grpc
import numpy as np
import pytest

from qpart.common import health
from qpart.common.errors import NotFound, Unavailable
from qpart.device import daemon
from qpart.device.config import DeviceConfig
from qpart.testbed.processes import free_port
from qpart.v1 import agent_pb2 as apb
from qpart.v1 import agent_pb2_grpc as agrpc


def _wait_until(predicate, limit_s: float = 120.0):
    """predicate() once it is truthy, polling; its last value when limit_s ran out (a bound, not a measurement)."""
    deadline = time.monotonic() + limit_s
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_a_daemon_started_before_its_server_waits_for_it_and_then_serves(models_dir, tmp_path):
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    port = free_port()
    settings = DeviceConfig(server=f"127.0.0.1:{port}", models=["lenet"], budget=2.0, listen=f"unix:{tmp_path}/a.sock",
                            cache_dir=str(tmp_path / "heads"), rate_mbps=2.0, rtt_ms=10.0, measure_compute=False,
                            backend="numpy", retries=0, timeout_s=10.0, start_retry_s=0.2, start_retry_max_s=0.8)
    running = daemon.RunningDaemon(settings)            # raised Unavailable and exited before issue 25
    server = None
    try:
        channel = grpc.insecure_channel(settings.listen)
        stub = agrpc.LocalAgentStub(channel)
        waiting = _wait_until(lambda: (s := stub.Status(apb.StatusRequest(), timeout=10)).attempts >= 2 and s)
        assert waiting.state == apb.DAEMON_WAITING, waiting
        assert waiting.waiting_for.startswith(f"127.0.0.1:{port}: UNAVAILABLE"), waiting.waiting_for
        assert 0 <= waiting.next_attempt_s <= settings.start_retry_max_s
        assert [m.model for m in waiting.models] == ["lenet"] and not waiting.models[0].plan.plan_id
        assert waiting.uplink_bps == 0 and health.is_serving(settings.listen) is False
        pixels = apb.Tensor(shape=[28, 28], data=np.zeros((28, 28), np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(apb.ClassifyRequest(pixels=pixels), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the daemon is waiting for the server (127.0.0.1:" in refused.value.details()
        with pytest.raises(grpc.RpcError) as unknown:                   # a model it does not serve: still NOT_FOUND
            stub.Classify(apb.ClassifyRequest(model="nope", pixels=pixels), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        server = RunningServer(ServerSettings(models=models_dir, port=port, measure_speed=False, warm_heads=False))
        ready = _wait_until(lambda: (s := stub.Status(apb.StatusRequest(), timeout=10)).state == apb.DAEMON_READY and s)
        assert ready and ready.attempts >= 3 and not ready.waiting_for and ready.next_attempt_s == 0, ready
        assert ready.models[0].plan.plan_id and ready.uplink_bps == 2e6
        assert health.is_serving(settings.listen, service="qpart.v1.LocalAgent")
        answer = stub.Classify(apb.ClassifyRequest(pixels=pixels), timeout=60)
        assert len(answer.scores) == 10
        channel.close()
    finally:
        running.stop(0)
        if server is not None:
            server.stop(0, notice=0)


class Attempts:
    """connect() that fails `failures` times with Unavailable, then succeeds; stop.wait() that records the waits."""

    def __init__(self, failures: int):
        self.failures, self.waits = failures, []

    def wait(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 6))
        return False


def test_the_waits_double_up_to_the_bound(monkeypatch):
    config = DeviceConfig(server="127.0.0.1:1", models=["m"], start_retry_s=0.5, start_retry_max_s=3.0)
    waiter = daemon.DeviceDaemon.__new__(daemon.DeviceDaemon)       # no server, no measurement: the loop alone
    waiter.config, waiter.state, waiter.attempts, waiter.waiting_for, waiter.next_attempt = (
        config, apb.DAEMON_WAITING, 1, "", 0.0)
    attempts = Attempts(failures=6)

    def connect():
        waiter.attempts += 1
        if attempts.failures:
            attempts.failures -= 1
            raise Unavailable("connection refused") if attempts.failures else NotFound("no model 'm' here yet")
        waiter.state = apb.DAEMON_READY
    monkeypatch.setattr(waiter, "connect", connect)
    monkeypatch.setattr(daemon.random, "uniform", lambda low, high: high)     # the upper end of each draw
    ready = []
    waiter.wait_for_server(attempts, lambda: ready.append(True))
    assert attempts.waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0] and ready == [True] and waiter.attempts == 8
    assert "NOT_FOUND" in waiter.waiting_for             # what the last failed attempt got, whatever it was


def test_a_configuration_the_server_refuses_is_not_waited_for(server, tmp_path):
    settings = DeviceConfig(server=f"127.0.0.1:{server.port}", models=["no-such-model"], listen=f"unix:{tmp_path}/a.sock",
                            cache_dir=str(tmp_path), rate_mbps=2.0, measure_compute=False, backend="numpy")
    with pytest.raises(NotFound):
        daemon.RunningDaemon(settings)

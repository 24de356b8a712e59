"""Prometheus metrics and structured logs with request ids."""
import json
import logging
import time
import urllib.request

import grpc
import pytest

from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.server.serving.main import RunningServer
from qpart.server.serving.observe import JsonFormatter
from qpart.testbed.processes import free_port
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb


@pytest.fixture(scope="module")
def observed(models_dir, catalogs):
    port = free_port()
    running = RunningServer(ServerSettings(models=models_dir, port=0, metrics_port=port, measure_speed=False,
                                           warm_heads=False))
    yield running, port
    running.stop(0, notice=0)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics(observed, test_set):
    running, port = observed
    client = ServerClient(f"127.0.0.1:{running.port}", timeout_s=30)
    x, labels = test_set
    request = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(cut=7, weight_bits=[6],
                                                                                 activation_bits=[5]))
    agent = DeviceAgent(client, HeadCache(None))
    agent.run(request, x[:40], labels[:40], batch_size=10)
    agent.close()                  # the device session's Infer stream ends: the RPC is counted when it does
    with pytest.raises(Exception):
        client.plan(spb.PlanRequest(model="nope"))
    client.close()
    for _ in range(50):
        m = scrape(port)
        if 'qpart_requests_total{code="OK",rpc="Infer"}' in m:
            break
        time.sleep(0.1)
    assert m['qpart_requests_total{code="OK",rpc="Plan"}'] >= 1
    assert m['qpart_requests_total{code="NOT_FOUND",rpc="Plan"}'] >= 1
    assert m['qpart_requests_total{code="OK",rpc="Infer"}'] >= 1
    assert m['qpart_plans_total{cut="7",model="lenet",policy="fixed"}'] >= 1
    assert m['qpart_plan_bits_total{bits="6",model="lenet",tensor="weights"}'] >= 2
    assert m['qpart_plan_bits_total{bits="5",model="lenet",tensor="activation"}'] >= 1
    assert m['qpart_inferences_total{model="lenet"}'] >= 40
    for part in ("queue", "compute", "transfer"):
        assert m[f"qpart_infer_{part}_seconds_count"] >= 4
    assert m['qpart_bytes_total{direction="received",rpc="Infer"}'] >= 4 * 10 * 400 * 5 / 8
    assert m['qpart_bytes_total{direction="sent",rpc="FetchHead"}'] > 1000
    assert m['qpart_rpc_seconds_count{rpc="Plan"}'] >= 2


def test_logs_carry_request_ids(observed, caplog):
    running, _ = observed
    caplog.set_level(logging.INFO, logger="qpart.rpc")
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = channel.unary_unary("/qpart.v1.SplitInference/Plan", request_serializer=spb.PlanRequest.SerializeToString,
                                   response_deserializer=spb.PlanResponse.FromString)
        call(spb.PlanRequest(model="fc6"), timeout=30, metadata=(("x-request-id", "trace-me-42"),))
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("rpc") == "Plan"]
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["request_id"] == "trace-me-42" and line["code"] == "OK" and line["model"] == "fc6"
    assert line["cut"] >= 0 and "weight_bits" in line and line["ms"] > 0


def test_only_plans_and_failures_are_logged_at_info(observed, caplog):
    """Quiet by default: a plan handed out and an RPC that failed at INFO, every other RPC (an idle device's
    link probes, its downloads and streams) at DEBUG."""
    running, _ = observed
    caplog.set_level(logging.DEBUG, logger="qpart.rpc")
    with ServerClient(f"127.0.0.1:{running.port}", timeout_s=30) as client:
        client.probe(1024, 0)
        client.list_models()
        client.plan(spb.PlanRequest(model="fc6"))
        with pytest.raises(Exception):
            client.plan(spb.PlanRequest(model="nope"))
    levels = {(r.fields["rpc"], r.fields["code"]): r.levelno for r in caplog.records
              if r.name == "qpart.rpc" and "rpc" in getattr(r, "fields", {})}
    assert levels == {("Probe", "OK"): logging.DEBUG, ("ListModels", "OK"): logging.DEBUG,
                      ("Plan", "OK"): logging.INFO, ("Plan", "NOT_FOUND"): logging.INFO}, levels


def test_json_logs_put_only_json_lines_out(models_dir, tmp_path):
    """With --json-logs the listening line is JSON too, and the speeds timed at start-up are logged."""
    import subprocess
    import sys
    process = subprocess.Popen([sys.executable, "-m", "qpart.server.serving.main", "--models", str(models_dir),
                                "--port", "0", "--json-logs", "--log-level", "INFO"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listening = json.loads(process.stdout.readline())
        assert listening["event"] == "listening" and listening["port"] > 0 and "listening on" in listening["message"]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    logs = [json.loads(line) for line in err.splitlines() if line.strip()]    # every line is JSON
    events = {entry.get("event") for entry in logs}
    assert {"tail_timed", "speed_measured"} <= events, events
    timed = next(e for e in logs if e.get("event") == "tail_timed" and e["model"] == "vgg8")
    assert timed["tail_ms"]["0"] > 0 and all(t >= 0 for t in timed["tail_ms"].values())

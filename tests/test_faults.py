"""Faults: deadlines, retries, failover, restarts and replica switches mid-run (every input answered
exactly once), graceful shutdown, corrupted head chunks, and load shedding. The scenarios live in
qpart.server.reliability, which also writes docs/reliability.md."""
import pytest

from qpart.common.errors import Unavailable
from qpart.device.client import ServerClient
from qpart.server import reliability


def test_unavailable_addresses_are_skipped_with_backoff(server):
    outcome = reliability.unavailable_address(server.port)
    assert outcome["models"] == 3 and outcome["failovers"] == 1 and outcome["seconds"] < 5
    alone = ServerClient(f"127.0.0.1:{reliability.free_port()}", timeout_s=2, retries=2, backoff_s=0.05)
    with pytest.raises(Unavailable):
        alone.list_models()
    alone.close()


def test_every_call_has_a_deadline():
    outcome = reliability.silent_peer(timeout_s=1.0)
    assert outcome["status"] in ("DEADLINE_EXCEEDED", "UNAVAILABLE") and outcome["seconds"] < 3


def exactly_once(outcome: dict) -> None:
    assert outcome["error"] is None, outcome
    assert outcome["lost"] == 0 and outcome["answered"] == outcome["inputs"]
    assert outcome["agree_with_fault_free"] == 1.0
    assert outcome["resent_streams"] >= 1


def test_replica_switch_mid_run_loses_and_doubles_nothing(models_dir, catalogs, test_set):
    outcome = reliability.replica_switch(models_dir, test_set[0][:300])
    exactly_once(outcome)
    assert outcome["failovers"] >= 1 and outcome["ended_on"] == "second replica"


def test_server_restart_mid_run(models_dir, catalogs, test_set):
    exactly_once(reliability.server_restart(models_dir, test_set[0][300:500]))


def test_graceful_shutdown(models_dir, catalogs, test_set):
    outcome = reliability.graceful_shutdown(models_dir, test_set[0][:200])
    assert outcome["health_while_draining"] == "NOT_SERVING"
    assert outcome["new_call_while_draining"] == "UNAVAILABLE"            # new work is refused...
    assert outcome["error"] is None and outcome["lost"] == 0 and outcome["resent_streams"] == 0   # ...in-flight finishes
    assert outcome["agree_with_fault_free"] == 1.0


def test_corrupted_head_chunk_is_fetched_again(models_dir, catalogs):
    assert reliability.corrupted_chunk(models_dir) == {"refetches": 1, "head_ok": True}


def test_overload_is_shed_quickly(models_dir, catalogs, tmp_path):
    """Past capacity the server answers RESOURCE_EXHAUSTED on arrival (its own log times each refusal)."""
    outcome = reliability.overload(models_dir, tmp_path / "server.log")
    assert outcome["answered"] > 0 and set(outcome["errors"]) == {"RESOURCE_EXHAUSTED"}
    assert outcome["refused_logged"] == outcome["errors"]["RESOURCE_EXHAUSTED"]
    assert outcome["refused_p99_ms"] < 50
    assert outcome["health_after"] == "SERVING" and outcome["logged_without_request_id"] == 0

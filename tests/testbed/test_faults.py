"""Faults: deadlines, retries, failover, restarts and replica switches mid-run, graceful shutdown,
corrupted head chunks, and load shedding. The scenarios live in qpart.testbed.faults and
qpart.testbed.reliability, which also write docs/reliability.md."""
import pytest

from qpart.common.errors import Unavailable
from qpart.device.client import ServerClient
from qpart.testbed import faults, reliability
from qpart.testbed.processes import free_port
from tests.conftest import ZOO_NAMES


def test_unavailable_addresses_are_skipped_with_backoff(server):
    outcome = faults.unavailable_address(server.port)
    assert outcome["models"] == len(ZOO_NAMES) and outcome["failovers"] == 1
    alone = ServerClient(f"127.0.0.1:{free_port()}", timeout_s=2, retries=2, backoff_s=0.05)
    with pytest.raises(Unavailable):
        alone.list_models()
    alone.close()


def test_every_call_has_a_deadline():
    outcome = faults.silent_peer(timeout_s=1.0)
    assert outcome["status"] in ("DEADLINE_EXCEEDED", "UNAVAILABLE") and outcome["seconds"] < 10


def exactly_once(outcome: dict) -> None:
    """Each input reached the caller once with its fault-free answer; what the fault made happen twice
    is bounded by what the device really sent again."""
    assert outcome["error"] is None, outcome
    assert outcome["lost"] == 0 and outcome["delivered"] == outcome["inputs"], outcome
    assert outcome["agree_with_fault_free"] == 1.0, outcome
    assert outcome["arrived_twice"] == 0, outcome             # only inputs without an answer are sent again
    assert outcome["computed"] == outcome["inputs"], outcome   # the servers' own logs: every input ran
    assert outcome["computed_twice"] <= outcome["resent_inputs"], outcome


def test_replica_switch_mid_run_loses_and_doubles_nothing(models_dir, catalogs, test_set):
    outcome = faults.replica_switch(models_dir, test_set[0][:300])
    exactly_once(outcome)
    assert outcome["resent_streams"] >= 1 and outcome["resent_inputs"] >= 1
    assert outcome["failovers"] >= 1 and outcome["ended_on"] == "second replica"


def test_server_restart_mid_run(models_dir, catalogs, test_set):
    outcome = faults.server_restart(models_dir, test_set[0][300:500])
    exactly_once(outcome)
    assert outcome["resent_streams"] >= 1 and outcome["resent_inputs"] >= 1


def test_graceful_shutdown(models_dir, catalogs, test_set):
    outcome = faults.graceful_shutdown(models_dir, test_set[0][:200])
    assert outcome["health_while_draining"] == "NOT_SERVING"
    assert outcome["new_call_while_draining"] == "UNAVAILABLE"            # new work is refused...
    exactly_once(outcome)                                                  # ...in-flight work finishes
    assert outcome["resent_streams"] == 0 and outcome["computed_twice"] == 0


def test_corrupted_head_chunk_is_fetched_again(models_dir, catalogs):
    assert faults.corrupted_chunk(models_dir) == {"refetches": 1, "head_ok": True}


def test_overload_is_shed_at_once(models_dir, catalogs, tmp_path):
    """Past capacity the server answers RESOURCE_EXHAUSTED on arrival (its own log names each refusal);
    how quickly is a figure of docs/reliability.md, not a test."""
    outcome = reliability.overload(models_dir, tmp_path / "server.log")
    assert outcome["answered"] > 0 and set(outcome["errors"]) == {"RESOURCE_EXHAUSTED"}
    assert outcome["refused_logged"] == outcome["errors"]["RESOURCE_EXHAUSTED"]
    assert outcome["health_after"] == "SERVING" and outcome["logged_without_request_id"] == 0

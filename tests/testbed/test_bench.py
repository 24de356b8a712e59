"""The benchmark: its verdict logic on known samples, and the reduced grid end to end over the shaped
testbed link (root; CI runs as root). Who wins, by how much and how close predictions come are the
benchmark's printed figures (docs/benchmarks/e2e.md), not assertions: they depend on the machine's load."""
import os

import numpy as np
import pytest

from qpart.testbed import bench, bench_report


def _row(plan_id: str, samples: np.ndarray) -> dict:
    return {"plan_id": plan_id, "p50_s": float(np.median(samples)), "objective": float(np.median(samples)),
            "objective_samples": samples}


def test_verdict_is_decided_by_significance():
    rng = np.random.default_rng(0)
    ours = rng.normal(10e-3, 0.5e-3, 40)
    key = ("lenet", "rpi4", 5.0, 1.0, 1, "time")
    cell = {"qpart": _row("a", ours), "server_only": _row("b", ours + rng.normal(0, 0.5e-3, 40) - 0.1e-3),
            "device_only": _row("c", ours + 3e-3)}
    v = bench.verdict(key, cell, np.random.default_rng(1))
    assert v["best_baseline"] == "server_only" and v["qpart_lowest"] and v["beaten_by"] == []   # noise, not a loss
    cell["float_split"] = _row("d", ours - 2e-3)                                                 # clearly faster
    v = bench.verdict(key, cell, np.random.default_rng(1))
    assert v["beaten_by"] == ["float_split"] and not v["qpart_lowest"] and not v["strictly_lowest"]
    cell["float_split"] = _row("a", ours - 2e-3)        # the same plan as QPART's: a tie, never a loss
    assert bench.verdict(key, cell, np.random.default_rng(1))["beaten_by"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and run tc")
def test_reduced_grid_runs_end_to_end(models_dir, catalogs, data_dir, tmp_path):
    results = bench.run(bench.REDUCED, models_dir, data_dir, log=lambda *_: None)
    paths = bench_report.write(results, tmp_path, "pytest tests/testbed/test_bench.py")
    assert {p.name for p in paths} >= {"e2e.json", "e2e.md", "predicted_vs_measured.png"}
    assert results["summary"]["time"]["cells"] == 4 and len(results["verdicts"]) == 4
    for row in results["rows"]:
        assert row["accuracy"] > 50 and row["p50_s"] > 0, row
        if row["cut"] < row["num_nodes"]:                 # a tail runs on the server: activations went up
            assert row["bytes_up"] > 0, row
    assert {row["policy"] for row in results["rows"]} == set(bench.POLICIES)
    assert "## Summary" in (tmp_path / "e2e.md").read_text()

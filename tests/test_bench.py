"""The reduced benchmark grid, end to end over the shaped testbed link (root; CI runs as root).

Fails if a baseline is significantly faster than QPART in any cell, if predictions are off by more
than 20 % (median per policy), or if downloads at 5 Mbit/s take more than 1.15 x bits / rate.
"""
import os
import time

import pytest

from qpart.server import bench, benchreport


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and run tc")
def test_reduced_grid(models_dir, catalogs, data_dir, tmp_path):
    started = time.perf_counter()
    results = bench.run(bench.REDUCED, models_dir, data_dir, log=lambda *_: None)
    elapsed = time.perf_counter() - started
    paths = benchreport.write(results, tmp_path, "pytest tests/test_bench.py")
    assert {p.name for p in paths} >= {"e2e.json", "e2e.md", "predicted_vs_measured.png"}
    time_cells = results["summary"]["time"]
    assert time_cells["cells"] == 8 and time_cells["qpart_lowest"] == 8, results["verdicts"]
    for policy, error in results["median_relative_error"].items():
        assert error <= 0.20, (policy, error)
    five = results["wire_efficiency"]["5.0"]      # downloads at 5 Mbit/s take at most 1.15 x bits / rate
    assert five["transfers"] >= 1 and five["max"] <= 1.15, five
    assert elapsed < 180, f"the reduced grid took {elapsed:.0f} s"

"""64 device sessions against one server on this 2-core machine: no errors, bounded memory.
Throughput and latency under load are figures of docs/reliability.md, not tests."""
from qpart.testbed import reliability
from qpart.testbed.processes import ServerProcess, peak_memory_kb


def test_64_sessions(models_dir, catalogs):
    with ServerProcess(models_dir, 0, "--no-measure-speed") as server:
        load = reliability.load(server.target, 64, 5.0)
        peak = peak_memory_kb(server.pid)
    assert load["errors"] == {} and load["answered"] >= 64, load
    assert peak < 1_500_000, f"server peak memory {peak} kB"

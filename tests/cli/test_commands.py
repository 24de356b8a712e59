"""The `qpart` tool's commands, run as a user runs them."""
import subprocess
import sys


def test_profile_and_models_commands(models_dir):
    profile = subprocess.run([sys.executable, "-m", "qpart.cli.main", "profile", "fc6", "--models", str(models_dir)],
                             capture_output=True, text=True, check=True).stdout
    assert "401,920" in profile and "total" in profile      # fc1: 784*512 weights + 512 biases
    listing = subprocess.run([sys.executable, "-m", "qpart.cli.main", "models", "--models", str(models_dir)],
                             capture_output=True, text=True, check=True).stdout
    assert all(name in listing for name in ("fc6", "lenet", "vgg8"))


def test_calibrate_catalog_and_plan_commands(models_dir, catalogs):
    def qpart(*args) -> str:
        return subprocess.run([sys.executable, "-m", "qpart.cli.main", *args, "--models", str(models_dir)],
                              capture_output=True, text=True, check=True).stdout
    calibrated = qpart("calibrate", "fc6", "--samples", "500")
    assert "alpha =" in calibrated and "additivity" in calibrated and "W6" in calibrated and "A6" in calibrated
    assert "the catalog is current" in qpart("catalog", "fc6")
    planned = qpart("plan", "lenet", "--device", "rpi4", "--rate-mbps", "5", "--rtt-ms", "10", "--budget", "0.1")
    chosen = [line for line in planned.splitlines() if line.startswith("*")]
    assert len(chosen) == 1 and "chosen: p=" in planned and "exceeds the budget 0.1" in planned

"""The `qpart` tool's commands, run as a user runs them."""
import subprocess
import sys

from tests.conftest import ZOO_NAMES


def test_profile_and_models_commands(models_dir):
    profile = subprocess.run([sys.executable, "-m", "qpart.cli.main", "profile", "fc6", "--models", str(models_dir)],
                             capture_output=True, text=True, check=True).stdout
    assert "401,920" in profile and "relu1 [512]" in profile      # fc1: 784*512 weights + 512 biases; cut 3 sends relu1
    listing = subprocess.run([sys.executable, "-m", "qpart.cli.main", "models", "--models", str(models_dir)],
                             capture_output=True, text=True, check=True).stdout
    assert all(name in listing for name in ZOO_NAMES)


def test_calibrate_catalog_and_plan_commands(models_dir, catalogs):
    def qpart(*args) -> str:
        return subprocess.run([sys.executable, "-m", "qpart.cli.main", *args, "--models", str(models_dir)],
                              capture_output=True, text=True, check=True).stdout
    calibrated = qpart("calibrate", "fc6", "--samples", "500")
    assert "alpha =" in calibrated and "additivity" in calibrated and "W fc6" in calibrated
    assert "A 0 " in calibrated and "A 11 relu5" in calibrated       # the input at cut 0, relu5 at cut 11
    assert "the catalog is current" in qpart("catalog", "fc6", "--no-coding")    # coding.json: tests/server/planning
    planned = qpart("plan", "lenet", "--device", "rpi4", "--rate-mbps", "5", "--rtt-ms", "10", "--budget", "0.1")
    chosen = [line for line in planned.splitlines() if line.startswith("*")]
    assert len(chosen) == 1 and "chosen: cut" in planned and "exceeds the budget 0.1" in planned


def test_plan_prices_a_fixed_plan_as_qpart_device_takes_it(models_dir, catalogs):
    """--cut with bit widths prices that split (policy fixed); --policy fixed without a cut says what it needs."""
    def qpart(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qpart.cli.main", "plan", "lenet", *args, "--models", str(models_dir)],
                              capture_output=True, text=True)
    refused = qpart("--policy", "fixed")
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr and "--cut" in refused.stderr
    for args in (("--cut", "7", "--weight-bits", "6", "--activation-bits", "5"),
                 ("--policy", "fixed", "--cut", "7", "--weight-bits", "6,6", "--activation-bits", "5")):
        planned = qpart(*args, "--device", "rpi4")
        assert planned.returncode == 0, planned.stderr
        (chosen,) = [line for line in planned.stdout.splitlines() if line.startswith("*")]
        assert chosen.split()[1:5] == ["7", "fixed", "[6,", "6]"] and "policy fixed" in planned.stdout
        assert "chosen: cut 7 of" in planned.stdout and "weight bits [6, 6], activation bits [5]" in planned.stdout

"""Catalog builds on Ray (qpart.server.calibration.distributed), on a local Ray instance of two workers that the
tests start: the catalog equals the local build's for the same config; a build killed half-way resumes without
running its finished units again."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import ray
import torch

from qpart.server.calibration import build, distributed
from qpart.server.models.repository import ModelRepository


CONFIG = dict(calibration_samples=150, search_samples=400, certification_samples=800, budgets=(1.5, 4.0), ladder=12)


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"       # nothing leaves this machine
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def copied(repo_root, name: str, tmp_path):
    """A repository of its own holding a copy of the model (the build writes its units beside it)."""
    shutil.copytree(repo_root / name, tmp_path / name,
                    ignore=shutil.ignore_patterns("catalog*", "heads", "*.json.lock"))
    return ModelRepository(tmp_path).get(name)


def entries(catalog) -> list:
    return json.loads(json.dumps([asdict(e) for e in catalog.entries]))


@pytest.fixture(scope="module")
def local(models_dir, data_dir):
    """lenet's catalog built in this process on one torch thread, as each Ray task runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = ModelRepository(models_dir).get("lenet")
        return build.build(model, data_dir, build.CatalogConfig(**CONFIG), progress=False)
    finally:
        torch.set_num_threads(threads)


def test_a_ray_build_equals_the_local_build(cluster, local, models_dir, data_dir, tmp_path):
    model = copied(models_dir, "lenet", tmp_path)
    built = distributed.build_on_ray(model, data_dir, build.CatalogConfig(**CONFIG), progress=False)
    assert entries(built) == entries(local) and len(built.entries) > 2 * len(built.cuts)
    assert built.cuts == local.cuts and built.budgets == local.budgets
    for field in ("alpha", "samples", "weights", "activations", "additivity"):
        assert built.accuracy_model[field] == local.accuracy_model[field], field
    store = distributed.UnitStore(model, build.CatalogConfig(**CONFIG))
    units = json.loads((store.directory / "units.json").read_text())
    assert len(units) == len(model.profile.cut(model.num_nodes).weight_nodes) + 2 * len(built.cuts) + 1 - sum(
        not model.profile.cut(c).runs_tail for c in built.cuts)
    assert len({u["worker"] for u in units.values()}) == 2 and not any(u["resumed"] for u in units.values())


KILLED = r'''
import sys, pathlib
import ray
from qpart.server.calibration import build, distributed
from qpart.server.models.repository import ModelRepository
ray.init(address=sys.argv[1], logging_level="WARNING", log_to_driver=False)
model = ModelRepository(pathlib.Path(sys.argv[2])).get("lenet")
distributed.build_on_ray(model, sys.argv[3], build.CatalogConfig(**eval(sys.argv[4])), progress=False)
print("finished")
'''


def test_a_killed_build_resumes_from_its_finished_units(cluster, local, models_dir, data_dir, tmp_path):
    model = copied(models_dir, "lenet", tmp_path)
    store = distributed.UnitStore(model, build.CatalogConfig(**CONFIG))
    driver = subprocess.Popen([sys.executable, "-c", KILLED, cluster, str(tmp_path), str(data_dir), repr(CONFIG)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline and len(list(store.directory.glob("*.json"))) < 2:
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    out, err = driver.communicate(timeout=30)
    assert "finished" not in out, "the build ended before it could be killed"
    finished = {p.stem for p in store.directory.glob("*.json")}
    assert finished, err[-2000:]
    built = distributed.build_on_ray(model, data_dir, build.CatalogConfig(**CONFIG), progress=False)
    units = json.loads((store.directory / "units.json").read_text())
    assert {u for u, r in units.items() if r["resumed"]} == finished          # none of them ran again
    assert sum(not r["resumed"] for r in units.values()) == len(units) - len(finished) > 0
    assert entries(built) == entries(local)


def test_a_failing_unit_is_reported_by_name(cluster, models_dir, data_dir, tmp_path):
    from qpart.common.errors import Internal
    model = copied(models_dir, "lenet", tmp_path)
    config = build.CatalogConfig(**CONFIG, sweep_bits=(4, 6, 8, 40))      # every sweep fails on the workers at 40 bits
    with pytest.raises(Internal, match=r"catalog unit [wa]\d+ failed after 3 tries: .*40"):
        distributed.build_on_ray(model, data_dir, config, progress=False)

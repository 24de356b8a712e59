"""Catalog builds fanned out as Ray tasks: `qpart catalog NAME --ray auto|ADDRESS`, or build_on_ray().

A build is cut into units, each one Ray task (qpart.server.calibration.build does the same work in one process):
  phase 1: the weight sweep of each weight node ("w<node index>") and the activation sweeps of each swept cut
           ("a<cut>"); the driver fits α over all of them (noise.fit_alpha, in the local build's order);
  phase 2: each catalog cut's entries ("c<cut>": its float and uniform 8-bit baselines and a certified split per
           budget), and the additivity check ("additivity").
The model's files (network.json, weights.safetensors, card.json, as they lie in the repository: no pickled
model) and the validation arrays are put in the object store once; a worker loads the model from those files,
and keeps it, its evaluators and their caches for every later unit of the same build. Each finished unit is
written beside the model as it arrives (catalog-units/<version>-<catalog format>-<config hash>/<unit>.json): a
build that is interrupted resumes from the units already there and runs only the others. A unit whose task
fails is retried (RETRIES times), then the build stops with its name. Every task runs torch on one thread, as a local build
with torch.set_num_threads(1) does, and the catalog is the one that local build writes (a test compares them);
its evaluations are the units' summed, and units.json beside the units records each task's seconds (what
bench/catalog_scaling.py projects to more workers from).

Ray is the `ray` extra (`pip install 'qpart[server,ray]'`); without it the local build is unchanged.
"""
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from qpart.common.errors import FailedPrecondition, Internal
from qpart.server.calibration import noise
from qpart.server.calibration.build import BuildPlan, CatalogConfig, _Splits, cut_entries, validation_data
from qpart.server.models import repository
from qpart.server.planning.catalog import CATALOG_VERSION, Catalog, Entry

log = logging.getLogger("qpart.calibration")

RETRIES = 2                         # further tries of a failed unit's task before the build stops
UNITS_DIR = "catalog-units"         # beside the model: finished units, by model version and config
MODEL_FILES = (repository.NETWORK_FILE, repository.WEIGHTS_FILE, repository.CARD_FILE)


def build_on_ray(model: repository.Model, data_dir=None, config: CatalogConfig = CatalogConfig(),
                 address: str = "auto", progress: bool = True) -> Catalog:
    """The catalog, its units run as Ray tasks on the cluster at `address` ("auto": the one this machine runs or
    RAY_ADDRESS names; ignored when this process already called ray.init)."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise FailedPrecondition(f"cannot reach a Ray cluster at {address!r}: {str(e)[:300]}; start one "
                                     "(`ray start --head`) or give its address") from None
    started = time.perf_counter()
    data = validation_data(model, config, data_dir)
    plan = BuildPlan.of(model, config, len(data["cert_y" if "cert_y" in data else "cert_t"]))
    store = UnitStore(model, config)
    shared = (ray.put({name: (model.directory / name).read_bytes() for name in MODEL_FILES}), ray.put(data),
              json.loads(json.dumps(asdict(config))))
    task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=True)(run_unit)
    first = [f"w{i}" for i in model.profile.cut(model.num_nodes).weight_nodes] + [f"a{c}" for c in plan.swept]
    second = [f"c{c}" for c in plan.cuts] + ["additivity"]
    bar = tqdm(total=len(first) + len(second),
               desc=f"catalog {model.name} on Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)",
               disable=not progress, unit="task")
    done = _run(ray, task, store, first, shared, None, bar)
    weights = {int(u[1:]): noise.NoiseProfile.from_dict(done[u]["result"]) for u in first if u.startswith("w")}
    activations = {(p.cut, p.name): p for u in first if u.startswith("a")
                   for p in map(noise.NoiseProfile.from_dict, done[u]["result"])}
    alpha = noise.fit_alpha(list(weights.values()) + list(activations.values()))
    fitted = {"alpha": alpha, "weights": [[i, p.as_dict()] for i, p in weights.items()],
              "activations": [p.as_dict() for p in activations.values()], "budgets": plan.budgets}
    done |= _run(ray, task, store, second, shared, fitted, bar)
    bar.close()
    store.record(done)
    recorded = noise.summary(alpha, done["additivity"]["samples"], config.granularity, weights, activations,
                             done["additivity"]["result"])
    entries = [Entry.from_json(e) for c in plan.cuts for e in done[f"c{c}"]["result"]]
    return plan.catalog(model, config, recorded, entries, time.perf_counter() - started,
                        sum(r["evaluations"] for r in done.values()))


class UnitStore:
    """Finished units of one build (model version and config) as JSON files beside the model."""

    def __init__(self, model: repository.Model, config: CatalogConfig):
        digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True, default=list).encode()).hexdigest()[:12]
        self.key = f"{model.version}-{CATALOG_VERSION}-{digest}"      # a unit of another catalog format is not reused
        self.directory = model.directory / UNITS_DIR / self.key

    def load(self, unit: str) -> dict | None:
        path = self.directory / f"{unit}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None                     # absent, or cut short when the build was killed: run it again

    def save(self, unit: str, done: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{unit}.tmp"
        tmp.write_text(json.dumps(done))
        tmp.replace(self.directory / f"{unit}.json")

    def record(self, done: dict) -> None:
        """units.json: each unit's seconds, evaluations and whether this run computed it or found it."""
        (self.directory / "units.json").write_text(json.dumps(
            {u: {k: r[k] for k in ("seconds", "load_seconds", "evaluations", "worker", "resumed")}
             for u, r in done.items()},
            indent=1))


def _run(ray, task, store: UnitStore, units: list[str], shared, fitted, bar) -> dict:
    done, pending = {}, {}
    for unit in units:
        found = store.load(unit)
        if found is not None:
            done[unit] = found | {"resumed": True}
            bar.update()
        else:
            pending[task.remote(store.key, *shared, unit, fitted)] = unit
    if done:
        log.info("resuming: %d of %d units already finished in %s", len(done), len(units), store.directory)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        unit = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as e:  # noqa: BLE001 - a task's error, after its retries
            for ref in pending:
                ray.cancel(ref)
            cause = getattr(e, "cause", None) or e          # a RayTaskError carries the task's own exception
            raise Internal(f"catalog unit {unit} failed after {RETRIES + 1} tries: {type(cause).__name__}: "
                           f"{str(cause)[:400]}") from None
        store.save(unit, result)
        done[unit] = result | {"resumed": False}
        bar.update()
        bar.set_postfix(in_flight=len(pending), refresh=False)
    return done


_LOADED: dict = {}       # in a worker: the build key -> (model, config, splits, reference, its temporary directory)


def run_unit(key: str, files: dict[str, bytes], data: dict[str, np.ndarray], config: dict, unit: str,
             fitted: dict | None) -> dict:
    """One unit of build `key` on a worker (see the module docstring): its result as JSON-ready values."""
    torch.set_num_threads(1)
    loading = time.perf_counter()
    fresh = key not in _LOADED
    model, config, splits, reference, _ = _load(key, files, data, config)
    before, started = splits.evaluations, time.perf_counter()
    samples = 0
    if unit == "additivity":
        am = _accuracy_model(fitted, splits, reference, config)
        result, samples = noise.measure_additivity(splits.calibration, am.weights, config.granularity, reference,
                                                   am), am.samples
    elif unit[0] == "w":
        result = noise.weight_sweep(splits.calibration, int(unit[1:]), config.granularity, config.sweep_bits,
                                    reference).as_dict()
    elif unit[0] == "a":
        result = [p.as_dict() for p in noise.activation_sweeps(splits.calibration, int(unit[1:]), config.granularity,
                                                               config.sweep_bits, reference)]
    else:
        am = _accuracy_model(fitted, splits, reference, config)
        result = [asdict(e) for e in cut_entries(model, int(unit[1:]), am, splits, config, fitted["budgets"])]
    return json.loads(json.dumps({"result": result, "seconds": round(time.perf_counter() - started, 4),
                                  "evaluations": splits.evaluations - before, "samples": samples,
                                  "load_seconds": round(started - loading, 4) if fresh else 0.0,
                                  "worker": f"{os.uname().nodename}:{os.getpid()}"}))


def _load(key: str, files: dict[str, bytes], data: dict[str, np.ndarray], config: dict):
    if key not in _LOADED:
        for old in _LOADED.values():
            old[-1].cleanup()
        _LOADED.clear()
        card = json.loads(files[repository.CARD_FILE])
        directory = tempfile.TemporaryDirectory(prefix="qpart-catalog-unit-")
        root = pathlib.Path(directory.name) / card["name"]
        root.mkdir()
        for name in MODEL_FILES:
            (root / name).write_bytes(files[name])
        model = repository.load_model(root)
        if model.version != key.split("-")[0]:
            raise FailedPrecondition(f"the model's files give version {model.version}, the build is of {key}")
        config = CatalogConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
        splits = _Splits.from_data(model, config, data)
        _LOADED[key] = (model, config, splits, noise.Reference.of(splits.calibration), directory)
    return _LOADED[key]


def _accuracy_model(fitted: dict, splits, reference: noise.Reference, config: CatalogConfig) -> noise.AccuracyModel:
    """The driver's fitted accuracy model, with this worker's own margins of the same calibration samples."""
    weights = {int(i): noise.NoiseProfile.from_dict(p) for i, p in fitted["weights"]}
    activations = {(p.cut, p.name): p for p in map(noise.NoiseProfile.from_dict, fitted["activations"])}
    return noise.AccuracyModel(fitted["alpha"], weights, activations, reference.margins,
                               splits.calibration.float_correct.numpy(), config.granularity, len(reference.margins))


def _ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")        # Ray reports usage home unless told not to
    try:
        import ray
    except ImportError:
        raise FailedPrecondition("catalog builds on Ray need ray: pip install 'qpart[server,ray]'") from None
    return ray

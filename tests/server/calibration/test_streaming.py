"""The evaluator streams its samples: the same figures whatever it caches, a cache bounded by what it really holds,
and a catalog build whose memory stays bounded (measured in a subprocess)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from qpart.server.calibration import build
from qpart.server.calibration.accuracy import Evaluator
from qpart.server.calibration.streaming import (CHUNK, ArrayInputs, ImageInputs, PrefixCache, channels_last, compact,
                                                expand)
from qpart.server.models import datasets
from qpart.server.models.repository import load_model
from qpart.server.models.split import FLOAT, Split, uniform

MB = 1 << 20


def test_the_cache_counts_a_shared_tensor_once():
    a, b = torch.zeros(MB // 4), torch.zeros(MB // 4)         # 1 MiB each
    cache = PrefixCache(10 * MB)
    cache.put("one", {"a": a})
    cache.put("two", {"a": a, "b": b})                       # a again: held once
    cache.put("view", {"v": a[:10]})                         # a view keeps the whole storage: nothing new
    assert cache.bytes == 2 * MB and len(cache) == 3


def test_the_cache_stays_within_its_bound_least_recent_out():
    tensors = [torch.zeros(MB // 4) for _ in range(5)]
    cache = PrefixCache(3 * MB)
    for i, t in enumerate(tensors):
        cache.put(i, {"t": t})
        cache.get(0)                                         # 0 stays the most recent
        assert cache.bytes <= 3 * MB
    assert 0 in cache and 4 in cache and 1 not in cache and cache.bytes == 3 * MB
    cache.put("big", {"t": torch.zeros(MB)})                 # 4 MiB: over the bound alone, not kept
    assert "big" not in cache and cache.bytes <= 3 * MB
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_inputs_go_last():
    cache = PrefixCache(3 * MB)
    cache.put("input", {"t": torch.zeros(MB // 4)}, lasting=True)
    for i in range(4):
        cache.put(i, {"t": torch.zeros(MB // 4)})
    assert "input" in cache and 3 in cache and 0 not in cache and cache.bytes == 3 * MB


def test_a_gray_image_repeated_is_kept_as_one_channel():
    gray = torch.rand(5, 1, 6, 7)
    x = channels_last(gray.expand(-1, 3, -1, -1))
    kept = compact(x)
    assert kept.shape == (5, 1, 6, 7) and torch.equal(expand(kept, 3), x) and expand(kept, 3).is_contiguous(
        memory_format=torch.channels_last)
    rgb = x.clone()
    rgb[0, 2, 0, 0] += 1
    assert compact(rgb) is rgb


@pytest.mark.parametrize("name", ["lenet", "resnet8-96"])
def test_the_same_logits_whatever_is_cached(name, repo, data_dir):
    """Images preprocessed chunk by chunk, an array, no cache, a cache too small for one chunk's tensors: one answer,
    bit for bit, also for a sample count that is not a multiple of the chunk."""
    model = repo.get(name)
    images, y = datasets.split(model.card, "validation", data_dir)
    n = CHUNK + 137
    x = datasets.preprocessed(images[:2 * CHUNK], model.preprocessing)[:n]
    cut = next(c for c in model.cuts() if len(c.weight_nodes) >= 2 and c.runs_tail)
    splits = [Split(cut.cut, (5,) * len(cut.weight_nodes), (4,) * len(cut.tensors), "channel"),
              Split(cut.cut, (FLOAT,) * len(cut.weight_nodes), (3,) * len(cut.tensors), "channel"),
              uniform(model.profile, model.num_nodes, 6)]
    evaluators = [Evaluator(model, ImageInputs(images[:2 * CHUNK], model.preprocessing, n), y[:n]),
                  Evaluator(model, ArrayInputs(x), y[:n], cache_bytes=0),
                  Evaluator(model, x, y[:n], cache_bytes=MB)]
    for split in splits + splits[::-1]:                      # again, from what the first pass cached
        found = [ev._forward(split).numpy() for ev in evaluators]
        assert all(np.array_equal(found[0], f) for f in found[1:]), split
    assert evaluators[0].cache.hits > 0 and evaluators[2].cache.bytes <= MB


def _small(models_dir, tmp_path, name):
    """A copy of a test model without its catalog (a build writes heads beside the model)."""
    shutil.copytree(models_dir / name, tmp_path / name,
                    ignore=shutil.ignore_patterns("heads", "catalog.json", "coding.json", "codecs.json", "*.tmp"))
    return load_model(tmp_path / name)


SMALL = dict(budgets=(1.0, 2.0), calibration_samples=300, search_samples=600, certification_samples=1600, ladder=12)


def test_the_catalog_is_the_same_with_or_without_a_cache(models_dir, data_dir, tmp_path):
    model = _small(models_dir, tmp_path, "lenet")
    built = [build.build(model, data_dir, build.CatalogConfig(**SMALL, cache_bytes=size), progress=False)
             for size in (0, 256 * MB)]
    assert built[0].entries == built[1].entries and built[0].entries
    assert built[0].accuracy_model == built[1].accuracy_model


MEASURE = """
import json, sys
from qpart.server.calibration import build
from qpart.server.models.repository import load_model

def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))

model_dir, data_dir, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import torch  # noqa: F401 (in the baseline)
model = load_model(__import__("pathlib").Path(model_dir))
from qpart.server.models import datasets
datasets.split(model.card, "validation", data_dir)      # the data, loaded once: in the baseline too
before = hwm()
built = build.build(model, data_dir, build.CatalogConfig(**config), progress=False)
print(json.dumps({"before": before, "after": hwm(), "entries": len(built.entries)}))
"""


def test_a_catalog_build_holds_one_chunk_at_a_time(models_dir, data_dir, tmp_path):
    """resnet8-96 certifying on 1,000 images: the build grows the process by at most the cache's bound plus ten
    chunks' inputs (the evaluator that kept every sample's tensors grew it by 5.2 GB). Measured as the peak RSS of a
    subprocess."""
    model = _small(models_dir, tmp_path, "resnet8-96")
    config = dict(budgets=(2.0,), calibration_samples=300, search_samples=500, certification_samples=1000,
                  cuts=(0, 3), cache_bytes=64 * MB)
    run = subprocess.run([sys.executable, "-c", MEASURE, str(model.directory), str(data_dir), json.dumps(config)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    grown = (found["after"] - found["before"]) / MB
    assert found["entries"] > 0
    chunk = CHUNK * 3 * 96 * 96 * 4 / MB                       # one chunk's inputs: 55 MiB
    assert grown < 64 + 10 * chunk, f"the build grew the process by {grown:.0f} MiB"   # measured: ~300; whole batches: 5,200

"""Bring your own model, end to end as a user does it: a module outside the zoo, its data as an image
folder this test writes, `qpart import`, `qpart catalog`, a server process, and a device classifying
through the split over real gRPC at every cut."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from qpart.common import data, datasets
from qpart.common.preprocess import Preprocessing
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.testbed.processes import ServerProcess
from qpart.v1 import service_pb2 as spb
from tests.server.models import custom_net

HERE = pathlib.Path(__file__).parent
PREPROCESSING = Preprocessing(channels=3, resize=(32, 32))
PER_CLASS = 200      # 2,000 images: the certification half of validation (~416) can certify a 2-point budget


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, data_dir) -> pathlib.Path:
    """Fashion-MNIST images as PNG files, one folder per class (no test part: the loader holds out a sixth)."""
    root = tmp_path_factory.mktemp("images")
    images, labels = data.load_split("train", data_dir)
    for label, name in enumerate(data.FASHION_CLASSES):
        folder = root / name.replace("/", "-")
        folder.mkdir()
        for i, index in enumerate(np.flatnonzero(labels == label)[:PER_CLASS]):
            Image.fromarray(images[index]).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def weights(image_folder, tmp_path_factory) -> pathlib.Path:
    """The user's own training of their module on their data (a few quick epochs)."""
    torch.manual_seed(0)
    model = custom_net.build()
    images, labels = datasets.open_data(image_folder).part("train")
    x, y = torch.from_numpy(PREPROCESSING.apply(images)), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        for start in range(0, len(y), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[start:start + 64]), y[start:start + 64]).backward()
            optimizer.step()
    path = tmp_path_factory.mktemp("weights") / "custom.safetensors"
    save_file(model.eval().state_dict(), str(path))
    return path


def qpart(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "qpart.cli.main", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bring_your_own_model(image_folder, weights, tmp_path):
    models = tmp_path / "repo"
    models.mkdir()
    out = qpart("import", "custom", "--module", f"{HERE / 'custom_net.py'}:build", "--weights", str(weights),
                "--input-shape", "3,32,32", "--resize", "32,32", "--data", str(image_folder), "--models", str(models))
    assert "matches the module" in out and "float test accuracy" in out
    qpart("catalog", "custom", "--models", str(models), "--search-samples", "200", "--certification-samples", "400",
          "--no-progress")
    module = custom_net.build()
    module.load_state_dict(load_file(str(weights)))
    images, labels = datasets.open_data(image_folder).part("test")
    with ServerProcess(models, 0, "--no-measure-speed") as server:
        client = ServerClient(server.target, timeout_s=60)
        info = client.list_models("custom")[0]
        x = PREPROCESSING.apply(images)
        assert info.input.shape == [3, 32, 32] and info.preprocessing.resize_h == 32 and info.has_catalog
        with torch.no_grad():
            unsplit = module.eval()(torch.from_numpy(x)).argmax(1).numpy()
        agent = DeviceAgent(client, HeadCache(tmp_path / "cache"))
        two_tensor_cuts = 0
        for cut in info.cuts:
            request = spb.PlanRequest(model="custom", policy=spb.FIXED, fixed=spb.FixedPlan(
                cut=cut.cut, weight_bits=[16], activation_bits=[16]))
            report = agent.run(request, x, labels, batch_size=50)
            agreement = float(np.mean(np.array(report.predictions) == unsplit))
            assert agreement >= 0.999, (cut.cut, [t.name for t in cut.tensors], agreement)
            two_tensor_cuts += len(cut.tensors) == 2
        assert two_tensor_cuts >= 1 and len(info.cuts) >= 10
        planned = agent.run(spb.PlanRequest(model="custom", accuracy_budget=2.0, inferences_per_head=100), x, labels)
        assert planned.policy == "qpart" and planned.accuracy > 30
        client.close()

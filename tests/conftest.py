"""Shared fixtures: real Fashion-MNIST, zoo models trained once per run, an in-process gRPC server.

Set QPART_TEST_MODELS to a directory to keep the trained test models between runs.
"""
import os
import pathlib

import pytest

from qpart.common import data
from qpart.server.training import train
from qpart.server.models.repository import ModelRepository
from qpart.server.serving.settings import ServerSettings

# Short training: real weights with real accuracy, on subsets, in about two minutes on 2 cores.
TEST_TRAINING = {
    "fc6": train.TrainConfig(epochs=2, train_limit=0, progress=False),
    "lenet": train.TrainConfig(epochs=2, learning_rate=2e-3, train_limit=0, progress=False),
    "vgg8": train.TrainConfig(epochs=1, train_limit=20000, progress=False),
    # not catalogued here: 3,000 validation images (the import measures logits and ranges on all it holds out)
    "resnet8": train.TrainConfig(epochs=1, train_limit=10000, batch_size=64, validation_size=3000, progress=False),
    "mobilenetv2": train.TrainConfig(epochs=1, train_limit=8000, batch_size=64, validation_size=3000, progress=False),
    # the camera-size models' cards measure float accuracy on 2,000 test images (96x96 float logits of all
    # 10,000 were 30 s of make test); the tests measure what they check themselves
    "resnet8-96": train.TrainConfig(epochs=1, train_limit=8000, batch_size=64, validation_size=3000, progress=False,
                                    test_limit=2000),
    "mobilenetv2-96": train.TrainConfig(epochs=1, train_limit=4000, batch_size=64, learning_rate=3e-3,
                                        validation_size=2000, progress=False, test_limit=2000),
}
ZOO_NAMES = tuple(TEST_TRAINING)
CAMERA = ("resnet8-96", "mobilenetv2-96")
CATALOG_MODELS = ("fc6", "lenet", "vgg8", "resnet8-96")   # the others are traced, served and split-tested but
# not catalogued here, to keep `make test` within its budget (docs/planner.md certifies every zoo model's catalog)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    path = data.data_dir()
    if not any(path.glob("t10k-images-idx3-ubyte*")):
        pytest.fail(f"Fashion-MNIST is not in {path}: `make test` installs the Debian package dataset-fashion-mnist, "
                    f"or set ${data.DATA_ENV}")
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, data_dir) -> pathlib.Path:
    keep = os.environ.get("QPART_TEST_MODELS")
    root = pathlib.Path(keep) if keep else tmp_path_factory.mktemp("models")
    for name, config in TEST_TRAINING.items():
        if not (root / name / "network.json").exists():
            train.train(name, root, data_dir, config)
    return root


@pytest.fixture(scope="session")
def repo(models_dir) -> ModelRepository:
    return ModelRepository(models_dir)


@pytest.fixture(scope="session")
def test_set(data_dir):
    """The first 1,000 Fashion-MNIST test images (float [1, 28, 28] in [0, 1]) and labels."""
    images, labels = data.load_split("test", data_dir)
    return data.to_float(images[:1000]), labels[:1000]


@pytest.fixture(scope="session")
def model_inputs(repo, data_dir):
    """inputs(name, n): a model's first n test images through its preprocessing, and their labels."""
    from qpart.server.models import datasets
    cache = {}

    def inputs(name: str, n: int = 1000):
        if (name, n) not in cache:
            cache[name, n] = datasets.model_split(repo.get(name), "test", data_dir, limit=n)
        return cache[name, n]
    return inputs


@pytest.fixture(scope="session")
def server(models_dir):
    from qpart.server.serving.main import RunningServer
    # plans priced as timed idle: tests that load the shared server must not change the plans of the next ones
    # (tests/server/serving/test_load_pricing.py checks load-aware pricing on a server of its own)
    running = RunningServer(ServerSettings(models=models_dir, port=0, load_window_s=0))
    yield running
    running.stop(0, notice=0)


# A tiny GPT on the fortunes text (2 blocks of width 32, context 256), trained in seconds: the language-model
# tests' target. Its figures are weak (next-token top-1 about 20 %) but real, and greedy decoding is deterministic.
TINY_LM_STEPS = 150
TINY_DRAFT = "draft-fortunes-1"


@pytest.fixture(scope="session")
def lm_models(tmp_path_factory) -> pathlib.Path:
    from qpart.server.training import lm_train
    from qpart.server.training.gpt import GPTConfig
    keep = os.environ.get("QPART_TEST_MODELS")
    root = pathlib.Path(keep) / "language" if keep else tmp_path_factory.mktemp("language-models")
    if not (root / lm_train.TARGET / "network.json").exists():
        lm_train.train(lm_train.TARGET, root, lm_train.LMTrainConfig(
            steps=TINY_LM_STEPS, batch_size=8, learning_rate=3e-3, progress=False,
            network=GPTConfig(block_size=256, n_layer=2, n_head=2, n_embd=32)))
    if not (root / TINY_DRAFT / "network.json").exists():      # a smaller draft with the target's tokenizer
        lm_train.train(TINY_DRAFT, root, lm_train.LMTrainConfig(
            steps=TINY_LM_STEPS, batch_size=8, learning_rate=3e-3, progress=False,
            network=GPTConfig(block_size=256, n_layer=1, n_head=2, n_embd=16)))
    return root


@pytest.fixture(scope="session")
def lm_catalog(lm_models):
    """The tiny GPT's catalog on small samples of the validation text (1,500 positions certify: 0.5 points need
    986), at four cuts (the input, after each block, the whole model): budgets 0.5 to 5 points of agreement."""
    from qpart.server.calibration import build
    from qpart.server.models.repository import ModelRepository
    from qpart.server.planning import catalog
    model = ModelRepository(lm_models).get("gpt-fortunes")
    found = catalog.current(model)
    if found is None:
        found = build.build(model, config=build.CatalogConfig(calibration_samples=200, search_samples=500,
                                                              certification_samples=1500, cuts=(0, 15, 28, 30)),
                            progress=False)
        catalog.save(model, found)
    return found


@pytest.fixture
def client(server):
    from qpart.device.client import ServerClient
    c = ServerClient(f"127.0.0.1:{server.port}", timeout_s=60)
    yield c
    c.close()


# Catalogs for the test models search on 1,000 and certify on 3,000 validation images (5,000 by default):
# a wider confidence bound, so more conservative entries, in a third less time; less for the 3x96x96 models.
TEST_CATALOG = dict(search_samples=1000, certification_samples=3000)
TEST_CODECS = (("png", 0), ("jpeg", 75), ("webp", 75))
TEST_CATALOG_CAMERA = dict(calibration_samples=300, search_samples=500, certification_samples=1000)
# Test images the catalog checks use: all 10,000 for the small models, fewer for the costly ones, to fit CI.
TEST_IMAGES = {"fc6": 10000, "lenet": 10000, "vgg8": 5000, "resnet8": 5000, "mobilenetv2": 3000, "resnet8-96": 2000,
               "mobilenetv2-96": 1000}


@pytest.fixture(scope="session")
def catalogs(repo, data_dir) -> dict:
    """Each zoo model's offline catalog, built once per run (or kept with QPART_TEST_MODELS)."""
    from qpart.server.calibration import build
    from qpart.server.calibration import image_files as measure_images
    from qpart.server.planning import catalog, image_files
    built = {}
    for model in map(repo.get, CATALOG_MODELS):
        found = catalog.current(model)
        if found is None:
            config = TEST_CATALOG_CAMERA if model.name in CAMERA else TEST_CATALOG
            found = build.build(model, data_dir, build.CatalogConfig(**config), progress=False)
            catalog.save(model, found)
        if image_files.load(model) is None:           # three of the settings, to fit CI
            image_files.save(model, measure_images.measure(model, found, data_dir, TEST_CODECS))
        built[model.name] = found
    return built


@pytest.fixture(scope="session")
def test_evaluators(repo, data_dir) -> dict:
    """Evaluators on the Fashion-MNIST test split, shared so that their prefix caches are too."""
    from qpart.testbed import catalog_report as reports
    return {name: reports.test_evaluator(repo.get(name), data_dir, TEST_IMAGES[name]) for name in CATALOG_MODELS}

import numpy as np

from qpart.common import data
from tests.conftest import TEST_TRAINING, ZOO_NAMES


def test_trained_models_have_measured_accuracy(repo):
    for name in ZOO_NAMES:
        model = repo.get(name)
        card = model.card
        assert card["test_samples"] == (TEST_TRAINING[name].test_limit or 10000), name     # what the card measured on
        assert card["task"] == "classification"
        assert card["float_test_accuracy"] > 50.0, (name, card["float_test_accuracy"])   # chance is 10 %
        assert card["float_validation_accuracy"] > 50.0
        ranges = card["tensor_ranges"]                  # every tensor's range on validation: the quantizers
        assert set(ranges) == {model.profile.input_name} | {n.name for n in model.profile.nodes}
        assert all(lo <= hi for lo, hi in ranges.values())
        assert card["check"]["max_difference"] < 1e-3   # the traced graph computes what the module does


def test_validation_split_is_held_out_of_training(repo):
    card = repo.get("fc6").card
    train_idx, val_idx = data.train_validation_split(60000, card["validation"]["size"], card["validation"]["seed"])
    assert card["training"]["train_samples"] == len(train_idx) == 60000 - card["validation"]["size"]
    assert not np.intersect1d(train_idx, val_idx).size


def test_camera_models_see_resized_three_channel_inputs(repo):
    model = repo.get("resnet8-96")
    assert model.profile.input_shape == (3, 96, 96)
    assert model.preprocessing.resize == (96, 96) and model.preprocessing.channels == 3
    assert "camera stand-in" in model.card["description"]

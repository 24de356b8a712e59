import numpy as np

from qpart.common import data
from tests.conftest import ZOO_NAMES


def test_trained_models_have_measured_accuracy(repo):
    for name in ZOO_NAMES:
        card = repo.get(name).card
        assert card["test_samples"] == 10000
        assert card["float_test_accuracy"] > 70.0, (name, card["float_test_accuracy"])   # chance is 10 %
        assert card["float_validation_accuracy"] > 70.0
        assert len(card["cut_ranges"]) == repo.get(name).num_layers
        assert all(lo <= 0.0 <= hi for lo, hi in card["cut_ranges"])


def test_validation_split_is_held_out_of_training(repo):
    card = repo.get("fc6").card
    train_idx, val_idx = data.train_validation_split(60000, card["validation"]["size"], card["validation"]["seed"])
    assert card["training"]["train_samples"] == len(train_idx) == 60000 - card["validation"]["size"]
    assert not np.intersect1d(train_idx, val_idx).size

"""A model's data, as its card records it: the data spec, the preprocessing, and the splits.

The validation split is held out of the data's train part (seed and size in the card); the test
split is the data's own test part (or its seeded holdout, qpart.common.datasets). Images stay uint8
until a batch is needed; `inputs` preprocesses them in chunks.
"""
from typing import Iterator

import numpy as np

from qpart.common import data, datasets
from qpart.common.errors import FailedPrecondition
from qpart.common.preprocess import Preprocessing

CHUNK = 500


def source(card: dict, data_override=None) -> datasets.DataSource:
    """The model's data: the card's spec, or data_override (e.g. Fashion-MNIST in another directory)."""
    return datasets.open_data(data_override or card.get("data", "fashion-mnist"))


def split(card: dict, part: str, data_override=None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of "validation", "train" (the train part less validation) or "test"."""
    src = source(card, data_override)
    if part == "test":
        return src.part("test")
    images, labels = src.part("train")
    validation = card.get("validation")
    if not validation:
        raise FailedPrecondition(f"model card of {card.get('name', '?')!r} records no validation split; "
                                 "import or train the model again")
    train, val = data.train_validation_split(len(labels), validation["size"], validation["seed"])
    idx = val if part == "validation" else train
    return images[idx], labels[idx]


def inputs(images: np.ndarray, preprocessing: Preprocessing, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The model's float32 inputs of the images, chunk by chunk."""
    for i in range(0, len(images), chunk):
        yield preprocessing.apply(images[i:i + chunk])


def preprocessed(images: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """All the images as the model's float32 inputs [N, *input_shape] (mind the memory for large inputs)."""
    return np.concatenate(list(inputs(images, preprocessing))) if len(images) else np.zeros((0,), np.float32)


def card_split(card: dict, part: str, preprocessing: Preprocessing, data_override=None,
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 inputs, labels) of a split, the first `limit` samples."""
    images, labels = split(card, part, data_override)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return preprocessed(images, preprocessing), labels


def model_split(model, part: str, data_override=None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 inputs, labels) of a model's validation or test split, the first `limit` samples."""
    return card_split(model.card, part, model.preprocessing, data_override, limit)

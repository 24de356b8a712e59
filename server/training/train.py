"""`qpart train`: train a zoo model on Fashion-MNIST into a model repository.

A validation split is held out from the training set (the planner calibrates on it); the test set
is only used to report the float model's accuracy, which is measured on the exported model.
"""
import pathlib
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from qpart.common import data
from qpart.common.errors import InvalidArgument
from qpart.common.torchnet import build
from qpart.server.models import evaluate, export, repository
from qpart.server.training import zoo


@dataclass
class TrainConfig:
    epochs: int | None = None      # passes over the training split; None: the zoo entry's default
    batch_size: int = 128          # samples per optimizer step
    learning_rate: float | None = None  # Adam step size; None: the zoo entry's default
    validation_size: int = 10000   # training images held out for the planner's calibration
    seed: int = 0                  # seeds the split, the initialization and the shuffling
    train_limit: int = 0           # use only this many training images (0: all); for quick runs
    progress: bool = True          # show a progress bar on stderr


def train(name: str, models_dir: pathlib.Path, data_dir=None, config: TrainConfig = TrainConfig()) -> repository.Model:
    if name not in zoo.ZOO:
        raise InvalidArgument(f"unknown zoo model {name!r}; choose one of {', '.join(zoo.ZOO)}")
    entry = zoo.ZOO[name]
    epochs = config.epochs if config.epochs is not None else entry.epochs
    lr = config.learning_rate if config.learning_rate is not None else entry.learning_rate
    torch.manual_seed(config.seed)

    images, labels = data.load_split("train", data_dir)
    test_images, test_labels = data.load_split("test", data_dir)
    train_idx, val_idx = data.train_validation_split(len(images), config.validation_size, config.seed)
    if config.train_limit:
        train_idx = train_idx[: config.train_limit]
    x_train = torch.from_numpy(data.to_float(images[train_idx]))
    y_train = torch.from_numpy(labels[train_idx])
    x_val, y_val = data.to_float(images[val_idx]), labels[val_idx]

    model = entry.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    steps_per_epoch = -(-len(x_train) // config.batch_size)
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"training {name}", disable=not config.progress,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, unit="step")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        running = 0.0
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            running += loss.item()
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{running / (step + 1):.3f}", refresh=False)
        scheduler.step()
    bar.close()
    model.eval()

    spec, params = export.export(model, x_train.shape[1:])
    exported = build(spec, params)
    val_acc = evaluate.accuracy(evaluate.logits(exported, x_val).argmax(1), y_val)
    test_acc = evaluate.accuracy(evaluate.logits(exported, data.to_float(test_images)).argmax(1), test_labels)
    card = {
        "description": entry.description,
        "dataset": "fashion-mnist",
        "class_names": list(data.FASHION_CLASSES),
        "float_test_accuracy": test_acc,
        "test_samples": int(len(test_labels)),
        "float_validation_accuracy": val_acc,
        "validation": {"seed": config.seed, "size": config.validation_size},
        "training": asdict(config) | {"epochs": epochs, "learning_rate": lr, "train_samples": int(len(train_idx)),
                                       "seconds": round(time.perf_counter() - started, 1)},
        "cut_ranges": [list(r) for r in evaluate.cut_ranges(spec, params, x_val)],
    }
    return repository.save_model(models_dir, name, spec, params, card)


def validation_data(model: repository.Model, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out validation images (float) and labels the model's card records."""
    images, labels = data.load_split("train", data_dir)
    split = model.card["validation"]
    _, val_idx = data.train_validation_split(len(images), split["size"], split["seed"])
    return data.to_float(images[val_idx]), labels[val_idx]

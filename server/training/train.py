"""`qpart train`: train a zoo model on its data and import it into a model repository.

A validation split is held out from the training part (the planner calibrates on it); the test part
is only used to report the float model's accuracy, measured on the imported description (the same
path as `qpart import`, qpart.server.models.importer).
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
from qpart.server.models import datasets, importer, repository
from qpart.server.training import zoo


@dataclass
class TrainConfig:
    epochs: int | None = None      # passes over the training split; None: the zoo entry's default
    batch_size: int = 128          # samples per optimizer step
    learning_rate: float | None = None  # Adam step size; None: the zoo entry's default
    validation_size: int = 10000   # training images held out for the planner's calibration
    seed: int = 0                  # seeds the split, the initialization and the shuffling
    train_limit: int | None = None  # use only this many training images (0: all; None: the zoo entry's default)
    progress: bool = True          # show a progress bar on stderr
    schedule: str = ""             # the name of a schedule other than the zoo entry's (the card records it), e.g. "demo"
    test_limit: int = 0            # the card's float test accuracy on the first this many test images (0: all)

    @classmethod
    def of(cls, schedule: zoo.Schedule, **overrides) -> "TrainConfig":
        """The config of a named short schedule (zoo.DEMO_SCHEDULES)."""
        return cls(epochs=schedule.epochs, batch_size=schedule.batch_size, learning_rate=schedule.learning_rate,
                   validation_size=schedule.validation_size, train_limit=schedule.train_limit,
                   schedule=schedule.name, **overrides)


def _fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, entry: zoo.ZooEntry, epochs: int, lr: float,
         config: TrainConfig, name: str) -> None:
    """Adam with a cosine schedule; batches are preprocessed as they are drawn (channels-last tensors)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(config.seed)
    model.to(memory_format=torch.channels_last)
    steps = -(-len(labels) // config.batch_size)
    bar = tqdm(total=epochs * steps, desc=f"training {name}", disable=not config.progress,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, unit="step")
    targets = torch.from_numpy(labels)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator).numpy()
        running = 0.0
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            idx = np.sort(order[start:start + config.batch_size])
            x = torch.from_numpy(entry.preprocessing.apply(images[idx])).contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), targets[idx])
            loss.backward()
            optimizer.step()
            running += loss.item()
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{running / (step + 1):.3f}", refresh=False)
        scheduler.step()
    bar.close()
    model.to(memory_format=torch.contiguous_format).eval()


def train(name: str, models_dir: pathlib.Path, data_dir=None, config: TrainConfig = TrainConfig()) -> repository.Model:
    """Train zoo model `name` on Fashion-MNIST (data_dir: where its IDX files are) into models_dir."""
    if name not in zoo.ZOO:
        raise InvalidArgument(f"unknown zoo model {name!r}; choose one of {', '.join(zoo.ZOO)}")
    entry = zoo.ZOO[name]
    epochs = config.epochs if config.epochs is not None else entry.epochs
    lr = config.learning_rate if config.learning_rate is not None else entry.learning_rate
    limit = config.train_limit if config.train_limit is not None else entry.train_limit
    torch.manual_seed(config.seed)
    spec = str(data_dir) if data_dir else "fashion-mnist"
    card = {"data": spec, "validation": {"seed": config.seed, "size": config.validation_size}}
    images, labels = datasets.split(card, "train")
    available = int(len(labels))
    if limit:
        images, labels = images[:limit], labels[:limit]
    model = entry.build()
    started = time.perf_counter()
    _fit(model, images, labels, entry, epochs, lr, config, name)
    training = asdict(config) | {"epochs": epochs, "learning_rate": lr, "train_samples": int(len(labels)),
                                 "available_samples": available, "seconds": round(time.perf_counter() - started, 1)}
    description = entry.description
    if config.schedule:
        description += (f"; trained on the {config.schedule} schedule ({len(labels):,} of {available:,} training "
                        f"images, {epochs} epoch(s)), not the zoo's ({entry.epochs} epochs on "
                        f"{f'{entry.train_limit:,}' if entry.train_limit else 'all'})")
    return importer.import_model(models_dir, name, model, spec, entry.preprocessing, description,
                                 config.validation_size, config.seed, {"training": training},
                                 progress=lambda *_: None, test_limit=config.test_limit)


def class_names() -> tuple[str, ...]:
    return data.FASHION_CLASSES

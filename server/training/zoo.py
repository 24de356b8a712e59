"""The model zoo: small Fashion-MNIST classifiers as plain nn.Sequential stacks.

Every model is a sequence of the modules the layer description supports, so it exports as is.
"""
import collections
from dataclasses import dataclass
from typing import Callable

from torch import nn

_PREFIXES = {nn.Linear: "fc", nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "relu", nn.MaxPool2d: "pool",
             nn.AvgPool2d: "avgpool", nn.Flatten: "flatten", nn.Dropout: "dropout"}


def named(*modules: nn.Module) -> nn.Sequential:
    """nn.Sequential whose layers are named conv1, bn1, relu1, pool1, fc1, ... in order of appearance."""
    counts: collections.Counter = collections.Counter()
    layers = collections.OrderedDict()
    for module in modules:
        prefix = _PREFIXES[type(module)]
        counts[prefix] += 1
        layers[f"{prefix}{counts[prefix]}"] = module
    return nn.Sequential(layers)


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], nn.Sequential]
    description: str
    epochs: int          # default training epochs
    learning_rate: float  # Adam learning rate


def fc6() -> nn.Sequential:
    """The paper's 6-layer fully connected classifier (Fig. 4): 784-512-256-128-64-32-10."""
    widths = [784, 512, 256, 128, 64, 32, 10]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return named(*layers)


def lenet() -> nn.Sequential:
    """LeNet-5 style: two 5x5 convolutions with max pooling, three fully connected layers."""
    return named(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),      # [6, 14, 14]
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),                # [16, 5, 5]
        nn.Flatten(),                                                   # [400]
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def vgg8() -> nn.Sequential:
    """VGG style: three blocks of two 3x3 conv + BatchNorm + ReLU, then two fully connected layers (8 learnable)."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.MaxPool2d(2)]
    return named(
        *block(1, 12),    # [12, 14, 14]
        *block(12, 24),   # [24, 7, 7]
        *block(24, 48),   # [48, 3, 3]
        nn.Flatten(),     # [432]
        nn.Dropout(0.3), nn.Linear(432, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


ZOO: dict[str, ZooEntry] = {
    "fc6": ZooEntry(fc6, "6-layer fully connected classifier (paper Fig. 4), 784-512-256-128-64-32-10", 8, 1e-3),
    "lenet": ZooEntry(lenet, "LeNet-5 style CNN: 2 conv + 3 fully connected layers", 8, 1e-3),
    "vgg8": ZooEntry(vgg8, "VGG-style CNN: 6 conv (BatchNorm folded) + 2 fully connected layers", 6, 1e-3),
}

"""The model zoo: classifiers `qpart train` trains on Fashion-MNIST, imported like any user model.

fc6, lenet and vgg8 are chains at 28x28. resnet8 (basic residual blocks, three stages) and
mobilenetv2 (inverted residuals, depthwise convolutions, ReLU6) come at 28x28 and at 3x96x96: the
96 variants see Fashion-MNIST resized to 96x96 and repeated over three channels, a stand-in for
camera frames (every figure reported for them says so).
"""
import collections
from dataclasses import dataclass
from typing import Callable

import torch.nn.functional as F
from torch import nn

from qpart.common.preprocess import Preprocessing

GRAY_28 = Preprocessing(channels=1)
CAMERA_96 = Preprocessing(channels=3, resize=(96, 96))   # Fashion-MNIST 28x28 resized, gray repeated to RGB
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


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BatchNorm, a skip (1x1 conv + BatchNorm when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(c_in, c_out, 3, stride), conv_bn(c_out, c_out)
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        out = F.relu(self.conv1(x))                   # [c_out, H/stride, W/stride]
        return F.relu(self.conv2(out) + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, one basic block per stage (widths `stages`, the first at stride 1, the rest at 2), average pool, fc."""

    def __init__(self, c_in: int, stem: int, stages: tuple[int, ...], stem_stride: int = 1, stem_pool: bool = False):
        super().__init__()
        self.stem = conv_bn(c_in, stem, 3, stem_stride)
        self.pool = nn.MaxPool2d(2) if stem_pool else nn.Identity()
        widths = (stem,) + stages
        self.stages = nn.Sequential(*[BasicBlock(a, b, 1 if i == 0 else 2)
                                      for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))])
        self.fc = nn.Linear(stages[-1], 10)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        x = self.stages(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))       # [stages[-1]] -> [10]


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection (ReLU6), a skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.expand = conv_bn(c_in, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = conv_bn(hidden, c_out, 1)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self.expand(x)) if not isinstance(self.expand, nn.Identity) else x
        h = self.project(F.relu6(self.depthwise(h)))
        return x + h if self.residual else h


class MobileNetV2(nn.Module):
    """Stem, inverted residual blocks (expansion t, channels c, repeats n, first stride s), 1x1 conv, pool, fc."""

    def __init__(self, c_in: int, stem: int, blocks: tuple, last: int, stem_stride: int = 1):
        super().__init__()
        self.stem = conv_bn(c_in, stem, 3, stem_stride)
        layers, width = [], stem
        for t, c, n, s in blocks:
            for i in range(n):
                layers.append(InvertedResidual(width, c, s if i == 0 else 1, t))
                width = c
        self.blocks = nn.Sequential(*layers)
        self.last = conv_bn(width, last, 1)
        self.fc = nn.Linear(last, 10)

    def forward(self, x):
        x = self.blocks(F.relu6(self.stem(x)))
        x = F.relu6(self.last(x))
        return self.fc(x.mean((2, 3)))                                # global average pool: [last]


@dataclass(frozen=True)
class Schedule:
    """A training schedule shorter than a zoo entry's own: the card records its name, and whatever reports the
    model says it (its measured accuracy is that of this schedule, not the zoo's)."""
    name: str                    # what the card and the output call it, e.g. "demo"
    train_limit: int             # training images used, the first of the training part (the rest: unused)
    epochs: int                  # passes over them
    batch_size: int              # images per optimizer step
    learning_rate: float         # Adam step size (cosine schedule over the epochs)
    validation_size: int         # training images held out for calibration (half search, half certification)


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], nn.Module]
    description: str
    epochs: int                  # default training epochs
    learning_rate: float         # Adam learning rate
    preprocessing: Preprocessing = GRAY_28
    train_limit: int = 0         # train on this many images by default (0: all), to fit 30 minutes on 2 cores


ZOO: dict[str, ZooEntry] = {
    "fc6": ZooEntry(fc6, "6-layer fully connected classifier (paper Fig. 4), 784-512-256-128-64-32-10", 8, 1e-3),
    "lenet": ZooEntry(lenet, "LeNet-5 style CNN: 2 conv + 3 fully connected layers", 8, 1e-3),
    "vgg8": ZooEntry(vgg8, "VGG-style CNN: 6 conv (BatchNorm folded) + 2 fully connected layers", 6, 1e-3),
    "resnet8": ZooEntry(lambda: ResNet(1, 16, (16, 32, 64)), "ResNet: stem + 3 stages of basic residual blocks "
                        "(16-32-64), 28x28", 6, 2e-3),
    "resnet8-96": ZooEntry(lambda: ResNet(3, 8, (32, 64, 128), stem_stride=2, stem_pool=True),
                           "ResNet: stride-4 stem (8 channels) + 3 stages of basic residual blocks (32-64-128), 3x96x96 "
                           "(Fashion-MNIST resized, gray repeated to 3 channels: a camera stand-in)", 4, 2e-3,
                           CAMERA_96),
    "mobilenetv2": ZooEntry(lambda: MobileNetV2(1, 16, ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 1, 2)),
                                                256), "MobileNetV2-style: inverted residuals, depthwise convolutions, "
                            "ReLU6, 28x28", 6, 2e-3),
    "mobilenetv2-96": ZooEntry(lambda: MobileNetV2(3, 8, ((1, 8, 1, 2), (6, 32, 2, 1), (4, 48, 2, 2),
                                                           (4, 96, 2, 2)), 384, stem_stride=2),
                               "MobileNetV2-style: stride-4 stem (8 channels), inverted residuals, depthwise convolutions, "
                               "ReLU6, "
                               "3x96x96 (Fashion-MNIST resized, gray repeated to 3 channels: a camera stand-in)", 4,
                               2e-3, CAMERA_96),
}

# `qpart demo`'s first run trains the default model on this, to fit the README's five minutes on 2 cores (the
# zoo's own schedule, `qpart train resnet8-96`, takes about six minutes alone)
DEMO_SCHEDULES: dict[str, Schedule] = {
    "resnet8-96": Schedule("demo", train_limit=16000, epochs=2, batch_size=64, learning_rate=3e-3,
                           validation_size=5000),
}

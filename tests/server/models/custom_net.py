"""A model from outside the zoo, in its own module, as a user brings one: a residual add, a concat, a
depthwise convolution, squeeze-excitation (a mul), and functional calls (F.relu) in forward."""
import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        gate = F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))       # [C/r, 1, 1]
        return x * torch.sigmoid(self.fc2(gate))                    # [C, H, W] * [C, 1, 1]


class CustomNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.side = nn.Conv2d(8, 4, 3, padding=1)
        self.se = SqueezeExcite(12)
        self.fc = nn.Linear(12 * 4, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))                      # [8, 16, 16]
        branch = F.relu(self.depthwise_bn(self.depthwise(x)))
        x = x + self.pointwise(branch)                              # residual add
        x = torch.cat([x, F.relu(self.side(x))], dim=1)             # [12, 16, 16]
        x = F.max_pool2d(self.se(x), 2)                             # [12, 8, 8]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 2), 1))


def build() -> nn.Module:
    return CustomNet()

"""torchvision's efficientnet_b0 layout (torchvision/models/efficientnet.py, torchvision/ops): MBConv blocks
(1x1 expand, depthwise, squeeze-excitation, 1x1 project), stochastic depth on the residual (an identity in
eval mode, fx-wrapped as torchvision wraps it), SiLU, dropout before the classifier. Three stages of
eight to sixteen channels instead of seven up to 320."""
import torch
import torch.fx
from torch import Tensor, nn


def stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """torchvision.ops.stochastic_depth: drops whole residual branches while training, the identity in eval."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


torch.fx.wrap("stochastic_depth")       # as torchvision does: one call_function node, not traced through


class StochasticDepth(nn.Module):
    def __init__(self, p: float, mode: str):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input: Tensor) -> Tensor:
        return stochastic_depth(input, self.p, self.mode, self.training)


class ConvNormActivation(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, activation=nn.SiLU):
        layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        super().__init__(*layers + ([activation(inplace=True)] if activation is not None else []))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = nn.SiLU(), nn.Sigmoid()

    def _scale(self, input: Tensor) -> Tensor:
        scale = self.activation(self.fc1(self.avgpool(input)))            # [squeeze, 1, 1]
        return self.scale_activation(self.fc2(scale))                       # [C, 1, 1]

    def forward(self, input: Tensor) -> Tensor:
        return self._scale(input) * input                                   # [C, 1, 1] * [C, H, W]


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop: float):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = cin * expand
        layers = [ConvNormActivation(cin, hidden, 1)] if hidden != cin else []
        layers += [ConvNormActivation(hidden, hidden, kernel, stride, groups=hidden),
                   SqueezeExcitation(hidden, max(1, cin // 4)), ConvNormActivation(hidden, cout, 1, activation=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop, "row")

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += input
        return result


class EfficientNet(nn.Module):
    # (expand ratio, kernel, stride, in channels, out channels, blocks), as efficientnet_b0's first stages
    STAGES = ((1, 3, 1, 8, 8, 1), (6, 3, 2, 8, 12, 2), (6, 5, 2, 12, 16, 2))

    def __init__(self, classes: int = 10, stochastic_depth_prob: float = 0.2, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvNormActivation(3, 8, 3, 2)]
        total, block = sum(s[-1] for s in self.STAGES), 0
        for expand, kernel, stride, cin, cout, blocks in self.STAGES:
            stage = []
            for i in range(blocks):
                drop = stochastic_depth_prob * block / total                # 0 for the first block, as torchvision
                stage.append(MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1, drop))
                block += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvNormActivation(16, 64, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(64, classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))                                  # [64, 1, 1]
        return self.classifier(torch.flatten(x, 1))


def build() -> nn.Module:
    return EfficientNet()

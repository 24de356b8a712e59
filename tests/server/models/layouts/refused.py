"""The first lines of torchvision's convnext_tiny and vit_b_16 (torchvision/models/convnext.py,
vision_transformer.py), cut down: what qpart traces of them (static shapes, permute) up to what it refuses,
a parameter used outside a module (LayerNorm2d's weight, the class token), named by this module and line."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)                                           # [H, W, C]
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)    # refused: weight
        return x.permute(0, 3, 1, 2)                                        # [C, H, W]


class ConvNeXt(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, kernel_size=4, stride=4), LayerNorm2d(8, eps=1e-6))
        self.classifier = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.stem(x).mean([2, 3]))


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int = 32, patch_size: int = 8, hidden_dim: int = 16, classes: int = 10):
        super().__init__()
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.heads = nn.Linear(hidden_dim, classes)

    def _process_input(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size} but got {h}!")
        torch._assert(w == self.image_size, f"Wrong image width! Expected {self.image_size} but got {w}!")
        n_h, n_w = h // p, w // p
        x = self.conv_proj(x)                                               # [hidden, n_h, n_w]
        x = x.reshape(n, self.hidden_dim, n_h * n_w)                        # [hidden, n_h * n_w]
        return x.permute(0, 2, 1)                                           # [n_h * n_w, hidden]

    def forward(self, x: Tensor) -> Tensor:
        x = self._process_input(x)
        n = x.shape[0]
        batch_class_token = self.class_token.expand(n, -1, -1)             # refused: the class token
        x = torch.cat([batch_class_token, x], dim=1)
        return self.heads(x[:, 0])


def convnext() -> nn.Module:
    return ConvNeXt()


def vit() -> nn.Module:
    return VisionTransformer()

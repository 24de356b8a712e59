"""How raw images become a model's input tensor: one numpy implementation, used alike by calibration,
evaluation, the device and the benchmark (the contract's qpart.v1.Preprocessing says the same).

Steps: uint8 [N, H, W] (gray) or [N, H, W, C] (RGB) -> `channels` channels (gray repeated, RGB averaged
to gray) -> bilinear resize (half-pixel centres, no antialiasing: torch's interpolate(mode="bilinear",
align_corners=False)) -> centre crop -> float32 times `scale` -> (x - mean[c]) / std[c] -> [N, C, H, W].
"""
import functools
from dataclasses import asdict, dataclass

import numpy as np

from qpart.common.errors import InvalidArgument

MAX_SIDE = 4096


@dataclass(frozen=True)
class Preprocessing:
    channels: int = 1                      # channels of the model input: 1 (gray) or 3 (RGB)
    resize: tuple[int, int] = (0, 0)       # (height, width) after resizing, pixels; (0, 0): no resize
    crop: tuple[int, int] = (0, 0)         # (height, width) of the centre crop, pixels; (0, 0): no crop
    scale: float = 1.0 / 255.0             # factor on the uint8 values
    mean: tuple[float, ...] = ()           # per-channel mean subtracted after scaling; (): none
    std: tuple[float, ...] = ()            # per-channel standard deviation divided by; (): none

    def __post_init__(self):
        for name in ("resize", "crop", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.channels not in (1, 3):
            raise InvalidArgument(f"preprocessing: channels must be 1 or 3, got {self.channels}")
        for name in ("resize", "crop"):
            size = getattr(self, name)
            if len(size) != 2 or (0 in size and size != (0, 0)) or not all(0 <= s <= MAX_SIDE for s in size):
                raise InvalidArgument(f"preprocessing: {name} must be two sides in 1..{MAX_SIDE} (or 0, 0), got {size}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values and (len(values) != self.channels or not np.isfinite(values).all()):
                raise InvalidArgument(f"preprocessing: {name} needs {self.channels} finite value(s), got {values}")
        if self.std and min(self.std) <= 0 or not np.isfinite(self.scale) or self.scale <= 0:
            raise InvalidArgument("preprocessing: scale and std must be positive")

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        h, w = self.resize if self.resize != (0, 0) else (height, width)
        if self.crop != (0, 0):
            if self.crop[0] > h or self.crop[1] > w:
                raise InvalidArgument(f"preprocessing: a {self.crop} crop does not fit a {h}x{w} image")
            h, w = self.crop
        return self.channels, h, w

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W] or [N, H, W, C] -> float32 [N, channels, H', W']."""
        x = np.asarray(images)
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3, 4)):
            raise InvalidArgument(f"images must be uint8 [N, H, W] or [N, H, W, C] with C in 1, 3, 4; got "
                                  f"{x.dtype} {list(x.shape)}")
        x = x.astype(np.float32)
        if x.ndim == 4:
            x = x[..., :3] if x.shape[3] != 1 else x[..., 0]
        if x.ndim == 4 and self.channels == 1:
            x = x.mean(axis=3)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)                    # [N, c, H, W]
        if self.resize != (0, 0) and self.resize != x.shape[2:]:
            x = resize_bilinear(x, *self.resize)
        if self.crop != (0, 0):
            top, left = (x.shape[2] - self.crop[0]) // 2, (x.shape[3] - self.crop[1]) // 2
            x = x[:, :, top:top + self.crop[0], left:left + self.crop[1]]
        if x.shape[1] != self.channels:
            x = np.repeat(x, self.channels, axis=1)
        x = x * np.float32(self.scale)
        if self.mean:
            x = (x - np.asarray(self.mean, np.float32)[:, None, None]) / np.asarray(self.std or (1.0,) * self.channels,
                                                                                  np.float32)[:, None, None]
        return np.ascontiguousarray(x, np.float32)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, value: dict) -> "Preprocessing":
        try:
            return cls(**value)
        except TypeError as e:
            raise InvalidArgument(f"preprocessing {value!r}: {e}") from None


@functools.lru_cache(maxsize=64)
def _weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] bilinear interpolation weights, half-pixel centres, source clamped at 0."""
    src = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    w = np.zeros((size_out, size_in), np.float64)
    np.add.at(w, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(w, (np.arange(size_out), hi), frac)
    return w.astype(np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [N, C, H, W] -> [N, C, height, width]."""
    rows, cols = _weights(x.shape[2], height), _weights(x.shape[3], width)
    return np.einsum("oh,nchw,pw->ncop", rows, x, cols, optimize=True).astype(np.float32)

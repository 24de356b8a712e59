"""The uniform asymmetric quantizer of the QPART paper (eqs 9-10).

For a range [l, u] widened to contain 0 and b bits:
    Δ = (u - l) / (2^b - 1),  z = round(-l / Δ),
    code(x) = clip(round(x / Δ) + z, 0, 2^b - 1),  x̂ = Δ (code - z).
Any x in [l, u] is restored within Δ/2. Scales are float32 (what travels); the codes are computed
from that float32 scale, so both ends of the wire agree bit for bit. Granularity is per tensor or
per slice along axis 0 (output channels of a weight). Bit widths are 1..16; 32 means raw float32.
"""
from dataclasses import dataclass

import numpy as np

from qpart.common.errors import InvalidArgument

MIN_BITS = 1
MAX_BITS = 16
FLOAT_BITS = 32
PER_TENSOR = "tensor"
PER_CHANNEL = "channel"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_bits(bits, what: str = "bit width", allow_float: bool = True) -> int:
    """Return bits as an int if it is 1..16 (or 32 when allow_float), else raise InvalidArgument."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise InvalidArgument(f"{what} must be an integer, got {bits!r}")
    bits = int(bits)
    if MIN_BITS <= bits <= MAX_BITS or (allow_float and bits == FLOAT_BITS):
        return bits
    allowed = f"{MIN_BITS}..{MAX_BITS}" + (f" or {FLOAT_BITS} (float32)" if allow_float else "")
    raise InvalidArgument(f"{what} must be {allowed}, got {bits}")


@dataclass(frozen=True)
class QuantParams:
    bits: int               # bits per code, 1..16
    scale: np.ndarray       # Δ, float32, shape (groups,): 1 per tensor or 1 per axis-0 slice
    zero_point: np.ndarray  # z, int64 in [0, 2^bits - 1], shape (groups,)

    @property
    def granularity(self) -> str:
        return PER_TENSOR if self.scale.size == 1 else PER_CHANNEL

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point shaped to broadcast against a tensor of ndim dims."""
        if self.scale.size == 1:
            return self.scale.reshape(()), self.zero_point.reshape(())
        shape = (-1,) + (1,) * (ndim - 1)
        return self.scale.reshape(shape), self.zero_point.reshape(shape)


def check_finite(x: np.ndarray, what: str = "tensor") -> None:
    if not np.isfinite(x).all():
        raise InvalidArgument(f"{what} contains NaN or infinity; only finite values can be quantized")


def params_for_range(lo, hi, bits: int) -> QuantParams:
    """Quantization parameters for per-group ranges lo, hi (arrays or scalars) at `bits` bits."""
    bits = check_bits(bits, allow_float=False)
    lo = np.minimum(np.asarray(lo, np.float64).reshape(-1), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64).reshape(-1), 0.0)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InvalidArgument("quantization range must be finite")
    levels = (1 << bits) - 1
    scale64 = (hi - lo) / levels
    if (scale64 > _FLOAT32_MAX).any():
        raise InvalidArgument(f"range [{lo.min():g}, {hi.max():g}] is too wide for float32 at {bits} bits")
    scale = scale64.astype(np.float32)
    short = scale.astype(np.float64) < scale64          # round the step up so the grid covers [l, u]
    scale[short] = np.nextafter(scale[short], np.float32(np.inf))
    scale[scale == 0] = 1.0  # an all-zero group: any step restores it exactly
    zero = np.clip(np.rint(-lo / scale.astype(np.float64)), 0, levels).astype(np.int64)
    grid_ends = np.concatenate([-zero * scale.astype(np.float64), (levels - zero) * scale.astype(np.float64)])
    if (np.abs(grid_ends) > _FLOAT32_MAX).any():
        raise InvalidArgument(f"range [{lo.min():g}, {hi.max():g}] is too wide for float32 at {bits} bits")
    return QuantParams(bits, scale, zero)


def calibrate(x: np.ndarray, bits: int, granularity: str = PER_TENSOR) -> QuantParams:
    """Min/max parameters for x, per tensor or per axis-0 slice."""
    x = np.asarray(x, np.float32)
    check_finite(x)
    if x.size == 0:
        raise InvalidArgument("cannot quantize an empty tensor")
    if granularity == PER_TENSOR:
        return params_for_range(x.min(), x.max(), bits)
    if granularity == PER_CHANNEL:
        if x.ndim < 1:
            raise InvalidArgument("per-channel quantization needs at least one dimension")
        flat = x.reshape(x.shape[0], -1)
        return params_for_range(flat.min(axis=1), flat.max(axis=1), bits)
    raise InvalidArgument(f"unknown granularity {granularity!r}; use {PER_TENSOR!r} or {PER_CHANNEL!r}")


def code_type(bits: int):
    """The narrowest unsigned type that holds one code."""
    return np.uint8 if bits <= 8 else np.uint16


def quantize_with(x: np.ndarray, params: QuantParams, dtype=np.uint32) -> np.ndarray:
    """Integer codes of x under params (eq 10 without the final dequantization), as dtype."""
    x = np.asarray(x, np.float32)
    check_finite(x)
    with np.errstate(over="ignore"):   # far outside the range x / Δ overflows to inf, which the clip maps to an end
        if params.scale.size == 1:   # per tensor (every activation): float32 scalars, the fewest numpy calls
            codes = x / params.scale[0]
            np.rint(codes, out=codes)
            codes += np.float32(params.zero_point[0])   # exact for every code the clip keeps (below 2^16)
        else:
            scale, zero = params.broadcast(x.ndim)
            codes = np.rint(x / scale) + zero
    np.clip(codes, 0, (1 << params.bits) - 1, out=codes)
    return codes.astype(dtype)


def dequantize(codes: np.ndarray, params: QuantParams) -> np.ndarray:
    scale, zero = params.broadcast(codes.ndim)
    return ((codes.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32, copy=False)


def quantize(x: np.ndarray, bits: int, granularity: str = PER_TENSOR) -> tuple[np.ndarray, QuantParams]:
    params = calibrate(x, bits, granularity)
    return quantize_with(x, params), params


def fake_quantize(x: np.ndarray, bits: int, granularity: str = PER_TENSOR) -> np.ndarray:
    """x quantized at `bits` and restored to float32: exactly what the other end of the wire sees."""
    if bits == FLOAT_BITS:
        return np.asarray(x, np.float32)
    codes, params = quantize(x, bits, granularity)
    return dequantize(codes, params)

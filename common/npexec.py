"""Run a network description with numpy alone: the device's head executor where torch is absent.

`run_node` computes what `qpart.common.torchnet.run_node` computes, op for op, in float32 (batch
first): convolutions as im2col matrix products (depthwise ones as a sum of shifted products), pooling
over strided windows, attention as one product per group of query heads that share keys. GELU uses erf from a rational approximation (max error 1.5e-7).
"""
import math

import numpy as np

from qpart.common.errors import InvalidArgument
from qpart.common.network import ACTIVATIONS, op_of
from qpart.common.sequence import OPS as SEQUENCE_OPS
from qpart.v1 import network_pb2 as pb

_SQRT_HALF = np.float32(math.sqrt(0.5))


def erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz and Stegun 7.1.26 with more terms (W. J. Cody's form): |error| < 1.5e-7."""
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (np.sign(x) * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0), "relu6": _relu6,
    "hardswish": lambda x: x * _relu6(x + 3.0) / 6.0, "hardsigmoid": lambda x: _relu6(x + 3.0) / 6.0,
    "sigmoid": _sigmoid, "silu": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x * _SQRT_HALF)),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + 0.044715 * x ** 3))),
}


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int = 1, dw: int = 1) -> np.ndarray:
    """[n, c, H, W] -> [n, c, kh, kw, H_out, W_out]: the strided (dilated) windows, a view."""
    n, c, h, w = x.shape
    h_out, w_out = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, kh, kw, h_out, w_out), (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)


def conv2d(x: np.ndarray, weight: np.ndarray, bias, c: pb.Conv2dOp) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (c.padding_h, c.padding_h), (c.padding_w, c.padding_w)))
    win = _windows(x, c.kernel_h, c.kernel_w, c.stride_h, c.stride_w, c.dilation_h, c.dilation_w)
    n, _, kh, kw, h_out, w_out = win.shape
    g = c.groups
    if g == c.in_channels and weight.shape[1] == 1:           # depthwise: a sum of kh*kw shifted products
        m = c.out_channels // g
        out = np.zeros((n, c.out_channels, h_out, w_out), np.float32)
        src = np.repeat(win, m, axis=1) if m > 1 else win
        for i in range(kh):
            for j in range(kw):
                out += src[:, :, i, j] * weight[:, 0, i, j][None, :, None, None]
    else:                                                      # im2col: one matrix product per group
        cg, og = c.in_channels // g, c.out_channels // g
        cols = win.reshape(n, g, cg * kh * kw, h_out * w_out)                        # [n, g, cg*kh*kw, HW]
        w = weight.reshape(g, og, cg * kh * kw)                                      # [g, og, cg*kh*kw]
        out = np.matmul(w[None], cols).reshape(n, c.out_channels, h_out, w_out)
    if bias is not None:
        out += bias[None, :, None, None]
    return out.astype(np.float32, copy=False)


def _pool(op: str, p: pb.Pool2dOp, x: np.ndarray) -> np.ndarray:
    pad = ((0, 0), (0, 0), (p.padding_h, p.padding_h), (p.padding_w, p.padding_w))
    if op == "max_pool2d":
        x = np.pad(x, pad, constant_values=-np.inf) if p.padding_h or p.padding_w else x
        return _windows(x, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w).max(axis=(2, 3))
    x = np.pad(x, pad) if p.padding_h or p.padding_w else x
    return _windows(x, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w).mean(axis=(2, 3), dtype=np.float32)


def adaptive_avg_pool2d(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Cell (i, j) averages rows floor(i*H/out_h)..ceil((i+1)*H/out_h)-1 and the columns likewise."""
    n, c, h, w = x.shape
    out = np.empty((n, c, out_h, out_w), np.float32)
    for i in range(out_h):
        r0, r1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
        for j in range(out_w):
            c0, c1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def token_ids(x: np.ndarray, vocab: int) -> np.ndarray:
    """float32 token ids [n, T] -> int64, refusing any that is not a whole number in 0 .. vocab-1."""
    if not (np.all(x >= 0) and np.all(x < vocab) and np.all(np.floor(x) == x)):
        raise InvalidArgument(f"token ids must be whole numbers 0 .. {vocab - 1}")
    return x.astype(np.int64)


def rotary(x: np.ndarray, r: pb.RotaryOp, start: int) -> np.ndarray:
    """[n, T, heads*head_dim] at positions start .. start+T-1, the rotate-half form (RotaryOp)."""
    n, t, _ = x.shape
    half = r.rotary_dims // 2
    inv = (np.float32(r.base) ** -(np.arange(half, dtype=np.float64) * 2 / r.rotary_dims)).astype(np.float32)
    angles = np.arange(start, start + t, dtype=np.float32)[:, None] * inv[None, :]              # [T, half]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]                           # [T, 1, half]
    h = x.reshape(n, t, r.heads, r.head_dim)                                                    # [n, T, H, hd]
    x1, x2, rest = h[..., :half], h[..., half:r.rotary_dims], h[..., r.rotary_dims:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1).reshape(n, t, -1)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32, copy=False)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, a: pb.AttentionOp, name: str, cache) -> np.ndarray:
    """Causal attention of q [n, T, H*hd] over the cache's keys/values and k, v [n, T, Hkv*hd] (AttentionOp)."""
    n, t, _ = q.shape
    q = q.reshape(n, t, a.heads, a.head_dim).transpose(0, 2, 1, 3)            # [n, H, T, hd]
    k = k.reshape(n, t, a.kv_heads, a.head_dim).transpose(0, 2, 1, 3)         # [n, Hkv, T, hd]
    v = v.reshape(n, t, a.kv_heads, a.head_dim).transpose(0, 2, 1, 3)
    if cache is not None:
        if name in cache.layers:
            past_k, past_v = cache.layers[name]
            k, v = np.concatenate([past_k, k], axis=2), np.concatenate([past_v, v], axis=2)   # [n, Hkv, p+T, hd]
        cache.layers[name] = (k, v)
    past = k.shape[2] - t
    group = a.heads // a.kv_heads
    q = q.reshape(n, a.kv_heads, group * t, a.head_dim)                          # [n, Hkv, G*T, hd]: heads of a group
    scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(a.scale or 1 / math.sqrt(a.head_dim))   # [n, Hkv, G*T, p+T]
    scores = scores.reshape(n, a.kv_heads, group, t, past + t)
    scores[..., ~np.tri(t, past + t, past, dtype=bool)] = -np.inf              # query i sees keys 0 .. past+i
    weights = softmax(scores, -1).reshape(n, a.kv_heads, group * t, past + t)
    y = (weights @ v).reshape(n, a.heads, t, a.head_dim)                      # [n, H, T, hd]
    return np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(n, t, a.heads * a.head_dim)


def _norm(op: str, node: pb.Node, x: np.ndarray, params: dict) -> np.ndarray:
    if op == "rms_norm":
        scaled = x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(node.rms_norm.eps))
        return (params["weight"] * scaled).astype(np.float32, copy=False)
    centred = x - x.mean(-1, keepdims=True)
    y = centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + np.float32(node.layer_norm.eps))
    y = y * params["weight"]
    return (y + params["bias"] if "bias" in params else y).astype(np.float32, copy=False)


def _sequence_node(op: str, node: pb.Node, args: list, params: dict, cache) -> np.ndarray:
    x = args[0]
    start = cache.position if cache is not None else 0
    if op == "embedding":
        return params["weight"][token_ids(x, node.embedding.num_embeddings)]
    if op == "position_embedding":
        return x + params["weight"][start:start + x.shape[1]]
    if op == "rotary":
        return rotary(x, node.rotary, start)
    if op in ("layer_norm", "rms_norm"):
        return _norm(op, node, x, params)
    if op == "softmax":
        return softmax(x, node.softmax.axis + 1)
    return attention(args[0], args[1], args[2], node.attention, node.name, cache)


def run_node(node: pb.Node, args: list[np.ndarray], params: dict, cache=None) -> np.ndarray:
    """One node on a batch: args are its inputs [n, *shape] float32, params its float32 parameters; cache
    (qpart.common.kvcache.KVCache) a language model's positions and keys/values so far, or None."""
    op = op_of(node)
    x = args[0]
    if op in SEQUENCE_OPS:
        return _sequence_node(op, node, args, params, cache)
    if op == "conv2d":
        return conv2d(x, params["weight"], params.get("bias"), node.conv2d)
    if op == "linear":
        y = x @ params["weight"].T
        return y + params["bias"] if "bias" in params else y
    if op == "activation":
        return _ACTIVATIONS[ACTIVATIONS[node.activation.function]](x).astype(np.float32, copy=False)
    if op in ("add", "mul"):
        return args[0] + args[1] if op == "add" else args[0] * args[1]
    if op == "concat":
        return np.concatenate(args, axis=node.concat.axis + 1)
    if op in ("max_pool2d", "avg_pool2d"):
        return _pool(op, getattr(node, op), x)
    if op == "adaptive_avg_pool2d":
        return adaptive_avg_pool2d(x, node.adaptive_avg_pool2d.out_h, node.adaptive_avg_pool2d.out_w)
    if op == "flatten":
        return x.reshape(len(x), -1)
    if op == "reshape":
        return x.reshape(len(x), *[int(d) for d in node.reshape.shape])
    if op == "permute":
        return np.ascontiguousarray(x.transpose(0, *[int(d) + 1 for d in node.permute.dims]))
    if op == "slice":
        s = node.slice
        return np.ascontiguousarray(x[(slice(None),) * (s.axis + 1) + (slice(s.start, s.stop),)])
    if op == "batch_norm":
        view = (1, -1) + (1,) * (x.ndim - 2)
        return x * params["scale"].reshape(view) + params["shift"].reshape(view)
    if op == "identity":
        return x
    raise InvalidArgument(f"node {node.name!r}: unknown operation {op!r}")

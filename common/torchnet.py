"""Run a network description in torch: the server's tail, the evaluator, and the device's torch backend.

`run_node` is the one definition of what each op computes (in float32, batch first); `GraphModule`
runs a range of nodes, from the tensors that cross one cut to those that cross another.
"""
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qpart.common import timing
from qpart.common.kvcache import RaggedCache
from qpart.common.errors import InvalidArgument
from qpart.common.network import ACTIVATIONS, NetworkProfile, op_of, parameter_name, parameter_shapes
from qpart.common.sequence import OPS as SEQUENCE_OPS
from qpart.v1 import network_pb2 as pb

_ACTIVATION_FNS = {
    "relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def max_pool2d(x: torch.Tensor, kh: int, kw: int, sh: int, sw: int) -> torch.Tensor:
    """Max pooling without padding as the maximum of strided slices: exact, and several times faster than
    torch's CPU kernel for small images."""
    h_out, w_out = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1   # [n, c, h_out, w_out]
    out = None
    for i in range(kh):
        for j in range(kw):
            window = x[..., i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw]
            out = window if out is None else torch.maximum(out, window)
    return out


def _pool(op: str, p: pb.Pool2dOp, x: torch.Tensor) -> torch.Tensor:
    if op == "max_pool2d":
        if p.padding_h == p.padding_w == 0:
            return max_pool2d(x, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w)
        return F.max_pool2d(x, (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w), (p.padding_h, p.padding_w))
    return F.avg_pool2d(x, (p.kernel_h, p.kernel_w), (p.stride_h, p.stride_w), (p.padding_h, p.padding_w))


def token_ids(x: torch.Tensor, vocab: int) -> torch.Tensor:
    """float32 token ids [n, T] -> int64, refusing any that is not a whole number in 0 .. vocab-1."""
    ids = x.long()
    if not bool(((ids >= 0) & (ids < vocab) & (ids.to(x.dtype) == x)).all()):
        raise InvalidArgument(f"token ids must be whole numbers 0 .. {vocab - 1}")
    return ids


def rotary(x: torch.Tensor, r: pb.RotaryOp, start) -> torch.Tensor:
    """[n, T, heads*head_dim] at positions start .. start+T-1 (start: an int, or each row's positions [n, T]),
    the rotate-half form (RotaryOp)."""
    n, t, _ = x.shape
    half = r.rotary_dims // 2
    inv = torch.from_numpy(np.float32(r.base) ** -(np.arange(half, dtype=np.float64) * 2 / r.rotary_dims))
    if isinstance(start, torch.Tensor):
        angles = start.float()[..., None] * inv.float()                                            # [n, T, half]
        cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]                         # [n, T, 1, half]
    else:
        angles = torch.arange(start, start + t, dtype=torch.float32)[:, None] * inv.float()[None, :]   # [T, half]
        cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]                               # [T, 1, half]
    h = x.reshape(n, t, r.heads, r.head_dim)                                                        # [n, T, H, hd]
    x1, x2, rest = h[..., :half], h[..., half:r.rotary_dims], h[..., r.rotary_dims:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1).reshape(n, t, -1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: pb.AttentionOp, name: str, cache) -> torch.Tensor:
    """Causal attention of q [n, T, H*hd] over the cache's keys/values and k, v [n, T, Hkv*hd] (AttentionOp)."""
    n, t, _ = q.shape
    q = q.reshape(n, t, a.heads, a.head_dim).transpose(1, 2)                 # [n, H, T, hd]
    k = k.reshape(n, t, a.kv_heads, a.head_dim).transpose(1, 2)              # [n, Hkv, T, hd]
    v = v.reshape(n, t, a.kv_heads, a.head_dim).transpose(1, 2)
    mask = None
    if isinstance(cache, RaggedCache):                          # several sequences, each its own past
        k, v, mask = cache.attend(name, k, v)                  # [n, Hkv, P+T, hd], mask [n, 1, T, P+T]
    elif cache is not None:
        if name in cache.layers:
            past_k, past_v = cache.layers[name]
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # [n, Hkv, p+T, hd]
        cache.layers[name] = (k, v)
    if mask is None:
        past = k.shape[2] - t
        mask = torch.ones(t, past + t, dtype=torch.bool).tril(diagonal=past)    # query i sees keys 0 .. past+i
    if a.kv_heads != a.heads:
        k = k.repeat_interleave(a.heads // a.kv_heads, dim=1)                # [n, H, p+T, hd]
        v = v.repeat_interleave(a.heads // a.kv_heads, dim=1)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=a.scale or None)   # [n, H, T, hd]
    return y.transpose(1, 2).reshape(n, t, a.heads * a.head_dim)


def _sequence_node(op: str, node: pb.Node, args: list, params: dict, cache) -> torch.Tensor:
    x = args[0]
    start = cache.position if cache is not None and not isinstance(cache, RaggedCache) else 0
    if isinstance(cache, RaggedCache) and op in ("position_embedding", "rotary"):
        start = cache.positions(x.shape[1])                                       # [n, T] each row's own
    if op == "embedding":
        return F.embedding(token_ids(x, node.embedding.num_embeddings), params["weight"])
    if op == "position_embedding":
        return x + (params["weight"][start] if isinstance(start, torch.Tensor) else
                    params["weight"][start:start + x.shape[1]])
    if op == "rotary":
        return rotary(x, node.rotary, start)
    if op == "layer_norm":
        return F.layer_norm(x, (node.layer_norm.dim,), params["weight"], params.get("bias"), node.layer_norm.eps)
    if op == "rms_norm":
        return params["weight"] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + node.rms_norm.eps))
    if op == "softmax":
        return torch.softmax(x, dim=node.softmax.axis + 1)
    return attention(args[0], args[1], args[2], node.attention, node.name, cache)


def run_node(node: pb.Node, args: list[torch.Tensor], params: dict, cache=None) -> torch.Tensor:
    """One node on a batch: args are its inputs [n, *shape], params its "weight"/"bias"/"scale"/"shift"; cache
    (qpart.common.kvcache.KVCache) a language model's positions and keys/values so far, or None."""
    op = op_of(node)
    x = args[0]
    if op in SEQUENCE_OPS:
        return _sequence_node(op, node, args, params, cache)
    if op == "conv2d":
        c = node.conv2d
        return F.conv2d(x, params["weight"], params.get("bias"), (c.stride_h, c.stride_w), (c.padding_h, c.padding_w),
                        (c.dilation_h, c.dilation_w), c.groups)
    if op == "linear":
        return F.linear(x, params["weight"], params.get("bias"))
    if op == "activation":
        return _ACTIVATION_FNS[ACTIVATIONS[node.activation.function]](x)
    if op == "add":
        return args[0] + args[1]
    if op == "mul":
        return args[0] * args[1]
    if op == "concat":
        return torch.cat(args, dim=node.concat.axis + 1)
    if op in ("max_pool2d", "avg_pool2d"):
        return _pool(op, getattr(node, op), x)
    if op == "adaptive_avg_pool2d":
        return F.adaptive_avg_pool2d(x, (node.adaptive_avg_pool2d.out_h, node.adaptive_avg_pool2d.out_w))
    if op == "flatten":
        return x.flatten(1)
    if op == "reshape":
        return x.reshape(x.shape[0], *[int(d) for d in node.reshape.shape])
    if op == "permute":
        return x.permute(0, *[int(d) + 1 for d in node.permute.dims]).contiguous()
    if op == "slice":
        s = node.slice
        return x.narrow(s.axis + 1, s.start, s.stop - s.start).contiguous()
    if op == "batch_norm":
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * params["scale"].reshape(view) + params["shift"].reshape(view)
    if op == "identity":
        return x
    raise InvalidArgument(f"node {node.name!r}: unknown operation {op!r}")


def node_step(node: pb.Node, params: dict):
    """run_node for one node with its attributes read once: a callable args -> tensor for the ops a vision tail is
    made of, None for the rest (run_node then). Reading a protobuf node on every input costs more than a small
    layer's kernel."""
    op = op_of(node)
    if op == "linear":
        weight, bias = params["weight"], params.get("bias")
        return lambda args: F.linear(args[0], weight, bias)
    if op == "conv2d":
        c = node.conv2d
        weight, bias, groups = params["weight"], params.get("bias"), c.groups
        stride, padding, dilation = (c.stride_h, c.stride_w), (c.padding_h, c.padding_w), (c.dilation_h, c.dilation_w)
        return lambda args: F.conv2d(args[0], weight, bias, stride, padding, dilation, groups)
    if op == "activation":
        fn = _ACTIVATION_FNS[ACTIVATIONS[node.activation.function]]
        return lambda args: fn(args[0])
    if op == "add":
        return lambda args: args[0] + args[1]
    if op == "mul":
        return lambda args: args[0] * args[1]
    if op == "flatten":
        return lambda args: args[0].flatten(1)
    if op == "identity":
        return lambda args: args[0]
    return None


def node_parameters(node: pb.Node, params: dict, channels_last: bool = False) -> dict[str, torch.Tensor]:
    """A node's parameters as float32 tensors, each checked against the shape the description implies."""
    out = {}
    for pname, shape in parameter_shapes(node).items():
        key = parameter_name(node.name, pname)
        if key not in params:
            raise InvalidArgument(f"parameter {key!r} of node {node.name!r} is missing")
        value = torch.as_tensor(np.asarray(params[key], np.float32))
        if tuple(value.shape) != shape:
            raise InvalidArgument(f"parameter {key!r} has shape {tuple(value.shape)}, expected {shape}")
        out[pname] = value.contiguous(memory_format=torch.channels_last) if channels_last and value.dim() == 4 else value
    return out


class GraphModule(nn.Module):
    """nodes[start:stop] of a network in eval mode: forward(*tensors crossing `start`) returns the tuple of
    tensors crossing `stop` (the network's outputs when stop is the end). Tensors are freed after their
    last reader. Shapes must already be validated (network.analyze); parameters are checked here."""

    def __init__(self, spec: pb.NetworkSpec, profile: NetworkProfile, params: dict, start: int = 0,
                 stop: int | None = None):
        super().__init__()
        stop = profile.num_nodes if stop is None else stop
        self.nodes = list(spec.nodes[start:stop])
        self.inputs = profile.cut(start).tensors if start else (spec.input,)
        self.outputs = profile.cut(stop).tensors if stop < profile.num_nodes else tuple(spec.outputs)
        self.params = [node_parameters(node, params) for node in self.nodes]
        keep = set(self.outputs)
        # free[i]: tensors no later node of this range reads, dropped after node i
        last = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                last[name] = i
        self.free = [[t for t, j in last.items() if j == i and t not in keep] for i in range(len(self.nodes))]
        # per node: its name, its inputs' names, its step (node_step, else None: run_node)
        self.steps = [(node.name, tuple(node.inputs), node_step(node, p)) for node, p in zip(self.nodes, self.params)]
        self.eval()

    def forward(self, *tensors: torch.Tensor, cache=None) -> tuple[torch.Tensor, ...]:
        """cache: a language model's KVCache for this range's attention nodes (advanced by the run's length)."""
        if cache is not None:
            cache.check_run(tensors[0].shape[1])
        env = dict(zip(self.inputs, tensors))
        for (name, inputs, step), node, params, free in zip(self.steps, self.nodes, self.params, self.free):
            args = [env[i] for i in inputs]
            env[name] = step(args) if step is not None else run_node(node, args, params, cache)
            for dropped in free:
                del env[dropped]
        if cache is not None:
            cache.advance(tensors[0].shape[1])
        return tuple(env[name] for name in self.outputs)


def mac_rate_timing(width: int = 512, batch: int = 8, windows: int = 9, window_s: float = 0.03,
                    clock=time.perf_counter) -> timing.Timing:
    """Timing of the MACs per second of a float32 torch linear layer at batch `batch` (one sample per window):
    the kind of kernel a head or a tail runs."""
    layer = nn.Linear(width, width).eval()
    x = torch.randn(batch, width)
    with torch.inference_mode():
        return timing.rate(lambda: layer(x), batch * width * width, windows, window_s, clock)


def mac_rate(seconds: float = 0.3, width: int = 512, batch: int = 8) -> float:
    """MACs per second of a float32 torch linear layer: the median over windows of ~`seconds` in all."""
    return mac_rate_timing(width, batch, windows=9, window_s=seconds / 9).median

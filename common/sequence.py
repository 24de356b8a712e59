"""The language-model ops of the network description (format 3): their shapes, parameters and MACs.

A language model's description (NetworkSpec.sequence set) takes token ids [T] and every tensor's first
per-sample axis is the position axis. One run takes T positions after the p that a key/value cache
(qpart.common.kvcache) already holds, so T is not part of the description: it is analysed at the length
asked for (network.analyze(spec, length=T)), and an op that mixes positions other than the causal
attention is refused. Then position t of every tensor depends on tokens at or before t alone, which is
what makes a cache (and a cut anywhere) exact.

Attention is one op, not a decomposition into matmul, mask, softmax and matmul: the key/value cache is
the op's state, and one op keeps it per attention node with its causal rule, where a decomposition would
need a cache concatenation, a mask that depends on the cache's length and reshapes across the position
axis, none of which a static description can say; the projections stay linear nodes, so their weights
take bit widths like any other layer. Its MACs (and a run's cost) grow with the positions attended to.
"""
import math

from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb

OPS = ("embedding", "position_embedding", "rotary", "layer_norm", "rms_norm", "softmax", "attention")
MAX_VOCAB = 1 << 24                 # token ids travel as float32 whole numbers: exact below 2^24
MAX_POSITIONS = 1 << 20
# ops that see more than one position at a time (attention is causal and allowed)
MIXING = ("flatten", "reshape", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm")
ON_AXIS = ("concat", "slice", "softmax")     # mix positions on axis 0 only

Shape = tuple[int, ...]


def parameter_shapes(node: pb.Node, op: str) -> dict[str, Shape]:
    if op == "embedding":
        return {"weight": (node.embedding.num_embeddings, node.embedding.embedding_dim)}
    if op == "position_embedding":
        return {"weight": (node.position_embedding.max_positions, node.position_embedding.dim)}
    if op == "layer_norm":
        d = node.layer_norm.dim
        return {"weight": (d,)} | ({"bias": (d,)} if node.layer_norm.bias else {})
    if op == "rms_norm":
        return {"weight": (node.rms_norm.dim,)}
    return {}


def _positive(what: str, **values) -> None:
    for key, value in values.items():
        if not value >= 1:
            raise InvalidArgument(f"{what}: {key} must be at least 1, got {value}")


def _last(what: str, shape: Shape, size: int, name: str = "last dimension") -> None:
    if len(shape) < 1 or shape[-1] != size:
        raise InvalidArgument(f"{what} expects a {name} of {size}, gets {list(shape)}")


def _eps(what: str, eps: float) -> None:
    if not (math.isfinite(eps) and 0 < eps < 1):
        raise InvalidArgument(f"{what}: eps must be in (0, 1), got {eps}")


def output_shape(node: pb.Node, op: str, what: str, shapes: list[Shape]) -> Shape:
    shape = shapes[0]
    if op == "embedding":
        e = node.embedding
        _positive(what, num_embeddings=e.num_embeddings, embedding_dim=e.embedding_dim)
        if e.num_embeddings > MAX_VOCAB:
            raise InvalidArgument(f"{what}: {e.num_embeddings} rows; token ids must stay below {MAX_VOCAB}")
        if len(shape) != 1:
            raise InvalidArgument(f"{what} expects token ids [T], gets {list(shape)}")
        return shape + (e.embedding_dim,)
    if op == "position_embedding":
        p = node.position_embedding
        _positive(what, max_positions=p.max_positions, dim=p.dim)
        _last(what, shape, p.dim)
        return shape
    if op == "rotary":
        r = node.rotary
        _positive(what, heads=r.heads, head_dim=r.head_dim, rotary_dims=r.rotary_dims)
        if r.rotary_dims % 2 or r.rotary_dims > r.head_dim:
            raise InvalidArgument(f"{what}: rotary_dims {r.rotary_dims} must be even and at most head_dim {r.head_dim}")
        if not (math.isfinite(r.base) and r.base > 1):
            raise InvalidArgument(f"{what}: base must be a finite number above 1, got {r.base}")
        _last(what, shape, r.heads * r.head_dim, "last dimension (heads * head_dim)")
        return shape
    if op in ("layer_norm", "rms_norm"):
        norm = getattr(node, op)
        _positive(what, dim=norm.dim)
        _eps(what, norm.eps)
        _last(what, shape, norm.dim)
        return shape
    if op == "softmax":
        if node.softmax.axis >= len(shape):
            raise InvalidArgument(f"{what}: axis {node.softmax.axis} is not an axis of {list(shape)}")
        return shape
    a = node.attention                                     # attention: q [T, H*hd], k and v [T, Hkv*hd]
    _positive(what, heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim)
    if a.heads % a.kv_heads:
        raise InvalidArgument(f"{what}: kv_heads {a.kv_heads} does not divide heads {a.heads}")
    if not (math.isfinite(a.scale) and a.scale >= 0):
        raise InvalidArgument(f"{what}: scale must be finite and not negative, got {a.scale}")
    q, k, v = shapes
    if len(q) != 2 or q[1] != a.heads * a.head_dim:
        raise InvalidArgument(f"{what} expects queries [T, {a.heads * a.head_dim}], gets {list(q)}")
    for name, s in (("keys", k), ("values", v)):
        if s != (q[0], a.kv_heads * a.head_dim):
            raise InvalidArgument(f"{what} expects {name} [{q[0]}, {a.kv_heads * a.head_dim}], gets {list(s)}")
    return q


def macs(node: pb.Node, op: str, out_shape: Shape, past: int = 0) -> int:
    """Multiply-accumulates of one run of T = out_shape[0] positions after `past` cached ones: attention's two
    products over the positions each query sees (the run computes the whole T x (past + T) block)."""
    if op == "attention":
        a = node.attention
        return 2 * a.heads * a.head_dim * out_shape[0] * (past + out_shape[0])
    return 0


def check_network(spec: pb.NetworkSpec, ops: list[str]) -> None:
    """The rules of a language model's description: ids only into embeddings, no op that mixes positions."""
    seq = spec.sequence
    if not 1 <= seq.vocab_size <= MAX_VOCAB:
        raise InvalidArgument(f"sequence.vocab_size {seq.vocab_size} must be 1 .. {MAX_VOCAB}")
    if not 1 <= seq.max_positions <= MAX_POSITIONS:
        raise InvalidArgument(f"sequence.max_positions {seq.max_positions} must be 1 .. {MAX_POSITIONS}")
    if [int(d) for d in spec.input_shape] != [seq.max_positions]:
        raise InvalidArgument(f"a language model's input_shape must be [max_positions] = [{seq.max_positions}], "
                              f"got {[int(d) for d in spec.input_shape][:4]}")
    for node, op in zip(spec.nodes, ops):
        what = f"node {node.name[:64]!r} ({op})"
        if spec.input in node.inputs and op != "embedding":
            raise InvalidArgument(f"{what} reads the token ids; only embedding nodes may")
        if op == "embedding" and list(node.inputs) != [spec.input]:
            raise InvalidArgument(f"{what} must read the network's input (the token ids)")
        if op == "embedding" and node.embedding.num_embeddings != seq.vocab_size:
            raise InvalidArgument(f"{what}: {node.embedding.num_embeddings} rows, but the vocabulary has "
                                  f"{seq.vocab_size} tokens")
        if op == "position_embedding" and node.position_embedding.max_positions < seq.max_positions:
            raise InvalidArgument(f"{what}: {node.position_embedding.max_positions} positions, fewer than the "
                                  f"sequence's {seq.max_positions}")
        if op in MIXING or (op in ON_AXIS and getattr(node, op).axis == 0) or (
                op == "permute" and list(node.permute.dims)[:1] != [0]):
            raise InvalidArgument(f"{what} mixes positions, which a language model's description may not "
                                  "(only the causal attention op sees other positions)")

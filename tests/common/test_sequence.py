"""The language-model ops of the description (format 3): their rules, both executors op for op, the cache."""
import numpy as np
import pytest
import torch

from qpart.common import kvcache, network, npexec, torchnet
from qpart.common.errors import InvalidArgument, ResourceExhausted
from qpart.v1 import network_pb2 as pb

VOCAB, CONTEXT, DIM = 50, 16, 16


def lm(*nodes: pb.Node, outputs=("out",), input_shape=(CONTEXT,), version=3) -> pb.NetworkSpec:
    spec = pb.NetworkSpec(format_version=version, input="ids", input_shape=input_shape, outputs=outputs)
    spec.sequence.vocab_size, spec.sequence.max_positions = VOCAB, CONTEXT
    spec.nodes.extend(nodes)
    return spec


def node(name, op, message, inputs) -> pb.Node:
    n = pb.Node(name=name, inputs=inputs)
    getattr(n, op).CopyFrom(message)
    return n


def attention_net(heads=4, kv_heads=2, head_dim=4, rotary_dims=2) -> tuple[pb.NetworkSpec, dict]:
    """embedding -> rms norm -> q, k, v (linear) -> rotary on q and k -> attention -> softmax; layer norm."""
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    spec = lm(
        node("emb", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=DIM), ["ids"]),
        node("pos", "position_embedding", pb.PositionEmbeddingOp(max_positions=CONTEXT, dim=DIM), ["emb"]),
        node("norm", "rms_norm", pb.RmsNormOp(dim=DIM, eps=1e-5), ["pos"]),
        node("q", "linear", pb.LinearOp(in_features=DIM, out_features=q_dim), ["norm"]),
        node("k", "linear", pb.LinearOp(in_features=DIM, out_features=kv_dim), ["norm"]),
        node("v", "linear", pb.LinearOp(in_features=DIM, out_features=kv_dim), ["norm"]),
        node("rq", "rotary", pb.RotaryOp(heads=heads, head_dim=head_dim, rotary_dims=rotary_dims, base=500.0), ["q"]),
        node("rk", "rotary", pb.RotaryOp(heads=kv_heads, head_dim=head_dim, rotary_dims=rotary_dims, base=500.0), ["k"]),
        node("att", "attention", pb.AttentionOp(heads=heads, kv_heads=kv_heads, head_dim=head_dim), ["rq", "rk", "v"]),
        node("ln", "layer_norm", pb.LayerNormOp(dim=q_dim, eps=1e-5, bias=True), ["att"]),
        node("out", "softmax", pb.SoftmaxOp(axis=1), ["ln"]))
    rng = np.random.default_rng(0)
    profile = network.analyze(spec)
    params = {network.parameter_name(n.name, p): rng.normal(size=s).astype(np.float32)
              for n in profile.nodes for p, s in n.param_shapes.items()}
    return spec, params


def run_numpy(spec, params, x, cache=None):
    env = {spec.input: x}
    for n in spec.nodes:
        mine = {p: params[network.parameter_name(n.name, p)] for p in network.parameter_shapes(n)}
        env[n.name] = npexec.run_node(n, [env[i] for i in n.inputs], mine, cache)
    if cache is not None:
        cache.advance(x.shape[1])
    return env["out"]


@pytest.mark.parametrize("heads, kv_heads, rotary_dims", [(4, 4, 4), (4, 2, 2), (4, 1, 4)])
def test_numpy_and_torch_agree_whole_and_with_a_cache(heads, kv_heads, rotary_dims):
    spec, params = attention_net(heads, kv_heads, rotary_dims=rotary_dims)
    x = np.random.default_rng(1).integers(0, VOCAB, (2, 10)).astype(np.float32)
    graph = torchnet.GraphModule(spec, network.analyze(spec), params)
    with torch.no_grad():
        whole = graph(torch.from_numpy(x))[0].numpy()
    assert np.abs(run_numpy(spec, params, x) - whole).max() < 1e-5
    for run in ("numpy", "torch"):
        cache = kvcache.KVCache(CONTEXT)
        pieces = []
        for start, stop in ((0, 4), (4, 5), (5, 6), (6, 10)):
            if run == "numpy":
                pieces.append(run_numpy(spec, params, x[:, start:stop], cache))
            else:
                with torch.no_grad():
                    pieces.append(graph(torch.from_numpy(x[:, start:stop]), cache=cache)[0].numpy())
        assert np.abs(np.concatenate(pieces, axis=1) - whole).max() < 1e-5, run
        assert cache.position == 10 and cache.nbytes == 2 * 4 * 2 * kv_heads * 4 * 10


def test_a_position_depends_on_earlier_tokens_only():
    spec, params = attention_net()
    x = np.random.default_rng(2).integers(0, VOCAB, (1, 8)).astype(np.float32)
    y = x.copy()
    y[0, 5:] = (y[0, 5:] + 1) % VOCAB
    a, b = run_numpy(spec, params, x), run_numpy(spec, params, y)
    assert np.abs(a[:, :5] - b[:, :5]).max() == 0 and np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3


def test_rotary_is_the_rotate_half_form():
    r = pb.RotaryOp(heads=1, head_dim=6, rotary_dims=4, base=10000.0)
    x = np.random.default_rng(3).normal(size=(1, 3, 6)).astype(np.float32)
    got = npexec.rotary(x, r, start=5)
    for t in range(3):
        angle = (5 + t) * 10000.0 ** -(np.arange(2) * 2 / 4)
        x1, x2 = x[0, t, :2], x[0, t, 2:4]
        want = np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle), x2 * np.cos(angle) + x1 * np.sin(angle),
                               x[0, t, 4:]])
        assert np.abs(got[0, t] - want).max() < 1e-5
    assert np.abs(torchnet.rotary(torch.from_numpy(x), r, 5).numpy() - got).max() < 1e-6


def test_token_ids_outside_the_vocabulary_are_refused_by_both_executors():
    spec, params = attention_net()
    graph = torchnet.GraphModule(spec, network.analyze(spec), params)
    for bad in (VOCAB, -1, 2.5, np.nan):
        x = np.array([[1, bad]], np.float32)
        with pytest.raises(InvalidArgument, match="token ids"):
            run_numpy(spec, params, x)
        with pytest.raises(InvalidArgument, match="token ids"), torch.no_grad():
            graph(torch.from_numpy(x))


def test_a_run_past_the_context_is_refused_before_it_runs():
    spec, params = attention_net()
    graph = torchnet.GraphModule(spec, network.analyze(spec), params)
    cache = kvcache.KVCache(CONTEXT)
    with torch.no_grad():
        graph(torch.zeros(1, CONTEXT - 1), cache=cache)
        with pytest.raises(ResourceExhausted, match="exceed the model's context of 16"):
            graph(torch.zeros(1, 2), cache=cache)
    assert cache.position == CONTEXT - 1


def test_rules_of_a_language_model_description():
    spec, _ = attention_net()
    profile = network.analyze(spec, length=3)
    assert profile.input_shape == (3,) and profile.shapes["att"] == (3, 16) and profile.sequence == (VOCAB, CONTEXT)
    assert profile.nodes[8].macs == 2 * 4 * 4 * 3 * 3              # attention: both products over 3 x 3 positions
    assert network.format_for(spec) == 3
    bad = [
        (lm(*spec.nodes, version=2), "needs network format 3"),
        (lm(*spec.nodes, input_shape=(8,)), r"input_shape must be \[max_positions\]"),
        (lm(node("out", "linear", pb.LinearOp(in_features=CONTEXT, out_features=2), ["ids"])), "reads the token ids"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB + 1, embedding_dim=4), ["ids"]),
            node("out", "identity", pb.IdentityOp(), ["e"])), "the vocabulary has 50"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=4), ["ids"]),
            node("out", "flatten", pb.FlattenOp(), ["e"])), "mixes positions"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=4), ["ids"]),
            node("out", "softmax", pb.SoftmaxOp(axis=0), ["e"])), "mixes positions"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=4), ["ids"]),
            node("out", "permute", pb.PermuteOp(dims=[1, 0]), ["e"])), "mixes positions"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=12), ["ids"]),
            node("out", "attention", pb.AttentionOp(heads=3, kv_heads=2, head_dim=4), ["e", "e", "e"])),
         "kv_heads 2 does not divide heads 3"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=12), ["ids"]),
            node("out", "rotary", pb.RotaryOp(heads=3, head_dim=4, rotary_dims=3, base=1e4), ["e"])), "must be even"),
        (lm(node("e", "embedding", pb.EmbeddingOp(num_embeddings=VOCAB, embedding_dim=12), ["ids"]),
            node("out", "layer_norm", pb.LayerNormOp(dim=12, eps=0.0), ["e"])), "eps must be in"),
    ]
    for description, message in bad:
        with pytest.raises(InvalidArgument, match=message):
            network.analyze(description)
    with pytest.raises(InvalidArgument, match="a run of 17 positions"):
        network.analyze(spec, length=CONTEXT + 1)


def test_a_vision_network_is_still_written_and_read_as_version_2():
    spec = pb.NetworkSpec(format_version=2, input="x", input_shape=[4], outputs=["fc"])
    spec.nodes.append(node("fc", "linear", pb.LinearOp(in_features=4, out_features=2), ["x"]))
    assert network.format_for(spec) == 2 and network.analyze(spec).sequence is None
    head = network.head_spec(spec, network.analyze(spec), 1)
    assert head.format_version == 2 and not head.HasField("sequence")
    lm_spec, _ = attention_net()
    head = network.head_spec(lm_spec, network.analyze(lm_spec), 5)
    assert head.format_version == 3 and head.sequence.max_positions == CONTEXT

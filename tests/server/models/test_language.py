"""Language models: transformers' GPT-2 and Llama (built from small configs, random weights, nothing
downloaded) and a user's nanoGPT module convert to the description, match the module's logits whole and
token by token with a cache, and split at every cut through both device executors at 16 bits; what the
description cannot express is refused by name."""
import numpy as np
import pytest
import torch

from qpart.common import kvcache, quant
from qpart.device.head import HeadExecutor
from qpart.server.models import evaluate, language, lm_layouts
from qpart.server.models.heads import build_head
from qpart.server.models.repository import Model
from qpart.server.models.split import uniform
from tests.server.models import nanogpt

transformers = pytest.importorskip("transformers", reason="transformers is in the dev extra (make test installs it)")
VOCAB, CONTEXT = 96, 48


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from their init (so that logits differ clearly), norms' weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if "norm" in name or "ln" in name else 0.0
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
    return module.eval()


def gpt2():
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=CONTEXT,
                                     bos_token_id=0, eos_token_id=0)
    return randomized(transformers.GPT2LMHeadModel(config))


def llama(**more):
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=CONTEXT,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0, **more)
    return randomized(transformers.LlamaForCausalLM(config))


def user_gpt():
    return randomized(nanogpt.build(vocab_size=VOCAB, block_size=CONTEXT))


MODELS = {"gpt2": gpt2, "llama": llama, "nanogpt": user_gpt}


def ids(n: int = 3, length: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (n, length))


@pytest.mark.parametrize("name", MODELS)
def test_converts_and_matches_the_module_whole_and_token_by_token(name):
    module = MODELS[name]()
    spec, params = lm_layouts.convert(module)
    checked = language.check_logits(module, spec, params, ids())
    assert checked["max_difference"] < 1e-4
    ops = {n.WhichOneof("op") for n in spec.nodes}
    assert {"embedding", "attention", "linear", "add"} <= ops
    assert ({"rotary", "rms_norm", "mul"} <= ops) == (name == "llama")
    assert spec.format_version == 3 and spec.sequence.vocab_size == VOCAB and spec.sequence.max_positions == CONTEXT
    attention = [n.attention for n in spec.nodes if n.WhichOneof("op") == "attention"]
    assert [(a.heads, a.kv_heads) for a in attention] == [(4, 2 if name == "llama" else 4)] * 2


def as_model(spec, params, tmp_path, sample: np.ndarray | None = None) -> Model:
    """A repository model of the description, its tensors' ranges measured on sample text (so that nothing the
    test sends is clipped: the ranges' coverage is calibration's concern, not the executors')."""
    sample = (ids(8, 20, seed=1) if sample is None else sample).astype(np.float32)
    card = {"tensor_ranges": evaluate.tensor_ranges(spec, params, sample)}
    return Model("lm", tmp_path, spec, params, card, "v")


@pytest.mark.parametrize("name", MODELS)
def test_every_cut_at_16_bits_through_both_executors_with_caches(name, tmp_path):
    """The device's head (16-bit weights) on numpy and on torch with its own cache, the crossing tensors at 16
    bits, the server's float tail with its own: a prompt of 7 tokens, then 5 tokens one at a time, give the
    module's logits at every position, at every cut."""
    module = MODELS[name]()
    tokens = ids(2, 12, seed=2)
    model = as_model(*lm_layouts.convert(module), tmp_path, tokens)
    expected = language.module_logits(module, torch.from_numpy(tokens)).numpy()
    if name == "nanogpt":                        # nanoGPT's forward gives the last position only: ask each prefix
        expected = np.concatenate([language.module_logits(module, torch.from_numpy(tokens[:, :t + 1])).numpy()
                                   for t in range(tokens.shape[1])], axis=1)
    head = build_head(model, uniform(model.profile, model.num_nodes, 16))
    bound = 2e-3 * float(np.abs(expected).max())
    cuts = [cut.cut for cut in model.cuts()]
    boundaries = [i + 1 for i, n in enumerate(model.profile.nodes) if n.name.endswith("residual_2")]
    assert len(boundaries) == 2 and set(boundaries) < set(cuts) and len(cuts) >= 20   # and cuts inside the blocks
    for backend in ("numpy", "torch"):
        executor = HeadExecutor(head, backend=backend)
        for c in cuts:
            cut = model.profile.cut(c)
            head_cache, tail_cache = kvcache.KVCache(CONTEXT), kvcache.KVCache(CONTEXT)
            got = []
            for start, stop in [(0, 7)] + [(t, t + 1) for t in range(7, 12)]:
                x = tokens[:, start:stop].astype(np.float32)
                run = executor.backend.tensors(x, cache=head_cache)
                if not cut.runs_tail:
                    got.append(run[model.profile.outputs[0]])
                    continue
                quantizers = model.cut_quantizers(uniform(model.profile, c, 16))
                sent = [x if t == model.spec.input else quant.dequantize(quant.quantize_with(run[t], q), q)
                        for t, q in zip(cut.tensors, quantizers)]         # token ids travel exactly
                with torch.inference_mode():
                    got.append(model.tail(c)(*map(torch.from_numpy, sent), cache=tail_cache)[0].numpy())
            got = np.concatenate(got, axis=1)
            assert np.abs(got - expected).max() < bound, (backend, c)
            assert (got.argmax(-1) == expected.argmax(-1)).all(), (backend, c)
            assert head_cache.position == 12 and (tail_cache.position == 12) == cut.runs_tail


def test_block_boundaries_carry_the_residual_stream_alone(tmp_path):
    model = as_model(*lm_layouts.convert(gpt2()), tmp_path)
    boundaries = [i + 1 for i, n in enumerate(model.profile.nodes) if n.name.endswith("residual_2")]
    assert len(boundaries) == 2
    for c in boundaries:
        assert model.profile.cut(c).tensors == (model.profile.nodes[c - 1].name,)
        assert model.profile.cut(c).shapes == ((CONTEXT, 32),)


def test_refused_by_name():
    with pytest.raises(language.Unsupported, match="rope_type 'linear'"):
        lm_layouts.convert(llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}))
    with pytest.raises(language.Unsupported, match="hidden_act = 'gelu_fast'"):
        lm_layouts.convert(llama(hidden_act="gelu_fast"))
    module = user_gpt()
    module.transformer.h[1].extra = torch.nn.Linear(32, 32)          # a layer the layout does not know
    with pytest.raises(language.Unsupported, match=r"transformer\.h\.1\.extra\.bias"):
        lm_layouts.convert(module)
    with pytest.raises(language.Unsupported, match="not a language-model layout"):
        lm_layouts.convert(torch.nn.Linear(3, 3))


def test_a_module_whose_forward_differs_from_its_layout_is_refused():
    module = user_gpt()
    spec, params = lm_layouts.convert(module)
    module.transformer.h[0].attn.n_head = 2                           # the module now attends with 2 heads
    with pytest.raises(language.LogitsMismatch, match="next-token agreement"):
        language.check_logits(module, spec, params, ids())


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_sessions_run_together_in_one_ragged_pass_as_each_alone(name, tmp_path):
    """The server's batched pass (qpart.server.serving.joint_runs): three sequences with 5, 0 and 9 positions
    cached run 1, 4 and 2 new ones together (padded and masked); each gets the scores and the cache it gets
    alone, with learned and rotary positions and grouped-query heads, from the input and from a block boundary."""
    from qpart.server.serving import joint_runs
    module = MODELS[name]()
    model = as_model(*lm_layouts.convert(module), tmp_path)
    boundary = next(i + 1 for i, n in enumerate(model.profile.nodes) if n.name.endswith("residual_2"))
    tokens = ids(3, 14, seed=4).astype(np.float32)
    past, new = [5, 0, 9], [1, 4, 2]
    for c in (0, boundary):
        tail = model.tail(c)
        if c == 0:
            inputs = tokens[:, :, None][..., 0]                                           # [3, 14] ids
        else:
            with torch.inference_mode():
                inputs = model.module(0, c)(torch.from_numpy(tokens))[0].numpy()             # [3, 14, D]
        alone, together = [], []
        for i in range(3):
            for store in (alone, together):
                cache = kvcache.KVCache(CONTEXT)
                if past[i]:
                    with torch.inference_mode():
                        tail(torch.from_numpy(inputs[i:i + 1, :past[i]]), cache=cache)
                store.append(cache)
        runs = [inputs[i:i + 1, past[i]:past[i] + new[i]] for i in range(3)]
        solo = [joint_runs.run_ragged(tail, [(alone[i], [runs[i]])])[0] for i in range(3)]
        joint = joint_runs.run_ragged(tail, [(together[i], [runs[i]]) for i in range(3)])
        for i in range(3):
            assert joint[i].shape == (new[i], VOCAB)
            np.testing.assert_allclose(joint[i], solo[i], atol=1e-4, rtol=1e-4)
            assert together[i].position == alone[i].position == past[i] + new[i]
            for name_, (k, v) in alone[i].layers.items():
                np.testing.assert_allclose(together[i].layers[name_][0].numpy(), k.numpy(), atol=1e-5)
        nxt = [inputs[i:i + 1, past[i] + new[i]:past[i] + new[i] + 1] for i in range(3)]   # a step after, alone
        for i in range(3):
            a = joint_runs.run_ragged(tail, [(alone[i], [nxt[i]])])[0]
            b = joint_runs.run_ragged(tail, [(together[i], [nxt[i]])])[0]
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)

"""Language-model layouts the importer converts: transformers' GPT-2 and Llama, and nanoGPT's GPT.

Each reads the module's structure and settings (never downloading anything) and builds the description
block by block with qpart.server.models.language.SequenceBuilder; a setting the description cannot
express is refused by name and module path (rope scaling, cross-attention, an activation it lacks), and
every parameter must be used. The result is always checked against the module's own logits
(language.check_logits) before it is stored, so a module whose forward differs from its layout is refused
there, not imported wrong.

Why layouts and not torch.fx, as for vision models: a language model's forward builds masks and
positions from the sequence length and caches from Python objects (transformers' Cache classes,
nanoGPT's `x[:, [-1], :]`), which fx either cannot trace or freezes at the traced length; the blocks
themselves are few and regular, so their layouts are read directly.
"""
import math

from torch import nn

from qpart.server.models.language import SequenceBuilder, Unsupported
from qpart.v1 import network_pb2 as pb

ACTIVATION_NAMES = {"gelu": pb.GELU, "gelu_new": pb.GELU_TANH, "gelu_pytorch_tanh": pb.GELU_TANH,
                    "gelu_fast": None, "relu": pb.RELU, "silu": pb.SILU, "swish": pb.SILU}
SUPPORTED = "transformers GPT2LMHeadModel and LlamaForCausalLM; nanoGPT's GPT (transformer.wte/wpe/h/ln_f, lm_head)"


def _activation(name: str, where: str) -> int:
    function = ACTIVATION_NAMES.get(str(name))
    if function is None:
        raise Unsupported(f"{where} = {name!r}: not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, relu, "
                          "silu)")
    return function


def _activation_module(module: nn.Module, where: str) -> int:
    if isinstance(module, nn.GELU):
        return pb.GELU_TANH if module.approximate == "tanh" else pb.GELU
    for kind, function in ((nn.ReLU, pb.RELU), (nn.SiLU, pb.SILU)):
        if isinstance(module, kind):
            return function
    raise Unsupported(f"{where}: activation module {type(module).__name__} is not supported (nn.GELU, nn.ReLU, nn.SiLU)")


def _layer_norm(b: SequenceBuilder, name: str, x: str, ln: nn.Module) -> str:
    if getattr(ln, "weight", None) is None:
        raise Unsupported(f"{name}: a layer norm without a learned weight is not supported")
    bias = getattr(ln, "bias", None)
    eps = float(getattr(ln, "eps", 1e-5))
    message = pb.LayerNormOp(dim=ln.weight.shape[0], eps=eps, bias=bias is not None)
    return b.node(name, "layer_norm", message, [x], weight=ln.weight, bias=bias)


def _rms_norm(b: SequenceBuilder, name: str, x: str, norm: nn.Module) -> str:
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
    return b.node(name, "rms_norm", pb.RmsNormOp(dim=norm.weight.shape[0], eps=eps), [x], weight=norm.weight)


def _qkv_slices(b: SequenceBuilder, prefix: str, qkv: str, dim: int) -> list[str]:
    """[T, 3*dim] -> the queries, keys and values [T, dim] each (one fused projection, as GPT-2 and nanoGPT)."""
    return [b.node(f"{prefix}.{part}", "slice", pb.SliceOp(axis=1, start=j * dim, stop=(j + 1) * dim), [qkv])
            for j, part in enumerate("qkv")]


def _token_and_position_embeddings(b: SequenceBuilder, t: nn.Module, dim: int) -> str:
    """GPT's wte and wpe (learned positions added to the token's row), as GPT-2 and nanoGPT name them."""
    x = b.node("transformer.wte", "embedding", pb.EmbeddingOp(num_embeddings=t.wte.num_embeddings, embedding_dim=dim),
               [b.spec.input], weight=t.wte.weight)
    return b.node("transformer.wpe", "position_embedding", pb.PositionEmbeddingOp(max_positions=t.wpe.num_embeddings,
                                                                                 dim=dim), [x], weight=t.wpe.weight)


def gpt2(model: nn.Module) -> SequenceBuilder:
    """transformers' GPT2LMHeadModel."""
    c, t = model.config, model.transformer
    if getattr(c, "add_cross_attention", False):
        raise Unsupported("config.add_cross_attention: cross-attention blocks are not supported")
    act = _activation(c.activation_function, "config.activation_function")
    dim, heads = c.n_embd, c.n_head
    b = SequenceBuilder(model, c.vocab_size, c.n_positions)
    x = _token_and_position_embeddings(b, t, dim)
    for i, block in enumerate(t.h):
        p, attn, mlp = f"transformer.h.{i}", block.attn, block.mlp
        a = _layer_norm(b, f"{p}.ln_1", x, block.ln_1)
        qkv = b.linear(f"{p}.attn.c_attn", a, attn.c_attn.weight, attn.c_attn.bias, transposed=True)
        scale = (1 / math.sqrt(dim // heads) if c.scale_attn_weights else 1.0)
        scale /= (i + 1) if c.scale_attn_by_inverse_layer_idx else 1
        y = b.node(f"{p}.attn", "attention", pb.AttentionOp(heads=heads, kv_heads=heads, head_dim=dim // heads,
                                                            scale=scale), _qkv_slices(b, f"{p}.attn", qkv, dim))
        y = b.linear(f"{p}.attn.c_proj", y, attn.c_proj.weight, attn.c_proj.bias, transposed=True)
        x = b.node(f"{p}.residual_1", "add", pb.AddOp(), [x, y])
        m = _layer_norm(b, f"{p}.ln_2", x, block.ln_2)
        m = b.linear(f"{p}.mlp.c_fc", m, mlp.c_fc.weight, mlp.c_fc.bias, transposed=True)
        m = b.node(f"{p}.mlp.act", "activation", pb.ActivationOp(function=act), [m])
        m = b.linear(f"{p}.mlp.c_proj", m, mlp.c_proj.weight, mlp.c_proj.bias, transposed=True)
        x = b.node(f"{p}.residual_2", "add", pb.AddOp(), [x, m])
    x = _layer_norm(b, "transformer.ln_f", x, t.ln_f)
    b.linear("lm_head", x, model.lm_head.weight, model.lm_head.bias)
    return b


def llama(model: nn.Module) -> SequenceBuilder:
    """transformers' LlamaForCausalLM."""
    c, inner = model.config, model.model
    rope = getattr(c, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(c, "rope_theta", 1e4)}
    if rope.get("rope_type", "default") != "default":
        raise Unsupported(f"config.rope_parameters rope_type {rope.get('rope_type')!r}: only the default rotary "
                          "positions are supported (no rope scaling)")
    act = _activation(c.hidden_act, "config.hidden_act")
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    rotary_dims = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    b = SequenceBuilder(model, c.vocab_size, c.max_position_embeddings)
    x = b.node("model.embed_tokens", "embedding", pb.EmbeddingOp(num_embeddings=c.vocab_size,
                                                                 embedding_dim=c.hidden_size),
               [b.spec.input], weight=inner.embed_tokens.weight)
    for i, layer in enumerate(inner.layers):
        p, attn, mlp = f"model.layers.{i}", layer.self_attn, layer.mlp
        a = _rms_norm(b, f"{p}.input_layernorm", x, layer.input_layernorm)
        q, k, v = (b.linear(f"{p}.self_attn.{n}_proj", a, getattr(attn, f"{n}_proj").weight,
                            getattr(attn, f"{n}_proj").bias) for n in "qkv")
        q = b.node(f"{p}.self_attn.rotary_q", "rotary", pb.RotaryOp(heads=heads, head_dim=head_dim,
                                                                    rotary_dims=rotary_dims, base=rope["rope_theta"]), [q])
        k = b.node(f"{p}.self_attn.rotary_k", "rotary", pb.RotaryOp(heads=kv_heads, head_dim=head_dim,
                                                                    rotary_dims=rotary_dims, base=rope["rope_theta"]), [k])
        y = b.node(f"{p}.self_attn", "attention", pb.AttentionOp(heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                                                 scale=float(attn.scaling)), [q, k, v])
        y = b.linear(f"{p}.self_attn.o_proj", y, attn.o_proj.weight, attn.o_proj.bias)
        x = b.node(f"{p}.residual_1", "add", pb.AddOp(), [x, y])
        m = _rms_norm(b, f"{p}.post_attention_layernorm", x, layer.post_attention_layernorm)
        gate = b.linear(f"{p}.mlp.gate_proj", m, mlp.gate_proj.weight, mlp.gate_proj.bias)
        gate = b.node(f"{p}.mlp.act_fn", "activation", pb.ActivationOp(function=act), [gate])
        up = b.linear(f"{p}.mlp.up_proj", m, mlp.up_proj.weight, mlp.up_proj.bias)
        m = b.node(f"{p}.mlp.gated", "mul", pb.MulOp(), [gate, up])
        m = b.linear(f"{p}.mlp.down_proj", m, mlp.down_proj.weight, mlp.down_proj.bias)
        x = b.node(f"{p}.residual_2", "add", pb.AddOp(), [x, m])
    x = _rms_norm(b, "model.norm", x, inner.norm)
    b.linear("lm_head", x, model.lm_head.weight, model.lm_head.bias)
    return b


def nanogpt(model: nn.Module) -> SequenceBuilder:
    """nanoGPT's GPT: transformer.wte/wpe/h/ln_f and lm_head, blocks of ln_1, attn (c_attn, c_proj, n_head), ln_2,
    mlp (c_fc, an activation module, c_proj), as in Karpathy's model.py."""
    t, c = model.transformer, model.config
    dim, heads = c.n_embd, c.n_head
    b = SequenceBuilder(model, t.wte.num_embeddings, c.block_size)
    x = _token_and_position_embeddings(b, t, dim)
    for i, block in enumerate(t.h):
        p, attn, mlp = f"transformer.h.{i}", block.attn, block.mlp
        a = _layer_norm(b, f"{p}.ln_1", x, block.ln_1)
        qkv = b.linear(f"{p}.attn.c_attn", a, attn.c_attn.weight, attn.c_attn.bias)
        y = b.node(f"{p}.attn", "attention", pb.AttentionOp(heads=heads, kv_heads=heads, head_dim=dim // heads),
                   _qkv_slices(b, f"{p}.attn", qkv, dim))
        y = b.linear(f"{p}.attn.c_proj", y, attn.c_proj.weight, attn.c_proj.bias)
        x = b.node(f"{p}.residual_1", "add", pb.AddOp(), [x, y])
        m = _layer_norm(b, f"{p}.ln_2", x, block.ln_2)
        m = b.linear(f"{p}.mlp.c_fc", m, mlp.c_fc.weight, mlp.c_fc.bias)
        acts = [(n, s) for n, s in mlp.named_children() if not isinstance(s, (nn.Linear, nn.Dropout))]
        if len(acts) != 1:
            raise Unsupported(f"{p}.mlp: expected c_fc, one activation module and c_proj, found "
                              f"{[n for n, _ in mlp.named_children()]}")
        function = _activation_module(acts[0][1], f"{p}.mlp.{acts[0][0]}")
        m = b.node(f"{p}.mlp.{acts[0][0]}", "activation", pb.ActivationOp(function=function), [m])
        m = b.linear(f"{p}.mlp.c_proj", m, mlp.c_proj.weight, mlp.c_proj.bias)
        x = b.node(f"{p}.residual_2", "add", pb.AddOp(), [x, m])
    x = _layer_norm(b, "transformer.ln_f", x, t.ln_f)
    b.linear("lm_head", x, model.lm_head.weight, getattr(model.lm_head, "bias", None))
    return b


def convert(model: nn.Module):
    """(NetworkSpec, float32 parameters) of a language model in one of the supported layouts, or Unsupported."""
    kind = type(model).__name__
    if kind == "GPT2LMHeadModel":
        builder = gpt2(model)
    elif kind == "LlamaForCausalLM":
        builder = llama(model)
    elif all(hasattr(model, a) for a in ("transformer", "lm_head", "config")) and hasattr(model.transformer, "wte"):
        builder = nanogpt(model)
    else:
        raise Unsupported(f"{kind} is not a language-model layout qpart converts ({SUPPORTED})")
    last = builder.spec.nodes[-1].name
    return builder.finish([last])


def is_language_model(model: nn.Module) -> bool:
    return type(model).__name__ in ("GPT2LMHeadModel", "LlamaForCausalLM") or (
        hasattr(model, "transformer") and hasattr(model, "lm_head") and hasattr(getattr(model, "transformer"), "wte"))


"""Bring your own language model: convert, check and store it with its text, tokenizer and measured figures.

    import_language_model(root, "mygpt", module, text_spec="fortunes")

The module (transformers' GPT-2 or Llama, or nanoGPT's GPT: qpart.server.models.lm_layouts) is converted,
checked against its own logits on validation text (whole and token by token through a cache), and stored
with a card that records the task ("language-model"), the tokenizer, the text spec, the float model's
next-token top-1 accuracy and perplexity on the test text, and the range of every tensor on validation
text (the hidden states' quantizers).
"""
import math
import pathlib
import time

import numpy as np
import torch

from qpart.common import network
from qpart.common.errors import FailedPrecondition
from qpart.common.torchnet import GraphModule
from qpart.server.models import evaluate, language, lm_layouts, repository, text

TASK = "language-model"
CHECK_SEQUENCES = 8          # validation windows the description must reproduce
EVAL_WINDOWS = 256           # windows of test text the float figures are measured on
RANGE_WINDOWS = 256          # windows of validation text the tensor ranges are measured on
MAX_WINDOW = 64              # positions per window (or the context, when shorter)


def next_token_figures(graph: torch.nn.Module, windows: np.ndarray, batch: int = 32) -> dict:
    """Next-token top-1 accuracy (percent) and perplexity of a model over windows int64 [n, T], each window's
    first T-1 positions predicting the next token."""
    hits = count = 0
    nll = 0.0
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            chunk = torch.from_numpy(windows[i:i + batch])
            logits = graph(chunk[:, :-1].float())[0]                                  # [b, T-1, vocab]
            target = chunk[:, 1:]
            hits += int((logits.argmax(-1) == target).sum())
            nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"))
            count += target.numel()
    return {"top1": round(100.0 * hits / count, 2), "perplexity": round(math.exp(nll / count), 3), "tokens": count}


def import_language_model(root: pathlib.Path, name: str, module: torch.nn.Module, text_spec: str = text.FORTUNES,
                          description: str = "", card_extra: dict | None = None, progress=print) -> repository.Model:
    started = time.perf_counter()
    spec, params = lm_layouts.convert(module)
    corpus = text.open_corpus(text_spec)
    vocab = spec.sequence.vocab_size
    if vocab < corpus.tokenizer.vocab_size:
        raise FailedPrecondition(f"{type(module).__name__} has {vocab} token ids; the byte tokenizer needs "
                                 f"{corpus.tokenizer.vocab_size} (256 bytes and the end of a document)")
    length = min(MAX_WINDOW, spec.sequence.max_positions)
    validation = text.windows(corpus.tokens("validation"), length, RANGE_WINDOWS)
    checked = language.check_logits(module, spec, params, validation[:CHECK_SEQUENCES])
    progress(f"{name}: converted {len(spec.nodes)} nodes, matches the module's logits on {checked['sequences']} "
             f"sequences of {checked['tokens']} tokens (max difference {checked['max_difference']:.2g})")
    graph = GraphModule(spec, network.analyze(spec), params)
    figures = next_token_figures(graph, text.windows(corpus.tokens("test"), length + 1, EVAL_WINDOWS))
    card = {"name": name, "description": description or f"{type(module).__name__} imported by qpart", "task": TASK,
            "data": corpus.spec, "tokenizer": corpus.tokenizer.to_dict(), "window": length,
            "float_test_top1": figures["top1"], "float_test_perplexity": figures["perplexity"],
            "test_tokens": figures["tokens"],
            "tensor_ranges": evaluate.tensor_ranges(spec, params, validation.astype(np.float32)),
            "check": checked, "import_seconds": round(time.perf_counter() - started, 1)} | (card_extra or {})
    return repository.save_model(root, name, spec, params, card)

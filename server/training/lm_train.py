"""`qpart train` for the zoo's language models: a GPT target and two much smaller drafts on the same text.

All three share the byte tokenizer (qpart.common.tokenizer), so a draft's tokens are the target's (the
speculative drafting issue builds on that). They train on random windows of the text's train part (split
by document, qpart.server.models.text) with AdamW, a warm-up and a cosine decay, then are imported like
any user's model (converted, checked against their logits, measured on the test text).
"""
import math
import pathlib
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from qpart.common.errors import InvalidArgument
from qpart.server.models import lm_import, repository, text
from qpart.server.training.gpt import GPT, GPTConfig


@dataclass(frozen=True)
class LMEntry:
    config: GPTConfig          # the network
    steps: int                 # optimizer steps of the zoo's schedule
    learning_rate: float       # peak AdamW step size
    description: str           # one line for ListModels


TARGET = "gpt-fortunes"
LM_ZOO = {
    TARGET: LMEntry(GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=128), 4000, 1e-3,
                    "GPT, 4 blocks of width 128 (0.86 M parameters), bytes of fortune cookies, context 256"),
    "draft-fortunes-1": LMEntry(GPTConfig(block_size=256, n_layer=1, n_head=2, n_embd=64), 3000, 2e-3,
                                f"draft for {TARGET}: 1 block of width 64 (83 k parameters), same tokenizer"),
    "draft-fortunes-2": LMEntry(GPTConfig(block_size=256, n_layer=2, n_head=2, n_embd=64), 3000, 2e-3,
                                f"draft for {TARGET}: 2 blocks of width 64 (133 k parameters), same tokenizer"),
}
WARMUP = 100                   # steps of linear warm-up
FLOOR = 0.1                    # the cosine decays to this share of the peak


@dataclass
class LMTrainConfig:
    steps: int | None = None             # optimizer steps; None: the zoo entry's
    batch_size: int = 16                 # windows per step (of block_size + 1 tokens)
    learning_rate: float | None = None   # peak AdamW step size; None: the zoo entry's
    seed: int = 0                        # seeds the initialization and the windows drawn
    text: str = text.FORTUNES            # the text spec (qpart.server.models.text)
    progress: bool = True                # a progress bar on stderr
    network: GPTConfig | None = None     # another network than the entry's (tests train tiny ones)


def learning_rate(step: int, steps: int, peak: float) -> float:
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(steps - WARMUP, 1)
    return peak * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def fit(model: GPT, tokens: torch.Tensor, steps: int, peak: float, config: LMTrainConfig, name: str) -> float:
    """Train on random windows of the token stream; returns the mean loss of the last 50 steps."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, betas=(0.9, 0.95), weight_decay=0.1)
    span = model.config.block_size + 1
    if len(tokens) < span:
        raise InvalidArgument(f"the text's train part has {len(tokens)} tokens, fewer than one window of {span}")
    bar = tqdm(total=steps, desc=f"training {name}", disable=not config.progress,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, unit="step")
    model.train()
    recent: list[float] = []
    for step in range(steps):
        starts = torch.randint(0, len(tokens) - span + 1, (config.batch_size,), generator=generator)
        batch = torch.stack([tokens[s:s + span] for s in starts.tolist()])           # [b, block_size + 1]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak)
        logits = model(batch[:, :-1])                                                # [b, block_size, vocab]
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        bar.update()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", refresh=False)
    bar.close()
    model.eval()
    return sum(recent) / len(recent)


def train(name: str, models_dir: pathlib.Path, config: LMTrainConfig = LMTrainConfig()) -> repository.Model:
    """Train zoo language model `name` on its text into models_dir."""
    if name not in LM_ZOO:
        raise InvalidArgument(f"unknown zoo language model {name!r}; choose one of {', '.join(LM_ZOO)}")
    entry = LM_ZOO[name]
    network = config.network or entry.config
    steps = config.steps if config.steps is not None else entry.steps
    peak = config.learning_rate if config.learning_rate is not None else entry.learning_rate
    torch.manual_seed(config.seed)
    corpus = text.open_corpus(config.text)
    model = GPT(network)
    started = time.perf_counter()
    final_loss = fit(model, torch.from_numpy(corpus.tokens("train")), steps, peak, config, name)
    training = {k: v for k, v in asdict(config).items() if k != "network"} | {
        "steps": steps, "learning_rate": peak, "network": asdict(network), "parameters": model.parameter_count,
        "final_train_loss": round(final_loss, 4), "seconds": round(time.perf_counter() - started, 1)}
    description = entry.description if config.network is None and steps == entry.steps else (
        f"{entry.description}; trained here on another schedule ({steps} steps, {asdict(network)})")
    role = {"role": "target"} if name == TARGET else {"role": "draft", "drafts_for": TARGET}
    return lm_import.import_language_model(models_dir, name, model, corpus.spec, description,
                                           {"training": training} | role, progress=lambda *_: None)


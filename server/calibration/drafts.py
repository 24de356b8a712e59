"""drafts.json: how often the target accepts each draft model's drafts, measured on validation text.

At each of POSITIONS positions of the target's validation text (drawn at random, seeded, each after a window of
text_samples.WINDOW true tokens) both models score the next token: the target in float32, the draft with its
weights at each of drafting.WIDTHS bits (as the device will run it). Greedy, a draft is accepted when its top-1
is the target's; sampling at temperature T, the speculative-sampling rule accepts a draft drawn from q with
probability sum_x min(p(x), q(x)) (p, q: the target's and the draft's softmax at T), so that is averaged.
Positions read the true text, not generated text: the acceptance a device observes while generating may
differ (the device adapts k to what it observes; qpart.device.speculative.AdaptiveK).

Drafts are the repository's other language models with the target's tokenizer and vocabulary, fewer
parameters than the target and a context of at least one window and a token.
"""
import time

import numpy as np
import torch

from qpart.server.calibration import text_samples
from qpart.server.calibration.accuracy import Evaluator
from qpart.server.models.repository import Model, ModelRepository
from qpart.server.planning import drafting

POSITIONS = 1000         # scored positions of the validation text
SEED = text_samples.SEED + 3


def parameters(model: Model) -> int:
    return sum(int(np.asarray(v).size) for v in model.params.values())


def candidates(target: Model, repository: ModelRepository) -> list[Model]:
    """The repository's models that can draft for this target."""
    if target.profile.sequence is None:
        return []
    kind, size = target.card.get("tokenizer", {}).get("kind"), parameters(target)
    out = []
    for m in repository:
        if m.name == target.name or m.profile.sequence is None:
            continue
        if (m.card.get("tokenizer", {}).get("kind") == kind and m.profile.sequence[0] == target.profile.sequence[0]
                and m.profile.sequence[1] > text_samples.WINDOW and parameters(m) < size):
            out.append(m)
    return out


def _accepted(target: torch.Tensor, draft: torch.Tensor, temperature: float) -> float:
    """Mean acceptance of drafts at the positions whose logits are given ([n, vocab] each)."""
    if temperature == 0:
        return float((target.argmax(1) == draft.argmax(1)).double().mean())
    p = torch.softmax(target.double() / temperature, 1)
    q = torch.softmax(draft.double() / temperature, 1)
    return float(torch.minimum(p, q).sum(1).mean())


def measure(target: Model, repository: ModelRepository, positions: int = POSITIONS,
            widths: tuple[int, ...] = drafting.WIDTHS) -> drafting.Drafts:
    began = time.perf_counter()
    tokens = text_samples.stream(target, "validation")
    x, _ = text_samples.windows(tokens, text_samples.positions(text_samples.WINDOW, len(tokens), positions, SEED))
    reference = Evaluator(target, x, None).float_logits                                       # [n, vocab]
    found = drafting.Drafts(target.version, len(x))
    for draft in candidates(target, repository):
        evaluator = Evaluator(draft, x, None)
        for bits in widths:
            logits = evaluator.logits(drafting.draft_split(draft, bits))                       # [n, vocab]
            found.measured.append(drafting.Measured(draft.name, draft.version, bits, [
                round(_accepted(reference, logits, t), 4) for t in found.temperatures]))
        evaluator.release()
    found.seconds = round(time.perf_counter() - began, 1)
    return found


def current(target: Model, repository: ModelRepository) -> bool:
    """True when drafts.json holds every draft the repository has now, at its current weights."""
    found = drafting.read(target)
    if found is None:
        return False
    have = {(m.model, m.version, m.weight_bits) for m in found.measured}
    return all((d.name, d.version, bits) in have for d in candidates(target, repository) for bits in drafting.WIDTHS)


def ensure(target: Model, repository: ModelRepository, force: bool = False) -> drafting.Drafts | None:
    """drafts.json, measured unless current (None when the repository has no draft for the target)."""
    if not candidates(target, repository):
        return None
    if not force and current(target, repository):
        return drafting.read(target)
    found = measure(target, repository)
    drafting.save(target, found)
    return found


def describe(found: drafting.Drafts) -> str:
    temps = ", ".join("greedy" if t == 0 else f"T={t:g}" for t in found.temperatures)
    return "; ".join(f"{m.model} at {m.weight_bits} bits: " + "/".join(f"{a:.2f}" for a in m.acceptance)
                     for m in found.measured) + f" ({temps})"

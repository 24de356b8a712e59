"""`qpart train` for the language models: the target and its drafts, sharing the byte tokenizer, trained on the
text's train part and measured on its test part (tests train tiny ones in seconds)."""
import json
import subprocess
import sys

import numpy as np

from qpart.server.models import text
from qpart.server.models.repository import ModelRepository
from qpart.server.training import lm_train


def test_the_schedule_warms_up_then_decays_to_its_floor():
    peak = 1e-3
    assert lm_train.learning_rate(0, 1000, peak) == peak / lm_train.WARMUP
    assert lm_train.learning_rate(lm_train.WARMUP, 1000, peak) == peak
    assert lm_train.learning_rate(999, 1000, peak) == pytest_approx(peak * lm_train.FLOOR)
    rates = [lm_train.learning_rate(s, 1000, peak) for s in range(lm_train.WARMUP, 1000)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def pytest_approx(value):
    import pytest
    return pytest.approx(value, rel=1e-3)


def test_the_tiny_target_learns_more_than_byte_frequencies(lm_models):
    model = ModelRepository(lm_models).get(lm_train.TARGET)
    card = model.card
    assert card["task"] == "language-model" and card["role"] == "target" and card["tokenizer"]["kind"] == "bytes"
    test = text.open_corpus(card["data"]).tokens("test")
    unigram = 100.0 * np.bincount(test).max() / len(test)           # always guessing the commonest byte (a space)
    assert card["float_test_top1"] > unigram + 3, (card["float_test_top1"], unigram)
    assert card["training"]["final_train_loss"] < np.log(257) - 2       # far below a uniform guess
    assert card["float_test_perplexity"] < 30


def test_the_cli_trains_a_draft_for_the_target(tmp_path):
    done = subprocess.run([sys.executable, "-m", "qpart.cli.main", "train", "draft-fortunes-1", "--steps", "30",
                           "--models", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "draft-fortunes-1: version" in done.stdout and "perplexity" in done.stdout
    card = json.loads((tmp_path / "draft-fortunes-1" / "card.json").read_text())
    assert card["role"] == "draft" and card["drafts_for"] == lm_train.TARGET
    assert card["tokenizer"] == {"kind": "bytes", "vocab_size": 257, "end_of_document": 256}
    assert card["training"]["steps"] == 30 and "trained here on another schedule" in card["description"]
    refused = subprocess.run([sys.executable, "-m", "qpart.cli.main", "train", "gpt-huge", "--models", str(tmp_path)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "gpt-fortunes" in refused.stderr

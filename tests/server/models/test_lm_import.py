"""Text and `qpart import` for a language model: the fortunes corpus split by document, a user's own text
folder (written here), a nanoGPT module with its weights imported through the command line."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from qpart.common.errors import FailedPrecondition, InvalidArgument, NotFound
from qpart.common.tokenizer import ByteTokenizer
from qpart.server.models import lm_import, repository, text
from tests.server.models import nanogpt

ROOT = pathlib.Path(__file__).resolve().parents[3]
WORDS = "the a cat dog sat on mat ran far home tree big small red blue and then it was".split()


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    for i in range(300):
        words = rng.choice(WORDS, rng.integers(20, 60))
        (root / f"doc{i:03d}.txt").write_text(" ".join(words) + ".\n")
    (root / "copy.txt").write_text((root / "doc007.txt").read_text())          # a duplicate document
    return root


def test_the_fortunes_text_is_split_by_document():
    corpus = text.open_corpus("fortunes")
    counts = {part: len(docs) for part, docs in corpus.documents.items()}
    assert sum(counts.values()) > 10_000
    assert 0.85 < counts["train"] / sum(counts.values()) < 0.95 and min(counts.values()) > 400
    seen = {part: set(docs) for part, docs in corpus.documents.items()}
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["validation"])
    tokens = corpus.tokens("test")
    assert tokens.max() == 256 and (tokens == 256).sum() == counts["test"]   # each document ends with its id


def test_a_text_folder_and_the_byte_tokenizer(text_folder):
    corpus = text.open_corpus(text_folder)
    doc = (text_folder / "doc007.txt").read_text().strip()
    part = text.part_of(doc)
    assert corpus.documents[part].count(doc) == 2                          # the duplicate went with it
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("naïve €", end=True) + [65]) == "naïve €"
    assert ByteTokenizer.from_dict(tok.to_dict()) == tok
    with pytest.raises(InvalidArgument, match="'bpe' is not supported"):
        ByteTokenizer.from_dict({"kind": "bpe"})
    with pytest.raises(NotFound, match="not fortunes or a directory"):
        text.open_corpus(text_folder / "nothing")
    windows = text.windows(corpus.tokens("train"), 16, 10)
    assert windows.shape == (10, 16) and windows.dtype == np.int64


def test_qpart_import_of_a_nanogpt_module(text_folder, tmp_path):
    torch.manual_seed(0)
    module = nanogpt.build(vocab_size=257, block_size=32)
    weights = tmp_path / "gpt.pt"
    torch.save(module.state_dict(), weights)
    (tmp_path / "mygpt.py").write_text("from tests.server.models import nanogpt\n\n\ndef build():\n"
                                       "    return nanogpt.build(vocab_size=257, block_size=32)\n")
    models = tmp_path / "repo"
    result = subprocess.run([sys.executable, "-m", "qpart.cli.main", "import", "mygpt", "--module",
                             f"{tmp_path / 'mygpt.py'}:build", "--weights", str(weights), "--text", str(text_folder),
                             "--models", str(models)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "matches the module's logits" in result.stdout and "perplexity" in result.stdout
    model = repository.load_model(models / "mygpt")
    card = model.card
    assert card["task"] == "language-model" and card["tokenizer"] == ByteTokenizer().to_dict()
    assert 0 <= card["float_test_top1"] <= 100 and card["float_test_perplexity"] > 1
    assert model.spec.format_version == 3 and model.profile.sequence == (257, 32)
    assert set(card["tensor_ranges"]) >= {n.name for n in model.spec.nodes}


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(text_folder, tmp_path):
    with pytest.raises(FailedPrecondition, match="has 96 token ids; the byte tokenizer needs 257"):
        lm_import.import_language_model(tmp_path, "small", nanogpt.build(vocab_size=96), str(text_folder))

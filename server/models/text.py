"""Text a language model is trained, calibrated and tested on, named by a data spec:

    "fortunes"            the Debian package fortunes (installed by the Makefile): about 15,000 fortune
                          cookies of English prose, quotes and verse in 43 files; one cookie is one document
    DIR of *.txt files    your own text: each file one document (UTF-8)
    DIR of fortune files  files of documents separated by lines holding a single "%" (strfile's format)

Documents are split into train, validation and test by a hash of their text (90/5/5 %), never by position
inside one, so a document and any duplicate of it fall in the same split wherever it sits and however the
files are ordered. A split's token stream is its documents' bytes, each followed by the end-of-document id.
"""
import hashlib
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from qpart.common.errors import InvalidArgument, NotFound
from qpart.common.tokenizer import ByteTokenizer

FORTUNES = "fortunes"
FORTUNES_DIR = "/usr/share/games/fortunes"     # the Debian package's; $QPART_TEXT overrides
PARTS = {"train": (0, 90), "validation": (90, 95), "test": (95, 100)}   # hash % 100 ranges
MAX_BYTES = 1 << 30


def part_of(document: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(document.encode("utf-8")).digest()[:8], "little") % 100
    return next(name for name, (lo, hi) in PARTS.items() if lo <= bucket < hi)


@dataclass
class Corpus:
    spec: str                           # what the user named (recorded in the model card)
    documents: dict                     # part -> list of documents (str)
    tokenizer: ByteTokenizer = ByteTokenizer()

    def tokens(self, part: str) -> np.ndarray:
        """The part's token stream: int64 [N]."""
        if part not in PARTS:
            raise InvalidArgument(f"unknown text part {part!r}; use {', '.join(PARTS)}")
        ids = [i for doc in self.documents[part] for i in self.tokenizer.encode(doc, end=True)]
        return np.asarray(ids, np.int64)


def _documents_of(path: pathlib.Path) -> list[str]:
    text = path.read_bytes()[:MAX_BYTES].decode("utf-8", errors="replace")
    if path.suffix == ".txt":
        return [text.strip()] if text.strip() else []
    pieces = text.replace("\r\n", "\n").split("\n%\n")
    return [p.strip("%\n ") for p in pieces if p.strip("%\n ")]


def open_corpus(spec: str | os.PathLike | None = FORTUNES) -> Corpus:
    """The text a spec names (see the module docstring)."""
    text = str(spec or FORTUNES)
    if text == FORTUNES:
        root = pathlib.Path(os.environ.get("QPART_TEXT", FORTUNES_DIR))
        files = sorted(p for p in root.glob("*") if p.is_file() and not p.is_symlink() and p.suffix != ".dat") \
            if root.is_dir() else []
        if not files:
            raise NotFound(f"the fortunes text is missing in {root}: `make test` or `make demo` installs the Debian "
                           "package fortunes (or set QPART_TEXT to a directory of fortune files)")
    else:
        root = pathlib.Path(text)
        if not root.is_dir():
            raise NotFound(f"text spec {text!r} is not fortunes or a directory")
        files = sorted(root.glob("*.txt")) or sorted(p for p in root.glob("*") if p.is_file())
    documents: dict[str, list[str]] = {part: [] for part in PARTS}
    for path in files:
        for doc in _documents_of(path):
            documents[part_of(doc)].append(doc)
    if not all(documents.values()):
        counts = {part: len(docs) for part, docs in documents.items()}
        raise NotFound(f"text {text!r} has too few documents for train, validation and test ({counts})")
    return Corpus(text, documents)


def windows(tokens: np.ndarray, length: int, count: int | None = None) -> np.ndarray:
    """Consecutive windows of `length` tokens from the stream, int64 [n, length]: every one (count None) or
    `count` spread evenly over it, so that an evaluation sees the whole split."""
    n = len(tokens) // length
    if n < 1:
        raise InvalidArgument(f"the text has {len(tokens)} tokens, fewer than one window of {length}")
    starts = np.arange(n) * length
    if count is not None and count < n:
        starts = starts[np.linspace(0, n - 1, count).round().astype(np.int64)]
    return np.stack([tokens[s:s + length] for s in starts])

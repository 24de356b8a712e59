"""The byte-level tokenizer of qpart's language models, as their model card records it.

Token ids 0..255 are the bytes of the UTF-8 text; 256 ends a document. No vocabulary file, no library,
the same on a server and on a board without torch: a device encodes its prompt and decodes the tokens it
gets back with this alone. Why bytes and not BPE: the zoo's models are small and their corpus (fortune
cookies) is English prose, where bytes cost about 4x the positions of a BPE but need nothing to be
trained, shipped or versioned; a card that names another kind is refused by name.
"""
from dataclasses import dataclass

from qpart.common.errors import InvalidArgument

KIND = "bytes"


@dataclass(frozen=True)
class ByteTokenizer:
    end_of_document: int = 256     # the id that ends a document (after its bytes)

    @property
    def vocab_size(self) -> int:
        return self.end_of_document + 1

    def encode(self, text: str, end: bool = False) -> list[int]:
        """The text's UTF-8 bytes as ids (end: followed by the end-of-document id)."""
        return list(text.encode("utf-8")) + ([self.end_of_document] if end else [])

    def decode(self, ids) -> str:
        """The text of ids; bytes that are not whole UTF-8 characters become U+FFFD, end-of-document ids end
        the text."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if i == self.end_of_document:
                break
            if not 0 <= i < 256:
                raise InvalidArgument(f"token id {i} is not a byte or the end of a document")
            out.append(i)
        return out.decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": KIND, "vocab_size": self.vocab_size, "end_of_document": self.end_of_document}

    @classmethod
    def from_dict(cls, value: dict) -> "ByteTokenizer":
        if not isinstance(value, dict) or value.get("kind") != KIND:
            kind = value.get("kind") if isinstance(value, dict) else value
            raise InvalidArgument(f"tokenizer kind {kind!r} is not supported (only {KIND!r})")
        tokenizer = cls(int(value.get("end_of_document", 256)))
        if tokenizer.end_of_document != 256 or value.get("vocab_size", 257) != tokenizer.vocab_size:
            raise InvalidArgument(f"a byte tokenizer has 257 ids (end of document 256), the card says {value}")
        return tokenizer

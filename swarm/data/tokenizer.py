"""What packing needs from a tokenizer, and the byte-level tokenizer (the default).

A run's data is tokenized once, by its founder, through ``TextTokenizer``: a small interface that a
Hugging Face tokenizer (``swarm.models``) and the byte-level tokenizer here both implement. Members
never tokenize; they train on the founder's token ids, so a member's tokenizer library version
cannot change what it trains on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

ChatMessage = Mapping[str, str]
"""One turn of a chat record: ``{"role": ..., "content": ...}`` (both strings)."""


class TextTokenizer(Protocol):
    """A tokenizer as packing sees it. Implementations are deterministic: the same text gives the
    same ids on every call and every machine that has the same tokenizer files."""

    @property
    def identity(self) -> str:
        """A hex digest of everything that decides the ids (vocabulary, merges, normaliser, special
        tokens, chat template): two tokenizers with one identity give the same ids for every text.
        Written into the shard index, so a member can check its model's tokenizer against the data."""
        ...

    @property
    def vocab_size(self) -> int:
        """Every id ``encode`` returns, and ``eos_id``, is in ``[0, vocab_size)``."""
        ...

    @property
    def eos_id(self) -> int | None:
        """The id appended after every document, or None when the tokenizer has no end-of-text token."""
        ...

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text, as the model expects a document to begin (with the begin-of-text
        token if the tokenizer adds one) and without the end-of-text token, which packing appends."""
        ...

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """One chat record as text, through the tokenizer's chat template. Raises ``ValueError`` (a
        ``DataError`` is one) with a one-line reason when it cannot: no template, roles it refuses."""
        ...


BYTE_VOCAB_SIZE = 256
BYTE_EOS_ID = 0
"""The NUL byte ends a document: text never holds it, and the byte vocabulary has no spare id."""


class ByteTokenizer:
    """Tokens are the UTF-8 bytes of the text (a vocabulary of 256), the default data's tokenizer.

    Chat records render without a template, as ``role: content`` lines, one blank line apart.
    """

    identity = hashlib.sha256(b"swarm byte tokenizer v1: utf-8 bytes, eos 0").hexdigest()
    vocab_size = BYTE_VOCAB_SIZE
    eos_id: int | None = BYTE_EOS_ID

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(text.encode()) for text in texts]

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n\n" for m in messages)

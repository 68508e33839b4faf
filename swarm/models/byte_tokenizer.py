"""The byte-level tokenizer of the presets: token id = UTF-8 byte value, 256 tokens, NUL ends a document.

The presets (and any model folder of exactly 256 tokens without tokenizer files) read text as its
UTF-8 bytes. ``ByteTokenizer`` encodes that way, in the shape of the model tokenizers
(``swarm.models.tokenizer``), and ``byte_tokenizer_files`` writes the same tokenizer as
``tokenizer.json`` and ``tokenizer_config.json``, so that a checkpoint of a byte-level run loads with
``AutoTokenizer.from_pretrained`` and ``pipeline("text-generation", ...)`` like any other:

- a BPE model with no merges over the 256 characters of the byte-level alphabet (each byte shown as
  one printable character), id = byte value, so ``tokenizer(text).input_ids == list(text.encode())``;
- the end-of-sequence token is byte 0 (NUL), which separates the byte corpus's documents. Its text
  (the alphabet's character for byte 0, "Ā") is declared special but ``split_special_tokens`` keeps
  a literal "Ā" in a prompt its two UTF-8 bytes, so the id-is-the-byte rule has no exception.

The files are written from literals, canonically: every member writes the same bytes whatever its
``tokenizers`` version, and their hash is the same for every byte-level run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from swarm.models.folder import ModelError, files_hash

BYTE_VOCAB_SIZE = 256
BYTE_EOS_ID = 0
"""NUL: the byte corpus puts it between documents, and no text contains it."""


def byte_alphabet() -> list[str]:
    """The printable character standing for each byte (index = byte value), as byte-level BPE
    tokenizers spell bytes: a printable Latin-1 byte is its own character, and the others (controls,
    space, soft hyphen) take the characters from U+0100 on, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shown: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(BYTE_VOCAB_SIZE):
        if b not in shown:
            shown[b] = chr(BYTE_VOCAB_SIZE + extra)
            extra += 1
    return [shown[b] for b in range(BYTE_VOCAB_SIZE)]


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@cache
def byte_tokenizer_files() -> dict[str, bytes]:
    """``tokenizer.json`` and ``tokenizer_config.json`` of the byte-level tokenizer (canonical bytes)."""
    alphabet = byte_alphabet()
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {char: byte for byte, char in enumerate(alphabet)},
            "merges": [],
        },
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": alphabet[BYTE_EOS_ID],
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
    }
    return {"tokenizer.json": _canonical(tokenizer), "tokenizer_config.json": _canonical(config)}


class ByteTokenizer:
    """Text as its UTF-8 bytes, in the shape of a model tokenizer (``swarm.models.tokenizer``)."""

    vocab_size = BYTE_VOCAB_SIZE
    eos_id = BYTE_EOS_ID
    bos_id: int | None = None
    name = "bytes"

    @property
    def content_hash(self) -> str:
        """The hash of the tokenizer files a byte-level checkpoint carries (``byte_tokenizer_files``)."""
        return files_hash(byte_tokenizer_files())

    @property
    def identity(self) -> str:
        """``content_hash``, as the data pipeline's tokenizer interface names it (``swarm.data.tokenizer``)."""
        return self.content_hash

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        raise ModelError(
            "a byte-level model has no chat template to render chat records with: use a model folder"
            " whose tokenizer has one, or a plain text field"
        )

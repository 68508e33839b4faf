"""A model folder's own tokenizer, in the shape the data pipeline tokenizes with.

    HFTokenizer.load(folder)   tokenizer.json / tokenizer_config.json / ... through AutoTokenizer

It and ``ByteTokenizer`` (``swarm.models.byte_tokenizer``; ``swarm.models.build.load_tokenizer``
picks one for a model) expose the same members (the data pipeline's ``TextTokenizer`` shape):
    vocab_size      every id the tokenizer can produce is below it (added tokens included)
    eos_id          the end-of-sequence id, which the packer puts between documents
    bos_id          the beginning-of-sequence id, or None (``encode`` does not add it)
    encode(texts)   token ids of each text as written, no special tokens added
    render_chat(m)  a conversation as text, through the tokenizer's chat template
    content_hash    sha256 over the tokenizer's files: what a run spec pins

``encode`` adds no special tokens: documents are packed back to back with ``eos_id`` between them,
and a chat template writes its own (a beginning-of-text token added again would be doubled).
Nothing is ever run from the folder (``trust_remote_code`` stays off), and nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swarm.models.folder import ModelError, files_hash, read_companion_files, tokenizer_file_names


class HFTokenizer:
    """A Hugging Face tokenizer loaded from a local folder."""

    def __init__(self, tokenizer: Any, *, name: str, files: Mapping[str, bytes]) -> None:
        self._tokenizer = tokenizer
        self.name = name
        self.vocab_size: int = len(tokenizer)
        eos = tokenizer.eos_token_id
        if not isinstance(eos, int):
            raise ModelError(
                f"the tokenizer of {name} names no end-of-sequence token (eos_token in"
                " tokenizer_config.json): documents packed together could not be told apart"
            )
        self.eos_id: int = eos
        bos = tokenizer.bos_token_id
        self.bos_id: int | None = bos if isinstance(bos, int) else None
        self.content_hash = files_hash(files)

    @property
    def identity(self) -> str:
        """``content_hash``, as the data pipeline's tokenizer interface names it (``swarm.data.tokenizer``)."""
        return self.content_hash

    @classmethod
    def load(cls, folder: Path, *, name: str | None = None) -> HFTokenizer:
        """The tokenizer of ``folder`` (ModelError, one line, where it has none or it cannot load)."""
        name = name or str(folder)
        names = tokenizer_file_names(folder)
        if not names:
            raise ModelError(f"{name} has no tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
        files = read_companion_files(folder, names)
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
        # The boundary with a stranger's files: transformers and the Rust tokenizers raise many kinds
        # (OSError, ValueError, KeyError, tokenizers' plain Exception); each is the folder's fault.
        except Exception as e:
            text = str(e).strip()
            reason = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
            raise ModelError(f"the tokenizer of {name} does not load: {reason}") from None
        return cls(tokenizer, name=name, files=files)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text as written (no beginning- or end-of-sequence token added)."""
        if not texts:
            return []
        encoded = self._tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """``messages`` ({"role": ..., "content": ...} each) as one text, by the chat template."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise ModelError(
                f"the tokenizer of {self.name} has no chat template (chat_template.jinja, or"
                " chat_template in tokenizer_config.json): chat records cannot be rendered"
            )
        from jinja2 import TemplateError

        try:
            text = self._tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False)
        except TemplateError as e:
            raise ModelError(f"the chat template of {self.name} refused a conversation: {e}") from None
        if not isinstance(text, str):
            raise ModelError(f"the chat template of {self.name} did not render text")
        return text

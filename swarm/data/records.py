"""One record's chosen field as a document's text: a string as it is, a chat as the template renders it.

JSONL lines, Parquet rows and ``datasets`` rows all come here, so every record format accepts the
same fields and gives the same errors. A field holding a list of ``{"role", "content"}`` turns is a
chat (or instruction) record: it is rendered with the tokenizer's chat template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from swarm.data.errors import DataError
from swarm.data.tokenizer import ChatMessage

DEFAULT_FIELD = "text"
RenderChat = Callable[[Sequence[ChatMessage]], str]


def missing_field(where: str, field: str, fields: Iterable[str]) -> DataError:
    """The error for a field the records do not have, naming those they have."""
    present = ", ".join(repr(f) for f in fields) or "none"
    return DataError(f"{where}: no field {field!r} (fields: {present}); pick one with --data-field")


def _chat(value: list[object], where: str, field: str) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, turn in enumerate(value):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("role"), str)
            or not isinstance(turn.get("content"), str)
        ):
            raise DataError(
                f"{where}: {field}[{i}] is not a chat turn: a list field needs "
                '{"role": "...", "content": "..."} entries'
            )
        messages.append({"role": turn["role"], "content": turn["content"]})
    return messages


def record_text(value: object, *, where: str, field: str, render_chat: RenderChat | None) -> str | None:
    """The document text of one record's ``field`` value, or None for a null value (the record is
    skipped). ``where`` names the record in errors (``file:line``, ``file:row``)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        messages = _chat(value, where, field)
        if render_chat is None:
            raise DataError(
                f"{where}: {field!r} holds chat turns, which need a tokenizer with a chat template"
            )
        try:
            return render_chat(messages)
        except ValueError as e:
            raise DataError(f"{where}: the chat template refused this record ({e})") from None
    kind = type(value).__name__
    raise DataError(f"{where}: field {field!r} is not text or a list of chat turns (found {kind})")

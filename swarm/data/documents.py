"""Documents: the texts a data set is made of, read from local files and folders in a fixed order.

Sources, given as files or folders (folders are walked in sorted name order, hidden entries left out):
- text files (``.txt``, ``.md``, ``.py``, ...): a small file is one document; a larger one is cut into
  documents of about ``TEXT_DOCUMENT_CHARS`` at blank lines (paragraph ends), so that one large text
  file is a data set with a held-out split. Text without blank lines is cut at a line end once a
  document reaches ``TEXT_DOCUMENT_MAX_CHARS``, and inside a longer line at that length;
- JSONL (``.jsonl``, ``.ndjson``): one record a line, the document is its ``field`` (``text`` unless
  ``--data-field`` says otherwise), or the chat it holds rendered by the tokenizer's template;
- Parquet files, Arrow stream files and ``datasets`` ``save_to_disk`` folders (``swarm.data.tables``),
  with the same field rule;
- ``stdlib``: the default data set, the Python standard library's own source files (tests and
  site-packages left out), sorted by path.

The standard library differs between Python versions (3.11.7 has 734 such files, 3.12.1 has 686), so
the default data set is not the same everywhere it could be read. It does not need to be: the
founder of a run reads it once and the swarm serves the founder's bytes as the run's data artifact
(``node.run_inputs``); a volunteer on Python 3.12 joining a founder on 3.11 trains on the founder's
3.11 text. Shipping a copy of the standard library in this repository would fix one version's text,
but it is CPython's code, not ours to copy.

Files are read as UTF-8 (invalid bytes replaced), in a stream: a data set larger than memory is
never held whole. Blank documents are skipped; a data set with none left is an error.
"""

from __future__ import annotations

import codecs
import json
import platform
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

from swarm.data import tables
from swarm.data.errors import DataError
from swarm.data.records import DEFAULT_FIELD, RenderChat, missing_field, record_text

DEFAULT_DATA = "stdlib"
TEXT_DOCUMENT_CHARS = 8 * 1024
"""A text file's document ends at the first blank line after this many characters."""
TEXT_DOCUMENT_MAX_CHARS = 64 * 1024
"""A text file's document ends here even without a blank line."""
TEXT_SUFFIXES = frozenset(
    {".txt", ".md", ".rst", ".py", ".text", ".csv", ".html", ".json", ".toml", ".yaml", ".yml"}
)
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
TABLE_SUFFIXES = frozenset({".parquet", ".arrow"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | TABLE_SUFFIXES
_SUPPORTED_WORDS = "text files, .jsonl, .parquet, .arrow or a datasets save_to_disk folder"


def text_documents(path: Path) -> Iterator[str]:
    """A text file as documents: cut at blank lines once long enough (see the module docstring)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts: list[str] = []
    size = 0
    with path.open("rb") as f:
        while raw := f.readline(TEXT_DOCUMENT_MAX_CHARS):
            line = decoder.decode(raw)
            if size >= TEXT_DOCUMENT_CHARS and not line.strip():
                yield "".join(parts)
                parts, size = [], 0
                continue
            parts.append(line)
            size += len(line)
            if size >= TEXT_DOCUMENT_MAX_CHARS:
                yield "".join(parts)
                parts, size = [], 0
    parts.append(decoder.decode(b"", final=True))
    yield "".join(parts)


def jsonl_documents(path: Path, *, field: str, render_chat: RenderChat | None) -> Iterator[str]:
    """The ``field`` of every record of a JSONL file, in line order; blank lines are skipped."""
    with path.open("rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:
                reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
                raise DataError(f"{where}: not valid JSON ({reason})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: a JSONL line must be an object, found a {type(record).__name__}")
            if field not in record:
                raise missing_field(where, field, record)
            text = record_text(record[field], where=where, field=field, render_chat=render_chat)
            if text is not None:
                yield text


def stdlib_files() -> Iterator[Path]:
    """The default data set's files: this Python's standard library sources, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).parts):
        parts = path.relative_to(root).parts
        if parts[0] in ("site-packages", "dist-packages") or any(
            part in ("test", "tests", "idle_test") for part in parts
        ):
            continue
        yield path


def _walk(folder: Path) -> Iterator[Path]:
    """A folder's data files and ``datasets`` folders, depth first in sorted name order."""
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if tables.is_dataset_folder(entry):
                yield entry
            else:
                yield from _walk(entry)
        elif entry.is_file() and entry.suffix.lower() in SUPPORTED_SUFFIXES:
            yield entry


def source_paths(source: str | Path) -> list[Path]:
    """The files and ``datasets`` folders one source names, in reading order. DataError when it
    names nothing readable."""
    path = Path(source)
    if path.is_dir():
        if tables.is_dataset_folder(path):
            return [path]
        found = list(_walk(path))
        if not found:
            raise DataError(f"{path}: folder holds no data ({_SUPPORTED_WORDS})")
        return found
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DataError(f"{path}: unsupported data file type {path.suffix!r} ({_SUPPORTED_WORDS})")
        return [path]
    raise DataError(f"{path}: no such file or folder")


def _path_documents(path: Path, field: str, render_chat: RenderChat | None) -> Iterator[str]:
    suffix = path.suffix.lower()
    if path.is_dir():
        yield from tables.dataset_documents(path, field=field, render_chat=render_chat)
    elif suffix == ".parquet":
        yield from tables.parquet_documents(path, field=field, render_chat=render_chat)
    elif suffix == ".arrow":
        yield from tables.arrow_documents(path, field=field, render_chat=render_chat)
    elif suffix in JSONL_SUFFIXES:
        yield from jsonl_documents(path, field=field, render_chat=render_chat)
    else:
        yield from text_documents(path)


def describe_sources(sources: Sequence[str | Path]) -> str:
    """A short, human description of the sources (for logs; never compared across machines)."""
    if [str(s) for s in sources] == [DEFAULT_DATA]:
        return f"{DEFAULT_DATA} (Python {platform.python_version()})"
    return ",".join(sorted(Path(s).name for s in sources))


def check_sources(sources: Sequence[str | Path]) -> None:
    """Every source exists and each of its files can be opened, without reading them: what a node
    checks before it starts anything. DataError names the first that cannot."""
    if [str(s) for s in sources] == [DEFAULT_DATA]:
        return
    for source in sources:
        for path in source_paths(source):
            files = tables.dataset_arrow_files(path) if path.is_dir() else [path]
            for file in files:
                try:
                    file.open("rb").close()
                except OSError as e:
                    raise DataError(f"{file}: cannot be read ({e.strerror})") from None


def read_documents(
    sources: Sequence[str | Path] = (DEFAULT_DATA,),
    *,
    field: str = DEFAULT_FIELD,
    render_chat: RenderChat | None = None,
    max_bytes: int | None = None,
) -> Iterator[str]:
    """Every non-blank document of ``sources``, in order; ``["stdlib"]`` is the default data set.

    ``field`` is the record field that holds a document (JSONL, Parquet, ``datasets``);
    ``render_chat`` renders chat records (``TextTokenizer.render_chat``); reading stops once
    ``max_bytes`` of UTF-8 text have been yielded. DataError for anything unreadable, and at the end
    when no document was found.
    """
    if [str(s) for s in sources] == [DEFAULT_DATA]:
        paths = list(stdlib_files())
    else:
        paths = [path for source in sources for path in source_paths(source)]
    count = total = 0
    for path in paths:
        try:
            for text in _path_documents(path, field, render_chat):
                if not text.strip():
                    continue
                yield text
                count += 1
                total += len(text.encode())
                if max_bytes is not None and total >= max_bytes:
                    return
        except OSError as e:
            raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if count == 0:
        raise DataError(f"{describe_sources(sources)}: the data set is empty (no text in any file or record)")

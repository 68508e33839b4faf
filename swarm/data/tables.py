"""Columnar data sets, read in batches of rows with pyarrow: Parquet files, Arrow stream files, and
the folders that Hugging Face ``datasets`` writes with ``save_to_disk``.

A ``save_to_disk`` folder of one ``Dataset`` holds ``state.json`` (whose ``_data_files`` lists its
Arrow stream files in order), ``dataset_info.json`` and the ``.arrow`` files; a ``DatasetDict``
folder holds ``dataset_dict.json`` (the split names) and one such folder per split. Reading them
needs pyarrow only, never ``datasets``. A ``DatasetDict`` gives its ``train`` split; point the data
at another split's folder to train on that one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from swarm.data.errors import DataError
from swarm.data.records import RenderChat, missing_field, record_text

ROWS_PER_READ = 1024
"""Rows converted to Python objects at a time: a table is never held whole."""
DATASET_STATE = "state.json"
DATASET_DICT = "dataset_dict.json"


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' ``save_to_disk``."""
    return (path / DATASET_STATE).is_file() or (path / DATASET_DICT).is_file()


def _rows(
    batches: Iterator[pa.RecordBatch], label: str, field: str, render_chat: RenderChat | None
) -> Iterator[str]:
    row = 0
    for batch in batches:
        for value in batch.column(field).to_pylist():
            text = record_text(value, where=f"{label}:row {row}", field=field, render_chat=render_chat)
            row += 1
            if text is not None:
                yield text


def parquet_documents(path: Path, *, field: str, render_chat: RenderChat | None) -> Iterator[str]:
    """The ``field`` of every row of a Parquet file, in row order."""
    try:
        file = pq.ParquetFile(path)
        if field not in file.schema_arrow.names:
            raise missing_field(str(path), field, file.schema_arrow.names)
        batches = file.iter_batches(batch_size=ROWS_PER_READ, columns=[field])
        yield from _rows(batches, str(path), field, render_chat)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None


def arrow_documents(path: Path, *, field: str, render_chat: RenderChat | None) -> Iterator[str]:
    """The ``field`` of every row of an Arrow stream file (the format ``datasets`` saves), in order."""
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_stream(source)
            if field not in reader.schema.names:
                raise missing_field(str(path), field, reader.schema.names)
            yield from _rows(iter(reader), str(path), field, render_chat)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Arrow stream file ({_first_line(e)})") from None


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable datasets file ({_first_line(e)})") from None


def _split_folder(folder: Path) -> Path:
    """The folder of the split a ``DatasetDict`` trains on: ``train``."""
    info = _json(folder / DATASET_DICT)
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise DataError(f"{folder / DATASET_DICT}: no list of split names")
    if "train" not in splits:
        shown = ", ".join(str(folder / s) for s in splits) or "none"
        raise DataError(f"{folder}: a DatasetDict without a 'train' split; give one split's folder ({shown})")
    return folder / "train"


def dataset_arrow_files(folder: Path) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` folder, in the data set's row order."""
    if not (folder / DATASET_STATE).is_file():
        folder = _split_folder(folder)
    state = _json(folder / DATASET_STATE)
    listed = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(listed, list) or not listed:
        raise DataError(f"{folder / DATASET_STATE}: lists no data files")
    files = []
    for entry in listed:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise DataError(f"{folder / DATASET_STATE}: data file {name!r} is not a file name in the folder")
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: listed in {DATASET_STATE} but missing")
        files.append(folder / name)
    return files


def dataset_documents(folder: Path, *, field: str, render_chat: RenderChat | None) -> Iterator[str]:
    """The ``field`` of every row of a ``save_to_disk`` folder, in the data set's row order."""
    for file in dataset_arrow_files(folder):
        yield from arrow_documents(file, field=field, render_chat=render_chat)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__

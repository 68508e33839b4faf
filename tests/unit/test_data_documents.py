"""Documents from local sources: text files cut at paragraphs, JSONL, Parquet, Arrow and datasets
folders, chat records, the stdlib default, and one-line errors for what cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from swarm.data.documents import (
    TEXT_DOCUMENT_CHARS,
    TEXT_DOCUMENT_MAX_CHARS,
    check_sources,
    read_documents,
    stdlib_files,
)
from swarm.data.errors import DataError
from swarm.data.tokenizer import ByteTokenizer

CHAT = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def _paragraphs(count: int) -> list[str]:
    return [
        f"paragraph {i}: " + " ".join(f"w{i * 7 + j}" for j in range(40 + i % 13)) + "\n"
        for i in range(count)
    ]


def test_one_large_text_file_is_cut_at_blank_lines(tmp_path: Path) -> None:
    paragraphs = _paragraphs(600)
    text = "\n".join(paragraphs)  # one blank line between paragraphs
    (tmp_path / "book.txt").write_text(text)
    documents = list(read_documents([tmp_path / "book.txt"]))
    assert len(documents) > 20
    # Each cut drops exactly one blank line, and nothing else: the text comes back whole.
    assert "\n".join(documents) == text
    assert all(TEXT_DOCUMENT_CHARS <= len(d) < TEXT_DOCUMENT_CHARS + 400 for d in documents[:-1])
    assert all(d.endswith("\n") and not d.startswith("\n") for d in documents[:-1])


def test_text_without_blank_lines_is_cut_at_the_limit_and_utf8_survives(tmp_path: Path) -> None:
    # Two-byte characters with no newline: the reads split characters, the decoder joins them again.
    text = "é" * (TEXT_DOCUMENT_MAX_CHARS * 3 + 5)
    (tmp_path / "line.md").write_bytes(text.encode())
    documents = list(read_documents([tmp_path / "line.md"]))
    assert "".join(documents) == text
    assert [len(d) for d in documents] == [TEXT_DOCUMENT_MAX_CHARS] * 3 + [5]


def test_a_small_text_file_is_one_document_and_blank_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first\n\nsecond\n")
    (tmp_path / "b.txt").write_text("\n \n")
    (tmp_path / "c.bin").write_bytes(b"\x00")  # not data: ignored inside a folder
    (tmp_path / ".hidden.txt").write_text("never read")
    assert list(read_documents([tmp_path])) == ["first\n\nsecond\n"]


def test_jsonl_reads_the_chosen_field_and_renders_chat(tmp_path: Path) -> None:
    lines = [{"body": f"doc {i}", "id": i} for i in range(3)] + [{"body": None, "id": 3}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    assert list(read_documents([tmp_path / "a.jsonl"], field="body")) == ["doc 0", "doc 1", "doc 2"]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": CHAT}) + "\n")
    rendered = list(
        read_documents([tmp_path / "chat.jsonl"], field="messages", render_chat=ByteTokenizer().render_chat)
    )
    assert rendered == ["user: 2+2?\n\nassistant: 4\n\n"]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("{not json}", "text", r"a\.jsonl:2: not valid JSON"),
        (
            '{"body": "x", "id": 1}',
            "text",
            r"a\.jsonl:2: no field 'text' \(fields: 'body', 'id'\); pick one with --data-field",
        ),
        ('["text"]', "text", "must be an object, found a list"),
        ('{"text": 5}', "text", r"field 'text' is not text or a list of chat turns \(found int\)"),
        ('{"messages": [{"role": "user"}]}', "messages", r"messages\[0\] is not a chat turn"),
        (
            '{"messages": [{"role": "user", "content": "hi"}]}',
            "messages",
            "need a tokenizer with a chat template",
        ),
    ],
)
def test_bad_jsonl_is_one_line_naming_the_line(tmp_path: Path, line: str, field: str, message: str) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({field: "fine"}) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message) as raised:
        list(read_documents([tmp_path / "a.jsonl"], field=field))
    assert "\n" not in str(raised.value)


def test_a_chat_template_that_refuses_a_record_is_named(tmp_path: Path) -> None:
    def strict(messages: object) -> str:
        raise ValueError("roles must alternate user/assistant")

    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": CHAT}) + "\n")
    with pytest.raises(
        DataError, match=r"c\.jsonl:1: the chat template refused this record \(roles must alternate"
    ):
        list(read_documents([tmp_path / "c.jsonl"], field="messages", render_chat=strict))


def test_parquet_reads_a_column_in_batches_and_names_missing_ones(tmp_path: Path) -> None:
    texts = [f"row {i}" for i in range(2500)]  # more rows than one read
    table = pa.table({"content": texts, "n": list(range(2500)), "messages": [CHAT] * 2500})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=700)
    assert list(read_documents([tmp_path / "d.parquet"], field="content")) == texts
    chats = read_documents(
        [tmp_path / "d.parquet"], field="messages", render_chat=ByteTokenizer().render_chat
    )
    assert next(iter(chats)) == "user: 2+2?\n\nassistant: 4\n\n"
    with pytest.raises(
        DataError, match=r"d\.parquet: no field 'text' \(fields: 'content', 'n', 'messages'\)"
    ):
        list(read_documents([tmp_path / "d.parquet"]))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        list(read_documents([tmp_path / "broken.parquet"]))


def _save_by_hand(folder: Path, columns: dict[str, list[object]], files: int = 2) -> None:
    """A folder in the layout datasets' save_to_disk writes: Arrow stream files named in state.json."""
    folder.mkdir(parents=True)
    table = pa.table(columns)
    per_file = -(-len(table) // files)
    names = []
    for i in range(files):
        name = f"data-{i:05d}-of-{files:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(i * per_file, per_file), max_chunksize=3)
        names.append({"filename": name})
    (folder / "state.json").write_text(json.dumps({"_data_files": names, "_split": None}))
    (folder / "dataset_info.json").write_text("{}")


def test_a_save_to_disk_folder_is_read_in_its_file_order(tmp_path: Path) -> None:
    texts = [f"example {i}" for i in range(10)]
    _save_by_hand(tmp_path / "ds", {"text": texts, "label": list(range(10))})
    assert list(read_documents([tmp_path / "ds"])) == texts
    # Found by a folder walk too, and read as one data set rather than as JSON text files.
    (tmp_path / "notes.txt").write_text("notes")
    assert list(read_documents([tmp_path])) == [*texts, "notes"]
    check_sources([tmp_path / "ds"])
    (tmp_path / "ds" / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DataError, match=r"data-00001-of-00002\.arrow: listed in state\.json but missing"):
        check_sources([tmp_path / "ds"])


def test_a_dataset_dict_gives_its_train_split(tmp_path: Path) -> None:
    _save_by_hand(tmp_path / "dd" / "train", {"text": ["train text"]}, files=1)
    _save_by_hand(tmp_path / "dd" / "test", {"text": ["test text"]}, files=1)
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert list(read_documents([tmp_path / "dd"])) == ["train text"]
    assert list(read_documents([tmp_path / "dd" / "test"])) == ["test text"]
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))
    with pytest.raises(DataError, match=r"without a 'train' split; give one split's folder \(.*dd/test\)"):
        list(read_documents([tmp_path / "dd"]))


def test_a_folder_written_by_datasets_itself(tmp_path: Path) -> None:
    datasets = pytest.importorskip(
        "datasets", reason="datasets (a dev dependency) writes the reference folder"
    )
    records = {"prompt": [f"question {i}" for i in range(40)], "messages": [CHAT] * 40}
    datasets.Dataset.from_dict(records).save_to_disk(str(tmp_path / "ds"), num_shards=3)
    assert list(read_documents([tmp_path / "ds"], field="prompt")) == records["prompt"]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(records), "test": datasets.Dataset.from_dict(records)}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    rendered = list(
        read_documents([tmp_path / "dd"], field="messages", render_chat=ByteTokenizer().render_chat)
    )
    assert rendered == ["user: 2+2?\n\nassistant: 4\n\n"] * 40
    with pytest.raises(DataError, match=r"no field 'text' \(fields: 'prompt', 'messages'\)"):
        list(read_documents([tmp_path / "ds"]))


def test_unusable_sources_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x")
    with pytest.raises(DataError, match=r"a\.bin: unsupported data file type '\.bin' \(text files, \.jsonl"):
        list(read_documents([tmp_path / "a.bin"]))
    with pytest.raises(DataError, match="no such file or folder"):
        check_sources([tmp_path / "absent"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no data"):
        list(read_documents([tmp_path / "empty"]))
    (tmp_path / "blank.txt").write_text("  \n\n")
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n')
    with pytest.raises(DataError, match="the data set is empty"):
        list(read_documents([tmp_path / "blank.txt", tmp_path / "blank.jsonl"]))


def test_reading_stops_after_max_bytes_and_stdlib_is_the_default() -> None:
    documents = list(read_documents(max_bytes=200_000))
    assert 200_000 <= sum(len(d.encode()) for d in documents) < 200_000 + TEXT_DOCUMENT_MAX_CHARS * 4
    files = list(stdlib_files())
    assert len(files) > 500 and not any("site-packages" in f.parts or "test" in f.parts for f in files)
    assert documents[0] == next(read_documents([files[0]]))

"""Packing documents into shards: the token stream, the held-out rule, identical bytes for identical
inputs, shards written while reading, a BPE tokenizer's chat records, and one-line errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from swarm.data.documents import read_documents
from swarm.data.errors import DataError
from swarm.data.pack import PackConfig, build_shards
from swarm.data.shards import ShardIndex, ShardSet
from swarm.data.tokenizer import ByteTokenizer, ChatMessage

ROOT = Path(__file__).resolve().parents[2]
EOS, USER, ASSISTANT = "<|endoftext|>", "<|user|>", "<|assistant|>"


class BpeTokenizer:
    """A ``TextTokenizer`` over a ``tokenizers`` BPE model, as the Hugging Face adapter is one, with
    a small chat template of its own."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.identity = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()
        self.vocab_size = tokenizer.get_vocab_size()
        self.eos_id: int | None = tokenizer.token_to_id(EOS)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        for m in messages:
            if m["role"] not in ("user", "assistant"):
                raise ValueError(f"role {m['role']!r} is not in the template")
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages)


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    """A BPE tokenizer trained here, on this repository's own source."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=[EOS, USER, ASSISTANT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [
        line
        for path in sorted((ROOT / "swarm" / "data").glob("*.py"))
        for line in path.read_text().splitlines()
    ]
    tokenizer.train_from_iterator(lines, trainer)
    return BpeTokenizer(tokenizer)


def _held_out(text: str, every: int = 40) -> bool:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % every == 0


def _stream(shards: ShardSet, split: str) -> np.ndarray:
    """A split's tokens in order, the wrapped tail of its last sequence left out."""
    part = shards.index.split(split)  # type: ignore[arg-type]
    rows = [np.load(shards.folder / f.name) for f in part.shards]
    return np.concatenate(rows).reshape(-1)[: part.tokens]


def _documents(count: int) -> list[str]:
    return [f"document {i}: " + "lorem ipsum " * (i % 17 + 1) for i in range(count)]


def test_documents_pack_into_their_splits_in_order(tmp_path: Path) -> None:
    documents = _documents(400) + ["document 3: " + "lorem ipsum " * 4] * 3  # duplicates share a split
    config = PackConfig(seq_len=64, sequences_per_shard=16)
    index = build_shards(lambda: iter(documents), ByteTokenizer(), tmp_path / "out", config)
    held_out = [d for d in documents if _held_out(d)]
    assert 0 < len(held_out) < 40 and index.eval.documents == len(held_out)
    assert index.train.documents == len(documents) - len(held_out)
    shards = ShardSet.open(tmp_path / "out")
    for split, texts in (("train", [d for d in documents if not _held_out(d)]), ("eval", held_out)):
        expected = b"".join(t.encode() + b"\x00" for t in texts)
        assert _stream(shards, split).astype(np.uint8).tobytes() == expected
    assert len(index.train.shards) > 3 and index.train.sizes[:-1] == [16] * (len(index.train.shards) - 1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["index.json"] + [f.name for f in index.train.shards + index.eval.shards]
    )
    assert index.dtype == "uint16" and index.seq_len == 64


def test_the_last_sequence_wraps_to_the_start_of_its_split(tmp_path: Path) -> None:
    documents = ["ab", "cd"]  # one of them is held out: 3 tokens each, with the end-of-text byte
    index = build_shards(lambda: iter(documents), ByteTokenizer(), tmp_path / "out", PackConfig(seq_len=7))
    shards = ShardSet.open(tmp_path / "out")
    assert index.train.sequences == index.eval.sequences == 1
    held_out = min(documents, key=lambda d: hashlib.sha256(d.encode()).digest()[:8])
    row = bytes(shards.sequences("eval", [(0, 0)])[0].astype(np.uint8))
    assert row == (held_out.encode() + b"\x00") * 2 + held_out.encode()[:2]


def test_same_inputs_give_the_same_bytes_whatever_the_folder(tmp_path: Path) -> None:
    documents = _documents(300)
    config = PackConfig(seq_len=32, sequences_per_shard=10)
    a = build_shards(lambda: iter(documents), ByteTokenizer(), tmp_path / "one" / "a", config)
    b = build_shards(lambda: iter(documents), ByteTokenizer(), tmp_path / "two" / "b", config)
    files = sorted(p.name for p in (tmp_path / "one" / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two" / "b").iterdir())
    for name in files:
        assert (tmp_path / "one" / "a" / name).read_bytes() == (tmp_path / "two" / "b" / name).read_bytes()
    assert a == b
    # Pinned: the content hash covers every shard's sha256, so any change to the bytes a founder
    # writes (layout, header, index, split rule) shows here, on every Python and NumPy CI runs.
    assert a.content_hash == "4f73a95d6ca224e7cf6acf17700b0523053699b72a146476524f76cbc47beb20"


def test_shards_are_written_while_the_documents_are_read(tmp_path: Path) -> None:
    on_disk: list[bool] = []

    def documents() -> Iterator[str]:
        for i in range(2000):
            yield f"streamed {i} " * 20
        on_disk.append(any(tmp_path.glob(".out.*/train-00002.npy")))

    build_shards(documents, ByteTokenizer(), tmp_path / "out", PackConfig(seq_len=128, sequences_per_shard=8))
    assert on_disk == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no work folder left behind


def test_a_small_data_set_holds_out_its_smallest_hash(tmp_path: Path) -> None:
    documents = [d for d in _documents(30) if not _held_out(d)][:5]
    index = build_shards(lambda: iter(documents), ByteTokenizer(), tmp_path / "out", PackConfig(seq_len=16))
    smallest = min(documents, key=lambda d: hashlib.sha256(d.encode()).digest()[:8])
    assert index.eval.documents == 1 and index.train.documents == 4
    assert (
        _stream(ShardSet.open(tmp_path / "out"), "eval").astype(np.uint8).tobytes()
        == smallest.encode() + b"\x00"
    )


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([], "the data set is empty"),
        (["only one"], "has one document: at least two are needed"),
        (["same"] * 5, "every document of the data set is the same text"),
    ],
)
def test_too_little_data_is_one_line_and_leaves_nothing(
    tmp_path: Path, documents: list[str], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        build_shards(lambda: iter(documents), ByteTokenizer(), tmp_path / "out", PackConfig(seq_len=8))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="out: already exists"):
        build_shards(lambda: iter(_documents(5)), ByteTokenizer(), tmp_path / "out", PackConfig(seq_len=8))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_bpe_tokenizer_packs_text_and_chat_records(tmp_path: Path, bpe: BpeTokenizer) -> None:
    records = [
        {"messages": [{"role": "user", "content": f"what is {i}?"}, {"role": "assistant", "content": str(i)}]}
        for i in range(60)
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "notes.txt").write_text("\n\n".join(_documents(40)))
    sources = [tmp_path / "chat.jsonl", tmp_path / "notes.txt"]
    texts = list(read_documents(sources, field="messages", render_chat=bpe.render_chat))
    assert texts[0] == "<|user|>what is 0?<|assistant|>0"
    index = build_shards(
        lambda: read_documents(sources, field="messages", render_chat=bpe.render_chat),
        bpe,
        tmp_path / "out",
        PackConfig(seq_len=48, sequences_per_shard=4),
    )
    assert (index.tokenizer, index.vocab_size, index.eos_id) == (bpe.identity, bpe.vocab_size, bpe.eos_id)
    shards = ShardSet.open(tmp_path / "out")
    stream = np.concatenate([_stream(shards, "train"), _stream(shards, "eval")])
    assert bpe.tokenizer.token_to_id(USER) in stream.tolist()  # the template's markers are single tokens
    expected = [i for t in texts for i in [*bpe.encode([t])[0], bpe.eos_id]]
    assert sorted(stream.tolist()) == sorted(expected)
    train_text = bpe.tokenizer.decode(_stream(shards, "train").tolist(), skip_special_tokens=False)
    assert train_text.startswith(next(t for t in texts if not _held_out(t)) + EOS)


class WideTokenizer:
    """Byte ids moved above 65,535: a vocabulary that needs 32-bit shards."""

    identity = "ab" * 32
    vocab_size = 70_000
    eos_id: int | None = None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [[65_536 + b for b in t.encode()] for t in texts]

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        raise ValueError("no chat template")


def test_a_large_vocabulary_gets_32_bit_shards_and_no_end_of_text(tmp_path: Path) -> None:
    documents = _documents(100)
    index = build_shards(lambda: iter(documents), WideTokenizer(), tmp_path / "out", PackConfig(seq_len=16))
    assert index.dtype == "uint32" and index.eos_id is None
    shards = ShardSet.open(tmp_path / "out")
    stream = _stream(shards, "train")
    assert stream.dtype == np.dtype("<u4") and int(stream.min()) >= 65_536
    assert (
        bytes((stream - 65_536).astype(np.uint8))
        == "".join(d for d in documents if not _held_out(d)).encode()
    )


def test_a_tokenizer_outside_its_vocabulary_is_refused(tmp_path: Path) -> None:
    class Liar(WideTokenizer):
        vocab_size = 65_600  # "lorem" needs up to 65,536 + ord("r")

    with pytest.raises(DataError, match=r"the tokenizer gave id 656\d\d, outside its vocabulary of 65600"):
        build_shards(lambda: iter(_documents(10)), Liar(), tmp_path / "out", PackConfig(seq_len=16))


def test_the_index_records_the_rule_and_reads_back(tmp_path: Path) -> None:
    config = PackConfig(seq_len=16, held_out_every=7, max_eval_sequences=3)
    index = build_shards(lambda: iter(_documents(200)), ByteTokenizer(), tmp_path / "out", config)
    raw = (tmp_path / "out" / "index.json").read_bytes()
    assert ShardIndex.from_json(raw) == index and raw == index.to_json()
    assert (index.held_out_every, index.max_eval_sequences) == (7, 3)
    assert 3 <= index.eval.sequences < 3 + 16  # the cap stops taking documents once reached


def test_the_default_data_set_packs_the_same_twice(tmp_path: Path) -> None:
    """The founder packs this Python's standard library; the swarm serves those shards to everyone."""
    config = PackConfig(seq_len=128)
    a = build_shards(lambda: read_documents(max_bytes=400_000), ByteTokenizer(), tmp_path / "a", config)
    b = build_shards(lambda: read_documents(max_bytes=400_000), ByteTokenizer(), tmp_path / "b", config)
    assert a == b and a.eval.documents >= 1 and a.train.tokens + a.eval.tokens > 400_000

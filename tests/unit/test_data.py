"""Corpora and batches: the embedded default, local text/JSONL/Parquet files, deterministic sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from swarm.data.corpus import DataError, load_corpus
from swarm.data.sampling import eval_batches, train_batch


def test_stdlib_corpus_is_stable_and_split() -> None:
    a = load_corpus(max_bytes=2 * 1024 * 1024)
    b = load_corpus(max_bytes=2 * 1024 * 1024)
    assert a.content_hash == b.content_hash
    assert len(a.train) > 1_000_000 and len(a.eval) > 1_000
    assert a.train.dtype == np.uint8
    assert b"def " in a.train[:200_000].tobytes()


def test_local_text_jsonl_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello world " * 100)
    (tmp_path / "b.md").write_text("# title\n" * 50)
    lines = [json.dumps({"text": f"record {i} " * 20}) for i in range(30)]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    pa = pytest.importorskip("pyarrow", reason="Parquet support is the optional 'parquet' extra")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"row {i} " * 10 for i in range(20)]}), tmp_path / "d.parquet")
    corpus = load_corpus([str(tmp_path)])
    assert corpus.num_documents == 2 + 30 + 20
    everything = corpus.train.tobytes() + corpus.eval.tobytes()
    for needle in (b"hello world", b"# title", b"record 29", b"row 19"):
        assert needle in everything
    only_text = load_corpus([str(tmp_path / "a.txt"), str(tmp_path / "b.md")])
    assert only_text.content_hash != corpus.content_hash


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", "{not json}\n", "not valid JSON"),
        ("bad.jsonl", '{"body": "x"}\n', "'text'"),
        ("bad.bin", "xx", "unsupported"),
    ],
)
def test_bad_local_data_is_a_clear_error(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_corpus([str(tmp_path / name), str(tmp_path / name)])


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_corpus([str(tmp_path / "nope.txt")])


def test_batches_are_deterministic_per_peer_round_and_step() -> None:
    tokens = np.random.default_rng(0).integers(0, 256, size=10_000).astype(np.uint8)
    kwargs = dict(seq_len=32, batch_size=4, seed=1)
    a = train_batch(tokens, peer_id=b"p1", round=3, step=5, **kwargs)
    assert a.shape == (4, 33) and a.dtype == torch.int64
    assert torch.equal(a, train_batch(tokens, peer_id=b"p1", round=3, step=5, **kwargs))
    assert not torch.equal(a, train_batch(tokens, peer_id=b"p2", round=3, step=5, **kwargs))
    assert not torch.equal(a, train_batch(tokens, peer_id=b"p1", round=4, step=5, **kwargs))
    batches = eval_batches(tokens, seq_len=32, batch_size=4, num_batches=3)
    assert len(batches) == 3 and all(b.shape == (4, 33) for b in batches)
    # Windows are contiguous slices of the corpus.
    start = int(np.flatnonzero(tokens == a[0, 0].item())[0])
    assert start >= 0

"""Checkpoint manifests and the downloader core: canonical bytes, validation, scheduling, verification."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.checkpoint.download import Downloader, DownloadError, Verdict
from swarm.checkpoint.manifest import Manifest, ManifestError, build_manifest, read_folder, replaceable


def _files() -> dict[str, bytes]:
    return {"model.safetensors": os.urandom(10_000), "config.json": b'{"a": 1}', "swarm.json": os.urandom(3)}


def test_manifest_is_canonical_and_round_trips() -> None:
    files = _files()
    a = build_manifest(files, run_id="r", round=7, global_step=70, chunk_size=4096)
    b = build_manifest(
        dict(reversed(list(files.items()))), run_id="r", round=7, global_step=70, chunk_size=4096
    )
    assert a.to_bytes() == b.to_bytes() and a.hash == b.hash, "insertion order must not matter"
    assert Manifest.from_bytes(a.to_bytes(), expected_hash=a.hash) == a
    assert [f.name for f in a.files] == ["config.json", "model.safetensors", "swarm.json"]
    chunks = a.chunks()
    assert [c.size for c in chunks if c.file == "model.safetensors"] == [4096, 4096, 1808]
    assert sum(c.size for c in chunks) == a.total_bytes == 10_000 + 8 + 3
    assert [c.index for c in chunks] == list(range(len(chunks)))


def _doc(manifest: Manifest) -> dict:
    return json.loads(manifest.to_bytes())


def _encode(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(v=2), "version"),
        (lambda d: d.update(chunk_size=0), "chunk size"),
        (lambda d: d.update(round=-1), "round"),
        (lambda d: d.update(round="3"), "round"),
        (lambda d: d["files"][0].update(name="../etc/passwd"), "plain file name"),
        (lambda d: d["files"][0].update(name="a/b"), "plain file name"),
        (lambda d: d["files"][0]["chunks"].append("0" * 64), "chunks for"),
        (lambda d: d["files"][0]["chunks"].__setitem__(0, "xyz"), "sha256"),
        (lambda d: d.update(files=[]), "1 to"),
        (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
        (lambda d: d.update(run_id=""), "run_id"),
    ],
)
def test_malformed_manifests_are_rejected_with_a_reason(mutate, message: str) -> None:
    doc = _doc(build_manifest(_files(), run_id="r", round=1, global_step=1, chunk_size=4096))
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(_encode(doc))


def test_manifest_bytes_must_match_the_hash_and_be_canonical() -> None:
    manifest = build_manifest(_files(), run_id="r", round=1, global_step=1, chunk_size=4096)
    with pytest.raises(ManifestError, match="do not match"):
        Manifest.from_bytes(manifest.to_bytes(), expected_hash="0" * 64)
    with pytest.raises(ManifestError, match="canonical"):
        Manifest.from_bytes(json.dumps(_doc(manifest), indent=1).encode())
    for garbage in (b"\xff\xfe", b"[1, 2]", b"{", b"x" * (5 << 20)):
        with pytest.raises(ManifestError):
            Manifest.from_bytes(garbage)


def _store(files: dict[str, bytes], manifest: Manifest) -> dict[int, bytes]:
    return {c.index: files[c.file][c.offset : c.offset + c.size] for c in manifest.chunks()}


def test_downloader_spreads_chunks_verifies_them_and_drops_a_corrupt_provider() -> None:
    files = {"model.safetensors": os.urandom(40 * 1024)}
    manifest = build_manifest(files, run_id="r", round=1, global_step=1, chunk_size=1024)
    truth = _store(files, manifest)
    d = Downloader(manifest, batch_chunks=3)
    for p in ("good1", "good2", "evil"):
        d.add_provider(p)
    served: dict[str, int] = {"good1": 0, "good2": 0, "evil": 0}
    while not d.done:
        progressed = False
        for p in ("evil", "good1", "good2"):
            for chunk in d.claim(p):
                progressed = True
                data = truth[chunk.index] if p != "evil" else b"\0" * chunk.size
                verdict = d.deliver(p, chunk.index, data)
                assert verdict in (Verdict.ACCEPTED, Verdict.CORRUPT, Verdict.UNEXPECTED)
                served[p] += verdict is Verdict.ACCEPTED
        assert progressed
    assert d.bad_providers == ["evil"] and served["evil"] == 0
    assert served["good1"] > 0 and served["good2"] > 0
    assert d.have == set(truth)


def test_a_failed_provider_gives_its_chunks_back_and_no_provider_left_is_an_error() -> None:
    files = {"model.safetensors": os.urandom(8 * 100)}
    manifest = build_manifest(files, run_id="r", round=1, global_step=1, chunk_size=100)
    truth = _store(files, manifest)
    d = Downloader(manifest, batch_chunks=4)
    d.add_provider("a")
    d.add_provider("b")
    taken_by_a = [c.index for c in d.claim("a")]
    d.provider_failed("a")  # left before sending anything
    got = []
    while not d.done:
        for chunk in d.claim("b"):
            assert d.deliver("b", chunk.index, truth[chunk.index]) is Verdict.ACCEPTED
            got.append(chunk.index)
    assert set(taken_by_a) <= set(got)
    assert d.deliver("a", taken_by_a[0], truth[taken_by_a[0]]) is Verdict.UNEXPECTED

    lonely = Downloader(manifest)
    lonely.add_provider("x")
    lonely.provider_failed("x")
    with pytest.raises(DownloadError, match="no provider left"):
        lonely.claim("x")


def test_endgame_duplicates_and_resume_skips_what_is_on_disk(tmp_path: Path) -> None:
    files = {"model.safetensors": os.urandom(6 * 50), "swarm.json": b"{}"}
    manifest = build_manifest(files, run_id="r", round=1, global_step=1, chunk_size=50)
    truth = _store(files, manifest)
    # A partial folder: the file exists, half of its chunks written, one of them damaged.
    partial = bytearray(len(files["model.safetensors"]))
    partial[:150] = files["model.safetensors"][:150]
    partial[60] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(partial))
    have = read_folder(tmp_path, manifest)
    assert set(have) == {0, 2}
    d = Downloader(manifest, have=have, batch_chunks=10)
    d.add_provider("slow")
    d.add_provider("fast")
    slow = [c.index for c in d.claim("slow")]
    assert set(slow) == set(range(len(truth))) - {0, 2}, "resumed chunks are never asked for"
    fast = [c.index for c in d.claim("fast")]
    assert set(fast) == set(slow), "with nothing unclaimed the idle provider duplicates (endgame)"
    for i in fast:
        assert d.deliver("fast", i, truth[i]) is Verdict.ACCEPTED
    assert d.done
    assert d.deliver("slow", slow[0], truth[slow[0]]) is Verdict.DUPLICATE
    assert hashlib.sha256(truth[1]).hexdigest() == manifest.chunks()[1].sha256


def test_a_pull_never_deletes_a_user_s_files(tmp_path: Path) -> None:
    """``swarm-node pull --out DIR`` replaces DIR only when it is new, empty or a pulled checkpoint;
    a folder of the user's files is refused before anything is fetched, and kept as it was."""
    assert replaceable(tmp_path / "new") and replaceable(tmp_path)
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    (pulled / "swarm.json").write_text(json.dumps({"run_id": "r.aaaaaaaaaaaaaaaa", "round": 4}))
    assert replaceable(pulled)
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("months of work")
    (tmp_path / "a-file").write_text("x")
    assert not replaceable(mine) and not replaceable(tmp_path / "a-file")
    (mine / "swarm.json").write_text("{}")  # a file of that name does not make it a checkpoint
    assert not replaceable(mine)
    peer = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWJ9UG5RxcbCaBFampKeErBGW4PB3rfL8Dnrakw3ymggoA"
    refused = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--peer", peer, "--out", str(mine), "--timeout", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    assert (mine / "chapter1.tex").read_text() == "months of work"

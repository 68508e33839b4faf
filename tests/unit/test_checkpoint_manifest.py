"""Checkpoint manifests and the downloader core: canonical bytes, validation, scheduling, verification."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.checkpoint.bounds import (
    CONFIG_FILE,
    DEFAULT_MAX_CHECKPOINT_BYTES,
    GIB,
    MAX_CONFIG_BYTES,
    MAX_SAFETENSORS_HEADER_BYTES,
    MAX_SWARM_BYTES,
    MODEL_FILE,
    SWARM_FILE,
    check_plausible,
    model_file_bytes,
    zero_chunk_sha256,
)
from swarm.checkpoint.download import Downloader, DownloadError, Verdict
from swarm.checkpoint.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    build_manifest,
    prepare_partial,
    read_folder,
    replaceable,
    write_chunk,
)


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


# --- what a download may be: swarm.checkpoint.bounds ----------------------------------------------

SMALL_FILES = {CONFIG_FILE: b'{"model_type":"llama"}', SWARM_FILE: b'{"format":1}'}


def forged_manifest(
    model_chunks: list[str],
    *,
    chunk_size: int,
    small: dict[str, bytes] = SMALL_FILES,
    run_id: str = "r",
    round: int = 9,
) -> Manifest:
    """A manifest as a hostile provider may write it: any chunk list for ``model.safetensors`` (each
    chunk whole), next to small config files; it passes the manifest's own validation."""
    entries = [
        FileEntry(name, len(data), (hashlib.sha256(data).hexdigest(),)) for name, data in small.items()
    ]
    entries.append(FileEntry(MODEL_FILE, len(model_chunks) * chunk_size, tuple(model_chunks)))
    forged = Manifest(run_id, round, 10 * round, chunk_size, tuple(sorted(entries, key=lambda e: e.name)))
    return Manifest.from_bytes(forged.to_bytes())


def random_digests(count: int) -> list[str]:
    return [hashlib.sha256(os.urandom(16)).hexdigest() for _ in range(count)]


def test_a_terabyte_of_zero_chunks_is_refused_over_the_cap() -> None:
    """The attack of issue 29: 60,000 all-zero chunks of 16 MiB (~1 TB) in a 4 MB manifest."""
    chunk = 16 << 20
    manifest = forged_manifest([zero_chunk_sha256(chunk)] * 60_000, chunk_size=chunk)
    assert manifest.total_bytes > 900 * GIB
    with pytest.raises(ManifestError, match=r"over the cap of 64\.00 GiB"):
        check_plausible(manifest, param_count=None, max_bytes=DEFAULT_MAX_CHECKPOINT_BYTES)


def test_a_manifest_larger_than_the_run_s_model_is_refused() -> None:
    """100 zero chunks of 16 MiB (1.7 GB) are under the default cap, but not what a model of a
    million parameters (4 MB) can be; nor is a model file too small for its parameters."""
    chunk = 16 << 20
    zeros = forged_manifest([zero_chunk_sha256(chunk)] * 100, chunk_size=chunk)
    check_plausible(zeros, param_count=None, max_bytes=DEFAULT_MAX_CHECKPOINT_BYTES)  # zeros may repeat
    with pytest.raises(ManifestError, match="cannot hold the run's 1000000 fp32 parameters"):
        check_plausible(zeros, param_count=1_000_000, max_bytes=DEFAULT_MAX_CHECKPOINT_BYTES)
    with pytest.raises(ManifestError, match="cannot hold"):
        check_plausible(zeros, param_count=1 << 30, max_bytes=DEFAULT_MAX_CHECKPOINT_BYTES)
    low, high = model_file_bytes(1_000_000)
    assert low == 4_000_000 + 8 + 2 and high - low < MAX_SAFETENSORS_HEADER_BYTES


def test_a_repeated_chunk_is_refused_unless_it_is_all_zeros() -> None:
    chunk = 4096
    real = random_digests(6)
    count = (6 * chunk - 8 - 2048) // 4  # 6 chunks: the values and a 2 KiB header
    check_plausible(forged_manifest(real, chunk_size=chunk), param_count=count, max_bytes=GIB)
    with pytest.raises(ManifestError, match=r"chunk 6 .* repeats an earlier chunk"):
        check_plausible(
            forged_manifest([*real[:5], real[1]], chunk_size=chunk), param_count=count, max_bytes=GIB
        )
    # Round 0 of a LoRA run: B matrices of zeros, many chunks of them, within the model's size.
    lora = [real[0], *[zero_chunk_sha256(chunk)] * 4, real[1]]
    check_plausible(forged_manifest(lora, chunk_size=chunk), param_count=count, max_bytes=GIB)
    # The last chunk of a file is shorter: its zero hash is that of its own size.
    assert zero_chunk_sha256(3) == hashlib.sha256(bytes(3)).hexdigest()
    assert zero_chunk_sha256((1 << 20) + 5) == hashlib.sha256(bytes((1 << 20) + 5)).hexdigest()


@pytest.mark.parametrize(
    "small, message",
    [
        ({CONFIG_FILE: b"{}"}, "this manifest lists config.json, model.safetensors$"),
        ({**SMALL_FILES, "run.sh": b"rm -rf ~"}, "lists config.json, model.safetensors, run.sh, swarm.json"),
        ({**SMALL_FILES, CONFIG_FILE: b" " * (MAX_CONFIG_BYTES + 1)}, "config.json of .* over its cap"),
        ({**SMALL_FILES, SWARM_FILE: b" " * (MAX_SWARM_BYTES + 1)}, "swarm.json of .* over its cap"),
    ],
)
def test_a_manifest_must_list_the_checkpoint_s_files_within_their_caps(
    small: dict[str, bytes], message: str
) -> None:
    manifest = forged_manifest(random_digests(2), chunk_size=4 << 20, small=small)
    with pytest.raises(ManifestError, match=message):
        check_plausible(manifest, param_count=None, max_bytes=GIB)


def test_a_download_grows_its_files_and_resumes_only_written_chunks(tmp_path: Path) -> None:
    """No file is extended ahead of its bytes, so a sparse hole never passes for a chunk on disk:
    not where a later chunk was written first, and not in a partial folder that an earlier version
    extended to full size, even where the manifest expects zeros there."""
    chunk = 64 * 1024
    data = bytes(3 * chunk) + os.urandom(chunk) + bytes(chunk)  # zero, zero, zero, random, zero
    files = {MODEL_FILE: data, **SMALL_FILES}
    manifest = build_manifest(files, run_id="r", round=1, global_step=1, chunk_size=chunk)
    partial = tmp_path / "out.partial"
    assert prepare_partial(partial, manifest) == set()
    assert {p.name: p.stat().st_size for p in partial.iterdir()} == dict.fromkeys(files, 0), (
        "nothing is allocated before chunks arrive"
    )
    model = [c for c in manifest.chunks() if c.file == MODEL_FILE]
    write_chunk(partial, model[3], data[3 * chunk : 4 * chunk])  # past the end: the file grows to hold it
    assert (partial / MODEL_FILE).stat().st_size == 4 * chunk
    if not _holes_visible(tmp_path):
        pytest.skip("this filesystem does not report sparse holes (SEEK_HOLE): holes read as data")
    assert prepare_partial(partial, manifest) == {model[3].index}, "the holes before it are not on disk"
    for c in manifest.chunks():
        write_chunk(partial, c, files[c.file][c.offset : c.offset + c.size])
    assert {name: (partial / name).read_bytes() for name in files} == files
    assert prepare_partial(partial, manifest) == {c.index for c in manifest.chunks()}

    old = tmp_path / "old.partial"  # what prepare_partial did before: every file truncated up to size
    old.mkdir()
    for name, blob in files.items():
        (old / name).touch()
        os.truncate(old / name, len(blob))
    assert prepare_partial(old, manifest) == set()
    (old / MODEL_FILE).write_bytes(data + os.urandom(10))  # longer than this manifest's file: cut
    assert model[4].index in prepare_partial(old, manifest)
    assert (old / MODEL_FILE).stat().st_size == len(data)


def _holes_visible(folder: Path) -> bool:
    probe = folder / "hole-probe"
    with open(probe, "wb") as f:
        f.truncate(1 << 20)
        visible = os.lseek(f.fileno(), 0, os.SEEK_HOLE) == 0
    probe.unlink()
    return visible

"""What a checkpoint may be: a manifest's plausibility, checked before a download allocates anything.

A manifest comes from a peer, and a peer may lie. Its hash is attested by the run's members
(``swarm.dht.attestation``), but in an open run a stranger with many keys can outvote them, and a
light client trusts the peer it asks. So before a downloader creates a single file, the manifest
must describe what a checkpoint of this run can be (``check_plausible``):

- at most ``max_bytes`` in all: the user's absolute cap (``--max-checkpoint-gb``), whatever the run;
- the checkpoint's files (``swarm.checkpoint.files``): ``model.safetensors``, ``config.json`` and
  ``swarm.json``, and of the model's tokenizer and generation files (``swarm.models.folder``) only
  those named there, each within its cap;
- ``model.safetensors`` of the size ``param_count`` fp32 values take, plus a safetensors header of
  at most ``MAX_SAFETENSORS_HEADER_BYTES``, where the run's spec says its parameter count;
- ``config.json`` and ``swarm.json`` within small caps;
- no chunk listed twice, except the all-zero chunk (see ``check_plausible``).

The cap is a setting (``DownloadLimits``): the node's ``[checkpoints]`` section holds it, and
``swarm-node pull`` takes the same flag. Pure and stdlib only: nodes, the light client and the
coordinator's archive import it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from swarm.checkpoint.manifest import CHECKPOINT, Manifest, ManifestError
from swarm.models.folder import COMPANION_FILE_CAPS
from swarm.settings import check, setting

MODEL_FILE, CONFIG_FILE, SWARM_FILE = "model.safetensors", "config.json", "swarm.json"
"""A checkpoint's files (``swarm.checkpoint.files`` writes them)."""
CHECKPOINT_FILES = frozenset({MODEL_FILE, CONFIG_FILE, SWARM_FILE})

GIB = 1 << 30
DEFAULT_MAX_CHECKPOINT_GB = 64.0
"""The default absolute cap on a download, in GiB (``--max-checkpoint-gb``): a 16-billion-parameter
model's fp32 copy. A larger run's volunteers raise it."""
DEFAULT_MAX_CHECKPOINT_BYTES = int(DEFAULT_MAX_CHECKPOINT_GB * GIB)
FP32_BYTES = 4
SAFETENSORS_LENGTH_BYTES = 8
"""The little-endian u64 that precedes a safetensors file's JSON header."""
MAX_SAFETENSORS_HEADER_BYTES = 16 << 20
"""The JSON header of ``model.safetensors``: ~100-200 bytes per tensor (name, shape, offsets), so
16 MiB holds ~100,000 tensors, more than a mixture of hundreds of experts has."""
MAX_CONFIG_BYTES = 1 << 20
"""``config.json``: a transformers config is a few KiB (one with a large label map, hundreds)."""
MAX_SWARM_BYTES = 64 << 10
"""``swarm.json``: counters and the run spec, which the DHT bounds to a few KiB."""

_ZERO_PIECE_BYTES = 1 << 20


@dataclass(kw_only=True)
class DownloadLimits:
    """The user's cap on what one checkpoint download may be (a node's and ``swarm-node pull``'s)."""

    max_gb: float = setting(
        DEFAULT_MAX_CHECKPOINT_GB,
        group="checkpoints",
        flag="max-checkpoint-gb",
        above=0,
        at_most=1 << 20,
        metavar="GIB",
        help="Refuse to download a checkpoint larger than this, in GiB (a joining node also refuses one "
        "that cannot hold its model's parameters).",
    )

    def __post_init__(self) -> None:
        check(self, "checkpoints")

    @property
    def max_bytes(self) -> int:
        return int(self.max_gb * GIB)


def model_file_bytes(param_count: int) -> tuple[int, int]:
    """The smallest and largest size of ``model.safetensors`` holding ``param_count`` fp32 values."""
    values = FP32_BYTES * param_count + SAFETENSORS_LENGTH_BYTES
    return values + len(b"{}"), values + MAX_SAFETENSORS_HEADER_BYTES


@lru_cache(maxsize=16)
def zero_chunk_sha256(size: int) -> str:
    """sha256 (hex) of ``size`` zero bytes, hashed a piece at a time."""
    digest = hashlib.sha256()
    piece = bytes(_ZERO_PIECE_BYTES)
    whole, rest = divmod(size, _ZERO_PIECE_BYTES)
    for _ in range(whole):
        digest.update(piece)
    digest.update(piece[:rest])
    return digest.hexdigest()


def check_plausible(manifest: Manifest, *, param_count: int | None, max_bytes: int) -> None:
    """Raise ManifestError unless ``manifest`` describes what a checkpoint of a model of
    ``param_count`` trainable fp32 values (None: unknown here) can be, in at most ``max_bytes``.

    Call it on a parsed manifest before anything is written: it reads no file and allocates nothing
    beyond the manifest's own chunk list.

    Duplicate chunks: a manifest that lists one chunk (one sha256) twice is refused, because one
    chunk repeated is how a manifest claims gigabytes that cost its server nothing, and a resumed
    download would find such chunks everywhere. The one exception is the all-zero chunk: LoRA's B
    matrices start at zero, so an honest checkpoint of round 0 of a LoRA run repeats it (as may
    zero-initialised biases of a large model). Zero chunks are bounded like any other bytes: by the
    parameter count and the cap. Any other repeat means a run of one non-zero value a whole chunk
    long (a million equal floats at the default 4 MiB), which neither initialisation nor training
    produces.
    """
    if manifest.kind != CHECKPOINT:
        raise ManifestError(f"the manifest describes a {manifest.kind} artifact, not a checkpoint")
    total = manifest.total_bytes
    if total > max_bytes:
        raise ManifestError(
            f"checkpoint of {total / GIB:.2f} GiB is over the cap of {max_bytes / GIB:.2f} GiB"
            " (--max-checkpoint-gb)"
        )
    names = {f.name for f in manifest.files}
    if not names >= CHECKPOINT_FILES or not names - CHECKPOINT_FILES <= COMPANION_FILE_CAPS.keys():
        raise ManifestError(
            f"a checkpoint holds {', '.join(sorted(CHECKPOINT_FILES))} and the model's tokenizer and"
            f" generation files; this manifest lists {', '.join(sorted(names))}"
        )
    sizes = {f.name: f.size for f in manifest.files}
    caps = {CONFIG_FILE: MAX_CONFIG_BYTES, SWARM_FILE: MAX_SWARM_BYTES, **COMPANION_FILE_CAPS}
    for name, cap in caps.items():
        if sizes.get(name, 0) > cap:
            raise ManifestError(f"{name} of {sizes[name]} bytes is over its cap of {cap}")
    if param_count is not None:
        low, high = model_file_bytes(param_count)
        if not low <= sizes[MODEL_FILE] <= high:
            raise ManifestError(
                f"{MODEL_FILE} of {sizes[MODEL_FILE]} bytes cannot hold the run's {param_count} fp32"
                f" parameters (it takes {low} to {high} bytes)"
            )
    _check_no_repeats(manifest)


def _check_no_repeats(manifest: Manifest) -> None:
    seen: set[str] = set()
    for chunk in manifest.chunks():
        if chunk.sha256 in seen and chunk.sha256 != zero_chunk_sha256(chunk.size):
            raise ManifestError(
                f"chunk {chunk.index} ({chunk.file} at byte {chunk.offset}) repeats an earlier chunk;"
                " only all-zero chunks may repeat"
            )
        seen.add(chunk.sha256)

"""The run's artifacts as a node publishes and fetches them: a volunteer needs only ``--peer``.

The founder of a run started from a model folder publishes that folder as the run's model artifact
(``swarm.checkpoint.artifacts``): its configuration, its weights (safetensors) when it fine-tunes, its
tokenizer and generation configuration; nothing else in the folder, and never a path. The run spec
names the artifact by its manifest hash. A joiner fetches it by that hash from its ``--peer`` and the
run's live members (any that hold it: every member serves what it holds), each chunk verified,
keeps it in its artifact store (a restart fetches nothing again), and builds the model from its copy.
A preset model (tiny, small, base) is code, the same on every machine: no artifact.

The same holds for the run's data when the founder gives local files (``--data``): it tokenizes them
once with the model's tokenizer and packs them into shards (``node.data``), published as the run's
data artifact; joiners fetch the shards and train on the founder's token ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from node.errors import NodeError
from swarm.checkpoint.artifacts import ArtifactError, ArtifactStore, folder_manifest
from swarm.checkpoint.download import DownloadError
from swarm.checkpoint.manifest import ManifestError
from swarm.checkpoint.service import fetch_artifact
from swarm.dht.records import MemberRecord, members_key
from swarm.models.build import PRESETS, ModelSource
from swarm.models.folder import CONFIG_FILE, GENERATION_CONFIG_FILE, TOKENIZER_FILE_CAPS, WEIGHTS_INDEX_FILE
from swarm.p2p import PEER_ERRORS, SwarmHost
from swarm.peer_names import peer_from_name

logger = logging.getLogger("swarm.node")

MODEL_FILES = (CONFIG_FILE, GENERATION_CONFIG_FILE, WEIGHTS_INDEX_FILE, *TOKENIZER_FILE_CAPS)
"""The files of a model folder that go into its artifact, besides its ``*.safetensors`` weights."""
FETCH_ATTEMPTS = 30
FETCH_RETRY_S = 2.0
"""A joiner may ask before the founder serves (it publishes the spec, then starts serving): it asks
again every 2 s, for a minute, before giving up with one line."""


def model_artifact_files(source: ModelSource) -> list[Path]:
    """The files of ``source``'s folder that make its artifact; empty for a preset."""
    if source.name in PRESETS:
        return []
    folder = Path(source.name)
    files = [folder / name for name in MODEL_FILES if (folder / name).is_file()]
    return files + sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def publish_model(source: ModelSource, *, run_id: str, store: ArtifactStore) -> str:
    """Put ``source``'s folder into ``store`` as the run's model artifact; its manifest hash ("" for a
    preset). The chosen files are linked into a staging folder of the store (copied across file
    systems), so that the artifact holds them and nothing else."""
    files = model_artifact_files(source)
    if not files:
        return ""
    staging = store.staging_folder("model")
    for path in files:
        try:
            os.link(path, staging / path.name)
        except OSError:
            shutil.copyfile(path, staging / path.name)
    return publish_folder(staging, kind="model", run_id=run_id, store=store)


def publish_folder(folder: Path, *, kind: str, run_id: str, store: ArtifactStore) -> str:
    """Adopt ``folder`` (built in a staging folder of ``store``, flat, made for the run) as the run's
    ``kind`` artifact, by renaming it; its manifest hash."""
    try:
        manifest = folder_manifest(folder, run_id=run_id, kind=kind)
    except ArtifactError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise NodeError(f"cannot publish the run's {kind}: {e}") from None
    store.adopt(manifest, folder)
    logger.info(
        "%s artifact %s… (%d files, %.1f MB) served to joiners",
        kind, manifest.hash[:12], len(manifest.files), manifest.total_bytes / 1e6,
    )  # fmt: skip
    return manifest.hash


async def providers_of(host: SwarmHost, run_id: str, peers: Sequence[str]) -> list[bytes]:
    """Who may hold the run's artifacts: the ``--peer`` nodes first, then the live members that can be
    dialled directly. A member reachable only through a relay is left out: a relayed connection is
    reset after a few hundred kB (docs/deployment.md), so it fetches artifacts but serves none."""
    found = [peer_from_name(maddr.rsplit("/p2p/", 1)[1]) for maddr in peers]
    try:
        members = await host.dht_get_subkeys(members_key(run_id), MemberRecord.from_wire)
    except PEER_ERRORS as e:
        logger.debug("no member list for the artifacts' providers: %s", e)
        members = {}
    for name, record in members.items():
        try:
            peer = peer_from_name(name)
        except ValueError:
            continue
        if record.addrs and all("/p2p-circuit" in a for a in record.addrs):
            continue
        if peer not in found and peer != host.peer_id:
            found.append(peer)
    return found


async def fetch_run_artifact(
    host: SwarmHost,
    *,
    kind: str,
    digest: str,
    run_id: str,
    peers: Sequence[str],
    store: ArtifactStore,
    max_bytes: int,
    credential: bytes = b"",
    on_received: Callable[[int], None] | None = None,
) -> Path:
    """The folder of the run's ``kind`` artifact ``digest``: held, or fetched from the run's members
    (with this node's ``credential`` in a closed run: its members serve its artifacts to no one else)."""
    held = store.manifest(digest) is not None
    if held:
        logger.info("the run's %s artifact %s… is held here: nothing to fetch", kind, digest[:12])
    errors: list[str] = []
    for attempt in range(FETCH_ATTEMPTS):
        providers = await providers_of(host, run_id, peers)
        try:
            folder = await fetch_artifact(
                host, providers, digest, store, kind=kind, max_bytes=max_bytes, credential=credential,
                on_received=on_received,
            )  # fmt: skip
            if not held:
                logger.info(
                    "fetched the run's %s artifact %s… from %d provider(s)", kind, digest[:12], len(providers)
                )
            return folder
        except ManifestError as e:
            raise NodeError(f"the run's {kind} artifact is refused: {e}") from None
        except DownloadError as e:
            errors.append(str(e))
        if attempt < FETCH_ATTEMPTS - 1:
            await asyncio.sleep(FETCH_RETRY_S)
    raise NodeError(
        f"no member served the run's {kind} artifact {digest[:12]}… within"
        f" {FETCH_ATTEMPTS * FETCH_RETRY_S:.0f} s ({errors[-1] if errors else 'no provider'})"
    )

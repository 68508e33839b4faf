"""Where a node's training data comes from: what the founder publishes, what a joiner fetches.

- The founder of a run on local files (``--data``) tokenizes them once, with the model's tokenizer,
  into shards (``node.data.pack_data``), published as the run's data artifact.
- The founder of a run on the embedded ``stdlib`` corpus reads it, and publishes its bytes as the
  run's data artifact too: the standard library differs between Python versions, and the run trains
  on the founder's copy.
- A joiner of a run with a data artifact trains on it: it fetches the shards; for the ``stdlib``
  corpus it first reads its own copy and fetches the founder's only when its bytes differ (its
  content hash is not the one the run spec names), so members on the founder's Python fetch nothing.
  A member whose own copy is the founder's puts it in its artifact store as the run's artifact (the
  same files give the same manifest hash), so it serves it to members on other Pythons once the
  founder is gone.
- A run without a data artifact (an older founder) is read locally, as before.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from node.artifacts import publish_folder
from node.data import RunData, ShardData, WindowData, open_shards, pack_data
from swarm.checkpoint.artifacts import ArtifactStore, folder_manifest
from swarm.data.corpus import DEFAULT_DATA, Corpus, load_corpus, read_corpus, write_corpus
from swarm.data.errors import DataError
from swarm.data.tokenizer import TextTokenizer
from swarm.dht.records import RunSpec
from swarm.run_settings import RunSettings

logger = logging.getLogger("swarm.node")

Fetch = Callable[[str, str], Awaitable[Path]]
"""``fetch(kind, digest)``: the folder of the run's artifact, held or fetched from its members."""


def is_embedded(values: RunSettings) -> bool:
    return list(values.data) == [DEFAULT_DATA]


async def founder_data(
    values: RunSettings,
    tokenizer: TextTokenizer,
    store: ArtifactStore,
    *,
    run_id: str,
    max_bytes: int,
) -> tuple[RunData, str]:
    """The founder's data and the hash of the data artifact it publishes for joiners."""
    if is_embedded(values):
        corpus = await asyncio.to_thread(load_corpus, [DEFAULT_DATA], max_bytes=max_bytes)
        staging = store.staging_folder("data")
        await asyncio.to_thread(write_corpus, corpus, staging)
        digest = await asyncio.to_thread(publish_folder, staging, kind="data", run_id=run_id, store=store)
        return WindowData(corpus), digest
    packed = store.staging_folder("data") / "shards"  # build_shards makes it
    await asyncio.to_thread(
        pack_data, values.data, tokenizer, packed, seq_len=values.seq_len, max_bytes=max_bytes,
        field=values.data_field,
    )  # fmt: skip
    digest = await asyncio.to_thread(publish_folder, packed, kind="data", run_id=run_id, store=store)
    shutil.rmtree(packed.parent, ignore_errors=True)
    data = await asyncio.to_thread(open_shards, store.folder(digest))
    return _checked(data, tokenizer, seq_len=values.seq_len), digest


async def joiner_data(
    spec: RunSpec,
    fetch: Fetch,
    store: ArtifactStore,
    tokenizer: TextTokenizer,
    *,
    run_id: str,
    max_bytes: int,
) -> RunData:
    """The data of the run ``spec`` describes, as a joiner trains on it."""
    if not spec.data_artifact or is_embedded(spec):
        corpus = await asyncio.to_thread(load_corpus, list(spec.data), max_bytes=max_bytes)
        if not spec.data_artifact:
            return WindowData(corpus)
        if corpus.content_hash == spec.data_hash:
            await asyncio.to_thread(_hold_corpus, corpus, store, run_id=run_id, digest=spec.data_artifact)
            return WindowData(corpus)
        logger.info(
            "this Python's %s corpus differs from the run's (hash %s…, the run's %s…): fetching the founder's",
            DEFAULT_DATA, corpus.content_hash[:12], spec.data_hash[:12],
        )  # fmt: skip
        folder = await fetch("data", spec.data_artifact)
        return WindowData(await asyncio.to_thread(read_corpus, folder, DEFAULT_DATA))
    folder = await fetch("data", spec.data_artifact)
    return _checked(await asyncio.to_thread(open_shards, folder), tokenizer, seq_len=spec.seq_len)


def _checked(data: ShardData, tokenizer: TextTokenizer, *, seq_len: int) -> ShardData:
    """The shards must be the model's tokenizer's ids, in sequences of the run's length: DataError
    otherwise (a founder's artifacts that disagree with each other)."""
    index = data.shards.index
    if index.tokenizer != tokenizer.identity or index.vocab_size != tokenizer.vocab_size:
        raise DataError(
            f"the run's data was tokenized by tokenizer {index.tokenizer[:12]}… ({index.vocab_size} tokens),"
            f" not the model's {tokenizer.identity[:12]}… ({tokenizer.vocab_size} tokens)"
        )
    if index.eos_id != tokenizer.eos_id:
        raise DataError(
            f"the run's data ends documents with token {index.eos_id}, the model's tokenizer with {tokenizer.eos_id}"
        )
    if index.seq_len != seq_len:
        raise DataError(
            f"the run's data holds sequences of {index.seq_len} tokens, the run trains on {seq_len}"
        )
    return data


def _hold_corpus(corpus: Corpus, store: ArtifactStore, *, run_id: str, digest: str) -> None:
    """Keep our copy of the run's byte corpus as its data artifact ``digest``, to serve it: it is the
    founder's (same content hash), so its files make the same manifest."""
    if store.manifest(digest) is not None:
        return
    staging = store.staging_folder("data")
    write_corpus(corpus, staging)
    manifest = folder_manifest(staging, run_id=run_id, kind="data")
    if manifest.hash == digest:
        store.adopt(manifest, staging)
    else:  # another chunk size, say: it is served by those who fetched it
        logger.debug("our copy of the corpus makes manifest %s…, not the run's", manifest.hash[:12])
        shutil.rmtree(staging, ignore_errors=True)

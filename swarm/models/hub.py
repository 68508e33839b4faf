"""``--model org/name``: a model folder from the Hugging Face Hub, or one clear line why not.

    fetch_from_hub(repo_id) -> folder    the snapshot in the local Hugging Face cache

Only what Swarm reads is downloaded (config, safetensors weights, tokenizer files, generation
config), through ``huggingface_hub``, which transformers itself downloads with. A repository whose
weights are only pickles is refused before anything is fetched. Where the Hub cannot be reached
(no network, ``HF_HUB_OFFLINE=1``), a snapshot already in the cache is used; without one, the error
says so within ``HUB_TIMEOUT_S`` and asks for a local folder. Nothing from the repository is run.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from swarm.models.folder import (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    PICKLE_SUFFIXES,
    TOKENIZER_FILE_CAPS,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    ModelError,
)

logger = logging.getLogger(__name__)

HUB_TIMEOUT_S = 10.0
"""How long the Hub may take to answer one request before it counts as unreachable."""
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
"""A Hub model id, ``org/name``: what a --model that is neither a preset nor a folder may be."""
WANTED = [CONFIG_FILE, GENERATION_CONFIG_FILE, WEIGHTS_INDEX_FILE, "model*.safetensors", *TOKENIZER_FILE_CAPS]
"""The files of a repository Swarm downloads (``allow_patterns``)."""


def is_hub_id(name: str) -> bool:
    return HUB_ID.fullmatch(name) is not None and ".." not in name


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def fetch_from_hub(
    repo_id: str,
    *,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = HUB_TIMEOUT_S,
) -> Path:
    """The local folder of Hub model ``repo_id``, downloaded into the Hugging Face cache (or found
    there); ModelError, one line, where that cannot be."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    def cached(reason: str) -> Path:
        try:
            folder = snapshot_download(
                repo_id, allow_patterns=WANTED, endpoint=endpoint, cache_dir=cache_dir, local_files_only=True
            )
        # Whatever the cache lookup raises, the model is not there: say why the Hub was not asked.
        except Exception:
            raise ModelError(
                f"model {repo_id!r} is not a local folder, and {reason}; it is not in the local"
                " Hugging Face cache either: pass a local model folder (--model DIR)"
            ) from None
        logger.info("%s: using the copy of %s in the Hugging Face cache, %s", reason, repo_id, folder)
        return Path(folder)

    if constants.HF_HUB_OFFLINE:
        return cached("HF_HUB_OFFLINE is set, so the Hugging Face Hub is not asked")
    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(repo_id, timeout=timeout_s)
    except GatedRepoError:
        raise ModelError(
            f"model {repo_id!r} on the Hugging Face Hub is gated: accept its terms on its page and log in"
            " (hf auth login), or pass a local model folder"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"model {repo_id!r} is neither a local folder nor a model on the Hugging Face Hub (or it is"
            " private: log in with hf auth login)"
        ) from None
    except HfHubHTTPError as e:
        raise ModelError(f"the Hugging Face Hub refused model {repo_id!r}: {_first_line(e)}") from None
    # The boundary with the network: connection errors are the HTTP client's own classes (httpx,
    # httpx2 or requests, by huggingface_hub's version); each one means the Hub is out of reach.
    except Exception as e:
        return cached(f"the Hugging Face Hub is unreachable from here ({_first_line(e)})")
    names = {sibling.rfilename for sibling in info.siblings or []}
    if WEIGHTS_FILE not in names and WEIGHTS_INDEX_FILE not in names:
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelError(
                f"model {repo_id!r} on the Hub has its weights only as {pickles[0]}, a pickle that can run"
                " code when loaded: Swarm loads safetensors only (pick a repository with model.safetensors)"
            )
    try:
        folder = snapshot_download(
            repo_id,
            revision=info.sha,
            allow_patterns=WANTED,
            endpoint=endpoint,
            cache_dir=cache_dir,
            etag_timeout=timeout_s,
        )
    # The boundary with the network again (see above), now mid-download.
    except Exception as e:
        raise ModelError(
            f"downloading model {repo_id!r} from the Hugging Face Hub failed: {_first_line(e)}"
        ) from None
    return Path(folder)

"""Training data: read once by a run's founder, packed into token shards, trained shard by shard.

From the source files to a batch (each a pure module; none does network I/O):
- ``documents``: local sources (text files, JSONL, Parquet, ``datasets`` folders, the ``stdlib``
  default) as a stream of document texts; ``records`` and ``tables`` read record fields and columns.
- ``tokenizer``: ``TextTokenizer``, what packing needs from a tokenizer, and ``ByteTokenizer``.
- ``pack``: documents -> token ids -> fixed-length sequences in shard files, with a held-out split.
- ``shards``: the shard folder's format (``index.json``, ``.npy`` shards) and ``ShardSet``, its reader.
- ``assignment``: which shard a member trains in an epoch (rendezvous hashing), and its position.
- ``batches``: train and held-out batches as tensors.

The in-memory byte corpus (``corpus``, ``sampling``) is the API nodes used before shards.
"""

from swarm.data.assignment import DataPosition, next_batch, owned_shards, shard_owner
from swarm.data.batches import held_out_batches, train_tensor
from swarm.data.corpus import Corpus, load_corpus
from swarm.data.documents import DEFAULT_DATA, check_sources, read_documents
from swarm.data.errors import DataError
from swarm.data.pack import PackConfig, build_shards
from swarm.data.sampling import eval_batches, train_batch
from swarm.data.shards import SequenceRef, ShardIndex, ShardSet
from swarm.data.tokenizer import ByteTokenizer, TextTokenizer

__all__ = [
    "DEFAULT_DATA",
    "ByteTokenizer",
    "Corpus",
    "DataError",
    "DataPosition",
    "PackConfig",
    "SequenceRef",
    "ShardIndex",
    "ShardSet",
    "TextTokenizer",
    "build_shards",
    "check_sources",
    "eval_batches",
    "held_out_batches",
    "load_corpus",
    "next_batch",
    "owned_shards",
    "read_documents",
    "shard_owner",
    "train_batch",
    "train_tensor",
]

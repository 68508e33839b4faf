"""Training data: byte-level corpora (the embedded default and local files) and deterministic batches.

- ``corpus``: loads text into a ``Corpus`` of uint8 tokens with a held-out eval split and a content hash.
- ``sampling``: which windows a node trains on, seeded by run, peer and round, with no coordination.
"""

from swarm.data.corpus import Corpus, load_corpus
from swarm.data.sampling import eval_batches, train_batch

__all__ = ["Corpus", "eval_batches", "load_corpus", "train_batch"]

"""Data: documents from folders -> a clean, split corpus -> token shards -> training batches.

Each step reads the previous step's files in the run directory (`corpus/`, `shards/`), never
its internals. The batch loader lives in `myllm.data.loader`.
"""

from myllm.data.corpus import iter_corpus, write_corpus
from myllm.data.prepare import prepare_corpus
from myllm.data.shards import ShardReader, load_tokens, read_index, write_shards
from myllm.data.sources import SPLITS, SkipReport, SourceDoc, iter_documents

__all__ = [
    "SPLITS",
    "ShardReader",
    "SkipReport",
    "SourceDoc",
    "iter_corpus",
    "iter_documents",
    "load_tokens",
    "prepare_corpus",
    "read_index",
    "write_corpus",
    "write_shards",
]

"""aistack: fast in-process text embeddings and vector search.

>>> import aistack
>>> emb = aistack.Embedder("sentence-transformers/all-MiniLM-L6-v2")
>>> vectors = emb.encode(["a", "b"])          # numpy float32, shape (2, 384)
>>> store = aistack.VectorStore("embedded", path="./data")
>>> col = store.get_or_create_collection("docs", embedder=emb)
"""

import os as _os

# Candle runs elementwise kernels on a process-global pool of spinning helper threads; after a
# fork those threads do not exist and the child would spin forever. One candle thread keeps the
# elementwise ops inline (matrix products still use every core), so a forked child can compute.
_os.environ.setdefault("CANDLE_NUM_THREADS", "1")

from ._errors import (  # noqa: E402
    AistackError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from ._native import Collection, Embedder, Hit, Record, VectorStore, __version__  # noqa: E402

__all__ = [
    "AistackError",
    "Collection",
    "ConfigError",
    "Conflict",
    "Embedder",
    "Hit",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "Record",
    "Timeout",
    "Unavailable",
    "VectorStore",
    "__version__",
]

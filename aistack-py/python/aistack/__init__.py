"""aistack: fast in-process text embeddings and vector search.

>>> import aistack
>>> emb = aistack.Embedder("sentence-transformers/all-MiniLM-L6-v2")
>>> vectors = emb.encode(["a", "b"])          # numpy float32, shape (2, 384)
>>> store = aistack.VectorStore("embedded", path="./data")
>>> col = store.get_or_create_collection("docs", embedder=emb)
"""

from ._errors import (
    AistackError,
    ConfigError,
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from ._native import Collection, Embedder, Hit, Record, VectorStore, __version__

__all__ = [
    "AistackError",
    "Collection",
    "ConfigError",
    "Conflict",
    "Embedder",
    "Hit",
    "InsufficientStorage",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "Record",
    "Timeout",
    "Unavailable",
    "VectorStore",
    "__version__",
]

"""Type stubs of the native module (aistack-core through PyO3)."""

from collections.abc import Awaitable, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, TypeAlias, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

__all__ = ["Embedder", "VectorStore", "Collection", "Hit", "Record", "__version__"]

__version__: str

_Where: TypeAlias = Mapping[str, Any]
"""A metadata filter: ``{"field": value}``, ``{"field": {"$gte": 3}}``, ``{"$and": [...]}``."""


@disjoint_base
class Embedder:
    """A sentence-embedding model served in-process: batched, cached and validated."""

    def __new__(
        cls,
        model: str,
        *,
        revision: str | None = None,
        config: str | PathLike[str] | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        max_batch_tokens: int | None = None,
        threads: int | None = None,
    ) -> Embedder: ...
    @property
    def ready(self) -> bool: ...
    @property
    def state(self) -> str: ...
    def wait_ready(self, timeout: float | None = None) -> None: ...
    @property
    def model_id(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def max_seq_length(self) -> int: ...
    @property
    def architecture(self) -> str: ...
    @property
    def pooling(self) -> list[str]: ...
    @property
    def normalizes(self) -> bool: ...
    @property
    def prompts(self) -> dict[str, str]: ...
    @overload
    def encode(
        self,
        sentences: str,
        *,
        batch_size: int = 32,
        normalize: bool = True,
        prompt_name: str | None = None,
        truncate_dim: int | None = None,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        sentences: Sequence[str],
        *,
        batch_size: int = 32,
        normalize: bool = True,
        prompt_name: str | None = None,
        truncate_dim: int | None = None,
    ) -> npt.NDArray[np.float32]: ...
    def encode_query(
        self, sentences: str | Sequence[str], *, batch_size: int = 32, normalize: bool = True
    ) -> npt.NDArray[np.float32]: ...
    def encode_document(
        self, sentences: str | Sequence[str], *, batch_size: int = 32, normalize: bool = True
    ) -> npt.NDArray[np.float32]: ...
    def aencode(
        self,
        sentences: str | Sequence[str],
        *,
        batch_size: int = 32,
        normalize: bool = True,
        prompt_name: str | None = None,
        truncate_dim: int | None = None,
    ) -> Awaitable[npt.NDArray[np.float32]]: ...

@final
class VectorStore:
    """A vector store: ``"embedded"`` (a local directory), ``"pgvector"`` or ``"qdrant"``."""

    def __new__(
        cls,
        backend: str = "embedded",
        *,
        path: str | PathLike[str] | None = None,
        dsn: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> VectorStore: ...
    @property
    def backend(self) -> str: ...
    def create_collection(
        self,
        name: str,
        *,
        embedder: Embedder | None = None,
        dim: int | None = None,
        metric: str = "cosine",
        analyzer: Literal["english", "simple"] = "english",
    ) -> Collection: ...
    def get_collection(self, name: str, *, embedder: Embedder | None = None) -> Collection: ...
    def get_or_create_collection(
        self,
        name: str,
        *,
        embedder: Embedder | None = None,
        dim: int | None = None,
        metric: str = "cosine",
    ) -> Collection: ...
    def list_collections(self) -> list[str]: ...
    def delete_collection(self, name: str) -> bool: ...

@final
class Collection:
    """Records (id, text, vector, metadata) in a store, shaped after Chroma's collections."""

    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def embedding_model(self) -> str | None:
        """The model whose vectors fill the collection, where recorded; texts from another
        model, or with other prompts, raise aistack.Conflict."""
        ...
    def upsert(
        self,
        ids: Sequence[str],
        *,
        documents: Sequence[str] | None = None,
        embeddings: npt.ArrayLike | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None: ...
    def query(
        self,
        text: str | None = None,
        *,
        embedding: npt.ArrayLike | None = None,
        k: int = 10,
        where: _Where | None = None,
        min_score: float | None = None,
        mode: str = "vector",
        fusion: Mapping[str, Any] | None = None,
    ) -> list[Hit]: ...
    def get(self, ids: Sequence[str]) -> list[Record]: ...
    def delete(self, ids: Sequence[str] | None = None, *, where: _Where | None = None) -> int: ...
    def count(self, *, where: _Where | None = None) -> int: ...
    def __len__(self) -> int: ...

@final
class Hit:
    """One query result."""

    @property
    def id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def document(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def vector_rank(self) -> int | None:
        """Rank (from 1) in the vector arm, where it found this hit."""
    @property
    def lexical_rank(self) -> int | None:
        """Rank (from 1) in the lexical arm, where it found this hit."""

@final
class Record:
    """One stored record."""

    @property
    def id(self) -> str: ...
    @property
    def document(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def embedding(self) -> npt.NDArray[np.float32]: ...

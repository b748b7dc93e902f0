"""LangChain adapters: :class:`AistackEmbeddings` (an ``Embeddings``) and
:class:`AistackVectorStore` (a ``VectorStore`` over an aistack collection).
Needs ``pip install aistack[langchain]``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Callable

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore as LangChainVectorStore

from .._native import Collection, Embedder, Hit, VectorStore


class AistackEmbeddings(Embeddings):
    """LangChain ``Embeddings`` computed in-process by an :class:`aistack.Embedder`."""

    def __init__(self, embedder: Embedder, *, batch_size: int = 32) -> None:
        self.embedder = embedder
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embeds texts as passages (the model's passage prefix, if any, is applied)."""
        if not texts:
            return []
        out = self.embedder.encode_document(list(texts), batch_size=self.batch_size)
        return [row.tolist() for row in out]

    def embed_query(self, text: str) -> list[float]:
        """Embeds a search query (the model's query prefix, if any, is applied)."""
        out: list[float] = self.embedder.encode_query(text).tolist()
        return out


def _document(hit: Hit) -> Document:
    return Document(id=hit.id, page_content=hit.document or "", metadata=dict(hit.metadata))


class AistackVectorStore(LangChainVectorStore):
    """A LangChain ``VectorStore`` over an aistack collection (embedded, pgvector or Qdrant).
    ``filter`` takes aistack's metadata filter (Chroma's ``where`` operators). ``mode`` is the
    default search mode (``vector``, ``lexical`` or ``hybrid``); a search's ``mode=`` keyword
    (also through ``as_retriever(search_kwargs={"mode": "hybrid"})``) overrides it."""

    def __init__(self, collection: Collection, embedder: Embedder, *, mode: str = "vector") -> None:
        self.collection = collection
        self.mode = mode
        self._embeddings = AistackEmbeddings(embedder)

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embeds and upserts texts; ids default to new UUIDs."""
        texts = list(texts)
        if ids is None:
            ids = [str(uuid.uuid4()) for _ in texts]
        self.collection.upsert(list(ids), documents=texts, metadatas=metadatas)
        return list(ids)

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores (higher is better): the similarity in
        ``vector`` mode, BM25 in ``lexical`` mode, the fused score in ``hybrid`` mode."""
        mode = kwargs.get("mode", self.mode)
        hits = self.collection.query(query, k=k, where=filter, mode=mode, fusion=kwargs.get("fusion"))
        return [(_document(h), h.score) for h in hits]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` best documents for ``query`` (``mode=`` as in the constructor)."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` nearest documents to a vector."""
        hits = self.collection.query(embedding=list(embedding), k=k, where=filter)
        return [_document(h) for h in hits]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Deletes documents by id."""
        if ids is None:
            return None
        self.collection.delete(list(ids))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids (missing ones left out)."""
        return [
            Document(id=r.id, page_content=r.document or "", metadata=dict(r.metadata))
            for r in self.collection.get(list(ids))
        ]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = self.collection.metric
        if metric == "cosine":
            return lambda s: (s + 1.0) / 2.0
        if metric == "l2":
            return lambda s: 1.0 / (1.0 - s)  # s is the negated distance
        return lambda s: s

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        store: VectorStore | None = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> AistackVectorStore:
        """A store holding ``texts``; ``embedding`` must be :class:`AistackEmbeddings`.
        ``store`` defaults to the embedded store in ``./aistack-data``."""
        if not isinstance(embedding, AistackEmbeddings):
            raise TypeError("AistackVectorStore needs AistackEmbeddings")
        store = store or VectorStore("embedded", path="aistack-data")
        collection = store.get_or_create_collection(collection_name, embedder=embedding.embedder)
        vs = cls(collection, embedding.embedder)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

"""LlamaIndex adapters: :class:`AistackEmbedding`, a ``BaseEmbedding`` computed in-process, and
:class:`AistackRetriever`, a ``BaseRetriever`` over an aistack collection (vector, lexical or
hybrid search). Needs ``pip install aistack[llamaindex]``."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr
from .._native import Collection, Embedder


class AistackRetriever(BaseRetriever):
    """Retrieves the ``k`` best records of an aistack collection for a query, as text nodes:
    ``mode`` is ``vector`` (nearest by meaning), ``lexical`` (BM25) or ``hybrid`` (both, fused by
    reciprocal rank); ``where`` is a metadata filter and ``fusion`` the hybrid settings."""

    def __init__(
        self,
        collection: Collection,
        *,
        k: int = 4,
        mode: str = "vector",
        where: dict[str, Any] | None = None,
        fusion: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.collection = collection
        self.k = k
        self.mode = mode
        self.where = where
        self.fusion = fusion

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.collection.query(
            query_bundle.query_str, k=self.k, where=self.where, mode=self.mode, fusion=self.fusion
        )
        return [
            NodeWithScore(
                node=TextNode(id_=h.id, text=h.document or "", metadata=dict(h.metadata)),
                score=h.score,
            )
            for h in hits
        ]


class AistackEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from an :class:`aistack.Embedder` (queries and texts get the
    model's query and passage prefixes)."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        kwargs.setdefault("model_name", embedder.model_id)
        super().__init__(**kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "AistackEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        out: list[float] = self._embedder.encode_query(query).tolist()
        return out

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        out: list[float] = self._embedder.encode_document(text).tolist()
        return out

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return [row.tolist() for row in self._embedder.encode_document(list(texts))]

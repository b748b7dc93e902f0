"""LlamaIndex adapter: :class:`AistackEmbedding`, a ``BaseEmbedding`` computed in-process.
Needs ``pip install aistack[llamaindex]``."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr
from .._native import Embedder


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

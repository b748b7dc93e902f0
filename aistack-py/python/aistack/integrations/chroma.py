"""Chroma adapter: :class:`AistackEmbeddingFunction`, an ``EmbeddingFunction`` computed
in-process. Needs ``pip install aistack[chroma]``."""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

from .._native import Embedder


class AistackEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embeddings from an :class:`aistack.Embedder` (documents get the model's passage
    prefix, queries its query prefix)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.encode_document(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.embedder.encode_query(list(input)))

    @staticmethod
    def name() -> str:
        return "aistack"

    def default_space(self) -> Any:
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.embedder.model_id}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> AistackEmbeddingFunction:
        return AistackEmbeddingFunction(Embedder(config["model"]))

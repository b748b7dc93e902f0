"""`aistack.Embedder` with the real model: fidelity, shapes, async, threads, errors, fork."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import aistack
import numpy as np
import pytest
from conftest import cosine, model_dir


def test_encode_matches_sentence_transformers(embedder, reference):
    texts = [r["text"] for r in reference]
    got = embedder.encode(texts, batch_size=32)
    assert got.shape == (len(texts), 384)
    assert got.dtype == np.float32
    assert got.flags["C_CONTIGUOUS"]
    worst = min(cosine(v, r["embedding"]) for v, r in zip(got, reference))
    assert worst >= 0.9999, worst
    one = embedder.encode(texts[0])
    assert one.shape == (384,)
    assert cosine(one, reference[0]["embedding"]) >= 0.9999


def test_properties_and_shapes(embedder):
    assert embedder.ready and embedder.state == "ready"
    assert embedder.dim == 384
    assert embedder.max_seq_length == 256
    assert embedder.architecture == "bert"
    assert embedder.pooling == ["mean"]
    assert embedder.normalizes is True
    assert embedder.prompts == {}
    assert embedder.encode([]).shape == (0, 384)
    v = embedder.encode(["a", "b"], normalize=True)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # all-MiniLM-L6-v2 normalizes in its pipeline: normalize=False returns the same vectors.
    assert np.allclose(embedder.encode(["a"], normalize=False), v[:1], atol=1e-6)
    # No query prefix for this model: query and plain encodings agree.
    assert np.allclose(embedder.encode_query("a"), v[0], atol=1e-6)


def test_prefixes_change_the_input():
    e = aistack.Embedder(model_dir(), query_prefix="query: ")
    q = e.encode_query("cats")
    assert cosine(q, e.encode("query: cats")) >= 0.99999
    assert cosine(q, e.encode("cats")) < 0.9999


def test_aencode_matches_encode(embedder, reference):
    texts = [r["text"] for r in reference[:70]]

    async def main():
        return await asyncio.gather(
            embedder.aencode(texts[:30]), embedder.aencode(texts[30:]), embedder.aencode(texts[0])
        )

    a, b, one = asyncio.run(main())
    want = embedder.encode(texts)
    assert np.allclose(np.vstack([a, b]), want, atol=1e-6)
    assert one.shape == (384,)

    async def bad():
        await embedder.aencode([""])

    with pytest.raises(aistack.InvalidInput):
        asyncio.run(bad())


def test_threads_calling_at_once(embedder, reference):
    texts = [r["text"] for r in reference[:96]]
    want = embedder.encode(texts)
    slices = [texts[i : i + 12] for i in range(0, 96, 12)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda s: embedder.encode(s, batch_size=4), slices))
    assert np.allclose(np.vstack(got), want, atol=1e-5)


def test_bad_input_raises_typed_errors(embedder):
    with pytest.raises(aistack.InvalidInput) as e:
        embedder.encode(["fine", ""])
    assert isinstance(e.value, ValueError) and isinstance(e.value, aistack.AistackError)
    assert e.value.code == "invalid_input"
    with pytest.raises(aistack.InvalidInput, match="10000"):
        embedder.encode("x" * 10_001)
    with pytest.raises(TypeError):
        embedder.encode([1, 2])  # type: ignore[list-item]
    with pytest.raises(aistack.InvalidInput):
        embedder.wait_ready(timeout=-1)


def test_a_model_that_cannot_load_is_unavailable(tmp_path):
    e = aistack.Embedder(str(tmp_path / "no-such-model"))
    with pytest.raises(aistack.Unavailable) as err:
        e.wait_ready(timeout=60)
    assert "no-such-model" in str(err.value)
    assert e.state.startswith("failed")
    with pytest.raises(aistack.Unavailable):
        e.encode("x")


def test_bad_configuration_is_a_config_error(monkeypatch):
    with pytest.raises(aistack.ConfigError, match="embed.threads"):
        aistack.Embedder(model_dir(), threads=100_000)
    monkeypatch.setenv("AISTACK__EMBED__MAX_BATCH_TOKENS", "0")
    with pytest.raises(aistack.ConfigError, match="max_batch_tokens"):
        aistack.Embedder(model_dir())


_FORKED: aistack.Embedder | None = None


def _encode_in_child(texts: list[str]) -> list[list[float]]:
    assert _FORKED is not None
    return _FORKED.encode(texts).tolist()


def test_safe_after_fork(embedder, reference):
    """A forked worker uses an Embedder made (and used) in the parent: no deadlock, same vectors."""
    global _FORKED
    _FORKED = embedder
    texts = [r["text"] for r in reference[:8]]
    want = embedder.encode(texts)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(_encode_in_child, (texts,)) for _ in range(2)]
        got = [np.array(r.get(timeout=120), dtype=np.float32) for r in results]
    for g in got:
        assert np.allclose(g, want, atol=1e-5)
    # The parent still works afterwards.
    assert np.allclose(embedder.encode(texts), want, atol=1e-6)
    assert os.getpid() == os.getpid()

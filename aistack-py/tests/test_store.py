"""`aistack.VectorStore` and collections on every backend: round trips, filters, errors."""

from __future__ import annotations

import math
import multiprocessing

import aistack
import numpy as np
import pytest
from conftest import cosine

DOCS = {
    "a": ("Cats purr when they are content.", {"lang": "en", "year": 2024, "tags": ["pets"]}),
    "b": ("Dogs bark at strangers.", {"lang": "en", "year": 2021, "tags": ["pets", "noise"]}),
    "c": ("Le chat dort sur le canapé.", {"lang": "fr", "year": 2023}),
    "d": ("Rust makes systems programming safer.", {"lang": "en", "year": 2022, "tags": ["code"]}),
}


def fill(col):
    ids = list(DOCS)
    col.upsert(ids, documents=[DOCS[i][0] for i in ids], metadatas=[DOCS[i][1] for i in ids])


def test_round_trip_and_filters(store, embedder, collection_name):
    col = store.get_or_create_collection(collection_name, embedder=embedder)
    try:
        assert (col.name, col.dim, col.metric) == (collection_name, 384, "cosine")
        assert col.embedding_model  # the model is recorded with the collection
        assert collection_name in store.list_collections()
        fill(col)
        assert col.count() == 4 and len(col) == 4
        hits = col.query("a purring cat", k=2)
        assert hits[0].id == "a" and hits[0].document == DOCS["a"][0]
        assert hits[0].metadata == DOCS["a"][1]
        assert hits[0].score > hits[1].score
        where = {"$and": [{"lang": "en"}, {"year": {"$gte": 2022}}]}
        assert {h.id for h in col.query("animals", k=10, where=where)} == {"a", "d"}
        assert {h.id for h in col.query("x", k=10, where={"tags": {"$in": ["noise", "code"]}})} == {"b", "d"}
        assert {h.id for h in col.query("x", k=10, where={"lang": {"$ne": "en"}})} == {"c"}
        assert {h.id for h in col.query("x", k=10, where={"$or": [{"year": {"$lt": 2022}}, {"lang": "fr"}]})} == {"b", "c"}
        assert {h.id for h in col.query("x", k=10, where={"year": {"$nin": [2021, 2022]}})} == {"a", "c"}
        assert col.count(where={"lang": "en"}) == 3
        # Get: text, metadata and the stored (normalized) vector.
        [rec] = col.get(["c"])
        assert rec.document == DOCS["c"][0] and rec.metadata == DOCS["c"][1]
        assert rec.embedding.dtype == np.float32 and rec.embedding.shape == (384,)
        assert cosine(rec.embedding, embedder.encode(DOCS["c"][0])) >= 0.9999
        assert [r.id for r in col.get(["missing", "a"])] == ["a"]
        # Vectors from numpy (float64 too), and a query by vector.
        vecs = embedder.encode(["alpha", "beta"]).astype(np.float64)
        col.upsert(["v1", "v2"], embeddings=vecs, metadatas=[{"k": 1}, None])
        assert col.query(embedding=vecs[1], k=1)[0].id == "v2"
        assert col.get(["v1"])[0].document is None
        # Re-upserting an id replaces it.
        col.upsert(["a"], documents=["Completely different text about databases."], metadatas=[{"lang": "de"}])
        assert col.count() == 6
        assert col.get(["a"])[0].metadata == {"lang": "de"}
        # Deletes.
        assert col.delete(["v1", "v2", "nope"]) == 2
        assert col.delete(where={"lang": "de"}) == 1
        assert col.count() == 3
    finally:
        assert store.delete_collection(collection_name)
    assert not store.delete_collection(collection_name)


def test_bad_input_is_refused_and_changes_nothing(store, embedder, collection_name):
    col = store.create_collection(collection_name, embedder=embedder)
    try:
        fill(col)
        with pytest.raises(aistack.Conflict):
            store.create_collection(collection_name, embedder=embedder)
        bad_calls = [
            lambda: col.upsert(["x"], embeddings=np.zeros((1, 3), dtype=np.float32)),
            lambda: col.upsert(["x"], embeddings=[[math.nan] * 384]),
            lambda: col.upsert(["x", "y"], documents=["only one"]),
            lambda: col.upsert(["x", "x"], documents=["one", "two"]),
            lambda: col.upsert(["x"], documents=[""]),
            lambda: col.upsert(["x"], documents=["ok"], metadatas=[{"_doc": "reserved"}]),
            lambda: col.upsert([""], documents=["empty id"]),
            lambda: col.upsert(["x"]),
            lambda: col.query(""),
            lambda: col.query("x", where={"year": {"$regex": "2"}}),
            lambda: col.query("x", k=0),
            lambda: col.query(embedding=[0.1] * 10),
            lambda: col.query(),
            lambda: col.delete(),
        ]
        for i, call in enumerate(bad_calls):
            with pytest.raises(aistack.InvalidInput):
                call()
                pytest.fail(f"bad call {i} was accepted")
        assert col.count() == 4
        assert col.get(["a"])[0].document == DOCS["a"][0]
        with pytest.raises(aistack.NotFound):
            store.get_collection(collection_name + "_missing", embedder=embedder)
        with pytest.raises(aistack.InvalidInput):
            store.get_or_create_collection("bad name!", embedder=embedder)
        with pytest.raises(aistack.InvalidInput):
            store.get_or_create_collection(collection_name + "_m", embedder=embedder, metric="hamming")
    finally:
        store.delete_collection(collection_name)


def test_lexical_and_hybrid_search(store, embedder, collection_name):
    col = store.create_collection(collection_name, embedder=embedder, analyzer="english")
    try:
        col.upsert(
            ["s", "o", "p"],
            documents=[
                "S_IFCHR is the file type of a character device.",
                "O_NONBLOCK opens a file without blocking.",
                "Cats purr when they are content.",
            ],
            metadatas=[{"lib": "stat"}, {"lib": "os"}, {"lib": "none"}],
        )
        hits = col.query("S_IFCHR", k=3, mode="lexical")
        assert [h.id for h in hits] == ["s"]
        assert (hits[0].lexical_rank, hits[0].vector_rank) == (1, None)
        assert hits[0].document.startswith("S_IFCHR")
        # Stemmed: "devices" finds "device".
        assert [h.id for h in col.query("devices", k=3, mode="lexical")] == ["s"]
        hits = col.query("O_NONBLOCK", k=3, mode="hybrid")
        assert hits[0].id == "o" and hits[0].lexical_rank == 1 and hits[0].vector_rank is not None
        assert all(h.vector_rank is not None for h in hits)
        # The filter applies to both arms.
        assert [h.id for h in col.query("O_NONBLOCK", k=3, mode="hybrid", where={"lib": "none"})] == ["p"]
        # Fusion settings are taken.
        hits = col.query("O_NONBLOCK", k=3, mode="hybrid", fusion={"lexical_weight": 0.0, "vector_depth": 1})
        assert [h.vector_rank for h in hits if h.vector_rank is not None] == [1]
        with pytest.raises(aistack.InvalidInput):
            col.query("x", mode="fuzzy")
        with pytest.raises(aistack.InvalidInput):
            col.query(embedding=embedder.encode("x"), mode="lexical")
        with pytest.raises(aistack.InvalidInput):
            col.query("x", mode="hybrid", fusion={"bogus": 1})
        with pytest.raises(aistack.InvalidInput):
            col.query("x", mode="lexical", min_score=0.2)
        with pytest.raises(aistack.InvalidInput):
            store.create_collection(collection_name + "_b", embedder=embedder, analyzer="klingon")
    finally:
        assert store.delete_collection(collection_name)


def test_another_prompt_is_refused_for_a_collection(store, embedder, collection_name):
    col = store.create_collection(collection_name, embedder=embedder)
    try:
        fill(col)
        # The same model with another query prompt would search with vectors of another kind.
        other = aistack.Embedder(embedder.model_id, query_prefix="query: ")
        with pytest.raises(aistack.Conflict, match="query_prefix"):
            store.get_collection(collection_name, embedder=other)
        assert store.get_collection(collection_name, embedder=embedder).count() == 4
    finally:
        assert store.delete_collection(collection_name)


def test_a_matryoshka_collection_is_reopened_as_it_is(store, embedder, collection_name):
    col = store.create_collection(collection_name, embedder=embedder, dim=128)
    try:
        fill(col)
        again = store.get_or_create_collection(collection_name, embedder=embedder)
        assert again.dim == 128 and again.embedding_model == col.embedding_model
        [rec] = again.get(["a"])
        full = embedder.encode(DOCS["a"][0])
        cut = full[:128] / np.linalg.norm(full[:128])
        assert rec.embedding.shape == (128,) and cosine(rec.embedding, cut) >= 0.9999
        assert again.query("a purring cat", k=1)[0].id == "a"
    finally:
        assert store.delete_collection(collection_name)


def test_vector_only_collections_need_no_embedder(store, collection_name):
    col = store.get_or_create_collection(collection_name, dim=3, metric="l2")
    try:
        assert col.embedding_model is None
        col.upsert(["p", "q"], embeddings=[[0.0, 0.0, 1.0], [5.0, 5.0, 5.0]])
        assert col.query(embedding=[0.0, 0.1, 1.0], k=1)[0].id == "p"
        with pytest.raises(aistack.InvalidInput, match="embedder"):
            col.query("text needs an embedder")
    finally:
        store.delete_collection(collection_name)


def test_store_arguments_are_checked(tmp_path):
    with pytest.raises(aistack.InvalidInput):
        aistack.VectorStore("mongodb")
    with pytest.raises(aistack.InvalidInput):
        aistack.VectorStore("pgvector", path=tmp_path)
    with pytest.raises(aistack.AistackError):
        aistack.VectorStore("pgvector", dsn="postgres://nobody@127.0.0.1:1/none")


_PARENT_COLLECTION = None


def _use_parent_store() -> str:
    try:
        _PARENT_COLLECTION.count()
    except aistack.Unavailable as e:
        return "unavailable: " + str(e)
    return "used"


def test_the_embedded_store_is_not_shared_with_a_forked_child(tmp_path, embedder):
    global _PARENT_COLLECTION
    store = aistack.VectorStore("embedded", path=tmp_path / "data")
    col = _PARENT_COLLECTION = store.get_or_create_collection("forked", embedder=embedder)
    fill(col)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        out = pool.apply_async(_use_parent_store).get(timeout=120)
    assert out.startswith("unavailable") and "forked" in out
    assert col.count() == 4


def test_a_full_disk_raises_insufficient_storage_and_reads_go_on(tmp_path):
    import os
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        store = aistack.VectorStore("embedded", path=str(mnt / "data"))
        col = store.get_or_create_collection("full", dim=4, metric="cosine")
        col.upsert(["kept"], embeddings=np.array([[1.0, 0.0, 0.0, 0.0]]), metadatas=[{"k": 1}])
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:
            for block in (65536, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * block)
                except OSError:
                    pass
        vecs = np.random.default_rng(1).random((64, 4)).astype(np.float32)
        with pytest.raises(aistack.InsufficientStorage) as e:
            col.upsert([f"lost{i}" for i in range(64)], embeddings=vecs, metadatas=[{"blob": "x" * 500}] * 64)
        assert e.value.code == "insufficient_storage" and isinstance(e.value, OSError)
        # Reads go on, and nothing of the refused batch is there.
        assert col.count() == 1
        assert col.get(["lost0", "lost63"]) == []
        assert col.query(embedding=np.array([1.0, 0.0, 0.0, 0.0]), k=5)[0].id == "kept"
        # Space returns: the same batch is written.
        os.remove(filler)
        col.upsert([f"lost{i}" for i in range(64)], embeddings=vecs, metadatas=[{"blob": "x" * 500}] * 64)
        assert col.count() == 65
        del col, store
    finally:
        subprocess.run(["umount", "-l", str(mnt)])

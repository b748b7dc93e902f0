"""The optional integrations against the real packages: LangChain, LlamaIndex and Chroma."""

from __future__ import annotations

import numpy as np
from conftest import cosine


def test_langchain_embeddings_and_vector_store(embedder, reference, tmp_path):
    import aistack
    from aistack.integrations.langchain import AistackEmbeddings, AistackVectorStore
    from langchain_core.documents import Document

    emb = AistackEmbeddings(embedder)
    docs = emb.embed_documents([r["text"] for r in reference[:5]])
    assert len(docs) == 5 and all(len(v) == 384 for v in docs)
    assert all(cosine(v, r["embedding"]) >= 0.9999 for v, r in zip(docs, reference))
    assert cosine(emb.embed_query(reference[0]["text"]), reference[0]["embedding"]) >= 0.9999
    assert emb.embed_documents([]) == []

    store = aistack.VectorStore("embedded", path=tmp_path / "data")
    vs = AistackVectorStore.from_texts(
        ["Cats purr.", "Dogs bark.", "Rust is fast."],
        emb,
        metadatas=[{"kind": "pet"}, {"kind": "pet"}, {"kind": "code"}],
        ids=["c", "d", "r"],
        store=store,
        collection_name="lc",
    )
    found = vs.similarity_search("a purring cat", k=1)
    assert found == [Document(id="c", page_content="Cats purr.", metadata={"kind": "pet"})]
    pets = vs.similarity_search("programming", k=3, filter={"kind": "pet"})
    assert {d.id for d in pets} == {"c", "d"}
    scored = vs.similarity_search_with_relevance_scores("Rust is fast.", k=1)
    assert scored[0][0].id == "r" and 0.99 <= scored[0][1] <= 1.0
    ids = vs.add_documents([Document(page_content="Birds sing.", metadata={"kind": "pet"})])
    assert len(ids) == 1 and vs.get_by_ids(ids)[0].page_content == "Birds sing."
    assert vs.delete(["d"]) is True
    assert vs.get_by_ids(["d", "c"])[0].id == "c"
    retriever = vs.as_retriever(search_kwargs={"k": 1})
    assert retriever.invoke("singing birds")[0].page_content == "Birds sing."
    # Hybrid and lexical search through the adapter and its retriever.
    vs.add_texts(["The flag O_NONBLOCK makes reads return at once."], ids=["flag"])
    assert [d.id for d in vs.similarity_search("O_NONBLOCK", k=1, mode="lexical")] == ["flag"]
    hybrid = vs.as_retriever(search_kwargs={"k": 2, "mode": "hybrid"})
    assert hybrid.invoke("O_NONBLOCK")[0].id == "flag"
    assert AistackVectorStore(vs.collection, embedder, mode="lexical").similarity_search("Birds", k=1)[0].page_content == "Birds sing."


def test_llamaindex_retriever(embedder, tmp_path):
    import aistack
    from aistack.integrations.llamaindex import AistackRetriever

    store = aistack.VectorStore("embedded", path=tmp_path / "data")
    col = store.create_collection("li", embedder=embedder)
    col.upsert(
        ["flag", "cat"],
        documents=["The flag O_NONBLOCK makes reads return at once.", "Cats purr when they are content."],
        metadatas=[{"kind": "code"}, {"kind": "pet"}],
    )
    nodes = AistackRetriever(col, k=2, mode="hybrid").retrieve("O_NONBLOCK")
    assert nodes[0].node.node_id == "flag" and nodes[0].node.text.startswith("The flag")
    assert nodes[0].node.metadata == {"kind": "code"}
    assert [n.node.node_id for n in AistackRetriever(col, k=2, mode="lexical").retrieve("purr")] == ["cat"]
    assert [n.node.node_id for n in AistackRetriever(col, k=2, where={"kind": "pet"}).retrieve("flags")] == ["cat"]


def test_llamaindex_embedding(embedder, reference):
    from aistack.integrations.llamaindex import AistackEmbedding

    emb = AistackEmbedding(embedder, embed_batch_size=16)
    texts = [r["text"] for r in reference[:20]]
    got = emb.get_text_embedding_batch(texts)
    assert len(got) == 20
    assert all(cosine(v, r["embedding"]) >= 0.9999 for v, r in zip(got, reference))
    q = emb.get_query_embedding(reference[3]["text"])
    assert cosine(q, reference[3]["embedding"]) >= 0.9999
    import asyncio

    aq = asyncio.run(emb.aget_query_embedding(reference[3]["text"]))
    assert np.allclose(aq, q, atol=1e-6)


def test_chroma_embedding_function(embedder, reference):
    import chromadb
    from aistack.integrations.chroma import AistackEmbeddingFunction

    fn = AistackEmbeddingFunction(embedder)
    client = chromadb.EphemeralClient()
    col = client.create_collection("aistack-test", embedding_function=fn, configuration={"hnsw": {"space": "cosine"}})
    texts = [r["text"] for r in reference[:10]]
    col.add(ids=[str(i) for i in range(10)], documents=texts)
    got = col.get(ids=["4"], include=["embeddings"])["embeddings"][0]
    assert cosine(got, reference[4]["embedding"]) >= 0.9999
    res = col.query(query_texts=[texts[7]], n_results=1)
    assert res["ids"] == [["7"]]

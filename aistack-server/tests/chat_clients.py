"""Unchanged clients against a running aistack server whose chat routes `chat` and `docs-chat`
(grounded in the collection `docs`) front one upstream: the official `openai` client (sync,
async, streaming), LangChain's `ChatOpenAI`, huggingface_hub's `InferenceClient` on TEI's root
route, and the model names a new user would send. Prints a JSON summary.
Usage: chat_clients.py BASE_URL"""
import asyncio
import json
import sys
import urllib.request

import openai
from huggingface_hub import InferenceClient
from langchain_openai import ChatOpenAI

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused-without-a-key-file", max_retries=0)
ask = [{"role": "user", "content": "What does the write-ahead log do?"}]
fixed = {"temperature": 0, "seed": 42, "max_tokens": 12}

# The names a new user would send, all listed.
names = [m.id for m in client.models.list().data]
for want in ("chat", "docs-chat", "all-MiniLM-L6-v2"):
    assert want in names, names
for model in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
    e = client.embeddings.create(model=model, input="hello")
    assert len(e.data[0].embedding) == 384
try:
    client.chat.completions.create(model="no-such-model", messages=ask)
    raise AssertionError("an unknown model must be refused")
except openai.NotFoundError as e:
    assert "docs-chat" in str(e), e

# TEI's root route, as huggingface_hub calls it.
vec = InferenceClient(base_url=base).feature_extraction("hello world")
assert len(vec.reshape(-1)) == 384, vec.shape

# Documents go in through the server's own API.
docs = {"documents": [
    {"id": "wal", "text": "The write-ahead log makes every acknowledged write durable before it is applied."},
    {"id": "hnsw", "text": "HNSW is a layered graph index for approximate nearest neighbour search."},
]}
req = urllib.request.Request(base + "/v1/collections/docs/documents", data=json.dumps(docs).encode(),
                             headers={"content-type": "application/json"}, method="POST")
with urllib.request.urlopen(req) as r:
    assert r.status in (200, 201), r.status

# Sync, non-streaming and streaming: the same answer.
full = client.chat.completions.create(model="chat", messages=ask, **fixed)
text = full.choices[0].message.content
assert text, full
streamed = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(model="chat", messages=ask, stream=True, **fixed)
    if c.choices
)
assert streamed == text, (streamed, text)


async def run_async():
    a = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    r = await a.chat.completions.create(model="chat", messages=ask, **fixed)
    parts = []
    async for c in await a.chat.completions.create(model="chat", messages=ask, stream=True, **fixed):
        if c.choices:
            parts.append(c.choices[0].delta.content or "")
    await a.close()
    return r.choices[0].message.content, "".join(parts)


async_full, async_streamed = asyncio.run(run_async())
assert async_full == text and async_streamed == text, (async_full, async_streamed, text)

# A grounded route: the answer carries citations of the ingested documents.
grounded = client.chat.completions.create(model="docs-chat", messages=ask, **fixed)
cites = grounded.model_extra["aistack"]["citations"]
assert cites and cites[0]["document_id"] == "wal", cites
last = None
for c in client.chat.completions.create(model="docs-chat", messages=ask, stream=True, **fixed):
    last = c
stream_cites = last.model_extra["aistack"]["citations"]
assert [c["document_id"] for c in stream_cites] == [c["document_id"] for c in cites], stream_cites

# LangChain's ChatOpenAI, unchanged. It sends `max_tokens` as `max_completion_tokens`, which
# llama-cpp-python's server ignores, so the limit goes as OpenAI's own field in `extra_body`.
limit = {"extra_body": {"max_tokens": 12}}
llm = ChatOpenAI(base_url=base + "/v1", api_key="unused", model="chat", temperature=0, seed=42,
                 max_retries=0, **limit)
lc = llm.invoke(ask[0]["content"])
assert lc.content == text, (lc.content, text)
lc_streamed = "".join(chunk.content for chunk in llm.stream(ask[0]["content"]))
assert lc_streamed == text, (lc_streamed, text)
lc_grounded = ChatOpenAI(base_url=base + "/v1", api_key="unused", model="docs-chat", temperature=0,
                         seed=42, max_retries=0, **limit).invoke(ask[0]["content"])
assert lc_grounded.content, lc_grounded

print(json.dumps({"answer": text, "citations": len(cites), "models": names}))

"""LangChain's `OpenAIEmbeddings` with its defaults against a running aistack server. With
`check_embedding_ctx_length` on (the default) it tokenizes with tiktoken and sends token ids;
the embeddings must still match the sentence-transformers reference (cosine >= 0.9999).

Usage: langchain_client.py BASE_URL REFERENCE CL100K_RANKS
CL100K_RANKS is tiktoken's `cl100k_base.tiktoken` file, installed into a private tiktoken cache
so the test runs offline."""
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

base_url, reference, ranks = sys.argv[1], sys.argv[2], sys.argv[3]
url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
cache = tempfile.mkdtemp()
shutil.copy(ranks, os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))
os.environ["TIKTOKEN_CACHE_DIR"] = cache

from langchain_openai import OpenAIEmbeddings  # noqa: E402

lines = [json.loads(l) for l in open(reference, encoding="utf-8") if l.strip()]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


emb = OpenAIEmbeddings(
    base_url=base_url + "/v1", api_key="unused-without-a-key-file", model="all-MiniLM-L6-v2"
)
assert emb.check_embedding_ctx_length, "the default sends token ids; this test is about that"
worst = 1.0
checked = 0
for i in range(0, 96, 32):
    batch = lines[i : i + 32]
    got = emb.embed_documents([l["text"] for l in batch])
    assert len(got) == len(batch), len(got)
    for v, line in zip(got, batch):
        worst = min(worst, cosine(v, line["embedding"]))
        checked += 1
q = emb.embed_query(lines[0]["text"])
worst = min(worst, cosine(q, lines[0]["embedding"]))
shutil.rmtree(cache)
print(json.dumps({"lines": checked + 1, "min_cosine": worst}))
assert worst >= 0.9999, worst

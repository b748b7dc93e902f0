"""The official `openai` client against a running aistack server: embeddings must match the
sentence-transformers reference (cosine >= 0.9999). Usage: openai_client.py BASE_URL REFERENCE"""
import json
import math
import sys

import openai

base_url, reference = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused-without-a-key-file")
lines = [json.loads(l) for l in open(reference, encoding="utf-8") if l.strip()]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


worst = 1.0
for i in range(0, len(lines), 32):
    batch = lines[i : i + 32]
    # The client's default encoding is base64; ask for floats once too.
    fmt = "float" if i == 0 else openai.NOT_GIVEN
    resp = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=[l["text"] for l in batch], encoding_format=fmt
    )
    assert len(resp.data) == len(batch), len(resp.data)
    for item, line in zip(resp.data, batch):
        worst = min(worst, cosine(item.embedding, line["embedding"]))
single = client.embeddings.create(model="all-MiniLM-L6-v2", input=lines[0]["text"])
worst = min(worst, cosine(single.data[0].embedding, lines[0]["embedding"]))
try:
    client.embeddings.create(model="all-MiniLM-L6-v2", input="")
    raise SystemExit("an empty input was accepted")
except openai.BadRequestError as e:
    assert e.body["code"] == "invalid_input", e.body
print(json.dumps({"lines": len(lines), "min_cosine": worst}))
assert worst >= 0.9999, worst

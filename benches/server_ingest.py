"""Ingest rate through a real `aistack serve`: one client imports 160 documents of 40 corpus
sentences (8 a request, embedding cache off) and prints chunks per second, with
`embed.max_queue_wait_ms` set to the given bound (0: one lane, full passes).

Usage: python3 benches/server_ingest.py target/release/aistack MODEL_DIR BOUND_MS
"""
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from soak import free_port, wait_ready  # the same directory


def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert resp.status in (200, 201), (resp.status, data)
    return data


def main():
    binary, model, bound = sys.argv[1], sys.argv[2], sys.argv[3]
    corpus = Path(__file__).resolve().parent / "data" / "sentences.jsonl"
    sentences = [json.loads(l) for l in corpus.read_text(encoding="utf-8").splitlines() if l.strip()]
    rng = random.Random(1)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choice(sentences) for _ in range(40))} for i in range(160)]
    port = free_port()
    env = dict(os.environ, AISTACK__EMBED__MAX_QUEUE_WAIT_MS=bound, AISTACK__CACHE__EMBEDDINGS_MAX_BYTES="0")
    with tempfile.TemporaryDirectory(prefix="aistack-ingest-") as data:
        server = subprocess.Popen(
            [binary, "serve", "--bind", f"127.0.0.1:{port}", "--model", model, "--data-dir", data],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        try:
            wait_ready(port)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            post(conn, "/v1/collections", {"name": "t"})
            started, chunks = time.time(), 0
            for i in range(0, len(docs), 8):
                chunks += post(conn, "/v1/collections/t/documents", {"documents": docs[i:i + 8]})["chunks"]
            took = time.time() - started
            print(json.dumps({"bound_ms": int(bound), "seconds": round(took, 2), "chunks": chunks,
                              "chunks_per_s": round(chunks / took, 1)}))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()

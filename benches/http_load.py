"""HTTP load on a running `aistack serve`: throughput and latency percentiles of
POST /v1/embeddings over the 2,000-sentence corpus, at a given batch size and concurrency.
Stdlib only. Compare with `embed-rate` (in-process) on the same machine. Start the server with
`AISTACK__CACHE__EMBEDDINGS_MAX_BYTES=0` so its embedding cache cannot answer repeated runs.

Usage: python3 benches/http_load.py --url http://127.0.0.1:8080 --batch 32 --concurrency 2
       [--sentences 2000] [--key KEY]
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--key")
    a = ap.parse_args()
    corpus = Path(__file__).parent / "data" / "sentences.jsonl"
    texts = [json.loads(l) for l in corpus.read_text(encoding="utf-8").splitlines() if l.strip()]
    texts = texts[: a.sentences]
    batches = [texts[i : i + a.batch] for i in range(0, len(texts), a.batch)]
    u = urllib.parse.urlparse(a.url)
    headers = {"content-type": "application/json"}
    if a.key:
        headers["authorization"] = f"Bearer {a.key}"
    lat, errors, lock = [], [], threading.Lock()
    next_i = [0]

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= len(batches):
                return
            body = json.dumps({"input": batches[i]})
            t0 = time.perf_counter()
            conn.request("POST", "/v1/embeddings", body, headers)
            r = conn.getresponse()
            data = r.read()
            dt = time.perf_counter() - t0
            with lock:
                if r.status == 200 and len(json.loads(data)["data"]) == len(batches[i]):
                    lat.append(dt)
                else:
                    errors.append(r.status)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000
    print(json.dumps({
        "batch": a.batch, "concurrency": a.concurrency, "requests": len(lat), "errors": errors,
        "sentences_per_s": round(len(texts) / wall, 1), "p50_ms": round(pct(50), 1),
        "p99_ms": round(pct(99), 1),
    }))


if __name__ == "__main__":
    main()

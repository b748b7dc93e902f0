"""Ingest rate through a real `aistack serve`: one client imports 160 documents of 40 corpus
sentences (8 a request, embedding cache off) and prints chunks per second, with
`embed.max_queue_wait_ms` set to the given bound (0: one lane, full passes).

Usage: python3 benches/server_ingest.py target/release/aistack MODEL_DIR BOUND_MS
"""
import json, sys, time, http.client, subprocess, socket, tempfile, os, random
bin_, model, bound = sys.argv[1], sys.argv[2], sys.argv[3]
sents = [json.loads(l) for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'sentences.jsonl'))]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
d = tempfile.mkdtemp()
env = dict(os.environ, AISTACK__EMBED__MAX_QUEUE_WAIT_MS=bound, AISTACK__CACHE__EMBEDDINGS_MAX_BYTES="0")
p = subprocess.Popen([bin_, "serve", "--bind", f"127.0.0.1:{port}", "--model", model, "--data-dir", d + "/data"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
while True:
    try:
        c.request("GET", "/health"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except Exception:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    time.sleep(0.2)
c.request("POST", "/v1/collections", json.dumps({"name": "t"}), {"content-type": "application/json"}); c.getresponse().read()
rng = random.Random(1)
docs = [{"id": f"d{i}", "text": " ".join(rng.choice(sents) for _ in range(40))} for i in range(160)]
t = time.time(); chunks = 0
for i in range(0, len(docs), 8):
    c.request("POST", "/v1/collections/t/documents", json.dumps({"documents": docs[i:i+8]}), {"content-type": "application/json"})
    r = c.getresponse(); body = json.loads(r.read())
    assert r.status == 200, (r.status, body)
    chunks += body.get("chunks", 0)
el = time.time() - t
print(json.dumps({"bound": bound, "seconds": round(el, 2), "chunks": chunks, "chunks_per_s": round(chunks / el, 1)}))
p.terminate(); p.wait()

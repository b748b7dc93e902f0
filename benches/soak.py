"""Soak: a real `aistack serve` under an hour (by default) of mixed traffic, watched from outside.

Clients (threads, keep-alive connections) send embeddings requests, document ingests (new
documents and re-imports of old ones, with metadata), deletes, and vector, lexical, hybrid and
filtered searches, with short pauses. Every `--sample` seconds the server's resident memory
(VmRSS), open file descriptors and the counts of answers by status are recorded. At the end one
JSON object reports the RSS after warm-up and at the end, its growth, the descriptor range, the
error counts, and whether the goals hold: no 5xx, no dropped connection, RSS growth after
warm-up under 10%, descriptors flat. Stdlib only; all traffic stays on loopback.

Usage: python3 benches/soak.py --bin target/release/aistack --model DIR
       [--seconds 3600] [--clients 4] [--warmup 300] [--sample 30] [--out FILE]
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, seconds=120):
    """Waits until the server on `port` answers `/health` with 200; exits after `seconds`."""
    deadline = time.time() + seconds
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("the server never became ready")
        time.sleep(0.2)


def proc_status(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--sample", type=int, default=30)
    ap.add_argument("--out")
    a = ap.parse_args()

    corpus = Path(__file__).parent / "data" / "sentences.jsonl"
    sentences = [json.loads(l) for l in corpus.read_text(encoding="utf-8").splitlines() if l.strip()]
    data = tempfile.mkdtemp(prefix="aistack-soak-")
    port = free_port()
    env = dict(os.environ, AISTACK__LOG__LEVEL="warn")
    server = subprocess.Popen(
        [a.bin, "serve", "--bind", f"127.0.0.1:{port}", "--model", a.model, "--data-dir", data],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    log_lines = []
    threading.Thread(target=lambda: log_lines.extend(server.stderr), daemon=True).start()
    wait_ready(port)

    stop_at = time.time() + a.seconds
    lock = threading.Lock()
    counts = {}
    dropped = [0]
    kinds = {}
    refused = {}

    def count(kind, status):
        with lock:
            counts[status] = counts.get(status, 0) + 1
            kinds[kind] = kinds.get(kind, 0) + 1
            if status == 429:
                refused[kind] = refused.get(kind, 0) + 1

    def client(seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        doc_ids = [f"c{seed}-d{i}" for i in range(200)]
        while time.time() < stop_at:
            r = rng.random()
            if r < 0.45:
                kind, path = "embed", "/v1/embeddings"
                body = {"input": rng.sample(sentences, rng.randint(1, 16))}
            elif r < 0.60:
                kind, path = "ingest", "/v1/collections/soak/documents"
                docs = []
                for d in rng.sample(doc_ids, rng.randint(1, 8)):
                    text = " ".join(rng.sample(sentences, rng.randint(2, 40)))
                    docs.append({"id": d, "text": text,
                                 "metadata": {"client": seed, "year": rng.randint(2000, 2026),
                                              "tags": rng.sample(["a", "b", "c", "d"], 2)}})
                body = {"documents": docs}
            elif r < 0.63:
                kind, path = "delete", f"/v1/collections/soak/documents/{rng.choice(doc_ids)}"
                body = None
            else:
                kind, path = "search", "/v1/collections/soak/search"
                body = {"query": rng.choice(sentences), "k": rng.choice([5, 10, 50]),
                        "mode": rng.choice(["vector", "lexical", "hybrid"])}
                if rng.random() < 0.3:
                    body["filter"] = {"year": {"$gte": rng.randint(2000, 2026)}}
            try:
                if body is None:
                    conn.request("DELETE", path)
                else:
                    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                count(kind, resp.status)
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            except (OSError, http.client.HTTPException):
                with lock:
                    dropped[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            time.sleep(rng.random() * 0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    started = time.time()
    for t in threads:
        t.start()
    samples = []
    while time.time() < stop_at:
        time.sleep(min(a.sample, max(0.0, stop_at - time.time())))
        with lock:
            snapshot = dict(counts)
        samples.append({"t": round(time.time() - started), "rss_mib": round(proc_status(server.pid, "VmRSS:"), 1),
                        "fds": fds(server.pid), "answers": snapshot})
        print(json.dumps(samples[-1]), flush=True)
    for t in threads:
        t.join()
    hwm = proc_status(server.pid, "VmHWM:")
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)

    after_warmup = [s for s in samples if s["t"] >= a.warmup] or samples
    rss0, rss1 = after_warmup[0]["rss_mib"], samples[-1]["rss_mib"]
    growth = (rss1 - rss0) / rss0 * 100.0
    fd_values = [s["fds"] for s in after_warmup]
    errors_5xx = sum(n for s, n in counts.items() if s >= 500)
    errors = {str(s): n for s, n in sorted(counts.items()) if s >= 400}
    report = {
        "seconds": a.seconds, "clients": a.clients, "requests": sum(counts.values()), "by_kind": kinds,
        "refused_by_kind": refused, "answers": {str(s): n for s, n in sorted(counts.items())}, "errors": errors,
        "dropped_connections": dropped[0],
        "rss_after_warmup_mib": rss0, "rss_end_mib": rss1, "rss_growth_pct": round(growth, 2),
        "rss_peak_mib": round(hwm, 1),
        "fds_min": min(fd_values), "fds_max": max(fd_values),
        "exit_code": code,
        "error_log_lines": sum(1 for l in log_lines if b'"level":"ERROR"' in l),
        "goal_no_5xx": errors_5xx == 0, "goal_no_dropped": dropped[0] == 0,
        "goal_rss_growth_under_10pct": growth < 10.0,
        "goal_fds_flat": max(fd_values) - min(fd_values) <= 8,
    }
    print(json.dumps(report), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"report": report, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()

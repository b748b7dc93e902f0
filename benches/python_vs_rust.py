#!/usr/bin/env python3
"""Embeds the same 2,000 real sentences (benches/data/sentences.jsonl) three ways in one run:
aistack from Python (`aistack.Embedder.encode`, the installed wheel: build it with
`maturin build --release`), aistack in-process from Rust (the `embed-rate` bench, release), and
sentence-transformers. Caches are off; the best of `--repeat` runs is kept. Prints JSON with
the rates and the Python/Rust ratio (the target is >= 0.95).

Usage: python3 benches/python_vs_rust.py [--threads N] [--repeat R] [--no-st]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PY_BENCH = r"""
import json, sys, time
import aistack
sentences = [json.loads(l) for l in open(sys.argv[1])]
e = aistack.Embedder(sys.argv[2])
e.wait_ready(300)
e.encode(["warm up"])
best = 0.0
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    out = e.encode(sentences, batch_size=32)
    best = max(best, len(sentences) / (time.perf_counter() - t))
assert out.shape == (len(sentences), e.dim)
print(json.dumps({"batch32_per_s": best, "version": aistack.__version__}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    args = ap.parse_args()

    model_dir = subprocess.check_output([ROOT / "scripts/ensure-model"], text=True).strip()
    corpus = ROOT / "benches/data/sentences.jsonl"
    n = sum(1 for _ in corpus.open())
    env = dict(
        os.environ,
        AISTACK__EMBED__THREADS=str(args.threads),
        AISTACK_BENCH_MODEL=model_dir,
        AISTACK__CACHE__EMBEDDINGS_MAX_BYTES="0",
    )
    subprocess.check_call(
        ["cargo", "build", "--quiet", "--release", "-p", "aistack-benches", "--bin", "embed-rate"],
        cwd=ROOT,
    )

    runs = []
    for _ in range(args.repeat):
        out = subprocess.check_output(
            [ROOT / "target/release/embed-rate", "--batch-one", "1"], env=env, text=True
        )
        runs.append(json.loads(out.strip().splitlines()[-1])["batch32_per_s"])

    report = {"threads": args.threads, "sentences": n}
    report["rust_in_process_per_s"] = round(max(runs), 1)
    out = subprocess.check_output(
        [sys.executable, "-c", PY_BENCH, str(corpus), model_dir, str(args.repeat)],
        env=env,
        text=True,
        cwd="/",
    )
    report["python_per_s"] = round(json.loads(out.strip().splitlines()[-1])["batch32_per_s"], 1)
    report["python_vs_rust"] = round(report["python_per_s"] / report["rust_in_process_per_s"], 3)

    if not args.no_st:
        import torch
        from sentence_transformers import SentenceTransformer

        sentences = [json.loads(l) for l in corpus.open()]
        torch.set_num_threads(args.threads)
        model = SentenceTransformer(model_dir, device="cpu")
        model.max_seq_length = 256
        model.encode(["warm up"], normalize_embeddings=True)
        best = 0.0
        for _ in range(args.repeat):
            t = time.perf_counter()
            model.encode(sentences, batch_size=32, normalize_embeddings=True)
            best = max(best, len(sentences) / (time.perf_counter() - t))
        report["sentence_transformers_per_s"] = round(best, 1)
        report["python_vs_sentence_transformers"] = round(report["python_per_s"] / best, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Embeds the same 2,000 real sentences with aistack (in-process, release build) and with
sentence-transformers (PyTorch) on the same number of threads, and prints both rates and the
ratio. Needs `pip install sentence-transformers` (torch; not in CI).

Usage: python3 benches/compare_st.py [--model minilm|mpnet|DIR] [--threads N] [--batch-one N]
                                     [--repeat R] [--backend torch|onnx]

`--backend onnx` runs sentence-transformers on ONNX Runtime (fp32) instead of PyTorch: it needs
`sentence-transformers[onnx]`, whose optimum pins transformers < 4.58 (a venv of its own with
sentence-transformers 5.1.2, transformers 4.57.6, optimum-onnx[onnxruntime] 0.1.0). The model is
exported once, untimed, into a temporary folder; its cold start is then loading that export.

The model is all-MiniLM-L6-v2 (default), all-mpnet-base-v2 (`scripts/ensure-model mpnet`), or
any sentence-transformers directory, e.g. the random base-size models of
benches/make_random_models.py.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-one", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    ap.add_argument("--model", default="minilm", help="minilm, mpnet, or a model directory")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    args = ap.parse_args()

    if args.model in ("minilm", "mpnet"):
        model_dir = subprocess.check_output([ROOT / "scripts/ensure-model", args.model], text=True).strip()
    else:
        model_dir = str(Path(args.model).resolve())
    sentences = [json.loads(l) for l in (ROOT / "benches/data/sentences.jsonl").open()]

    env = dict(os.environ, AISTACK__EMBED__THREADS=str(args.threads), AISTACK_BENCH_MODEL=model_dir)
    subprocess.check_call(
        ["cargo", "build", "--quiet", "--release", "-p", "aistack-benches", "--bin", "embed-rate"],
        cwd=ROOT,
    )
    ours = []
    for _ in range(args.repeat):
        out = subprocess.check_output(
            [ROOT / "target/release/embed-rate", "--batch-one", str(args.batch_one)], env=env, text=True
        )
        ours.append(json.loads(out.strip().splitlines()[-1]))

    name = Path(model_dir).name
    if args.backend == "onnx":
        import tempfile

        from sentence_transformers import SentenceTransformer

        exported = tempfile.mkdtemp(prefix="st-onnx-")
        SentenceTransformer(model_dir, device="cpu", backend="onnx").save(exported)
        model_dir = exported
    started = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(model_dir, device="cpu", backend=args.backend)
    model.encode(["warm up"], normalize_embeddings=True)
    st_cold_start_ms = (time.perf_counter() - started) * 1e3
    theirs = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        model.encode(sentences, batch_size=32, normalize_embeddings=True)
        b32 = len(sentences) / (time.perf_counter() - t)
        n = min(args.batch_one, len(sentences))
        t = time.perf_counter()
        for s in sentences[:n]:
            model.encode([s], batch_size=1, normalize_embeddings=True)
        b1 = n / (time.perf_counter() - t)
        theirs.append({"batch32_per_s": b32, "batch1_per_s": b1})

    best = lambda runs, k: max(r[k] for r in runs)
    report = {
        "model": name,
        "max_seq_length": model.max_seq_length,
        "threads": args.threads,
        "sentences": len(sentences),
        "torch": torch.__version__,
        "backend": args.backend,
        "aistack": {k: round(best(ours, k), 1) for k in ("batch32_per_s", "batch1_per_s")},
        "sentence_transformers": {k: round(best(theirs, k), 1) for k in ("batch32_per_s", "batch1_per_s")},
        "aistack_cold_start_ms": round(min(r["cold_start_ms"] for r in ours), 1),
        "aistack_rss_mib": ours[-1]["rss_mib"],
        "aistack_peak_rss_mib": max(r["peak_rss_mib"] for r in ours),
        # From `import torch` to the first embedding (the interpreter's own start not counted).
        "st_cold_start_ms": round(st_cold_start_ms, 1),
        "st_rss_mib": status_mib("VmRSS:"),
        "st_peak_rss_mib": status_mib("VmHWM:"),
    }
    report["ratio"] = {
        k: round(report["aistack"][k] / report["sentence_transformers"][k], 2)
        for k in ("batch32_per_s", "batch1_per_s")
    }
    print(json.dumps(report, indent=2))


def status_mib(key):
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return round(int(line.split()[1]) / 1024, 1)
    return None


if __name__ == "__main__":
    sys.exit(main())

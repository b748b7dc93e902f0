#!/usr/bin/env python3
"""Writes benches/data/sentences.jsonl: 2,000 real English sentences from Python's own
documentation (pydoc_data.topics and the docstrings of a fixed list of standard modules, all
shipped with CPython), deterministic across runs."""
import importlib
import inspect
import json
import re
import sys
from pathlib import Path

from pydoc_data.topics import topics

out = Path(__file__).resolve().parent / "data" / "sentences.jsonl"
MODULES = """argparse asyncio bisect collections contextlib csv dataclasses datetime decimal
email enum fractions functools heapq http.client inspect itertools json logging os pathlib
queue random re shutil socket sqlite3 statistics string subprocess tarfile tempfile textwrap
threading typing unittest urllib.parse zipfile""".split()


def documents():
    for name in sorted(topics):
        yield topics[name]
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        yield inspect.getdoc(mod) or ""
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                yield inspect.getdoc(obj) or ""


seen, sentences = set(), []
for doc in documents():
    text = re.sub(r"\s+", " ", doc)
    for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        s = s.strip()
        words = s.split()
        # Prose sentences only: 5 to 70 words, mostly letters, no code listings or tables.
        if not (5 <= len(words) <= 70) or s in seen:
            continue
        letters = sum(c.isalpha() or c == " " for c in s) / len(s)
        if letters < 0.8 or any(m in s for m in ("|", ">>>", "====", "**", "::=", "--")):
            continue
        seen.add(s)
        sentences.append(s)
if len(sentences) < 2000:
    sys.exit(f"only {len(sentences)} sentences found")
# Spread over every topic rather than the first few: take every k-th sentence.
step = len(sentences) / 2000
picked = [sentences[int(i * step)] for i in range(2000)]
out.parent.mkdir(parents=True, exist_ok=True)
with out.open("w") as f:
    for s in picked:
        f.write(json.dumps(s) + "\n")
print(f"wrote {len(picked)} of {len(sentences)} sentences to {out}")

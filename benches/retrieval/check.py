#!/usr/bin/env python3
"""Checks benches/retrieval/queries.jsonl against the corpus built by make_corpus.py.

    python3 benches/retrieval/check.py [CORPUS.jsonl]

Without an argument the corpus is regenerated in memory by running make_corpus.py with the same
interpreter (it must be Python 3.11).  Fails (exit status 1) when a query is malformed, when a
relevant id is missing from the corpus, or when the corpus itself is not sorted and unique.
For `exact` queries it also reports, without failing, documents whose text contains the query
terms but are not judged relevant (and judged ones that no longer contain them): these appear
when a different 3.11.x release changes a docstring.
"""
import collections
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("natural", "exact")


def load_corpus(argv):
    if len(argv) > 1:
        with open(argv[1], encoding="utf-8") as f:
            lines = f.read().splitlines()
    else:
        proc = subprocess.run(
            [sys.executable, os.path.join(HERE, "make_corpus.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
        if proc.returncode != 0:
            sys.exit("check.py: make_corpus.py failed (exit status %d)" % proc.returncode)
        lines = proc.stdout.decode("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def contains(text, query):
    """Every whitespace-separated term of query occurs in text as a whole identifier."""
    return all(
        re.search(r"(?<![\w])" + re.escape(term) + r"(?![\w])", text) for term in query.split()
    )


def main(argv):
    errors, notes = [], []
    docs = load_corpus(argv)
    ids = [d["id"] for d in docs]
    if ids != sorted(ids):
        errors.append("corpus is not sorted by id")
    if len(set(ids)) != len(ids):
        errors.append("corpus has duplicate ids")
    texts = {d["id"]: d["text"] for d in docs}

    queries = []
    with open(os.path.join(HERE, "queries.jsonl"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                q = json.loads(line)
            except ValueError as exc:
                errors.append("queries.jsonl line %d: invalid JSON (%s)" % (n, exc))
                continue
            queries.append(q)

    seen = set()
    kinds = collections.Counter()
    judged = collections.Counter()
    for q in queries:
        qid = q.get("id")
        if not isinstance(qid, str) or qid in seen:
            errors.append("query id %r missing or duplicated" % (qid,))
        seen.add(qid)
        kind, text, rel = q.get("kind"), q.get("query"), q.get("relevant")
        if kind not in KINDS:
            errors.append("%s: kind %r is not one of %s" % (qid, kind, KINDS))
        if not isinstance(text, str) or not text.strip():
            errors.append("%s: empty query" % qid)
        if not isinstance(rel, list) or not rel:
            errors.append("%s: no relevant documents" % qid)
            continue
        if len(set(rel)) != len(rel):
            errors.append("%s: duplicated relevant ids" % qid)
        kinds[kind] += 1
        judged[kind] += len(rel)
        for doc_id in rel:
            if doc_id not in texts:
                errors.append("%s: relevant id %r is not in the corpus" % (qid, doc_id))
        if kind == "exact" and isinstance(text, str):
            hits = {i for i, t in texts.items() if contains(t, text)}
            for doc_id in sorted(hits - set(rel)):
                notes.append("%s %r: %s contains the term but is not judged" % (qid, text, doc_id))
            for doc_id in sorted(set(rel) & set(texts) - hits):
                notes.append("%s %r: judged %s does not contain the term" % (qid, text, doc_id))

    print("corpus: %d documents, %d bytes of text" % (len(docs), sum(len(t) for t in texts.values())))
    for kind in KINDS:
        avg = judged[kind] / kinds[kind] if kinds[kind] else 0.0
        print("%-8s %3d queries, %.2f relevant documents per query" % (kind, kinds[kind], avg))
    print("total    %3d queries" % sum(kinds.values()))
    for note in notes:
        print("note: " + note)
    for err in errors:
        print("ERROR: " + err)
    if errors:
        print("FAILED: %d error(s)" % len(errors))
        return 1
    print("OK: every relevant id exists in the corpus")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Build a text-classification dataset from the fortunes corpus: predict a fortune's category.

    python3 scripts/make_fortune_categories.py [--raw data/raw/fortunes]
        [--out data/fortune-categories] [--categories computers science politics literature]

Each category file holds entries separated by lines with a single `%`. Entries are stripped,
empty ones and exact duplicates (across categories too: a text in two categories has no single
right label) are dropped. The split is fixed by a hash of the text, not by a random generator,
so it never changes with the order of files or the Python version: about 70% train, 10%
validation, 20% test. Writes train.jsonl, validation.jsonl, test.jsonl ({"text", "label"}) and
prints the counts per split and category. Standard library only.
"""
import argparse
import collections
import hashlib
import json
import os
import sys


def entries(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    out, cur = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            out.append("\n".join(cur).strip())
            cur = []
        else:
            cur.append(line.rstrip())
    out.append("\n".join(cur).strip())
    return [e for e in out if e]


def bucket(text):
    # First 8 bytes of SHA-256 as a number in [0, 100).
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 100


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(repo, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=os.path.join(repo, "data", "fortune-categories"))
    ap.add_argument("--categories", nargs="+", default=["computers", "science", "politics", "literature"])
    args = ap.parse_args()

    by_text = collections.defaultdict(set)
    for cat in args.categories:
        path = os.path.join(args.raw, cat)
        if not os.path.isfile(path):
            sys.exit(f"error: {path} does not exist (run scripts/fetch_fortunes.sh)")
        for e in entries(path):
            by_text[e].add(cat)
    splits = {"train": [], "validation": [], "test": []}
    for text in sorted(by_text):
        cats = by_text[text]
        if len(cats) != 1:
            continue
        b = bucket(text)
        split = "train" if b < 70 else "validation" if b < 80 else "test"
        splits[split].append({"text": text, "label": next(iter(cats))})
    os.makedirs(args.out, exist_ok=True)
    for name, rows in splits.items():
        with open(os.path.join(args.out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts = collections.Counter(r["label"] for r in rows)
        print(f"{name:10} {len(rows):5}  " + "  ".join(f"{c} {counts[c]}" for c in args.categories))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

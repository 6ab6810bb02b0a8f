#!/usr/bin/env python3
"""Build a multiple-choice dataset (SWAG layout) from the fortunes corpus: which ending goes
with the start of a fortune?

    python3 scripts/make_fortune_choices.py [--raw data/raw/fortunes] [--out data/fortune-choices]
        [--choices 4] [--categories computers science politics literature]

Each fortune (attribution lines starting with `--` and control characters dropped, white
space collapsed) of 8 to 80
words is cut in two at the sentence or clause boundary (`.`, `;`, `:`, `?`, `!` or `,` ending a
word) nearest its middle, each part at least three words; a fortune with no such boundary is
cut at its middle word. SWAG's fields: `sent1` is the first part, `sent2` the first word of
the second part, and the endings are the rest of the true second part and of `choices - 1`
others, drawn from other fortunes of the same split by a hash, so the task is to tell which
continuation fits (run_swag reads choice i as `sent2 + " " + ending{i}`). The right ending's
position is also fixed by a hash. Exact duplicates are kept once; the split is fixed by a hash
of the fortune, as in make_fortune_categories.py (about 70% train, 10% validation, 20% test).

Writes train.jsonl, validation.jsonl and test.jsonl ({"sent1", "sent2", "ending0", ...,
"label"}) and prints the counts. Standard library only.
"""
import argparse
import hashlib
import json
import os
import sys

BOUNDARY = (".", ";", ":", "?", "!", ",")


def entries(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    out, cur = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            out.append(cur)
            cur = []
        elif not line.strip().startswith("--"):
            cur.append(line)
    out.append(cur)
    # Control characters (a few fortunes ring the terminal bell) are dropped.
    clean = lambda e: " ".join("".join(c for c in " ".join(e) if c.isprintable()).split())
    return [t for t in map(clean, out) if t]


def h(text, salt=""):
    return int.from_bytes(hashlib.sha256((salt + text).encode("utf-8")).digest()[:8], "big")


def cut(words):
    """The index where the second part starts: after the boundary word nearest the middle."""
    mid = len(words) / 2
    cands = [i + 1 for i, w in enumerate(words[:-1]) if w.endswith(BOUNDARY) and 3 <= i + 1 <= len(words) - 3]
    if cands:
        return min(cands, key=lambda i: (abs(i - mid), i))
    return len(words) // 2


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(repo, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=os.path.join(repo, "data", "fortune-choices"))
    ap.add_argument("--choices", type=int, default=4)
    ap.add_argument("--categories", nargs="+", default=["computers", "science", "politics", "literature"])
    args = ap.parse_args()
    if args.choices < 2:
        sys.exit("error: --choices must be at least 2")

    texts = set()
    for cat in args.categories:
        path = os.path.join(args.raw, cat)
        if not os.path.isfile(path):
            sys.exit(f"error: {path} does not exist (run scripts/fetch_fortunes.sh)")
        texts.update(e for e in entries(path) if 8 <= len(e.split()) <= 80)
    splits = {"train": [], "validation": [], "test": []}
    for text in sorted(texts):
        b = h(text) % 100
        split = "train" if b < 70 else "validation" if b < 80 else "test"
        words = text.split()
        i = cut(words)
        splits[split].append((text, " ".join(words[:i]), words[i], " ".join(words[i + 1:])))
    os.makedirs(args.out, exist_ok=True)
    for split, items in splits.items():
        rows = []
        n = len(items)
        if n < args.choices:
            sys.exit(f"error: only {n} fortunes in {split}, fewer than --choices {args.choices}")
        for k, (text, first, head, ending) in enumerate(items):
            # Distractors: the endings of other fortunes of the split, at hashed offsets.
            others, salt = [], 0
            while len(others) < args.choices - 1:
                j = (k + 1 + h(text, f"d{salt}") % (n - 1)) % n
                salt += 1
                cand = items[j][3]
                if j != k and cand != ending and cand not in others:
                    others.append(cand)
            right = h(text, "label") % args.choices
            endings = others[:right] + [ending] + others[right:]
            row = {"sent1": first, "sent2": head}
            row.update({f"ending{e}": x for e, x in enumerate(endings)})
            row["label"] = right
            rows.append(row)
        path = os.path.join(args.out, f"{split}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{split}: {len(rows)} examples of {args.choices} choices -> {path}")


if __name__ == "__main__":
    main()

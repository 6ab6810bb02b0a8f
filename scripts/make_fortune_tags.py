#!/usr/bin/env python3
"""Build a token-classification (NER-style) dataset from the fortunes corpus: tag who said it.

    python3 scripts/make_fortune_tags.py [--raw data/raw/fortunes] [--out data/fortune-tags]
        [--max-words 64]

Many fortunes end with an attribution line, `-- Dave Barry, "Kids Today"` or `-- actress Mary
Pickford, 1925`. Each such fortune becomes one example: its words (split at white space) with
the `--` marker removed, so that the model has to find the attribution from the words alone.
Tags are IOB2:
- `B-PER`/`I-PER`: the capitalised words of the attribution's name part (before its first
  comma; `and`/`&` separate two people, lower-case words such as "actress" are `O`);
- `B-WORK`/`I-WORK`: the words of a quoted title anywhere in the attribution;
- `O`: every other word, the fortune's body included (a name mentioned in the body is `O`:
  the task is the attribution, not every name).
Fortunes whose attribution has more than 16 words, or with more than `--max-words` words, are
left out; exact duplicates (across category files too) are kept once. The split is fixed by a
hash of the text, as in make_fortune_categories.py: about 70% train, 10% validation, 20% test.
Writes train.jsonl, validation.jsonl ({"tokens", "tags"}) and test.conll (word and tag per
line, a blank line between examples), and prints the counts. Standard library only.
"""
import argparse
import collections
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fortune_categories import bucket, entries  # noqa: E402

ATTRIBUTION = re.compile(r"^\s*--\s+(\S.*)$")
SKIP = {"ascii-art", "translate-me"}


def split_attribution(text):
    """(body, attribution) or None: the attribution starts at the last line that begins with
    `-- ` and runs to the end of the entry (it may wrap)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        m = ATTRIBUTION.match(lines[i])
        if m:
            body = "\n".join(lines[:i]).strip()
            attribution = " ".join([m.group(1)] + [l.strip() for l in lines[i + 1:]]).strip()
            return (body, attribution) if body and attribution else None
    return None


def attributed(raw):
    """(category file, fortune, body, attribution) of every fortune in the category files of
    `raw` that ends with an attribution, in file order; a fortune repeated (in the same or
    another file) only the first time."""
    seen = set()
    for name in sorted(os.listdir(raw)):
        path = os.path.join(raw, name)
        if name in SKIP or "." in name or not os.path.isfile(path):
            continue
        for e in entries(path):
            if e in seen:
                continue
            seen.add(e)
            parts = split_attribution(e)
            if parts is not None:
                yield (name, e, *parts)


def tag_attribution(words):
    """IOB2 tags of the attribution's words (see the module's doc)."""
    tags = ["O"] * len(words)
    # Quoted titles: from a word that opens a quote to the word that closes it.
    inside, start = False, None
    for i, w in enumerate(words):
        opens = not inside and w.startswith('"')
        if opens:
            inside, start = True, i
        if inside:
            tags[i] = "B-WORK" if i == start else "I-WORK"
            core = w[1:] if opens else w
            if '"' in core:
                inside = False
    # The name part: up to the first comma or quote, outside quotes.
    prev_per = False
    for i, w in enumerate(words):
        if tags[i] != "O" or w.startswith('"'):
            break
        bare = w.strip(".,;:!?()")
        if bare and (bare[0].isupper() or re.fullmatch(r"[A-Z]\.?([A-Z]\.)*", bare)):
            tags[i] = "I-PER" if prev_per else "B-PER"
            prev_per = True
        else:
            prev_per = False  # "and", "&", "actress", "Sir"'s lower-case neighbours
        if w.endswith(","):
            break
    return tags


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(repo, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=os.path.join(repo, "data", "fortune-tags"))
    ap.add_argument("--max-words", type=int, default=64)
    args = ap.parse_args()
    if not os.path.isdir(args.raw):
        sys.exit(f"error: {args.raw} does not exist (run scripts/fetch_fortunes.sh)")

    examples = []
    for _, e, body, attribution in attributed(args.raw):
        body_words, attr_words = body.split(), attribution.split()
        if len(attr_words) > 16 or len(body_words) + len(attr_words) > args.max_words:
            continue
        tags = ["O"] * len(body_words) + tag_attribution(attr_words)
        if all(t == "O" for t in tags):
            continue
        examples.append((e, body_words + attr_words, tags))

    splits = {"train": [], "validation": [], "test": []}
    for text, words, tags in examples:
        b = bucket(text)
        splits["train" if b < 70 else "validation" if b < 80 else "test"].append((words, tags))
    os.makedirs(args.out, exist_ok=True)
    for name, rows in splits.items():
        if name == "test":
            path = os.path.join(args.out, "test.conll")
            with open(path, "w", encoding="utf-8") as f:
                for words, tags in rows:
                    f.writelines(f"{w}\t{t}\n" for w, t in zip(words, tags))
                    f.write("\n")
        else:
            path = os.path.join(args.out, f"{name}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for words, tags in rows:
                    f.write(json.dumps({"tokens": words, "tags": tags}, ensure_ascii=False) + "\n")
        counts = collections.Counter(t[2:] for _, tags in rows for t in tags if t.startswith("B-"))
        n_words = sum(len(w) for w, _ in rows)
        print(f"{name:10} {len(rows):5} examples {n_words:7} words  PER {counts['PER']:5}  WORK {counts['WORK']:5}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build an extractive question-answering dataset (SQuAD v1.1 style) from the fortunes corpus.

    python3 scripts/make_fortune_qa.py [--raw data/raw/fortunes] [--out data/fortune-qa]
        [--max-words 96]

Many fortunes end with an attribution line, `-- Dave Barry, "Kids Today"`. Each such fortune
becomes one context: its text with white space collapsed to single spaces and the `--` marker
removed, so that the attribution is not announced by punctuation. Its questions, each answered
by a span of the context (found with the rules of make_fortune_tags.py):
- "Who said this?": the name part of the attribution (its capitalised words before the first
  comma; a trailing comma or full stop is not part of the answer);
- "Which work is this from?": a quoted title in the attribution, without its quotes.
A context with neither is left out, as are fortunes with an attribution of more than 16 words
or more than `--max-words` words in all; exact duplicates (across category files too) are kept
once. The split is fixed by a hash of the fortune, as in make_fortune_categories.py (about 70%
train, 10% validation, 20% test), so the questions of one context share a split.

With `--version-2` (default output data/fortune-qa2) the set is SQuAD 2.0's: a context with one
of the two questions answerable also gets the other one, with no answer (an attribution names
no quoted work, or names a work but no person): run_qa's `--version_2_with_negative`.

Writes train.jsonl and validation.jsonl in the layout of Hugging Face datasets' `squad`
({"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}},
answer_start in characters; an unanswerable question has empty lists, as `squad_v2`) and
test.json in the official SQuAD v1.1 layout ({"version", "data": [{"title", "paragraphs":
[{"context", "qas": [...]}]}]}; v2.0 with `"answers": []` and `"is_impossible": true` for an
unanswerable question), and prints the counts.
Standard library only.
"""
import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fortune_categories import bucket  # noqa: E402
from make_fortune_tags import attributed, tag_attribution  # noqa: E402

WHO = "Who said this?"
WORK = "Which work is this from?"


def spans(words, tags, kind):
    """(first, last) word indices of each `kind` entity of IOB2 `tags`, in order."""
    out = []
    for i, t in enumerate(tags):
        if t == f"B-{kind}":
            out.append([i, i])
        elif t == f"I-{kind}" and out and out[-1][1] == i - 1:
            out[-1][1] = i
    return out


def answer(words, starts, first, last, strip):
    """(text, char start) of words first..=last of a context whose words begin at `starts`,
    without the characters `strip` at either end; None when nothing is left."""
    text = " ".join(words[first:last + 1])
    lead = len(text) - len(text.lstrip(strip))
    text = text.strip(strip)
    return (text, starts[first] + lead) if text else None


def qa_json(qid, question, a):
    """One question of the official SQuAD layout; `a` is (text, start), or None (SQuAD 2.0's
    unanswerable question)."""
    if a is None:
        return {"id": qid, "question": question, "answers": [], "is_impossible": True}
    return {"id": qid, "question": question, "answers": [{"text": a[0], "answer_start": a[1]}]}


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(repo, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=None, help="default data/fortune-qa (data/fortune-qa2 with --version-2)")
    ap.add_argument("--max-words", type=int, default=96)
    ap.add_argument("--version-2", action="store_true", help="add SQuAD 2.0 unanswerable questions")
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(repo, "data", "fortune-qa2" if args.version_2 else "fortune-qa")
    if not os.path.isdir(args.raw):
        sys.exit(f"error: {args.raw} does not exist (run scripts/fetch_fortunes.sh)")

    splits = {"train": [], "validation": [], "test": []}
    for name, e, body, attribution in attributed(args.raw):
        body_words, attr_words = body.split(), attribution.split()
        if len(attr_words) > 16 or len(body_words) + len(attr_words) > args.max_words:
            continue
        words = body_words + attr_words
        tags = ["O"] * len(body_words) + tag_attribution(attr_words)
        context = " ".join(words)
        starts, at = [], 0
        for w in words:
            starts.append(at)
            at += len(w) + 1
        key = hashlib.sha1(e.encode("utf-8")).hexdigest()[:12]
        qas = []
        who = spans(words, tags, "PER")
        if who:
            a = answer(words, starts, *who[0], strip=".,;:")
            if a:
                qas.append((f"{key}-who", WHO, a))
        work = spans(words, tags, "WORK")
        if work:
            a = answer(words, starts, *work[0], strip="\".,;: ")
            if a:
                qas.append((f"{key}-work", WORK, a))
        for _, _, (text, start) in qas:
            assert context[start:start + len(text)] == text, (context, text, start)
        if args.version_2 and len(qas) == 1:
            # The other question of the pair, which this context does not answer.
            asked = qas[0][0].rsplit("-", 1)[1]
            qas.append((f"{key}-{'work' if asked == 'who' else 'who'}-none",
                        WORK if asked == "who" else WHO, None))
        if qas:
            b = bucket(e)
            split = "train" if b < 70 else "validation" if b < 80 else "test"
            splits[split].append((name, context, qas))

    os.makedirs(args.out, exist_ok=True)
    for split, rows in splits.items():
        if split == "test":
            path = os.path.join(args.out, "test.json")
            data = [
                {
                    "title": title,
                    "paragraphs": [
                        {
                            "context": context,
                            "qas": [qa_json(i, q, a) for i, q, a in qas],
                        }
                    ],
                }
                for title, context, qas in rows
            ]
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"version": "v2.0" if args.version_2 else "1.1", "data": data}, f, ensure_ascii=False)
        else:
            path = os.path.join(args.out, f"{split}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for title, context, qas in rows:
                    for i, q, a in qas:
                        texts, starts = ([a[0]], [a[1]]) if a else ([], [])
                        rec = {"id": i, "title": title, "context": context, "question": q,
                               "answers": {"text": texts, "answer_start": starts}}
                        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        n_who = sum(1 for _, _, qas in rows for i, _, _ in qas if i.endswith("-who"))
        n_work = sum(1 for _, _, qas in rows for i, _, _ in qas if i.endswith("-work"))
        n_none = sum(1 for _, _, qas in rows for _, _, a in qas if a is None)
        print(f"{split:10} {len(rows):5} contexts {n_who + n_work + n_none:5} questions (who {n_who}, work {n_work}"
              + (f", unanswerable {n_none})" if args.version_2 else ")"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

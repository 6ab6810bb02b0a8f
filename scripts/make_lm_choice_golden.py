#!/usr/bin/env python3
"""Golden files for zero-shot multiple choice (`lantern score --choices`), scored by
transformers the way lm-evaluation-harness scores its `multiple_choice` tasks.

    .venv-ref/bin/python scripts/make_lm_choice_golden.py [--out tests/golden/lm_choice]

Needs the reference venv (scripts/ref_env.sh), data/raw/fortunes (scripts/fetch_fortunes.sh)
and the tiny models of other goldens: tests/golden/sft/model (a Llama and its byte-level BPE
tokenizer) and tests/golden/dpo/gpt2-model (a GPT-2 of the same vocabulary, read with that
tokenizer).

Examples: fortunes cut in two as scripts/make_fortune_choices.py cuts them (its functions),
four endings each, in three layouts holding the same questions: `swag.jsonl` (SWAG's `sent1`,
`sent2`, `ending0..3`), `hellaswag.jsonl` (`ctx`, `endings`) and `generic.csv` (`text`,
`choice0..3`). One example's context is several fortunes long, past the models' 128
positions; another's ends in two spaces, which move to the continuation.

The reference is scripts/lm_choice_torch.py (lm-evaluation-harness's scoring, written from its
description), at the models' 128 positions and at a window of 24.

`expected.json`: per model and window, each example's `loglik`, `tokens` and answers, and the
three accuracies. Every answer's margin over the runner-up is checked to be far above float
rounding, so that an f32 implementation must agree on every answer.
"""
import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lm_choice_torch import accuracies, load, score  # noqa: E402
from make_fortune_choices import cut, entries, h  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EXAMPLES, N_CHOICES = 8, 4
MODELS = {
    "llama": os.path.join(REPO, "tests", "golden", "sft", "model"),
    "gpt2": os.path.join(REPO, "tests", "golden", "dpo", "gpt2-model"),
}
TOKENIZER = os.path.join(REPO, "tests", "golden", "sft", "model", "tokenizer.json")
WINDOWS = [None, 24]  # None: the model's 128 positions


def questions(raw):
    """(context parts, endings, label) of N_EXAMPLES fortunes of `science` and `work`."""
    texts = []
    for cat in ["science", "work"]:
        texts += [e for e in entries(os.path.join(raw, cat)) if 8 <= len(e.split()) <= 40]
    texts = sorted(set(texts), key=lambda t: h(t, "golden"))[: N_EXAMPLES + 12]
    out = []
    for i, text in enumerate(texts[:N_EXAMPLES]):
        words = text.split()
        k = cut(words)
        first, rest = " ".join(words[:k]), words[k:]
        others = [t.split() for t in texts if t != text]
        endings = [" ".join(rest[1:])] + [" ".join(o[cut(o) + 1:]) for o in others[i: i + N_CHOICES - 1]]
        label = h(text, "label") % N_CHOICES
        endings[0], endings[label] = endings[label], endings[0]
        out.append((first, rest[0], endings, label))
    # A context of several fortunes: longer than 128 tokens.
    first, head, endings, label = out[-1]
    out[-1] = (" ".join(texts[N_EXAMPLES:]) + " " + first, head, endings, label)
    # A context ending in spaces: the harness moves them to the continuation.
    first, head, endings, label = out[1]
    out[1] = (first, head + "  ", endings, label)
    return out


def write_layouts(out, qs):
    with open(os.path.join(out, "swag.jsonl"), "w") as f:
        for first, head, endings, label in qs:
            rec = {"sent1": first, "sent2": head, **{f"ending{i}": e for i, e in enumerate(endings)}, "label": label}
            f.write(json.dumps(rec) + "\n")
    with open(os.path.join(out, "hellaswag.jsonl"), "w") as f:
        for i, (first, head, endings, label) in enumerate(qs):
            f.write(json.dumps({"ind": i, "ctx": f"{first} {head}", "endings": endings, "label": label}) + "\n")
    with open(os.path.join(out, "generic.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"] + [f"choice{i}" for i in range(N_CHOICES)] + ["label"])
        for first, head, endings, label in qs:
            w.writerow([f"{first} {head}"] + endings + [label])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(REPO, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "lm_choice"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    qs = questions(args.raw)
    write_layouts(args.out, qs)
    records = [(f"{first} {head}", endings, label) for first, head, endings, label in qs]
    labels = [label for _, _, label in records]
    expected = {"labels": labels, "models": {}}
    for name, path in MODELS.items():
        model, tok = load(path, TOKENIZER)
        for window in WINDOWS:
            w = window or model.config.max_position_embeddings
            examples, m = score(model, tok, records, w)
            assert m > 1e-3, f"{name} window {w}: an answer's margin is {m}"
            acc = accuracies(examples, labels)
            expected["models"][f"{name}-{window or 'full'}"] = {
                "max_length": window, "examples": examples, **acc, "min_margin": m}
            print(f"{name} window {w}: {acc}, smallest margin {m:.4f}")
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

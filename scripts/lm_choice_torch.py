#!/usr/bin/env python3
"""Zero-shot multiple choice of a causal LM, computed with transformers: the reference for
`lantern score --choices` (docs/training.md).

    .venv-ref/bin/python scripts/lm_choice_torch.py --model HF_FOLDER --choices FILE \
        [--max-length L] [--out preds.jsonl]

Scored as lm-evaluation-harness 0.4 scores its `multiple_choice` tasks (`_encode_pair`,
`_loglikelihood_tokens`, `process_results`), written here from its description: the
continuation is `" " + choice`; trailing white space of the context moves to it; the whole and
the context are encoded without special tokens, the continuation's tokens being the whole's
past the context's; the model reads `(context + continuation)[-(L + 1):][:-1]` (L the model's
positions, or --max-length) and the choice's log-likelihood is the sum of its tokens'
log-softmax. Answers: the argmax of the log-likelihood (`acc`), of it over the choice's
characters (`acc_norm`), of it over the continuation's tokens (`acc_per_token`, llm.c's
HellaSwag `acc_norm`); ties to the first. fp32 on the CPU.

Records (JSONL or CSV, the layouts `lantern score --choices` reads): SWAG's `sent1`, `sent2`,
`ending0..` (context `sent1 + " " + sent2`), HellaSwag's `ctx`, `endings`, or `text` and a
`choices` list (CSV: `choice0..` columns); the right choice under `label`.

Prints one JSON object: examples, acc, acc_norm, acc_per_token; --out writes each example's
`loglik`, `tokens` and answers, one JSON object a line.
"""
import argparse
import csv
import json
import os

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

KINDS = ["acc", "acc_norm", "acc_per_token"]


def read_records(path):
    """(context, choices, label) of each record."""
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            n = sum(1 for k in r if k.startswith("choice"))
            r["choices"] = [r.pop(f"choice{i}") for i in range(n)]
    else:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    out = []
    for r in rows:
        if "sent1" in r:
            n = sum(1 for k in r if k.startswith("ending"))
            out.append((f"{r['sent1']} {r['sent2']}", [r[f"ending{i}"] for i in range(n)], r.get("label")))
        elif "ctx" in r and "endings" in r:
            out.append((r["ctx"], r["endings"], r.get("label")))
        else:
            out.append((r["text"], r["choices"], r.get("label")))
    return [(c, ch, None if l in (None, "") else int(l)) for c, ch, l in out]


def encode_pair(tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def margin(xs):
    s = sorted(xs, reverse=True)
    return s[0] - s[1]


@torch.no_grad()
def score(model, tok, records, window):
    """Each record's log-likelihoods, token counts and answers, and the smallest margin of an
    answer over the runner-up."""
    examples, min_margin = [], float("inf")
    for context, choices, _ in records:
        ll, ntok = [], []
        for c in choices:
            ctx, cont = encode_pair(tok, context, " " + c)
            inp = torch.tensor((ctx + cont)[-(window + 1):][:-1])
            logp = F.log_softmax(model(inp[None]).logits[0].float(), dim=-1)
            picked = logp[len(inp) - len(cont):].gather(1, torch.tensor(cont)[:, None])
            ll.append(picked.sum().item())
            ntok.append(len(cont))
        norm = [x / len(c) for x, c in zip(ll, choices)]
        per_tok = [x / n for x, n in zip(ll, ntok)]
        min_margin = min(min_margin, margin(ll), margin(norm), margin(per_tok))
        examples.append({"loglik": ll, "tokens": ntok, "acc": argmax(ll), "acc_norm": argmax(norm),
                         "acc_per_token": argmax(per_tok)})
    return examples, min_margin


def accuracies(examples, labels):
    return {k: sum(e[k] == l for e, l in zip(examples, labels)) / len(labels) for k in KINDS}


def load(folder, tokenizer=None):
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer or os.path.join(folder, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--choices", required=True)
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    model, tok = load(args.model)
    records = read_records(args.choices)
    window = args.max_length or model.config.max_position_embeddings
    examples, m = score(model, tok, records, window)
    labels = [l for _, _, l in records]
    print(json.dumps({"examples": len(records), **accuracies(examples, labels), "min_margin": m}))
    if args.out:
        with open(args.out, "w") as f:
            for e, l in zip(examples, labels):
                f.write(json.dumps({**e, "label": l}) + "\n")


if __name__ == "__main__":
    main()

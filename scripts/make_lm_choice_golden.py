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

The reference, written here after lm-evaluation-harness 0.4 (`_encode_pair`,
`_loglikelihood_tokens`, `process_results` of `multiple_choice`): the continuation is
`" " + choice`; trailing white space of the context moves to it; the whole and the context are
encoded without special tokens, the continuation's tokens being the whole's past the
context's; the model reads `(context + continuation)[-(L + 1):][:-1]` (L its window, or
`max_length`) and the choice's log-likelihood is the sum of its tokens' log-softmax; answers
are the argmax of the log-likelihood (`acc`), of it over the choice's characters
(`acc_norm`) and of it over the continuation's tokens (`acc_per_token`, llm.c's HellaSwag
`acc_norm`). fp32 on the CPU.

`expected.json`: per model and window, each example's `loglik`, `tokens` and answers, and the
three accuracies. Every answer's margin over the runner-up is checked to be far above float
rounding, so that an f32 implementation must agree on every answer.
"""
import argparse
import csv
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
def score(model, tok, contexts, endings_of, window):
    examples, min_margin = [], float("inf")
    for context, endings in zip(contexts, endings_of):
        ll, ntok = [], []
        for e in endings:
            ctx, cont = encode_pair(tok, context, " " + e)
            inp = torch.tensor((ctx + cont)[-(window + 1):][:-1])
            logp = F.log_softmax(model(inp[None]).logits[0].float(), dim=-1)
            picked = logp[len(inp) - len(cont):].gather(1, torch.tensor(cont)[:, None])
            ll.append(picked.sum().item())
            ntok.append(len(cont))
        norm = [x / len(e) for x, e in zip(ll, endings)]
        per_tok = [x / n for x, n in zip(ll, ntok)]
        min_margin = min(min_margin, margin(ll), margin(norm), margin(per_tok))
        examples.append({"loglik": ll, "tokens": ntok, "acc": argmax(ll), "acc_norm": argmax(norm),
                         "acc_per_token": argmax(per_tok)})
    return examples, min_margin


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(REPO, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "lm_choice"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    qs = questions(args.raw)
    write_layouts(args.out, qs)
    tok = PreTrainedTokenizerFast(tokenizer_file=TOKENIZER)
    contexts = [f"{first} {head}" for first, head, _, _ in qs]
    endings_of = [endings for _, _, endings, _ in qs]
    labels = [label for _, _, _, label in qs]
    expected = {"labels": labels, "models": {}}
    for name, path in MODELS.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        for window in WINDOWS:
            w = window or model.config.max_position_embeddings
            examples, m = score(model, tok, contexts, endings_of, w)
            assert m > 1e-3, f"{name} window {w}: an answer's margin is {m}"
            acc = {k: sum(e[k] == l for e, l in zip(examples, labels)) / len(labels)
                   for k in ["acc", "acc_norm", "acc_per_token"]}
            expected["models"][f"{name}-{window or 'full'}"] = {
                "max_length": window, "examples": examples, **acc, "min_margin": m}
            print(f"{name} window {w}: {acc}, smallest margin {m:.4f}")
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

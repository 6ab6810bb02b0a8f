#!/usr/bin/env python3
"""Write tests/golden/perplexity/: a short real text, a character tokenizer for
tests/golden/gpt2_tiny (vocabulary 96, context 32), and the sliding-window perplexity that
scripts/perplexity_torch.py computes with transformers for several window settings. Read by
crates/cli/tests/perplexity_cli.rs, which runs `lantern score --file ... --json` on the same
model and text.

    .venv-ref/bin/python scripts/make_perplexity_golden.py [--fortunes data/raw/fortunes/science]

Files written:
    tokenizer.json  -- 96 tokens, one a character: "\\n" is 0, " " to "~" (ASCII 32..126) are
                       1..95; a BPE model without merges, no normaliser or pre-tokeniser
    text.txt        -- the first fortunes of --fortunes made only of those characters, joined
                       with "\\n\\n" (as the guide joins its test set), up to 600 bytes
    expected.json   -- per (max_length, stride): tokens_scored, windows, nll_sum, mean_nll,
                       perplexity, bits_per_byte, and the guide's own guide_mean_nll
"""
import argparse
import json
import math
import os
import sys

from tokenizers import Tokenizer, models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perplexity_torch import encode, load_model, sliding_nll  # noqa: E402

ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
MAX_BYTES = 600
# (max_length, stride); None = the command's default (the model's context, and stride = length).
CASES = [(None, None), (32, 8), (32, 31), (16, 5), (7, 7), (4, 4), (2, 1)]


def pick_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        fortunes = [x.strip("\n") for x in f.read().split("\n%\n")]
    picked = []
    for x in fortunes:
        if not x or any(c not in ALPHABET for c in x):
            continue
        if len("\n\n".join(picked + [x])) > MAX_BYTES:
            break
        picked.append(x)
    return "\n\n".join(picked)


def main() -> int:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fortunes", default=os.path.join(repo, "data", "raw", "fortunes", "science"))
    ap.add_argument("--model", default=os.path.join(repo, "tests", "golden", "gpt2_tiny"))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "perplexity"))
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    vocab = {c: i for i, c in enumerate(ALPHABET)}
    assert len(vocab) == 96
    Tokenizer(models.BPE(vocab=vocab, merges=[])).save(os.path.join(args.out, "tokenizer.json"))
    text = pick_text(args.fortunes)
    with open(os.path.join(args.out, "text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)

    # The folder perplexity_torch.py reads: the tiny model with this tokenizer.
    ids = encode(args.out, text)
    assert ids == [vocab[c] for c in text], "the tokenizer is not one token a character"
    model = load_model(args.model)
    context = model.config.n_positions
    n = len(ids)
    cases = []
    for max_length, stride in CASES:
        length = max_length or context
        s = stride or length
        r = sliding_nll(model, ids, length, s)
        last_begin = next(b for b in range(0, n, s) if b + length >= n)
        r.update(
            max_length=max_length,
            stride=stride,
            bits_per_byte=r["nll_sum"] / math.log(2) / len(text.encode()),
            last_window=n - last_begin,
        )
        cases.append(r)
        print(
            f"L {length} S {s}: {r['tokens_scored']} tokens in {r['windows']} windows (last "
            f"{r['last_window']} tokens), mean NLL {r['mean_nll']:.6f}, guide's {r['guide_mean_nll']:.6f}"
        )
    # What the cases must cover.
    assert any(c["stride"] and c["stride"] < c["max_length"] for c in cases), "S < L"
    assert any(c["last_window"] < (c["max_length"] or context) for c in cases), "a shorter last window"
    assert cases[0]["tokens_scored"] < n - 1, "S = L skips the first token of every later window"
    assert any(c["last_window"] == 1 for c in cases), "S = L and a last window of one token, skipped"
    assert all(c["tokens_scored"] == n - 1 for c in cases if c["stride"] and c["stride"] < c["max_length"])

    out = {
        "model": "tests/golden/gpt2_tiny",
        "tokenizer": "tokenizer.json",
        "text": "text.txt",
        "bytes": len(text.encode()),
        "input_tokens": n,
        "cases": cases,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {n} tokens, {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Perplexity of a GPT-2 on a text file by sliding windows, computed with transformers: the
reference for `lantern score --file` (docs/training.md).

    .venv-ref/bin/python scripts/perplexity_torch.py --model HF_FOLDER --file F \
        [--max-length L] [--stride S] [--device cpu]

The loop is the one of Hugging Face's guide "Perplexity of fixed-length models"
(https://huggingface.co/docs/transformers/perplexity): windows start at 0, S, 2S, ..., hold
tokens [begin, min(begin + L, N)), label only the tokens past the previous window's end
(`target_ids[:, :-trg_len] = -100`), and stop at the first window that reaches the end. What
differs is the sum: the guide adds `loss * (num_valid_tokens - batch_size)`, which counts a
window after the first one token short when S < L (it scores S tokens and its loss is their
mean); here each scored token's NLL is taken from the logits and summed in float64, and the
total is divided by the number of tokens scored. A window with no token to score (S = L and a
last window of one token: the guide's loss is NaN there) is skipped.

The file is read as UTF-8 and tokenised whole with the folder's tokenizer.json (no special
tokens), as the guide tokenises its joined text. Prints one JSON object: tokens_scored,
windows, nll_sum, mean_nll, perplexity, bytes, bits_per_byte (nll_sum / ln 2 / bytes),
input_tokens, max_length, stride, and guide_mean_nll / guide_perplexity, the guide's own
figures with its count.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel


def encode(folder: str, text: str) -> list:
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    return tok.encode(text, add_special_tokens=False).ids


def check(n_tokens: int, max_length: int, stride: int, context: int) -> None:
    """The same refusals as `lantern score`."""
    if stride < 1:
        raise SystemExit(f"--stride {stride}: must be at least 1")
    if max_length < 2:
        raise SystemExit(f"--max-length {max_length}: a window needs at least 2 tokens")
    if stride > max_length:
        raise SystemExit(f"--stride {stride} is larger than --max-length {max_length}")
    if max_length > context:
        raise SystemExit(f"--max-length {max_length} is larger than the model's context {context}")
    if n_tokens < 2:
        raise SystemExit(f"{n_tokens} token(s): at least 2 are needed")


def sliding_nll(model, ids: list, max_length: int, stride: int, device: str = "cpu") -> dict:
    """The guide's loop with the exact per-token sum; also the guide's own figure."""
    encodings = torch.tensor([ids], dtype=torch.long)
    seq_len = encodings.size(1)
    nll_sum, tokens, windows = 0.0, 0, 0
    guide_sum, guide_count = 0.0, 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on the last loop
        input_ids = encodings[:, begin_loc:end_loc].to(device)
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        # The model shifts the labels: position p's logits predict label p + 1.
        labels = target_ids[0, 1:]
        valid = labels != -100
        k = int(valid.sum())
        if k > 0:
            with torch.no_grad():
                out = model(input_ids, labels=target_ids)
            logits = out.logits[0, :-1].float()
            nll = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
            s = nll[valid].double().sum().item()
            # transformers' own loss is the mean over the same tokens.
            assert abs(out.loss.item() - s / k) <= 1e-5 * max(1.0, s / k), (out.loss.item(), s / k)
            nll_sum += s
            tokens += k
            windows += 1
            # The guide: num_valid_tokens - batch_size tokens of weight.
            num_loss_tokens = int((target_ids != -100).sum()) - target_ids.size(0)
            guide_sum += out.loss.item() * num_loss_tokens
            guide_count += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return {
        "tokens_scored": tokens,
        "windows": windows,
        "nll_sum": nll_sum,
        "mean_nll": nll_sum / tokens,
        "perplexity": math.exp(nll_sum / tokens),
        "guide_mean_nll": guide_sum / guide_count,
        "guide_perplexity": math.exp(guide_sum / guide_count),
    }


def load_model(folder: str, device: str = "cpu"):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).to(device)
    model.eval()
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a GPT-2 folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--file", required=True)
    ap.add_argument("--max-length", type=int, help="tokens per window (default: n_positions)")
    ap.add_argument("--stride", type=int, help="default: --max-length")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    with open(args.file, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    ids = encode(args.model, text)
    model = load_model(args.model, args.device)
    max_length = args.max_length or model.config.n_positions
    stride = args.stride or max_length
    check(len(ids), max_length, stride, model.config.n_positions)
    r = sliding_nll(model, ids, max_length, stride, args.device)
    r.update(
        bytes=len(raw),
        bits_per_byte=r["nll_sum"] / math.log(2) / len(raw),
        input_tokens=len(ids),
        max_length=max_length,
        stride=stride,
    )
    json.dump(r, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

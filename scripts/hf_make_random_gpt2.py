#!/usr/bin/env python3
"""Save a random transformers GPT2LMHeadModel plus tokens and expected outputs, for the
"transformers -> Lantern" direction check (Lantern loads DIR and must reproduce the outputs).

    .venv-ref/bin/python scripts/hf_make_random_gpt2.py --out DIR \
        [--n-layer 2 --n-embd 64 --n-head 4 --vocab 128 --n-positions 64 --seed 0]

DIR gets: config.json + model.safetensors (save_pretrained, safetensors), tokens.json
({"input_ids": [[...], ...]}, B=--batch, T=--seq-len) and expected.safetensors (float32
`logits` [B,T,V], `loss` [] = transformers' loss with labels=input_ids, i.e. the mean
next-token CE over B*(T-1) positions).

Every parameter (LayerNorm and biases included) is re-drawn from N(0, --init-std) so that a
wrong mapping of any tensor shows; pass --init-std 0 to keep transformers' own init.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=128)
    ap.add_argument("--n-positions", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--init-std", type=float, default=0.2)
    ap.add_argument("--untied", action="store_true", help="tie_word_embeddings=False")
    args = ap.parse_args()
    if args.seq_len > args.n_positions:
        ap.error("--seq-len must be <= --n-positions")

    config = GPT2Config(
        vocab_size=args.vocab,
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=not args.untied,
    )
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    if args.init_std > 0:
        torch.manual_seed(args.seed)
        with torch.no_grad():
            for _, p in model.named_parameters():
                p.normal_(mean=0.0, std=args.init_std)
    model.eval()

    g = torch.Generator().manual_seed(args.seed + 1)
    input_ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=input_ids)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "tokens.json"), "w") as f:
        json.dump({"input_ids": input_ids.tolist()}, f)
        f.write("\n")
    save_file(
        {
            "logits": out.logits.detach().to(torch.float32).contiguous(),
            "loss": out.loss.detach().to(torch.float32).reshape(()).contiguous(),
        },
        os.path.join(args.out, "expected.safetensors"),
    )
    print(f"loss = {out.loss.item():.6f}", file=sys.stderr)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

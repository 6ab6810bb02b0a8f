#!/usr/bin/env python3
"""Check a Lantern-produced GPT-2 or Llama export against live transformers.

    .venv-ref/bin/python scripts/hf_parity.py --model DIR --tokens tokens.json \
        --ours ours.safetensors [--tol 1e-4]

--model   HF folder (config.json + model.safetensors) written by Lantern
--tokens  json {"input_ids": [[...], ...]}
--ours    safetensors with float32 `logits` [B,T,V] and `loss` [] that Lantern computed on
          those tokens (loss = mean next-token CE over the B*(T-1) positions)

Loads AutoModelForCausalLM.from_pretrained(DIR) (GPT2LMHeadModel or LlamaForCausalLM, by its
config.json) in fp32 eval mode, runs it with
labels=input_ids, prints the max abs difference of the logits and the abs difference of the
loss, and exits 1 if either is over --tol (0 otherwise). Exits 2 when the export does not load
cleanly (any missing/unexpected/mismatched tensor: from_pretrained would otherwise silently
re-initialise a missing one) or the shapes/keys of --ours are wrong.
"""
import argparse
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    with open(args.tokens) as f:
        input_ids = torch.tensor(json.load(f)["input_ids"], dtype=torch.long)
    if input_ids.dim() != 2:
        print(f"error: input_ids must be [B,T], got {list(input_ids.shape)}", file=sys.stderr)
        return 2

    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=torch.float32, output_loading_info=True
        )
    except Exception as e:  # bad config, shape mismatch, unreadable safetensors, ...
        print(f"error: transformers could not load {args.model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    # from_pretrained silently re-initialises missing tensors: treat any such key as a failure.
    bad = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if any(bad.values()):
        print(f"error: loading {args.model} was not clean: {bad}", file=sys.stderr)
        return 2
    model.eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=input_ids)
    ref_logits = out.logits.to(torch.float32)
    ref_loss = out.loss.to(torch.float32)

    ours = load_file(args.ours)
    for key in ("logits", "loss"):
        if key not in ours:
            print(f"error: {args.ours} has no tensor `{key}` (has {sorted(ours)})", file=sys.stderr)
            return 2
    our_logits = ours["logits"].to(torch.float32)
    our_loss = ours["loss"].to(torch.float32).reshape(())
    if our_logits.shape != ref_logits.shape:
        print(f"error: logits shape ours {list(our_logits.shape)} vs transformers {list(ref_logits.shape)}",
              file=sys.stderr)
        return 2

    logits_diff = (our_logits - ref_logits).abs().max().item()
    loss_diff = (our_loss - ref_loss).abs().item()
    ok = logits_diff <= args.tol and loss_diff <= args.tol
    print(f"{type(model).__name__}: B,T,V = {list(ref_logits.shape)}")
    print(f"loss: ours {our_loss.item():.6f} transformers {ref_loss.item():.6f}")
    print(f"max_abs_diff_logits {logits_diff:.3e}")
    print(f"abs_diff_loss {loss_diff:.3e}")
    print(f"tol {args.tol:.1e} -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

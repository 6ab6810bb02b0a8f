#!/usr/bin/env python3
"""Write tests/golden/gpt2_tiny/: a tiny GPT-2 made by transformers itself, plus its
inputs and expected outputs, for the Rust parity tests.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_golden.py [--out tests/golden/gpt2_tiny]

Files written:
    config.json, model.safetensors   -- GPT2LMHeadModel.save_pretrained(safe_serialization=True)
    inputs.json                      -- {"input_ids": [[16 ints], [16 ints]]}
    expected.safetensors             -- float32 `logits` [2,16,96], `loss` []
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

SEED = 1234
INPUT_SEED = 4321
B, T = 2, 16
INIT_STD = 0.2


def tiny_gpt2_config(**extra):
    """The tiny GPT-2 of the golden files: vocabulary 96, context 32, 2 layers of width 32 with
    4 heads, no dropout; `extra` adds keys (labels, special ids)."""
    return GPT2Config(
        vocab_size=96,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        **extra,
    )


def randomised(cls, config):
    """`cls(config)` built under seed SEED, then every parameter (LayerNorm weights and biases,
    all biases and heads included) redrawn from N(0, INIT_STD) under seed SEED again, so that
    nothing is trivially 0 or 1 and a mix-up of tensors shows in the outputs."""
    torch.manual_seed(SEED)
    model = cls(config)
    torch.manual_seed(SEED)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.normal_(mean=0.0, std=INIT_STD)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "gpt2_tiny"))
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    config = tiny_gpt2_config()
    model = randomised(GPT2LMHeadModel, config)  # the tied lm_head/wte is drawn once
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head not tied"
    model.eval()

    g = torch.Generator().manual_seed(INPUT_SEED)
    input_ids = torch.randint(0, config.vocab_size, (B, T), generator=g, dtype=torch.long)

    with torch.no_grad():
        out = model(input_ids=input_ids, labels=input_ids)
    logits = out.logits.detach().to(torch.float32).contiguous()
    loss = out.loss.detach().to(torch.float32).reshape(()).contiguous()

    # Independent check of the loss convention: mean CE over the B*(T-1) shifted positions.
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1, :].reshape(-1, config.vocab_size), input_ids[:, 1:].reshape(-1)
    )
    assert abs(manual.item() - loss.item()) < 1e-6, (manual.item(), loss.item())

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump({"input_ids": input_ids.tolist()}, f)
        f.write("\n")
    save_file({"logits": logits, "loss": loss}, os.path.join(args.out, "expected.safetensors"))

    # Report what was written.
    from safetensors import safe_open

    for name in ("model.safetensors", "expected.safetensors"):
        path = os.path.join(args.out, name)
        with safe_open(path, framework="pt") as f:
            print(f"{name} ({os.path.getsize(path)} bytes):", file=sys.stderr)
            for k in sorted(f.keys()):
                t = f.get_tensor(k)
                print(f"  {k}: {str(t.dtype).replace('torch.', '')} {list(t.shape)}", file=sys.stderr)
    print(f"loss = {loss.item():.6f}", file=sys.stderr)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

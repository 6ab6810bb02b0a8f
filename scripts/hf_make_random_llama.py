#!/usr/bin/env python3
"""Save a freshly initialised transformers LlamaForCausalLM, MistralForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM (gemma3_text), Gemma2ForCausalLM,
GemmaForCausalLM, Olmo2ForCausalLM, SmolLM3ForCausalLM (a NoPE layer every 2) or Phi3ForCausalLM
folder (transformers' own init), for checks that start from a Hugging Face
model of the Llama family rather than one Lantern pretrained:

    .venv-ref/bin/python scripts/hf_make_random_llama.py --family qwen2 --out DIR \
        --tokenizer data/tokenizer.json [--vocab 512 --hidden 64 --layers 2 --heads 4 \
        --kv-heads 2 --intermediate 160 --positions 64 --sliding-window 16 --seed 0]

DIR gets config.json and model.safetensors (save_pretrained) and a copy of --tokenizer as
tokenizer.json; for Qwen2 and Qwen3, the tokenizer is instead Qwen2Tokenizer built from --tokenizer's
vocabulary and merges (Qwen's pre-tokenizer: digits one by one, NFC), saved with its
tokenizer_config.json: transformers' AutoTokenizer rebuilds that pipeline for any qwen2 folder
whatever its tokenizer.json says (qwen3 folders too), so a real Qwen folder always has it. Prepare the training
text with DIR/tokenizer.json (`lantern prepare --tokenizer`). Qwen2 gets its q/k/v biases (drawn N(0, 0.02) rather than transformers' zeros,
so that a reader that drops them fails); Mistral gets --sliding-window (default 16, shorter
than --positions, so that the window matters); Qwen3 gets heads twice as wide as hidden /
heads (--head-dim), so that q_proj is wider than the model.
"""
import argparse
import json
import os
import shutil
import sys

import torch

# The Llama family's (config class, model class) by model_type, as the golden files use them.
from make_llama_golden import FAMILIES


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FAMILIES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json to copy into the folder")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=160)
    ap.add_argument("--positions", type=int, default=64)
    ap.add_argument("--sliding-window", type=int, default=16, help="Mistral, Gemma 3, Phi-3")
    ap.add_argument("--head-dim", type=int, default=None,
                    help="the heads' width (default: hidden / heads; Qwen3: twice that)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    config_class, model_class = FAMILIES[args.family]
    extra = ({"sliding_window": args.sliding_window} if args.family in ("mistral", "phi3")
             else {})
    if args.family in ("gemma3_text", "gemma2"):
        # Sliding and full layers alternating, the window shorter than --positions; no
        # padding id of Gemma's own (the tokenizer's end-of-text pads). Gemma 2 keeps its
        # config's soft caps (50 on the scores, 30 on the logits).
        extra = {"sliding_window": args.sliding_window,
                 "query_pre_attn_scalar": 2 * args.hidden // args.heads, "pad_token_id": None}
        if args.family == "gemma3_text":
            extra["sliding_window_pattern"] = 2
    wide = args.family in ("qwen3", "gemma3_text", "gemma2")
    head_dim = args.head_dim or (2 if wide else 1) * args.hidden // args.heads
    # Qwen2Config, Phi3Config, Olmo2Config and SmolLM3Config have no head_dim key (hidden /
    # heads).
    if args.family not in ("qwen2", "phi3", "olmo2", "smollm3") or args.head_dim:
        extra["head_dim"] = head_dim
    extra.setdefault("pad_token_id", None)
    if args.family == "gemma":
        extra["hidden_act"] = "gelu_pytorch_tanh"
    if args.family == "smollm3":
        # A NoPE layer every second one, so that a 2-layer model has one.
        extra["no_rope_layer_interval"] = 2
    config = config_class(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=args.positions,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, **extra)
    torch.manual_seed(args.seed)
    model = model_class(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.02)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    gen = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    if args.family in ("qwen2", "qwen3"):
        from transformers import Qwen2Tokenizer
        bpe = json.load(open(args.tokenizer))["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
        Qwen2Tokenizer(vocab=bpe["vocab"], merges=merges).save_pretrained(args.out)
    else:
        shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
    n = sum(p.numel() for p in model.parameters())
    print(f"{model_class.__name__}: {n} parameters", file=sys.stderr)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

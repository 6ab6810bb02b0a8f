#!/usr/bin/env python3
"""Write a ModernBertForMaskedLM folder with random weights (transformers' own initialisation,
seed 0) and a given BERT folder's WordPiece tokenizer: a stand-in for a pretrained ModernBERT
where none can be downloaded, to time and compare fine-tuning (scripts/finetune_compare.sh
MODEL=...). Its scores mean nothing; both sides start from the same weights.

    .venv-ref/bin/python scripts/make_random_modernbert.py --tokenizer-from DIR --out DIR

The network is ModernBERT-base's shape at MiniLM's size: 6 layers, 384 wide, 6 heads of 64,
intermediate 576 (ModernBERT-base's 1.5 × the width), full attention every third layer, a
local window of 128, 512 positions. The tokenizer keeps input ids and the attention mask only
(ModernBERT takes no token types).
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer-from", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer_from)
    tok.model_input_names = ["input_ids", "attention_mask"]
    cfg = ModernBertConfig(vocab_size=len(tok), hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                           intermediate_size=576, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                           cls_token_id=tok.cls_token_id, bos_token_id=tok.cls_token_id,
                           sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    ModernBertForMaskedLM(cfg).save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

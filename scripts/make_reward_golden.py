#!/usr/bin/env python3
"""Golden files for reward modeling, written by TRL's RewardTrainer itself.

    .venv-ref/bin/python scripts/make_reward_golden.py [--out tests/golden/reward]

Needs the reference venv (scripts/ref_env.sh: torch, transformers, trl, datasets) and the SFT
and DPO goldens (tests/golden/sft/model: the tiny Llama and its tokenizer; tests/golden/dpo:
the preference records, read from there).

`<out>/model/`: the SFT golden's Llama as a `LlamaForSequenceClassification` with one label
(`num_labels=1`, the reward), its `score` head drawn from N(0, 0.2) after
`torch.manual_seed(1234)` (so that both sides start from the same head); no tokenizer files:
both read the SFT golden's. `<out>/gpt2-model/`: the DPO golden's GPT-2 (dropout 0.1 in its
config) made the same way, a `GPT2ForSequenceClassification`. For each layout, `<out>/<layout>/`:
- `train.jsonl`, `validation.jsonl`: the DPO golden's preferences of the layout named in
  `LAYOUTS` (12 / 6), with a `margin` column in `text-margin`;
- `expected.json`: the examples RewardTrainer prepared (`chosen_ids`, `rejected_ids`, and
  `margin`: EOS appended to text completions, prompt + completion tokenized with special
  tokens; conversations rendered by the chat template whole; examples longer than
  `max_length` dropped), then `eval_loss`, `eval_accuracy` and `eval_margin` before and after
  each of 6 optimizer steps on all preferences as one batch (AdamW, constant learning rate
  3e-2, no weight decay, clipping at 1.0, fp32 on the CPU, dropout disabled as TRL does by
  default), and the loss logged at each step; `reward_args`, the RewardConfig settings beyond
  that recipe.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trl_golden import evaluate_and_train, prepared_examples, recipe  # noqa: E402

MAX_LENGTH, STEPS, LR = 64, 6, 3e-2
# layout: (the DPO golden's layout whose records it reads, RewardConfig settings beyond the
# recipe; "margin": give each record a margin column)
LAYOUTS = {
    "text": ("text", {}),
    "text-implicit": ("text-implicit", {}),
    "conversational": ("conversational", {}),
    "implicit": ("implicit", {}),
    "text-margin": ("text", {"margin": True}),
    "text-center": ("text", {"center_rewards_coefficient": 0.05}),
    # Conversations longer than 56 tokens are dropped (TRL filters, it does not truncate).
    "conversational-short": ("conversational", {"max_length": 56}),
    # A GPT-2 whose config has dropout 0.1 (the DPO golden's), with a head of its own:
    # RewardConfig's disable_dropout (default True) trains it without. Not a RewardConfig
    # setting: the model's folder, relative to --out.
    "text-gpt2": ("text", {"model": "gpt2-model"}),
}


def make_model(sft_dir, out):
    """`sft_dir`'s model as a sequence classifier with one output, its head drawn from
    N(0, 0.2) after torch.manual_seed(1234), padding with the end-of-sequence id."""
    model = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1,
                                                               dtype=torch.float32)
    torch.manual_seed(1234)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.2)
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(out, safe_serialization=True)


def records(repo, source, split, margin):
    with open(os.path.join(repo, "tests", "golden", "dpo", source, f"{split}.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if margin:
        # Deterministic margins, some zero, one negative.
        for i, r in enumerate(rows):
            r["margin"] = [0.0, 0.5, 1.25, -0.25][i % 4]
    return rows


def run(model_dir, tokenizer_dir, layout_dir, train, val, reward_args):
    if "model" in reward_args:
        model_dir = os.path.join(os.path.dirname(layout_dir), reward_args["model"])
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    config_args = {"max_length": MAX_LENGTH,
                   **{k: v for k, v in reward_args.items() if k not in ("margin", "model")}}
    with tempfile.TemporaryDirectory() as tmp:
        args = RewardConfig(
            output_dir=tmp, **config_args,
            per_device_train_batch_size=len(train), per_device_eval_batch_size=len(val),
            **recipe(STEPS, LR))
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                                train_dataset=Dataset.from_list(train),
                                eval_dataset=Dataset.from_list(val))
        keep = ("chosen_ids", "rejected_ids", "margin")
        prepared = prepared_examples(trainer, keep)
        evals, train_losses = evaluate_and_train(trainer, STEPS)
    out = {**prepared, "eval_loss": [e["eval_loss"] for e in evals],
           "eval_accuracy": [e["eval_accuracy"] for e in evals],
           "eval_margin": [e["eval_margin"] for e in evals],
           "train_loss": train_losses, "max_length": config_args["max_length"],
           "steps": STEPS, "lr": LR, "reward_args": reward_args}
    with open(os.path.join(layout_dir, "expected.json"), "w") as f:
        json.dump(out, f)
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "reward"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    sft_dir = os.path.join(repo, "tests", "golden", "sft", "model")
    model_dir = os.path.join(args.out, "model")
    make_model(sft_dir, model_dir)
    make_model(os.path.join(repo, "tests", "golden", "dpo", "gpt2-model"),
               os.path.join(args.out, "gpt2-model"))
    for layout, (source, reward_args) in LAYOUTS.items():
        d = os.path.join(args.out, layout)
        os.makedirs(d)
        train = records(repo, source, "train", reward_args.get("margin"))
        val = records(repo, source, "validation", reward_args.get("margin"))
        for name, rows in (("train", train), ("validation", val)):
            with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        out = run(model_dir, sft_dir, d, train, val, reward_args)
        kept = {k: len(out[k]) for k in ("train", "validation")}
        print(f"{layout}: kept {kept}; eval_loss {out['eval_loss']}; "
              f"accuracy {out['eval_accuracy']}; train_loss {out['train_loss']}")


if __name__ == "__main__":
    main()

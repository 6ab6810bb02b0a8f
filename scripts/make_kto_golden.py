#!/usr/bin/env python3
"""Golden files for KTO, written by TRL's KTOTrainer itself.

    .venv-ref/bin/python scripts/make_kto_golden.py [--out tests/golden/kto] [--only LAYOUT]

Needs the reference venv (scripts/ref_env.sh: torch, transformers, trl, datasets) and the SFT
and DPO goldens (tests/golden/sft/model: the tiny Llama and its tokenizer; tests/golden/dpo:
the preference records, read from there).

For each layout, `<out>/<layout>/`:
- `train.jsonl`, `validation.jsonl`: unpaired records (`prompt`, `completion`, `label`) made
  from the DPO golden's preferences (record i's chosen completion, desirable, when i is even;
  its rejected one, undesirable, when i is odd), or the DPO golden's paired records as they
  are (TRL unpairs them: each chunk of records' chosen completions, then their rejected ones);
- `expected.json`: the examples KTOTrainer prepared (`prompt_ids`, `completion_ids`, `label`,
  and `KL_completion_ids`, the completions rotated by one within the batch), then `eval_loss`
  and `eval_kl` before and after each of 6 optimizer steps on all examples as one batch (the
  sequential sampler KTO requires; beta 0.1, a frozen copy of the initial model as the
  reference, max_length 64, AdamW, constant learning rate 5e-2, no weight decay, clipping at
  1.0, fp32 on the CPU), the loss logged at each step, and `kto_args`, the KTOConfig settings
  beyond that recipe. `conversational-batches/` trains in batches of 4 (its `batch`) instead,
  in file order, so that each step's KL estimate reads its own run of examples.
  `conversational-short-batches/` trains in batches of 3 for 9 steps: the epoch of 20 examples
  ends with a short step of 2 (transformers' data loader keeps the last, short batch), then
  the next epoch starts again from the first example.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import KTOConfig, KTOTrainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trl_golden import evaluate_and_train, prepared_examples, recipe  # noqa: E402

MAX_LENGTH, STEPS, LR, BETA = 64, 6, 5e-2, 0.1
# layout: (the DPO golden's layout whose records it reads, paired or made unpaired, KTOConfig
# settings beyond the recipe)
LAYOUTS = {
    "text": ("text", False, {}),
    "text-paired": ("text", True, {}),
    "implicit-paired": ("text-implicit", True, {}),
    "conversational": ("conversational", False, {}),
    "conversational-paired": ("conversational", True, {}),
    "text-weights": ("text", False, {"desirable_weight": 1.0, "undesirable_weight": 1.5}),
    "text-apo": ("text", True, {"loss_type": "apo_zero_unpaired"}),
    # Batches of 4 of the 20 examples the conversational pairs make, in file order (five
    # steps an epoch, then the first of the next): each step's KL estimate from its own run of
    # 4, the validation's from its two runs of 4.
    "conversational-batches": ("conversational", True, {}, 4),
    # Batches of 3 of the same 20, nine steps: six of 3, a short seventh of 2 ending the epoch
    # (its KL rows rotated within those 2), then the next epoch's first two steps.
    "conversational-short-batches": ("conversational", True, {}, 3, 9),
}


def records(repo, source, split, paired):
    with open(os.path.join(repo, "tests", "golden", "dpo", source, f"{split}.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if paired:
        return rows
    return [{"prompt": r["prompt"], "completion": r["chosen"] if i % 2 == 0 else r["rejected"],
             "label": i % 2 == 0} for i, r in enumerate(rows)]


def run(model_dir, layout_dir, train, val, kto_args, batch=None, steps=STEPS):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # Paired records become two examples each: a batch as large as every example.
    n_train = 2 * len(train) if "chosen" in train[0] else len(train)
    n_val = 2 * len(val) if "chosen" in val[0] else len(val)
    batch = batch or max(n_train, n_val)
    with tempfile.TemporaryDirectory() as tmp:
        args = KTOConfig(
            output_dir=tmp, max_length=MAX_LENGTH, beta=BETA, **kto_args,
            per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
            train_sampling_strategy="sequential", **recipe(steps, LR))
        trainer = KTOTrainer(model=model, ref_model=ref, args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_list(train),
                             eval_dataset=Dataset.from_list(val))
        keep = ("prompt_ids", "completion_ids", "label", "KL_completion_ids")
        prepared = prepared_examples(trainer, keep)
        evals, train_losses = evaluate_and_train(trainer, steps)
    out = {**prepared, "eval_loss": [e["eval_loss"] for e in evals],
           "eval_kl": [e.get("eval_kl", 0.0) for e in evals], "train_loss": train_losses,
           "max_length": MAX_LENGTH, "steps": steps, "lr": LR, "beta": BETA, "batch": batch,
           "kto_args": kto_args}
    with open(os.path.join(layout_dir, "expected.json"), "w") as f:
        json.dump(out, f)
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "kto"))
    ap.add_argument("--only", choices=sorted(LAYOUTS),
                    help="write this layout alone (the others are left as they are)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.only is None and os.path.isdir(args.out):
        shutil.rmtree(args.out)
    model_dir = os.path.join(repo, "tests", "golden", "sft", "model")
    for layout, (source, paired, kto_args, *batch) in LAYOUTS.items():
        if args.only not in (None, layout):
            continue
        d = os.path.join(args.out, layout)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        train = records(repo, source, "train", paired)
        val = records(repo, source, "validation", paired)
        for name, rows in (("train", train), ("validation", val)):
            with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        out = run(model_dir, d, train, val, kto_args, *batch)
        kept = {k: len(out[k]) for k in ("train", "validation")}
        print(f"{layout}: kept {kept}; eval_loss {out['eval_loss']}; kl {out['eval_kl']}; "
              f"train_loss {out['train_loss']}")


if __name__ == "__main__":
    main()

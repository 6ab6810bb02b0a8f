#!/usr/bin/env python3
"""TRL's SFTTrainer (with --dpo its DPOTrainer, with --kto its KTOTrainer, with --reward its
RewardTrainer) as the baseline of scripts/bench_sft.sh:
one epoch over the records, on the CPU in fp32, timing every optimizer step. Prints one JSON
line: the median step time (after --warmup steps), the tokens a step reads on average (the
prepared examples' inputs, all tokens but each one's last, over the steps of the epoch; DPO:
both rows of a preference, cut to --max-length; KTO: an example's row and its KL row; reward
model: every token of both sequences of a preference, read whole) and
their ratio, tokens/s.

    .venv-ref/bin/python scripts/bench_sft_torch.py --model DIR --train F.jsonl --batch 16 \\
        --max-length 128 --threads 2 [--warmup 2] [--packing | --dpo | --kto | --reward]

DPO's and KTO's reference log-probabilities are computed before training
(precompute_ref_log_probs),
as Lantern computes them, so that the timed steps do the same work.
"""
import argparse
import json
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, TrainerCallback)
from trl import (DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer,
                 SFTConfig, SFTTrainer)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--packing", action="store_true", help="TRL's packing=True (bfd)")
    ap.add_argument("--dpo", action="store_true", help="preference records, DPOTrainer")
    ap.add_argument("--kto", action="store_true", help="preference records, KTOTrainer")
    ap.add_argument("--reward", action="store_true",
                    help="preference records, RewardTrainer on a one-output classifier")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.train) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.reward:
        # The causal LM's body with a fresh one-output head, padding with end of sequence, as
        # `lantern finetune` builds its reward model.
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(
            output_dir=tmp, max_length=args.max_length, per_device_train_batch_size=args.batch,
            num_train_epochs=1, learning_rate=1e-4, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, adam_beta2=0.999, max_grad_norm=1.0,
            optim="adamw_torch", logging_steps=10_000, save_strategy="no", eval_strategy="no",
            report_to=[], bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
            dataloader_num_workers=0, seed=0)
        if args.reward:
            cfg = RewardConfig(**common)
            trainer = RewardTrainer(model=model, args=cfg, processing_class=tokenizer,
                                    train_dataset=Dataset.from_list(rows), callbacks=[timer])
            tokens = sum(len(e["chosen_ids"]) + len(e["rejected_ids"])
                         for e in trainer.train_dataset)
        elif args.kto:
            cfg = KTOConfig(**common, precompute_ref_log_probs=True,
                            train_sampling_strategy="sequential")
            trainer = KTOTrainer(model=model, args=cfg, processing_class=tokenizer,
                                 train_dataset=Dataset.from_list(rows), callbacks=[timer])
            row = lambda e, c: min(len(e["prompt_ids"]) + len(e[c]), args.max_length) - 1
            tokens = sum(row(e, "completion_ids") + row(e, "KL_completion_ids")
                         for e in trainer.train_dataset)
        elif args.dpo:
            cfg = DPOConfig(**common, precompute_ref_log_probs=True)
            trainer = DPOTrainer(model=model, args=cfg, processing_class=tokenizer,
                                 train_dataset=Dataset.from_list(rows), callbacks=[timer])
            row = lambda e, c: min(len(e["prompt_ids"]) + len(e[c]), args.max_length) - 1
            tokens = sum(row(e, "chosen_ids") + row(e, "rejected_ids") for e in trainer.train_dataset)
        else:
            cfg = SFTConfig(**common, packing=args.packing)
            trainer = SFTTrainer(model=model, args=cfg, processing_class=tokenizer,
                                 train_dataset=Dataset.from_list(rows), callbacks=[timer])
            tokens = sum(len(e["input_ids"]) - 1 for e in trainer.train_dataset)
        trainer.train()
    steps = len(timer.times)
    step_s = statistics.median(timer.times[args.warmup:])
    per_step = tokens / steps
    print(json.dumps({"steps": steps, "tokens_per_step": per_step, "step_ms_median": step_s * 1e3,
                      "tokens_per_s": per_step / step_s, "examples": len(trainer.train_dataset)}))


if __name__ == "__main__":
    main()

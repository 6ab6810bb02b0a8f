#!/usr/bin/env python3
"""Golden files for DPO, written by TRL's DPOTrainer itself.

    .venv-ref/bin/python scripts/make_dpo_golden.py [--out tests/golden/dpo]

Needs the reference venv (scripts/ref_env.sh: torch, transformers, trl, datasets), the SFT
golden's model folder (tests/golden/sft/model: scripts/make_sft_golden.py) and data/fortune-sft
(scripts/make_fortune_sft.py).

Preferences from the fortunes' "who said it" records: the chosen completion is a record's own
author, the rejected one the next record's. For each layout, `<out>/<layout>/`:
- `train.jsonl`, `validation.jsonl`: 12 / 6 preferences: `text` (prompt, chosen, rejected
  strings), `conversational` (lists of messages), `implicit` (conversations without a prompt:
  the user's turn is their common start, TRL's `extract_prompt`) and `text-implicit` (prompt +
  completion strings without a prompt);
- `expected.json`: the examples DPOTrainer prepared (`prompt_ids`, `chosen_ids`,
  `rejected_ids`: EOS appended to text completions, the chat template, the completions from
  where the tokens first differ), then `eval_loss` and `eval_rewards/accuracies` before and
  after each of 6 optimizer steps on all preferences as one batch (beta 0.1, sigmoid loss, a
  frozen copy of the initial model as the reference, max_length 64, AdamW, constant learning
  rate 5e-2, no weight decay, clipping at 1.0, fp32 on the CPU), and the loss logged at each
  step.
More layouts train with TRL's other settings (`LOSSES` below, written to `expected.json` as
`dpo_args`): its other losses (`loss_type`, with `loss_weights` for the sums, and
`label_smoothing`), the f-divergences (`f_divergence_type`, `f_alpha_divergence_coef`) and
LD-DPO's `ld_alpha`, WPO's `use_weighting`, a reference model of its own (`ref_model`:
`<out>/ref-model/`, the SFT golden's model with its weights perturbed, seeded), TR-DPO's
`sync_ref_model`, `truncation_mode`, and a GPT-2 with dropout 0.1 in its config
(`<out>/gpt2-model/`), which DPOConfig's default `disable_dropout` trains without.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
from trl import DPOConfig, DPOTrainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trl_golden import evaluate_and_train, prepared_examples, recipe  # noqa: E402

MAX_LENGTH, STEPS, LR, BETA = 64, 6, 5e-2, 0.1
N_TRAIN, N_VAL = 12, 6
# layout: (records' layout, DPOConfig settings beyond the recipe below)
LOSSES = {
    "text-ipo": ("text", {"loss_type": ["ipo"]}),
    "text-mix-a": ("text", {"loss_type": ["robust", "exo_pair", "hinge", "sigmoid_norm"],
                            "loss_weights": [1.0, 0.5, 0.3, 0.7], "label_smoothing": 0.1}),
    "text-mix-b": ("text", {"loss_type": ["nca_pair", "bco_pair", "sppo_hard", "apo_zero",
                                          "apo_down", "discopop"],
                            "loss_weights": [1.0, 0.5, 0.01, 0.8, 0.6, 0.4]}),
    "text-js": ("text", {"loss_type": ["sigmoid", "hinge"], "loss_weights": [1.0, 0.5],
                         "f_divergence_type": "js_divergence"}),
    "text-alpha": ("text", {"loss_type": ["sigmoid_norm", "robust", "discopop"],
                            "loss_weights": [1.0, 0.5, 0.3], "label_smoothing": 0.1,
                            "f_divergence_type": "alpha_divergence",
                            "f_alpha_divergence_coef": 0.7}),
    "text-fkl-ld": ("text", {"f_divergence_type": "forward_kl", "ld_alpha": 0.5}),
    "conversational-ld0": ("conversational", {"loss_type": ["sigmoid", "ipo"], "ld_alpha": 0.0}),
    "text-aot": ("text", {"loss_type": ["aot", "aot_unpaired"], "loss_weights": [1.0, 0.5],
                          "label_smoothing": 0.1}),
    "conversational-rpo": ("conversational", {"loss_type": ["sigmoid", "sft"],
                                              "loss_weights": [1.0, 0.5], "ld_alpha": 0.5}),
    # WPO with losses whose backward does not read their output: TRL 1.16 weights the losses
    # in place (`per_sequence_loss *= ...`), which breaks hinge's (relu) and sft's backward.
    "text-wpo": ("text", {"use_weighting": True, "loss_type": ["sigmoid", "ipo"],
                          "loss_weights": [1.0, 0.05]}),
    # Not a DPOConfig setting: the reference model's folder, relative to --out.
    "text-ref": ("text", {"ref_model": "ref-model"}),
    # TR-DPO: the reference moved toward the policy after steps 2, 4 and 6 (before the
    # evaluations that follow them); then from a reference of its own, after steps 3 and 6.
    "text-sync": ("text", {"sync_ref_model": True, "ref_model_sync_steps": 2}),
    "text-ref-sync": ("text", {"ref_model": "ref-model", "sync_ref_model": True,
                               "ref_model_mixup_alpha": 0.3, "ref_model_sync_steps": 3}),
    # A GPT-2 whose config has dropout 0.1: DPOConfig's disable_dropout (default True) trains
    # it without. Not a DPOConfig setting: the model's folder, relative to --out.
    "text-gpt2": ("text", {"model": "gpt2-model"}),
    # Rows longer than max_length keep their end: prompts that fill it are kept, cut.
    "conversational-keep-end": ("conversational", {"truncation_mode": "keep_end",
                                                   "max_length": 40}),
}


def make_ref_model(model_dir, out):
    """The SFT golden's model with every weight moved by 0.05·N(0, 1), seed 1234."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(out, safe_serialization=True)


def make_gpt2_model(model_dir, out):
    """A GPT2LMHeadModel of the SFT golden's vocabulary (whose tokenizer it is trained with)
    and dropout 0.1 everywhere, every parameter drawn from N(0, 0.2) after
    torch.manual_seed(1234)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        llama = json.load(f)
    eot = llama["eos_token_id"]
    torch.manual_seed(1234)
    cfg = GPT2Config(vocab_size=llama["vocab_size"], n_positions=128, n_embd=16, n_layer=2,
                     n_head=4, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                     bos_token_id=eot, eos_token_id=eot)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.save_pretrained(out, safe_serialization=True)


def preferences(repo, layout, split, n):
    base = os.path.join(repo, "data", "fortune-sft")
    with open(os.path.join(base, "prompt-completion", f"{split}.jsonl")) as f:
        pc = [json.loads(line) for _, line in zip(range(n + 1), f)]
    with open(os.path.join(base, "messages", f"{split}.jsonl")) as f:
        ms = [json.loads(line)["messages"] for _, line in zip(range(n + 1), f)]
    rows = []
    for i in range(n):
        if layout == "text":
            rows.append({"prompt": pc[i]["prompt"], "chosen": pc[i]["completion"],
                         "rejected": pc[i + 1]["completion"]})
        elif layout == "text-implicit":
            rows.append({"chosen": pc[i]["prompt"] + pc[i]["completion"],
                         "rejected": pc[i]["prompt"] + pc[i + 1]["completion"]})
        elif layout == "conversational":
            rows.append({"prompt": ms[i][:1], "chosen": ms[i][1:], "rejected": ms[i + 1][1:]})
        elif layout == "implicit":
            rows.append({"chosen": ms[i], "rejected": ms[i][:1] + ms[i + 1][1:]})
        else:
            raise ValueError(layout)
    return rows


def run(model_dir, layout_dir, train, val, dpo_args):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if "model" in dpo_args:
        model_dir = os.path.join(os.path.dirname(layout_dir), dpo_args["model"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref_dir = os.path.join(os.path.dirname(layout_dir), dpo_args["ref_model"]) \
        if "ref_model" in dpo_args else model_dir
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    config_args = {"max_length": MAX_LENGTH,
                   **{k: v for k, v in dpo_args.items() if k not in ("ref_model", "model")}}
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp, beta=BETA, **config_args,
            per_device_train_batch_size=4 * len(train), per_device_eval_batch_size=4 * len(val),
            **recipe(STEPS, LR))
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_list(train),
                             eval_dataset=Dataset.from_list(val))
        keep = ("prompt_ids", "chosen_ids", "rejected_ids")
        prepared = prepared_examples(trainer, keep)
        evals, train_losses = evaluate_and_train(trainer, STEPS)
    out = {**prepared, "eval_loss": [e["eval_loss"] for e in evals],
           "eval_reward_accuracy": [e["eval_rewards/accuracies"] for e in evals],
           "train_loss": train_losses, "max_length": config_args["max_length"], "steps": STEPS,
           "lr": LR,
           "beta": BETA, "dpo_args": dpo_args}
    with open(os.path.join(layout_dir, "expected.json"), "w") as f:
        json.dump(out, f)
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "dpo"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    model_dir = os.path.join(repo, "tests", "golden", "sft", "model")
    make_ref_model(model_dir, os.path.join(args.out, "ref-model"))
    make_gpt2_model(model_dir, os.path.join(args.out, "gpt2-model"))
    for layout in ("text", "text-implicit", "conversational", "implicit", *LOSSES):
        d = os.path.join(args.out, layout)
        os.makedirs(d)
        records, dpo_args = LOSSES.get(layout, (layout, {}))
        train = preferences(repo, records, "train", N_TRAIN)
        val = preferences(repo, records, "validation", N_VAL)
        for name, rows in (("train", train), ("validation", val)):
            with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        out = run(model_dir, d, train, val, dpo_args)
        kept = {k: len(out[k]) for k in ("train", "validation")}
        print(f"{layout}: kept {kept}; eval_loss {out['eval_loss']}; "
              f"accuracy {out['eval_reward_accuracy']}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks a Lantern LoRA fine-tuning run against live peft and transformers (run by
scripts/lora_parity.sh, which fine-tunes first):

1. peft loads the run's adapter: `PeftModel.from_pretrained(base, <run>/model/adapter)` over
   the pretrained folder the run started from (`--init`, its classifier built by
   transformers with the run's labels and padding id; every tensor it draws at random is
   replaced by the adapter's `modules_to_save`), and its logits on `--data` are `lantern
   predict`'s, within 1e-4 max abs;
2. peft's `merge_and_unload()` state dict is the run's `model.safetensors` (the merged model),
   tensor for tensor, within 1e-6;
3. transformers alone loads `<run>/model` as an ordinary classifier with the same logits;
4. peft, loading the adapter to train it further, counts as many trained parameters as
   `lantern finetune` printed (`get_nb_trainable_parameters`; its total counts the head twice,
   the pretrained one and its trained copy, so the totals differ by the head's size).

    python scripts/lora_parity.py --run RUN --init PRETRAINED --data validation.jsonl \
        --lantern target/release/lantern --log finetune.log
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def check(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def logits_of(model, tok, texts, max_length, batch_size=32):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            out.append(model(**enc).logits)
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--init", required=True, help="the pretrained transformers folder")
    ap.add_argument("--data", required=True)
    ap.add_argument("--lantern", required=True)
    ap.add_argument("--log", required=True, help="lantern finetune's output")
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    model_dir = os.path.join(args.run, "model")
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    rows = [json.loads(l) for l in open(args.data, encoding="utf-8") if l.strip()]
    texts = [r["text"] for r in rows]
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "right"

    with tempfile.TemporaryDirectory() as tmp:
        preds = os.path.join(tmp, "preds.jsonl")
        subprocess.run([args.lantern, "predict", "--checkpoint", args.run, "--input", args.data,
                        "--out", preds], check=True, stdout=subprocess.DEVNULL)
        ours = torch.tensor([json.loads(l)["logits"] for l in open(preds, encoding="utf-8")])

    def base():
        return AutoModelForSequenceClassification.from_pretrained(
            args.init, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)}, pad_token_id=cfg.get("pad_token_id"))

    adapter = os.path.join(model_dir, "adapter")
    peft = PeftModel.from_pretrained(base(), adapter).eval()
    theirs = logits_of(peft, tok, texts, args.max_length)
    d = (theirs - ours).abs().max().item()
    ok = check("peft (base + the run's adapter) logits vs lantern predict", d <= 1e-4,
               f"max abs diff {d:.2e} over {len(texts)} texts, "
               f"{(theirs.argmax(-1) == ours.argmax(-1)).sum().item()}/{len(texts)} same label")

    trainable, total = PeftModel.from_pretrained(base(), adapter, is_trainable=True) \
        .get_nb_trainable_parameters()
    log = open(args.log, encoding="utf-8").read()
    m = re.search(r"LoRA .*?: (\d+) of (\d+) parameters trained", log)
    ok &= check("trained parameters, peft vs lantern finetune",
                m is not None and int(m[1]) == trainable,
                f"peft {trainable} of {total}, lantern {m[1] if m else '?'} of {m[2] if m else '?'}")

    merged = peft.merge_and_unload().state_dict()
    run_tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    worst, name, missing = 0.0, None, [k for k in run_tensors if k not in merged]
    for k, t in run_tensors.items():
        if k in merged:
            d = (merged[k].float() - t.float()).abs().max().item()
            if d > worst:
                worst, name = d, k
    ok &= check("merge_and_unload() vs the run's model.safetensors",
                worst <= 1e-6 and not missing,
                f"{len(run_tensors)} tensors, max abs diff {worst:.2e} ({name}), missing {missing}")

    plain = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    d = (logits_of(plain, tok, texts, args.max_length) - theirs).abs().max().item()
    ok &= check("transformers' from_pretrained(<run>/model) logits vs peft's", d <= 1e-4,
                f"max abs diff {d:.2e}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""GPT-2 sequence classification parity: a model fine-tuned by `lantern finetune` from a GPT
checkpoint, run by transformers' GPT2ForSequenceClassification, against the `lantern` binary.

    python scripts/gpt2_cls_parity.py --lantern target/release/lantern --run RUN
        --data validation.jsonl [--test test.jsonl] --max-length 64 --work DIR

RUN is the fine-tuning run folder; RUN/model is its export (config.json, model.safetensors,
tokenizer.json). Checks, fp32, logits within 1e-4 max abs:
1. config.json names GPT2ForSequenceClassification, single-label, and pad_token_id is the
   tokenizer's `<|endoftext|>` id.
2. Tokenisation: the export's tokenizer.json (tokenizers.Tokenizer) adds no special tokens
   (the ids with and without them are the same), and transformers' PreTrainedTokenizerFast on
   the same file gives the same ids; the texts are truncated to --max-length tokens.
3. Logits: the ids padded on the right with pad_token_id, with the attention mask, through
   transformers, against `lantern predict`'s "logits" on the same file:
     a. the same batches (64, `lantern predict`'s default) in both;
     b. mixed lengths: transformers in batches of 8 and one by one (no padding at all) against
        Lantern's batches of 64, and Lantern in batches of 5 against transformers' of 64;
   the rows that differ most are printed with their length and padding.
4. Metrics: transformers' predictions (argmax) against the labels: accuracy and macro-F1 vs
   `lantern eval`'s, exactly, and transformers' cross-entropy (its own loss with labels) vs
   `lantern eval`'s eval_loss; Lantern's predicted labels vs transformers' argmax. With
   --test, the same accuracy and macro-F1 on the test set vs RUN/test_metrics.json.
Prints one line per check and exits non-zero if any fails.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from tokenizers import Tokenizer
from transformers import GPT2ForSequenceClassification, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from finetune_torch import macro

TOL = 1e-4
EOT = "<|endoftext|>"


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def check(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return ok


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def hf_logits(model, ids, pad, batch_size, labels=None):
    """transformers' logits of each row, in batches of `batch_size` padded on the right with
    `pad` to their longest row, with the attention mask; and the summed loss when labels are
    given (transformers' mean loss of each batch times its size)."""
    out, loss_sum = [], 0.0
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            t = max(len(r) for r in chunk)
            x = torch.tensor([r + [pad] * (t - len(r)) for r in chunk])
            mask = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in chunk])
            kw = {}
            if labels is not None:
                kw["labels"] = torch.tensor(labels[i:i + batch_size])
            o = model(input_ids=x, attention_mask=mask, **kw)
            out.append(o.logits.float())
            if labels is not None:
                loss_sum += o.loss.item() * len(chunk)
    return torch.cat(out), loss_sum


def compare(name, ours, theirs, ids, batches):
    """Max abs difference of two logit tables, with the rows that differ most: their index,
    length, and how many pad positions each side's batch gave them."""
    (ob, tb) = batches
    per_row = (ours - theirs).abs().max(dim=1).values
    d = per_row.max().item()
    ok = check(f"logits, {name}", d <= TOL, f"max abs diff {d:.3e} over {len(ids)} rows (tolerance {TOL:.0e})")

    def padding(i, b):
        start = i // b * b
        return max(len(r) for r in ids[start:start + b]) - len(ids[i])

    padded = [i for i in range(len(ids)) if padding(i, ob) or padding(i, tb)]
    print(f"       {len(padded)} rows padded on one side or both")
    worst = per_row.argsort(descending=True)[:3 if ok else 10].tolist()
    for i in worst:
        print(f"       row {i}: {len(ids[i])} tokens, padded by {padding(i, ob)} (lantern) / "
              f"{padding(i, tb)} (transformers), diff {per_row[i].item():.3e}")
    if not ok:
        bad = [i for i in range(len(ids)) if per_row[i] > TOL]
        print(f"       {len(bad)} rows over tolerance, {sum(1 for i in bad if i in set(padded))} of them padded "
              f"(padded rows: {len(padded)} of {len(ids)})")
    return ok, d


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lantern", default=os.path.join(repo, "target", "release", "lantern"))
    ap.add_argument("--run", required=True, help="the `lantern finetune` run folder")
    ap.add_argument("--data", required=True, help="labelled JSONL ({text, label}) to compare on")
    ap.add_argument("--test", help="the run's test set, to check test_metrics.json as well")
    ap.add_argument("--max-length", type=int, required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    hf_logging.disable_progress_bar()
    os.makedirs(args.work, exist_ok=True)
    w = lambda *p: os.path.join(args.work, *p)
    export = os.path.join(args.run, "model")
    ok = True

    # 1. The config.
    with open(os.path.join(export, "config.json")) as f:
        cfg = json.load(f)
    raw = Tokenizer.from_file(os.path.join(export, "tokenizer.json"))
    eot = raw.token_to_id(EOT)
    ok &= check("config.json", cfg["architectures"] == ["GPT2ForSequenceClassification"]
                and cfg["problem_type"] == "single_label_classification" and cfg.get("pad_token_id") == eot,
                f"{cfg['architectures'][0]}, {cfg['problem_type']}, pad_token_id {cfg.get('pad_token_id')} "
                f"({EOT} is {eot}), {len(cfg['id2label'])} labels")
    model = GPT2ForSequenceClassification.from_pretrained(export, dtype=torch.float32).eval()
    pad = model.config.pad_token_id
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]

    # 2. Tokenisation.
    rows = read_jsonl(args.data)
    texts = [r["text"] for r in rows]
    full = [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
    with_special = [e.ids for e in raw.encode_batch(texts, add_special_tokens=True)]
    ok &= check("tokenizer.json adds no special tokens", with_special == full,
                f"post_processor {raw.post_processor!r}; ids with and without special tokens "
                f"{'identical' if with_special == full else 'differ'}")
    raw.enable_truncation(args.max_length)
    ids = [e.ids for e in raw.encode_batch(texts)]
    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(export, "tokenizer.json"), pad_token=EOT)
    fast_ids = fast(texts, truncation=True, max_length=args.max_length)["input_ids"]
    ok &= check("PreTrainedTokenizerFast on the same tokenizer.json", fast_ids == ids,
                f"ids {'identical' if fast_ids == ids else 'differ'}; pad token {fast.pad_token!r} = {fast.pad_token_id}")
    cut = sum(1 for r in full if len(r) > args.max_length)
    inside = sum(1 for r in ids if pad in r)
    lens = sorted(len(r) for r in ids)
    print(f"     {len(ids)} texts, {lens[0]} to {lens[-1]} tokens (median {lens[len(lens) // 2]}), {cut} truncated to "
          f"{args.max_length}; {inside} hold the pad id {pad} as a real token")

    # 3. Logits.
    run([args.lantern, "predict", "--checkpoint", args.run, "--input", args.data, "--out", w("pred64.jsonl")])
    run([args.lantern, "predict", "--checkpoint", args.run, "--input", args.data, "--out", w("pred5.jsonl"),
         "--batch-size", "5"])
    pred64 = read_jsonl(w("pred64.jsonl"))
    ours64 = torch.tensor([p["logits"] for p in pred64])
    ours5 = torch.tensor([p["logits"] for p in read_jsonl(w("pred5.jsonl"))])
    gold = [names.index(r["label"]) for r in rows]
    theirs64, loss_sum = hf_logits(model, ids, pad, 64, gold)
    theirs8, _ = hf_logits(model, ids, pad, 8)
    theirs1, _ = hf_logits(model, ids, pad, 1)
    diffs = {}
    for name, ours, theirs, b in [
        ("same batches (64 in both)", ours64, theirs64, (64, 64)),
        ("mixed: lantern 64 vs transformers 8", ours64, theirs8, (64, 8)),
        ("mixed: lantern 64 vs transformers 1 (unpadded)", ours64, theirs1, (64, 1)),
        ("mixed: lantern 5 vs transformers 64", ours5, theirs64, (5, 64)),
    ]:
        good, diffs[name] = compare(name, ours, theirs, ids, b)
        ok &= good

    # 4. Metrics.
    eval_path = w("eval.json")
    run([args.lantern, "eval", "--checkpoint", args.run, "--data", args.data, "--out", eval_path])
    with open(eval_path) as f:
        ev = json.load(f)
    hf_pred = theirs64.argmax(-1).tolist()
    hf_acc = sum(1 for a, b in zip(gold, hf_pred) if a == b) / len(gold)
    hf_f1 = macro(gold, hf_pred, len(names))[0]
    ok &= check("accuracy, transformers vs lantern eval", abs(hf_acc - ev["accuracy"]) <= 1e-12,
                f"{hf_acc:.6f} vs {ev['accuracy']:.6f}")
    ok &= check("macro-F1, transformers vs lantern eval", abs(hf_f1 - ev["macro_f1"]) <= 1e-12,
                f"{hf_f1:.6f} vs {ev['macro_f1']:.6f}")
    hf_loss = loss_sum / len(gold)
    ok &= check("loss, transformers' (labels) vs lantern eval's eval_loss", abs(hf_loss - ev["eval_loss"]) <= TOL,
                f"{hf_loss:.6f} vs {ev['eval_loss']:.6f} (diff {abs(hf_loss - ev['eval_loss']):.2e})")
    agree = sum(1 for p, q in zip(pred64, hf_pred) if p["label"] == names[q])
    ok &= check("predicted labels, lantern predict vs transformers' argmax", agree == len(gold),
                f"{agree} of {len(gold)} agree")
    test_acc = None
    if args.test:
        test_rows = read_jsonl(args.test)
        test_ids = [e.ids for e in raw.encode_batch([r["text"] for r in test_rows])]
        test_gold = [names.index(r["label"]) for r in test_rows]
        tl, _ = hf_logits(model, test_ids, pad, 64)
        tp = tl.argmax(-1).tolist()
        test_acc = sum(1 for a, b in zip(test_gold, tp) if a == b) / len(test_gold)
        test_f1 = macro(test_gold, tp, len(names))[0]
        with open(os.path.join(args.run, "test_metrics.json")) as f:
            tm = json.load(f)
        ok &= check("test set: transformers vs the run's test_metrics.json",
                    abs(test_acc - tm["accuracy"]) <= 1e-12 and abs(test_f1 - tm["macro_f1"]) <= 1e-12,
                    f"accuracy {test_acc:.6f} vs {tm['accuracy']:.6f}, macro-F1 {test_f1:.6f} vs {tm['macro_f1']:.6f}")

    print()
    if ok:
        print(f"PASS: GPT2ForSequenceClassification fine-tuned by Lantern agrees with transformers "
              f"{transformers_version()}: max abs logit diff {max(diffs.values()):.3e} over {len(ids)} validation "
              f"rows and 4 batchings (tolerance {TOL:.0e}); validation accuracy {hf_acc:.4f} (transformers) = "
              f"{ev['accuracy']:.4f} (lantern eval), macro-F1 {hf_f1:.4f}"
              + (f"; test accuracy {test_acc:.4f} = test_metrics.json" if test_acc is not None else ""))
        return 0
    print("FAIL: GPT-2 sequence classification parity: see the FAIL lines above")
    return 1


def transformers_version():
    import transformers
    return transformers.__version__


if __name__ == "__main__":
    sys.exit(main())

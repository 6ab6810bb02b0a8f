#!/usr/bin/env python3
"""The fine-tuning recipe of `lantern finetune`, in PyTorch + transformers, for comparison.

    python scripts/finetune_torch.py --model DIR --train train.jsonl --validation val.jsonl
        --test test.jsonl [--epochs 2 --batch-size 32 --lr 1e-4 --warmup-ratio 0.1
        --weight-decay 0.01 --max-length 64 --seed 42 --metric macro_f1] [--threads N]
        [--optim adamw|sgd|adagrad|rmsprop --momentum 0.9 ...]
        [--task tags|qa|choice] [--doc-stride 32]
        [--version-2-with-negative [--null-score-diff-threshold 0.0]]

Same recipe as Lantern: BertForSequenceClassification (the folder family's class) from the pretrained encoder (fresh
pooler-less head: the classifier is N(0, 0.02)), labels sorted by name, AdamW (β 0.9/0.999,
ε 1e-8; or `--optim` sgd, adagrad, rmsprop with their keys as `train.optimizer` picks them)
with weight decay on matrices only, linear warmup and decay per optimizer step,
gradient clipping at 1.0, a seeded shuffle per epoch, batches padded to their longest example,
truncation to max_length, evaluation on the validation set after each epoch keeping the best
by `--metric`, and the best model's scores on the held-out test set. Prints one JSON line:
{"impl": "transformers", "test_macro_f1", "test_accuracy", "best_epoch", "train_seconds"}.

A GPT-2 folder (config.json's model_type "gpt2", e.g. `lantern export` of a GPT run: a
GPT2LMHeadModel) fine-tunes as `lantern finetune` does it from a GPT
checkpoint, `--task classes` or `--task tags`. `classes`: GPT2ForSequenceClassification (a fresh
`score`, n_embd to the labels without bias, N(0, initializer_range), on each sequence's rightmost
token that is not the padding id), the tokenizer.json as it is (PreTrainedTokenizerFast: no
special tokens added, none of BERT's token types). `tags`: GPT2ForTokenClassification (dropout
`classifier_dropout`, 0.1 when config.json has none, then a fresh `classifier` with bias at every
position), the words encoded as run_ner loads GPT-2/RoBERTa tokenizers (`add_prefix_space=True`:
the byte-level pre-tokenizer puts a space before every word; set in the tokenizer.json's
pre-tokenizer itself, see `word_tokenizer`). Both pad batches on the right with the padding id
Lantern picks: config.json's pad_token_id, else its eos_token_id, else the tokenizer's
`<|endoftext|>`. The dropout rates are config.json's (resid_pdrop, embd_pdrop, attn_pdrop: the
pretraining run's), as in Lantern.
A Llama folder (model_type "llama", e.g. `lantern export` of a Llama run: a LlamaForCausalLM)
fine-tunes the same way as `lantern finetune` does it from a Llama checkpoint:
LlamaForSequenceClassification (a fresh `score` without bias on the rightmost token that is not
the padding id) or LlamaForTokenClassification (dropout `classifier_dropout`, else 0.1, then a
fresh `score` with bias at every position), the lm_head dropped; padding as above (the
end-of-text token: the first of `<|endoftext|>`, `</s>`, `<|end_of_text|>` the tokenizer holds),
and the padding id's embedding row gets no gradient in both (transformers' padding_idx); words
for `tags` are encoded with the prefix space as for GPT-2 (a byte-level BPE tokenizer.json, as
`lantern prepare` writes, is what `word_tokenizer` needs). A Llama has no dropout but the token
classifier's.

`--task tags` is token classification as transformers' run_ner does it: word-level data
(JSONL `tokens`/`tags`, or CoNLL), BertForTokenClassification (GPT2ForTokenClassification for a
GPT-2 folder, LlamaForTokenClassification for a Llama one), the words tokenised with
`is_split_into_words=True` and each word's tag on its first sub-token (-100 elsewhere), and
seqeval's entity-level scores; `--metric f1` and the JSON line holds "test_f1",
"test_precision", "test_recall" and "test_accuracy".

`--task qa` is extractive question answering as transformers' run_qa does it: SQuAD data
(JSONL in the layout of datasets' `squad`, or an official v1.1 .json), BertForQuestionAnswering,
question and context windowed with truncation="only_second", `--max-length` and `--doc-stride`
(prepare_train_features' start/end positions, [CLS] when the answer is not wholly inside a
window), the windows shuffled and batched as Lantern's loop does, and utils_qa's n-best search
(20 candidates, answers of up to 30 tokens) with the `squad` metric (scripts/
make_qa_metric_golden.py holds both transcriptions); `--metric f1` and the JSON line holds
"test_f1" and "test_exact_match" (percent). With `--version-2-with-negative` (run_qa's
`--version_2_with_negative`, SQuAD 2.0: an empty answer list, or `is_impossible` in a v2.0 .json,
is an unanswerable question) those windows are labelled [CLS], the answer search is utils_qa's
with the null answer and `--null-score-diff-threshold`, and the metric is `squad_v2` (scripts/
make_qa_v2_metric_golden.py); the JSON line holds its figures ("test_exact", "test_f1",
"test_HasAns_f1", "test_NoAns_f1", "test_best_f1", ...).

`--task choice` is multiple choice as transformers' run_swag does it: SWAG-layout JSONL
(`sent1`, `sent2`, `ending0` …, `label`), BertForMultipleChoice, each choice the pair
(sent1, sent2 + " " + ending) truncated to `--max-length`, a batch of B examples padded to its
longest choice as (B, C, T); `--metric accuracy` and the JSON line holds "test_accuracy".
"""
import argparse
import json
import math
import os
import sys
import time

import torch
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
                          BertForQuestionAnswering, get_linear_schedule_with_warmup)
from transformers.trainer_pt_utils import get_length_grouped_indices


def read_squad(path):
    """SQuAD questions as rows of datasets' `squad` layout: JSONL as is, a v1.1 .json flattened."""
    with open(path, encoding="utf-8") as f:
        if not path.endswith(".json"):
            return [json.loads(l) for l in f if l.strip()]
        rows = []
        for article in json.load(f)["data"]:
            for para in article["paragraphs"]:
                for q in para["qas"]:
                    # A v2.0 unanswerable question has "answers": [] (and "is_impossible": true),
                    # as datasets' squad_v2 reads it.
                    answers = [] if q.get("is_impossible") else q.get("answers") or []
                    rows.append({"id": q["id"], "question": q["question"], "context": para["context"],
                                 "answers": {"text": [a["text"] for a in answers],
                                             "answer_start": [a["answer_start"] for a in answers]}})
        return rows


def qa_windows(tok, rows, max_length, stride, version_2_with_negative=False):
    """run_qa's prepare_train_features and prepare_validation_features in one: per window its
    ids, token types, example index, answer (start, end) positions and context offsets. A question
    without answers is labelled [CLS] with version_2_with_negative, and refused without it."""
    enc = tok([r["question"].lstrip() for r in rows], [r["context"] for r in rows],
              truncation="only_second", max_length=max_length, stride=stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    out = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        ex = enc["overflow_to_sample_mapping"][i]
        a = rows[ex]["answers"]
        first = seq.index(1)
        last = len(seq) - 1 - seq[::-1].index(1)
        if len(a["answer_start"]) == 0:
            if not version_2_with_negative:
                raise SystemExit(f"question {rows[ex]['id']!r} has no answer: pass --version-2-with-negative")
            out.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                        "example": ex, "span": (0, 0),  # prepare_train_features: cls_index
                        "offsets": [o if seq[k] == 1 else None for k, o in enumerate(offsets)]})
            continue
        start_char = a["answer_start"][0]
        end_char = start_char + len(a["text"][0])
        if offsets[first][0] > start_char or offsets[last][1] < end_char:
            span = (0, 0)
        else:
            s = first
            while s <= last and offsets[s][0] <= start_char:
                s += 1
            e = last
            while e >= first and offsets[e][1] >= end_char:
                e -= 1
            span = (s - 1, e + 1)
        out.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                    "example": ex, "span": span,
                    "offsets": [o if seq[k] == 1 else None for k, o in enumerate(offsets)]})
    return out


def model_type(path):
    """config.json's model_type of a model folder ("bert", "gpt2", ...), or None."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return None
    with open(cfg, encoding="utf-8") as f:
        return json.load(f).get("model_type")


def word_tokenizer(path, **kwargs):
    """PreTrainedTokenizerFast on a byte-level BPE tokenizer.json for pre-split words, as run_ner
    loads GPT-2 and RoBERTa tokenizers (`add_prefix_space=True`) and as Lantern encodes words:
    the ByteLevel pre-tokenizer with add_prefix_space, so every word, the first too, is encoded
    with a leading space. The flag is written into the tokenizer.json's pre-tokenizer before
    loading: PreTrainedTokenizerFast(tokenizer_file=..., add_prefix_space=True) keeps the file's
    pre-tokenizer as it is (transformers 5.24; GPT2Tokenizer, what AutoTokenizer picks for a
    GPT-2 folder, does rebuild it)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    file = path if os.path.isfile(path) else os.path.join(path, "tokenizer.json")
    with open(file, encoding="utf-8") as f:
        spec = json.load(f)
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if not byte_level:
        sys.exit(f"{file}: no ByteLevel pre-tokenizer to set add_prefix_space on ({pre.get('type')})")
    for p in byte_level:
        p["add_prefix_space"] = True
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                   add_prefix_space=True, **kwargs)


# Decoder families that fine-tune as `lantern finetune` does them (config.json's model_type), and
# the end-of-text tokens Lantern pads with when config.json names no padding or end id, in order.
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "phi3")
ENDS = ("<|endoftext|>", "</s>", "<|end_of_text|>")


def gpt2_classifier(path, labels, tags=False):
    """The tokenizer (padding with Lantern's padding id) and a GPT2ForSequenceClassification
    with a fresh `score` over `labels` (with `tags`, a GPT2ForTokenClassification with a fresh
    `classifier` and a tokenizer for pre-split words), from a GPT-2 folder; from a Llama folder
    LlamaForSequenceClassification / LlamaForTokenClassification (a fresh `score` both)."""
    from tokenizers import Tokenizer
    import transformers
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    # Each family's pair of classes: GPT2For..., LlamaFor..., MistralFor..., Qwen2For..., Qwen3For...,
    # Phi3For...
    prefix = {"gpt2": "GPT2", "llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2",
              "qwen3": "Qwen3", "phi3": "Phi3"}[cfg["model_type"]]
    classes = tuple(getattr(transformers, f"{prefix}For{h}Classification") for h in ("Sequence", "Token"))
    vocab = Tokenizer.from_file(os.path.join(path, "tokenizer.json")).get_vocab()
    eot = next((t for t in ENDS if t in vocab), ENDS[0])
    # The folder's tokenizer.json exactly as Lantern reads it. (AutoTokenizer also loads a GPT-2
    # folder with only config.json and tokenizer.json, as a GPT2Tokenizer; same ids on the
    # fortunes. A Llama folder loads as the generic fast tokenizer, which ignores
    # add_prefix_space: word_tokenizer writes it into the pre-tokenizer.)
    if tags:
        tok = word_tokenizer(path, eos_token=eot)
    else:
        tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"),
                                                   eos_token=eot)
    pad = cfg.get("pad_token_id")
    if pad is None:
        pad = cfg.get("eos_token_id")
    if pad is None:
        pad = tok.convert_tokens_to_ids(eot)
    if pad is None or pad == tok.unk_token_id:
        sys.exit(f"{path}: no padding id (config.json has no pad_token_id or eos_token_id, and the "
                 f"tokenizer no {eot})")
    tok.pad_token = tok.convert_ids_to_tokens(pad)
    tok.padding_side = "right"
    model = classes[1 if tags else 0].from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        pad_token_id=pad,
    )
    assert model.config.pad_token_id == tok.pad_token_id == pad
    return tok, model


def read(path):
    """JSONL rows, or a CoNLL file (word and tag per line, blank lines between examples) as
    {"tokens", "tags"} rows."""
    with open(path, encoding="utf-8") as f:
        if not path.endswith(".conll"):
            return [json.loads(l) for l in f if l.strip()]
        rows, cur = [], {"tokens": [], "tags": []}
        for line in f:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if cur["tokens"]:
                    rows.append(cur)
                cur = {"tokens": [], "tags": []}
                continue
            cur["tokens"].append(cols[0])
            cur["tags"].append(cols[-1])
        if cur["tokens"]:
            rows.append(cur)
        return rows


def macro(y, p, n):
    f1s = []
    for c in range(n):
        tp = sum(1 for a, b in zip(y, p) if a == c and b == c)
        pred = sum(1 for b in p if b == c)
        sup = sum(1 for a in y if a == c)
        pr = tp / pred if pred else 0.0
        rc = tp / sup if sup else 0.0
        f1s.append(2 * pr * rc / (pr + rc) if pr + rc else 0.0)
    acc = sum(1 for a, b in zip(y, p) if a == b) / len(y)
    return sum(f1s) / n, acc


def optimizer(model, args, n_train):
    """Lantern's optimizer of `--optim` (`train.optimizer`: torch's AdamW, SGD, Adagrad or
    RMSprop with the same keys, weight decay on matrices only) and linear warmup-and-decay
    schedule for `n_train` training rows; returns (optimizer, scheduler, steps per epoch)."""
    # Frozen parameters (LoRA's pretrained model) are not the optimizer's.
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if args.optim == "adamw":
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    elif args.optim == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, dampening=args.dampening,
                              nesterov=args.nesterov)
    elif args.optim == "adagrad":
        opt = torch.optim.Adagrad(groups, lr=args.lr, lr_decay=args.lr_decay, eps=args.eps,
                                  initial_accumulator_value=args.initial_accumulator_value)
    else:
        opt = torch.optim.RMSprop(groups, lr=args.lr, alpha=args.alpha, eps=args.eps,
                                  momentum=args.momentum, centered=args.centered)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total = steps_per_epoch * args.epochs
    sched = get_linear_schedule_with_warmup(opt, math.ceil(args.warmup_ratio * total), total)
    return opt, sched, steps_per_epoch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--validation", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    # `train.optimizer` and its keys, with `lantern finetune`'s defaults (transformers' `optim`
    # names adamw_torch, sgd, adagrad and rmsprop map to these four).
    ap.add_argument("--optim", default="adamw", choices=["adamw", "sgd", "adagrad", "rmsprop"])
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--dampening", type=float, default=0.0)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--centered", action="store_true")
    ap.add_argument("--lr-decay", type=float, default=0.0)
    ap.add_argument("--initial-accumulator-value", type=float, default=0.0)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--metric", default="macro_f1", choices=["macro_f1", "accuracy", "f1"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--group-by-length", action="store_true",
                    help="transformers' group_by_length (LengthGroupedSampler's order); "
                         "classes and tags only")
    ap.add_argument("--task", default="classes", choices=["classes", "tags", "qa", "choice"])
    ap.add_argument("--lora-r", type=int, default=0,
                    help="LoRA of this rank with peft (classes and tags; 0 = full fine-tuning), "
                         "as Lantern's [lora] section")
    ap.add_argument("--lora-alpha", type=float, default=8.0)
    ap.add_argument("--lora-dropout", type=float, default=0.0, help="peft's lora_dropout")
    ap.add_argument("--lora-targets", default=None,
                    help="comma-separated target_modules (default: peft's for the family)")
    ap.add_argument("--doc-stride", type=int, default=32)
    ap.add_argument("--version-2-with-negative", action="store_true")
    ap.add_argument("--null-score-diff-threshold", type=float, default=0.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    decoder = model_type(args.model) in DECODERS
    if decoder and args.task not in ("classes", "tags"):
        sys.exit(f"--task {args.task}: a GPT-2 or Llama model has sequence and token classifiers only "
                 f"(--task classes or tags)")
    if args.group_by_length and args.task not in ("classes", "tags"):
        sys.exit("--group-by-length: classes and tags only")
    if args.lora_r and args.task not in ("classes", "tags"):
        sys.exit("--lora-r: classes and tags only")
    if args.task == "qa":
        return qa_main(args)
    if args.task == "choice":
        return choice_main(args)

    train, val, test = read(args.train), read(args.validation), read(args.test)
    tags = args.task == "tags"
    labels = sorted({t for r in train for t in r["tags"]} if tags else {r["label"] for r in train})
    index = {n: i for i, n in enumerate(labels)}
    if decoder:
        tok, model = gpt2_classifier(args.model, labels, tags)
    else:
        tok = AutoTokenizer.from_pretrained(args.model)
        # The folder's own family (BertFor..., ModernBertFor...): transformers' Auto classes.
        model = (AutoModelForTokenClassification if tags else AutoModelForSequenceClassification).from_pretrained(
            args.model,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=index,
        )
    if args.lora_r:
        from peft import LoraConfig, TaskType, get_peft_model
        targets = args.lora_targets.split(",") if args.lora_targets else None
        if targets is None and model_type(args.model) == "distilbert":
            targets = ["q_lin", "v_lin"]  # peft has no default for DistilBERT; Lantern's
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.TOKEN_CLS if tags else TaskType.SEQ_CLS, r=args.lora_r,
            lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets))
        trainable, total = model.get_nb_trainable_parameters()
        print(f"peft LoRA r={args.lora_r} alpha={args.lora_alpha}: {trainable} of {total} "
              f"parameters trained", flush=True)
    opt, sched, steps_per_epoch = optimizer(model, args, len(train))

    def batch(rows):
        if not tags:
            return tok([r["text"] for r in rows], padding=True, truncation=True,
                       max_length=args.max_length, return_tensors="pt")
        return tok([r["tokens"] for r in rows], is_split_into_words=True, padding=True, truncation=True,
                   max_length=args.max_length, return_tensors="pt")

    def first_subwords(enc, b):
        """(position, word) of each word's first sub-token in row b (run_ner's labelled ones)."""
        wid = enc.word_ids(b)
        return [(i, x) for i, x in enumerate(wid) if x is not None and (i == 0 or wid[i - 1] != x)]

    def targets(enc, rows):
        if not tags:
            return torch.tensor([index[r["label"]] for r in rows])
        y = torch.full(enc["input_ids"].shape, -100)
        for b, r in enumerate(rows):
            for i, x in first_subwords(enc, b):
                y[b, i] = index[r["tags"][x]]
        return y

    def predict(rows):
        """Class indices per example, or per example the (gold, predicted) tags of its words."""
        model.eval()
        preds = []
        with torch.no_grad():
            for i in range(0, len(rows), args.eval_batch_size):
                chunk = rows[i:i + args.eval_batch_size]
                enc = batch(chunk)
                best = model(**enc).logits.argmax(-1)
                if not tags:
                    preds += best.tolist()
                    continue
                for b, r in enumerate(chunk):
                    pos = first_subwords(enc, b)
                    preds.append(([r["tags"][x] for _, x in pos], [labels[best[b, i]] for i, _ in pos]))
        return preds

    def scores(rows):
        """{"macro_f1", "accuracy"} or seqeval's {"f1", "precision", "recall", "accuracy"}."""
        p = predict(rows)
        if not tags:
            f1, acc = macro([index[r["label"]] for r in rows], p, len(labels))
            return {"macro_f1": f1, "accuracy": acc}
        from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
        gold, pred = [g for g, _ in p], [q for _, q in p]
        return {"f1": f1_score(gold, pred), "precision": precision_score(gold, pred),
                "recall": recall_score(gold, pred), "accuracy": accuracy_score(gold, pred)}

    best, best_state, best_epoch = -1.0, None, 0
    g = torch.Generator().manual_seed(args.seed)
    # group_by_length: the Trainer's LengthGroupedSampler order over the tokenised lengths.
    lengths = [len(batch([r])["input_ids"][0]) for r in train] if args.group_by_length else None
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        epoch_start = time.time()
        if lengths is None:
            order = torch.randperm(len(train), generator=g).tolist()
        else:
            order = get_length_grouped_indices(lengths, args.batch_size, generator=g)
        for s in range(steps_per_epoch):
            rows = [train[i] for i in order[s * args.batch_size:(s + 1) * args.batch_size]]
            enc = batch(rows)
            loss = model(**enc, labels=targets(enc, rows)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        print(f"epoch {epoch}: training steps in {time.time() - epoch_start:.1f} s", flush=True)
        sc = scores(val)
        score = sc[args.metric]
        print(f"epoch {epoch}: validation " + " ".join(f"{k} {v:.4f}" for k, v in sc.items()), flush=True)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = time.time() - start
    model.load_state_dict(best_state)
    out = {"impl": "transformers", **{f"test_{k}": v for k, v in scores(test).items()}}
    print(json.dumps({**out, "best_epoch": best_epoch, "train_seconds": train_seconds}))


def choice_main(args):
    """`--task choice`: the same loop over multiple-choice examples, run_swag's pairs and accuracy."""
    from transformers import BertForMultipleChoice
    train, val, test = read(args.train), read(args.validation), read(args.test)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = BertForMultipleChoice.from_pretrained(args.model)
    opt, sched, steps_per_epoch = optimizer(model, args, len(train))

    def endings(r):
        return [r[f"ending{i}"] for i in range(len(r)) if f"ending{i}" in r]

    def batch(rows):
        # run_swag's preprocess_function: the first sentence repeated, the header plus each ending.
        c = len(endings(rows[0]))
        firsts = [r["sent1"] for r in rows for _ in range(c)]
        seconds = [f"{r['sent2']} {e}" for r in rows for e in endings(r)]
        enc = tok(firsts, seconds, padding=True, truncation=True, max_length=args.max_length,
                  return_tensors="pt")
        return {k: v.view(len(rows), c, -1) for k, v in enc.items()}

    def accuracy(rows):
        model.eval()
        right = 0
        with torch.no_grad():
            for i in range(0, len(rows), args.eval_batch_size):
                chunk = rows[i:i + args.eval_batch_size]
                best = model(**batch(chunk)).logits.argmax(-1)
                right += sum(int(b == r["label"]) for b, r in zip(best.tolist(), chunk))
        return right / len(rows)

    best, best_state, best_epoch = -1.0, None, 0
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        epoch_start = time.time()
        order = torch.randperm(len(train), generator=g).tolist()
        for s in range(steps_per_epoch):
            rows = [train[i] for i in order[s * args.batch_size:(s + 1) * args.batch_size]]
            loss = model(**batch(rows), labels=torch.tensor([r["label"] for r in rows])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        print(f"epoch {epoch}: training steps in {time.time() - epoch_start:.1f} s", flush=True)
        score = accuracy(val)
        print(f"epoch {epoch}: validation accuracy {score:.4f}", flush=True)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = time.time() - start
    model.load_state_dict(best_state)
    print(json.dumps({"impl": "transformers", "test_accuracy": accuracy(test), "best_epoch": best_epoch,
                      "train_seconds": train_seconds}))


def qa_main(args):
    """`--task qa`: the same loop over windows, with run_qa's data and evaluation."""
    import os
    import sys

    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_qa_metric_golden import best_answers, evaluate
    from make_qa_v2_metric_golden import best_answers_v2, squad_v2

    v2 = args.version_2_with_negative
    tok = AutoTokenizer.from_pretrained(args.model)
    rows = {k: read_squad(p) for k, p in [("train", args.train), ("val", args.validation), ("test", args.test)]}
    windows = {k: qa_windows(tok, r, args.max_length, args.doc_stride, v2) for k, r in rows.items()}
    train = windows["train"]
    model = BertForQuestionAnswering.from_pretrained(args.model)
    opt, sched, steps_per_epoch = optimizer(model, args, len(train))

    def batch(ws):
        return tok.pad([{"input_ids": w["input_ids"], "token_type_ids": w["token_type_ids"]} for w in ws],
                       return_tensors="pt")

    def scores(split):
        model.eval()
        ws, logits = windows[split], []
        with torch.no_grad():
            for i in range(0, len(ws), args.eval_batch_size):
                chunk = ws[i:i + args.eval_batch_size]
                out = model(**batch(chunk))
                for b, w in enumerate(chunk):
                    n = len(w["input_ids"])
                    logits.append((out.start_logits[b, :n].numpy(), out.end_logits[b, :n].numpy()))
        per_example = [[] for _ in rows[split]]
        for w, (s, e) in zip(ws, logits):
            per_example[w["example"]].append((np.asarray(s, dtype=np.float32), np.asarray(e, dtype=np.float32),
                                              w["offsets"]))
        golds = [r["answers"]["text"] for r in rows[split]]
        if v2:
            t = args.null_score_diff_threshold
            preds = [best_answers_v2(r["context"], wins, 20, 30, t)["prediction"]
                     for r, wins in zip(rows[split], per_example)]
            return squad_v2(preds, golds)
        preds = [best_answers(r["context"], wins, 20, 30)[0]["text"] for r, wins in zip(rows[split], per_example)]
        return evaluate(preds, golds)

    best, best_state, best_epoch = -1.0, None, 0
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        epoch_start = time.time()
        order = torch.randperm(len(train), generator=g).tolist()
        for s in range(steps_per_epoch):
            ws = [train[i] for i in order[s * args.batch_size:(s + 1) * args.batch_size]]
            loss = model(**batch(ws), start_positions=torch.tensor([w["span"][0] for w in ws]),
                         end_positions=torch.tensor([w["span"][1] for w in ws])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        print(f"epoch {epoch}: training steps in {time.time() - epoch_start:.1f} s", flush=True)
        sc = scores("val")
        print(f"epoch {epoch}: validation " + " ".join(f"{k} {v:.4f}" for k, v in sc.items()), flush=True)
        if sc[args.metric] > best:
            best, best_epoch = sc[args.metric], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = time.time() - start
    model.load_state_dict(best_state)
    out = {"impl": "transformers", **{f"test_{k}": v for k, v in scores("test").items()}}
    print(json.dumps({**out, "best_epoch": best_epoch, "train_seconds": train_seconds}))


if __name__ == "__main__":
    main()

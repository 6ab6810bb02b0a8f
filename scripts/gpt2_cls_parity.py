#!/usr/bin/env python3
"""GPT-2 and Llama sequence and token classification parity: a model fine-tuned by `lantern
finetune` from a GPT checkpoint, run by transformers' GPT2ForSequenceClassification
(GPT2ForTokenClassification with `--task tags`, below), against the `lantern` binary; from a
Llama checkpoint (config.json's model_type "llama"), the same checks with
LlamaForSequenceClassification and LlamaForTokenClassification. The family, its classes and the
end-of-text token come from config.json's model_type and the tokenizer: the first of
`<|endoftext|>`, `</s>`, `<|end_of_text|>` it holds, as Lantern picks its padding id
(`<|endoftext|>` for `lantern prepare`'s byte-level BPE, which both families use).

    python scripts/gpt2_cls_parity.py --lantern target/release/lantern --run RUN
        --data validation.jsonl [--test test.jsonl] --max-length 64 --work DIR
    python scripts/gpt2_cls_parity.py --task tags --lantern target/release/lantern --run RUN
        --data validation.jsonl [--test test.conll] --max-length 64 --work DIR

RUN is the fine-tuning run folder; RUN/model is its export (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json). Checks, fp32, logits within 1e-4 max abs:
1. config.json names GPT2ForSequenceClassification (LlamaForSequenceClassification), single-label,
   and pad_token_id is the tokenizer's end-of-text (`<|endoftext|>`) id.
2. Tokenisation: the export's tokenizer.json (tokenizers.Tokenizer) adds no special tokens
   (the ids with and without them are the same), and transformers' PreTrainedTokenizerFast on
   the same file gives the same ids; the texts are truncated to --max-length tokens. The
   folder as transformers loads it, AutoTokenizer.from_pretrained(RUN/model) (reading
   tokenizer_config.json): its pad_token_id is config.json's, BOS and EOS are the end-of-text
   token, and it gives the same ids (truncated to --max-length); its class and
   model_max_length are printed.
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
5. transformers.pipeline("text-classification", model=RUN/model), which loads the model and the
   tokenizer from the folder alone, on the validation texts in batches of 8 (padded by the
   tokenizer, so it needs its pad token), truncated to --max-length: its labels are `lantern
   predict`'s, and its probabilities of them within 1e-4 of Lantern's.

`--task tags`, a token classifier (`data.problem_type = "token_classification"`; --data and
--test word-level JSONL {tokens, tags} or CoNLL), fp32, logits within 1e-4 max abs and
probabilities within 1e-5:
1. config.json names GPT2ForTokenClassification (LlamaForTokenClassification), pad_token_id is the
   end-of-text (`<|endoftext|>`) id; the classifier dropout transformers builds (config.json's
   classifier_dropout, else 0.1) is printed.
2. Tokenisation as run_ner does it with `add_prefix_space=True`: the words through
   PreTrainedTokenizerFast with `is_split_into_words=True`, truncated to --max-length, the
   tokenizer.json's ByteLevel pre-tokenizer with add_prefix_space set
   (finetune_torch.word_tokenizer; whether the add_prefix_space argument alone reaches the
   pre-tokenizer is printed), against tokenizers.Tokenizer with that pre-tokenizer
   (is_pretokenized) and AutoTokenizer.from_pretrained(RUN/model, add_prefix_space=True), run_ner's
   loading: ids and word ids identical; no special tokens. For a Llama the AutoTokenizer line is
   printed, not checked: run_ner passes add_prefix_space only for bloom, gpt2, roberta and
   deberta, and a Llama folder's tokenizer_config.json names the generic fast tokenizer
   (LlamaTokenizer would rebuild a SentencePiece pipeline), which keeps the file's pre-tokenizer
   (no prefix space) with or without the flag (transformers 5.24); Lantern encodes the words of
   its byte-level BPE with the prefix space in both
   families. Each word is read at its first sub-token; the words whose first sub-token is cut
   away get no tag, and must be exactly the words `lantern predict` leaves without one (null).
3. Logits at each word's first sub-token, the ids padded on the right with pad_token_id, with
   the attention mask, against `lantern predict`'s per-word "logits" and its "scores" (the
   softmax probability of the predicted tag): the same batches (64 in both), transformers in
   batches of 8 and one by one, and Lantern in batches of 5. Lantern's tags are transformers'
   argmax, and its "entities" are seqeval's chunks of those tags (text and mean probability).
4. Metrics of transformers' predictions: seqeval's entity precision, recall and F1 (micro, default
   mode) and word accuracy vs `lantern eval`'s, exactly (seqeval when installed, else the same
   chunking and counts here), the number of words scored, and transformers' loss (its own, labels
   -100 off the first sub-tokens, weighted by the words of each batch) vs eval_loss. With --test,
   the same on the test set vs RUN/test_metrics.json.
Prints one line per check and exits non-zero if any fails.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from tokenizers import Tokenizer
from transformers import (GPT2ForSequenceClassification, GPT2ForTokenClassification,
                          LlamaForSequenceClassification, LlamaForTokenClassification,
                          MistralForSequenceClassification, MistralForTokenClassification,
                          PreTrainedTokenizerFast, Qwen2ForSequenceClassification,
                          Gemma3TextForSequenceClassification,
                          Qwen2ForTokenClassification, Qwen3ForSequenceClassification,
                          Qwen3ForTokenClassification, Phi3ForSequenceClassification,
                          Phi3ForTokenClassification, Gemma2ForSequenceClassification,
                          Gemma2ForTokenClassification, Olmo2ForSequenceClassification,
                          GemmaForSequenceClassification, GemmaForTokenClassification,
                          SmolLM3ForSequenceClassification, SmolLM3ForTokenClassification)
from transformers.utils import logging as hf_logging

from finetune_torch import macro, read, word_tokenizer

TOL = 1e-4
PROB_TOL = 1e-5
# Per config.json's model_type: the family's name, its sequence and token classifiers.
FAMILIES = {
    "gpt2": ("GPT-2", GPT2ForSequenceClassification, GPT2ForTokenClassification),
    "llama": ("Llama", LlamaForSequenceClassification, LlamaForTokenClassification),
    "mistral": ("Mistral", MistralForSequenceClassification, MistralForTokenClassification),
    "qwen2": ("Qwen2", Qwen2ForSequenceClassification, Qwen2ForTokenClassification),
    "qwen3": ("Qwen3", Qwen3ForSequenceClassification, Qwen3ForTokenClassification),
    # No token classifier in transformers for Gemma 3.
    "gemma3_text": ("Gemma 3", Gemma3TextForSequenceClassification, None),
    "phi3": ("Phi-3", Phi3ForSequenceClassification, Phi3ForTokenClassification),
    "gemma2": ("Gemma 2", Gemma2ForSequenceClassification, Gemma2ForTokenClassification),
    "gemma": ("Gemma", GemmaForSequenceClassification, GemmaForTokenClassification),
    "smollm3": ("SmolLM3", SmolLM3ForSequenceClassification, SmolLM3ForTokenClassification),
    # Nor for OLMo 2.
    "olmo2": ("OLMo 2", Olmo2ForSequenceClassification, None),
}
# Families whose folders AutoTokenizer loads with a tokenizer class of their own that rebuilds
# the pipeline from the vocabulary (GemmaTokenizer: SentencePiece's), whatever tokenizer.json
# holds: a real folder's tokenizer.json is that pipeline; a test folder holding Lantern's
# byte-level BPE is not, so the checks through AutoTokenizer are printed, not made.
OWN_TOKENIZER = {"gemma3_text", "gemma2", "gemma"}
# The end-of-text tokens Lantern pads with when config.json names no pad_token_id, in its order.
ENDS = ("<|endoftext|>", "</s>", "<|end_of_text|>")
# The model types run_ner loads the tokenizer of with add_prefix_space=True.
RUN_NER_PREFIX_SPACE = {"bloom", "gpt2", "roberta", "deberta"}


def family(cfg):
    """(name, sequence classifier class, token classifier class) of config.json's model_type."""
    mt = cfg.get("model_type")
    if mt not in FAMILIES:
        sys.exit(f"config.json's model_type {mt!r}: only {', '.join(FAMILIES)} are checked here")
    return FAMILIES[mt]


def end_of_text(tokenizer):
    """(token, id) of the first end-of-text token the tokenizers.Tokenizer holds."""
    for t in ENDS:
        i = tokenizer.token_to_id(t)
        if i is not None:
            return t, i
    sys.exit(f"the tokenizer holds none of {', '.join(ENDS)}")


def auto_tokenizer(path):
    """AutoTokenizer.from_pretrained(path), transformers' warnings silenced."""
    from transformers import AutoTokenizer
    hf_logging.set_verbosity_error()
    return AutoTokenizer.from_pretrained(path)


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


def padded_batches(ids, pad, batch_size):
    """(start, rows, ids, mask) of each batch of `batch_size` rows padded on the right with
    `pad` to their longest row."""
    for i in range(0, len(ids), batch_size):
        chunk = ids[i:i + batch_size]
        t = max(len(r) for r in chunk)
        x = torch.tensor([r + [pad] * (t - len(r)) for r in chunk])
        mask = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in chunk])
        yield i, chunk, x, mask


def hf_logits(model, ids, pad, batch_size, labels=None):
    """transformers' logits of each row, in batches of `batch_size` padded on the right with
    `pad` to their longest row, with the attention mask; and the summed loss when labels are
    given (transformers' mean loss of each batch times its size)."""
    out, loss_sum = [], 0.0
    with torch.no_grad():
        for i, chunk, x, mask in padded_batches(ids, pad, batch_size):
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
    ap.add_argument("--data", required=True,
                    help="labelled JSONL ({text, label}; with --task tags {tokens, tags} or CoNLL) to compare on")
    ap.add_argument("--test", help="the run's test set, to check test_metrics.json as well")
    ap.add_argument("--max-length", type=int, required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--task", default="classes", choices=["classes", "tags"],
                    help="sequence classifier (classes) or token classifier (tags)")
    args = ap.parse_args()
    torch.manual_seed(0)
    hf_logging.disable_progress_bar()
    os.makedirs(args.work, exist_ok=True)
    w = lambda *p: os.path.join(args.work, *p)
    export = os.path.join(args.run, "model")
    if args.task == "tags":
        return tags_main(args, w, export)
    ok = True

    # 1. The config.
    with open(os.path.join(export, "config.json")) as f:
        cfg = json.load(f)
    fam, cls, _ = family(cfg)
    raw = Tokenizer.from_file(os.path.join(export, "tokenizer.json"))
    eot_token, eot = end_of_text(raw)
    ok &= check("config.json", cfg["architectures"] == [cls.__name__]
                and cfg["problem_type"] == "single_label_classification" and cfg.get("pad_token_id") == eot,
                f"{cfg['architectures'][0]}, {cfg['problem_type']}, pad_token_id {cfg.get('pad_token_id')} "
                f"({eot_token} is {eot}), {len(cfg['id2label'])} labels")
    model = cls.from_pretrained(export, dtype=torch.float32).eval()
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
    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(export, "tokenizer.json"), pad_token=eot_token)
    fast_ids = fast(texts, truncation=True, max_length=args.max_length)["input_ids"]
    ok &= check("PreTrainedTokenizerFast on the same tokenizer.json", fast_ids == ids,
                f"ids {'identical' if fast_ids == ids else 'differ'}; pad token {fast.pad_token!r} = {fast.pad_token_id}")
    own = cfg["model_type"] in OWN_TOKENIZER
    if own:
        print(f"     not checked: AutoTokenizer builds the {cfg['model_type']} tokenizer class from "
              f"the vocabulary, not this tokenizer.json (nor the pipeline() check below)")
    # Qwen's tokenizer (Qwen2Tokenizer, which AutoTokenizer builds for any qwen2 or qwen3 folder) has no BOS.
    bos = None if cfg["model_type"] in ("qwen2", "qwen3") else eot_token
    auto = None if own else auto_tokenizer(export)
    auto_ids = auto and auto(texts, truncation=True, max_length=args.max_length)["input_ids"]
    ok &= own or check("AutoTokenizer.from_pretrained(model) (tokenizer_config.json)",
                auto.pad_token_id == cfg.get("pad_token_id") and auto.bos_token == bos
                and auto.eos_token == eot_token and auto_ids == ids,
                f"{type(auto).__name__}, pad {auto.pad_token!r} = {auto.pad_token_id} (config.json's "
                f"{cfg.get('pad_token_id')}), bos {auto.bos_token!r}, eos {auto.eos_token!r}, unk {auto.unk_token!r}, "
                f"model_max_length {auto.model_max_length}; ids {'identical' if auto_ids == ids else 'differ'}")
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

    # 5. The pipeline, from the folder alone.
    import transformers
    if not own:
        pipe = transformers.pipeline("text-classification", model=export, device="cpu")
        out = pipe(texts, batch_size=8, truncation=True, max_length=args.max_length)
        same = sum(1 for o, p in zip(out, pred64) if o["label"] == p["label"])
        pdiff = max(abs(o["score"] - p["probabilities"][p["label"]]) for o, p in zip(out, pred64))
        ok &= check("pipeline('text-classification', model) in batches of 8 vs lantern predict",
                    same == len(texts) and pdiff <= TOL,
                    f"{type(pipe.tokenizer).__name__} pads with {pipe.tokenizer.pad_token!r}; labels: "
                    f"{same} of {len(texts)} agree; max abs diff of their probabilities {pdiff:.3e} "
                    f"(tolerance {TOL:.0e})")

    print()
    if ok:
        print(f"PASS: {cls.__name__} fine-tuned by Lantern agrees with transformers "
              f"{transformers_version()}: max abs logit diff {max(diffs.values()):.3e} over {len(ids)} validation "
              f"rows and 4 batchings (tolerance {TOL:.0e}); validation accuracy {hf_acc:.4f} (transformers) = "
              f"{ev['accuracy']:.4f} (lantern eval), macro-F1 {hf_f1:.4f}"
              + (f"; test accuracy {test_acc:.4f} = test_metrics.json" if test_acc is not None else ""))
        return 0
    print(f"FAIL: {fam} sequence classification parity: see the FAIL lines above")
    return 1


def end_of_chunk(prev_tag, tag, prev_type, type_):
    """seqeval 1.2.2's end_of_chunk (sequence_labeling.py)."""
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def start_of_chunk(prev_tag, tag, prev_type, type_):
    """seqeval 1.2.2's start_of_chunk (sequence_labeling.py)."""
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def entities(seq):
    """seqeval's get_entities (default mode, prefix tags) of one sequence: (type, first, last)."""
    try:
        from seqeval.metrics.sequence_labeling import get_entities
        return get_entities(list(seq))
    except ImportError:
        pass
    prev_tag, prev_type, begin, chunks = "O", "", 0, []
    for i, chunk in enumerate(list(seq) + ["O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def entity_scores(gold, pred):
    """seqeval's precision, recall, F1 (micro over entity types, default mode) and word accuracy
    of lists of tag sequences, and what computed them: seqeval itself when it is installed, else
    its chunking (`entities`) and counts here."""
    try:
        import seqeval
        from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
        return ({"precision": precision_score(gold, pred), "recall": recall_score(gold, pred),
                 "f1": f1_score(gold, pred), "accuracy": accuracy_score(gold, pred)},
                f"seqeval {getattr(seqeval, '__version__', '')}".strip())
    except ImportError:
        pass
    true = {(i,) + e for i, g in enumerate(gold) for e in entities(g)}
    found = {(i,) + e for i, p in enumerate(pred) for e in entities(p)}
    tp = len(true & found)
    p = tp / len(found) if found else 0.0
    r = tp / len(true) if true else 0.0
    words = [(a, b) for g, q in zip(gold, pred) for a, b in zip(g, q)]
    return ({"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
             "accuracy": sum(1 for a, b in words if a == b) / len(words)},
            "seqeval's chunking transcribed here (seqeval is not installed)")


def first_subtokens(word_ids):
    """(position, word) of each word's first sub-token: the positions run_ner labels."""
    return [(i, x) for i, x in enumerate(word_ids) if x is not None and (i == 0 or word_ids[i - 1] != x)]


def hf_word_logits(model, ids, firsts, pad, batch_size, gold=None):
    """transformers' logits at each word's first sub-token, rows in order and words in order
    within a row (a (words, tags) table), in batches of `batch_size` padded on the right with
    `pad` to their longest row, with the attention mask; with `gold` (per row the tag index of
    each of its words) also the loss summed over the words: transformers' own loss of each batch
    (labels -100 off the first sub-tokens, the mean over its labelled positions) times their
    number."""
    out, loss_sum = [], 0.0
    with torch.no_grad():
        for i, chunk, x, mask in padded_batches(ids, pad, batch_size):
            kw = {}
            if gold is not None:
                labels = torch.full(x.shape, -100)
                for b in range(len(chunk)):
                    for (pos, _), g in zip(firsts[i + b], gold[i + b]):
                        labels[b, pos] = g
                kw["labels"] = labels
            o = model(input_ids=x, attention_mask=mask, **kw)
            for b in range(len(chunk)):
                out.append(o.logits[b, [pos for pos, _ in firsts[i + b]]].float())
            if gold is not None:
                loss_sum += o.loss.item() * sum(len(g) for g in gold[i:i + batch_size])
    return torch.cat(out), loss_sum


def tags_main(args, w, export):
    """The `--task tags` checks (see the module's doc)."""
    from transformers import AutoTokenizer
    ok = True

    # 1. The config.
    with open(os.path.join(export, "config.json")) as f:
        cfg = json.load(f)
    fam, _, cls = family(cfg)
    tok_file = os.path.join(export, "tokenizer.json")
    raw = Tokenizer.from_file(tok_file)
    eot_token, eot = end_of_text(raw)
    model = cls.from_pretrained(export, dtype=torch.float32).eval()
    pad = model.config.pad_token_id
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    ok &= check("config.json", cfg["architectures"] == [cls.__name__] and cfg.get("pad_token_id") == eot,
                f"{cfg['architectures'][0]}, pad_token_id {cfg.get('pad_token_id')} ({eot_token} is {eot}), "
                f"labels {names}; classifier_dropout {cfg.get('classifier_dropout')} in config.json, "
                f"transformers' dropout p={model.dropout.p}")

    # 2. Tokenisation.
    rows = read(args.data)
    words = [r["tokens"] for r in rows]
    fast = word_tokenizer(export, pad_token=eot_token)
    enc = fast(words, is_split_into_words=True, truncation=True, max_length=args.max_length)
    ids = enc["input_ids"]
    wids = [enc.word_ids(i) for i in range(len(rows))]
    # The file's ByteLevel pre-tokenizer (alone, or inside a Sequence after Qwen2's Split) with
    # add_prefix_space, through the tokenizers library alone.
    with open(tok_file, encoding="utf-8") as f:
        spec = json.load(f)
    pre = spec["pre_tokenizer"]
    for part in pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]:
        if part["type"] == "ByteLevel":
            part["add_prefix_space"] = True
    prefixed = Tokenizer.from_str(json.dumps(spec))
    plain = [e.ids for e in prefixed.encode_batch(words, is_pretokenized=True, add_special_tokens=False)]
    special = [e.ids for e in prefixed.encode_batch(words, is_pretokenized=True, add_special_tokens=True)]
    prefixed.enable_truncation(args.max_length)
    ref = prefixed.encode_batch(words, is_pretokenized=True)
    same = [e.ids for e in ref] == ids and [e.word_ids for e in ref] == wids
    ok &= check("words through PreTrainedTokenizerFast (is_split_into_words, ByteLevel add_prefix_space) vs "
                "tokenizers.Tokenizer (is_pretokenized)", same and plain == special,
                f"ids and word ids {'identical' if same else 'differ'}; ids with and without special tokens "
                f"{'identical' if plain == special else 'differ'}")
    hf_logging.set_verbosity_error()
    auto = AutoTokenizer.from_pretrained(export, add_prefix_space=True)
    auto_ids = auto(words, is_split_into_words=True, truncation=True, max_length=args.max_length)["input_ids"]
    if cfg["model_type"] in RUN_NER_PREFIX_SPACE:
        ok &= check("run_ner's AutoTokenizer.from_pretrained(model, add_prefix_space=True)", auto_ids == ids,
                    f"{type(auto).__name__}: ids {'identical' if auto_ids == ids else 'differ'}")
    else:
        # run_ner asks for the prefix space only for RUN_NER_PREFIX_SPACE; a Llama folder's
        # tokenizer_config.json names the generic fast tokenizer, which keeps the file's
        # pre-tokenizer with or without the flag. Lantern encodes words of a byte-level BPE with
        # the prefix space whatever the family, as `word_tokenizer` does: that is the reference.
        plain_auto = AutoTokenizer.from_pretrained(export)
        plain_ids = plain_auto(words, is_split_into_words=True, truncation=True,
                               max_length=args.max_length)["input_ids"]
        pre = json.loads(auto.backend_tokenizer.pre_tokenizer.__getstate__())

        def differ(x):
            n = sum(a != b for a, b in zip(x, ids))
            return f"differ in {n} of {len(ids)} rows" if n else "identical"
        print(f"     not checked: run_ner passes add_prefix_space=True only for model_type "
              f"{', '.join(sorted(RUN_NER_PREFIX_SPACE))}, not {cfg['model_type']}; AutoTokenizer.from_pretrained(model) "
              f"(run_ner's call here) gives {type(plain_auto).__name__}, ids {differ(plain_ids)}; with "
              f"add_prefix_space=True {type(auto).__name__}, pre-tokenizer add_prefix_space "
              f"{pre.get('add_prefix_space')}, ids {differ(auto_ids)}")
    flag_only = PreTrainedTokenizerFast(tokenizer_file=tok_file, add_prefix_space=True)
    flag_ids = flag_only(words, is_split_into_words=True, truncation=True, max_length=args.max_length)["input_ids"]
    flag_pre = json.loads(flag_only.backend_tokenizer.pre_tokenizer.__getstate__())
    print(f"     PreTrainedTokenizerFast(tokenizer_file=..., add_prefix_space=True) alone: pre-tokenizer "
          f"add_prefix_space {flag_pre.get('add_prefix_space')}, ids "
          f"{'identical' if flag_ids == ids else f'differ in {sum(a != b for a, b in zip(flag_ids, ids))} of {len(ids)} rows'}")
    firsts = [first_subtokens(x) for x in wids]
    cut_words = sum(len(ws) for ws in words) - sum(len(f) for f in firsts)
    lens = sorted(len(r) for r in ids)
    print(f"     {len(rows)} sentences, {sum(len(ws) for ws in words)} words, {lens[0]} to {lens[-1]} tokens "
          f"(median {lens[len(lens) // 2]}); {sum(1 for r in ids if len(r) == args.max_length)} reach "
          f"{args.max_length}, {cut_words} words cut away")

    # 3. Logits.
    run([args.lantern, "predict", "--checkpoint", args.run, "--input", args.data, "--out", w("tags64.jsonl")])
    run([args.lantern, "predict", "--checkpoint", args.run, "--input", args.data, "--out", w("tags5.jsonl"),
         "--batch-size", "5"])
    pred64, pred5 = read_jsonl(w("tags64.jsonl")), read_jsonl(w("tags5.jsonl"))
    kept = [[x for _, x in f] for f in firsts]
    lantern_kept = [[j for j, t in enumerate(p["tags"]) if t is not None] for p in pred64]
    flag_kept = [sorted({x for x in flag_only(ws, is_split_into_words=True, truncation=True,
                                              max_length=args.max_length).word_ids() if x is not None})
                 for ws in words]
    ok &= check("words lantern predict tags = words whose first sub-token is kept",
                lantern_kept == kept and all(p["words"] == ws for p, ws in zip(pred64, words)),
                f"{sum(len(k) for k in lantern_kept)} (lantern) vs {sum(len(k) for k in kept)} words tagged, "
                f"{sum(a != b for a, b in zip(lantern_kept, kept))} rows differ (without the prefix space: "
                f"{sum(len(k) for k in flag_kept)} words, {sum(a != b for a, b in zip(flag_kept, kept))} rows differ)")

    def lantern_table(pred, key):
        return torch.tensor([p[key][x] for p, k in zip(pred, kept) for x in k], dtype=torch.float64)

    gold = [[names.index(r["tags"][x]) for x in k] for r, k in zip(rows, kept)]
    theirs64, loss_sum = hf_word_logits(model, ids, firsts, pad, 64, gold)
    theirs8, _ = hf_word_logits(model, ids, firsts, pad, 8)
    theirs1, _ = hf_word_logits(model, ids, firsts, pad, 1)
    ours64, ours5 = lantern_table(pred64, "logits"), lantern_table(pred5, "logits")
    diffs, pdiffs = {}, {}
    n_words = theirs64.shape[0]
    for name, ours, theirs, pred in [("same batches (64 in both)", ours64, theirs64, pred64),
                                     ("mixed: lantern 64 vs transformers 8", ours64, theirs8, pred64),
                                     ("mixed: lantern 64 vs transformers 1 (unpadded)", ours64, theirs1, pred64),
                                     ("mixed: lantern 5 vs transformers 64", ours5, theirs64, pred5)]:
        d = (ours - theirs.double()).abs().max().item()
        probs = theirs.double().softmax(-1)
        pd = (lantern_table(pred, "scores") - probs.max(-1).values).abs().max().item()
        diffs[name], pdiffs[name] = d, pd
        ok &= check(f"first-sub-token logits, {name}", d <= TOL and pd <= PROB_TOL,
                    f"max abs diff {d:.3e} (tolerance {TOL:.0e}), probability of the tag {pd:.3e} "
                    f"(tolerance {PROB_TOL:.0e}) over {n_words} words")
    hf_tags = [names[i] for i in theirs64.argmax(-1).tolist()]
    lantern_tags = [p["tags"][x] for p, k in zip(pred64, kept) for x in k]
    agree = sum(1 for a, b in zip(hf_tags, lantern_tags) if a == b)
    ok &= check("tags, lantern predict vs transformers' argmax", agree == n_words, f"{agree} of {n_words} agree "
                f"({sum(1 for t in hf_tags if t.startswith('B-'))} B- tags)")
    pred_seqs, gold_seqs, at = [], [], 0
    for r, k in zip(rows, kept):
        pred_seqs.append(hf_tags[at:at + len(k)])
        gold_seqs.append([r["tags"][x] for x in k])
        at += len(k)
    ent_ok, n_ent = True, 0
    for p, seq in zip(pred64, pred_seqs):
        want = entities(seq)
        got = [(e["type"], e["start"], e["end"]) for e in p["entities"]]
        n_ent += len(want)
        ent_ok &= got == [tuple(e) for e in want] and all(
            e["text"] == " ".join(p["words"][e["start"]:e["end"] + 1])
            and abs(e["score"] - sum(p["scores"][e["start"]:e["end"] + 1]) / (e["end"] - e["start"] + 1)) <= 1e-9
            for e in p["entities"])
    ok &= check("entities, lantern predict vs seqeval's chunks of the tags", ent_ok,
                f"{n_ent} entities; text and mean probability of their words "
                f"{'as' if ent_ok else 'NOT as'} expected")

    # 4. Metrics.
    run([args.lantern, "eval", "--checkpoint", args.run, "--data", args.data, "--out", w("tags-eval.json")])
    with open(w("tags-eval.json")) as f:
        ev = json.load(f)
    sc, by = entity_scores(gold_seqs, pred_seqs)
    for key in ("f1", "precision", "recall", "accuracy"):
        ok &= check(f"{key}, transformers' predictions ({by}) vs lantern eval", abs(sc[key] - ev[key]) <= 1e-12,
                    f"{sc[key]:.6f} vs {ev[key]:.6f}")
    ok &= check("words scored, transformers vs lantern eval", n_words == ev["words"], f"{n_words} vs {ev['words']}")
    hf_loss = loss_sum / n_words
    ok &= check("loss, transformers' (labels -100 off first sub-tokens) vs lantern eval's eval_loss",
                abs(hf_loss - ev["eval_loss"]) <= TOL,
                f"{hf_loss:.6f} vs {ev['eval_loss']:.6f} (diff {abs(hf_loss - ev['eval_loss']):.2e})")
    test_sc = None
    if args.test:
        test_rows = read(args.test)
        tenc = fast([r["tokens"] for r in test_rows], is_split_into_words=True, truncation=True,
                    max_length=args.max_length)
        tfirsts = [first_subtokens(tenc.word_ids(i)) for i in range(len(test_rows))]
        tl, _ = hf_word_logits(model, tenc["input_ids"], tfirsts, pad, 64)
        tt = [names[i] for i in tl.argmax(-1).tolist()]
        tp, tg, at = [], [], 0
        for r, f in zip(test_rows, tfirsts):
            tp.append(tt[at:at + len(f)])
            tg.append([r["tags"][x] for _, x in f])
            at += len(f)
        test_sc, _ = entity_scores(tg, tp)
        with open(os.path.join(args.run, "test_metrics.json")) as f:
            tm = json.load(f)
        ok &= check("test set: transformers vs the run's test_metrics.json",
                    all(abs(test_sc[k] - tm[k]) <= 1e-12 for k in ("f1", "precision", "recall", "accuracy"))
                    and tm["words"] == sum(len(f) for f in tfirsts),
                    f"F1 {test_sc['f1']:.6f} vs {tm['f1']:.6f}, accuracy {test_sc['accuracy']:.6f} vs "
                    f"{tm['accuracy']:.6f}, {sum(len(f) for f in tfirsts)} vs {tm['words']} words")

    print()
    if ok:
        print(f"PASS: {cls.__name__} fine-tuned by Lantern agrees with transformers "
              f"{transformers_version()}: max abs first-sub-token logit diff {max(diffs.values()):.3e}, probability "
              f"{max(pdiffs.values()):.3e}, over {n_words} validation words and 4 batchings; validation entity F1 "
              f"{sc['f1']:.4f} and word accuracy {sc['accuracy']:.4f} (transformers, {by}) = lantern eval's"
              + (f"; test F1 {test_sc['f1']:.4f} = test_metrics.json" if test_sc is not None else ""))
        return 0
    print(f"FAIL: {fam} token classification parity: see the FAIL lines above")
    return 1


def transformers_version():
    import transformers
    return transformers.__version__


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""BERT parity between Lantern (through the `lantern` binary) and transformers, both ways.

    python scripts/bert_parity.py --lantern target/release/lantern --minilm DIR --work DIR

1. all-MiniLM-L6-v2 as published (a BertModel without `bert.` prefix): `lantern encode` on a
   padded batch with a sentence pair vs transformers' BertModel on the same ids — the ids
   themselves (Lantern's tokenisation of MiniLM's tokenizer.json vs transformers'), then the
   last hidden state and the pooler output (max abs difference over real tokens).
2. `lantern export` of MiniLM, loaded by transformers: the same outputs as the original.
3. Classifiers of each problem type (single-label, multi-label, regression): a tiny
   BertForSequenceClassification fine-tuned by `lantern finetune` (WordPiece tokenizer from
   `lantern wordpiece`), exported, loaded with transformers' from_pretrained: logits vs
   `lantern predict`'s logits, and transformers' loss for the config's problem_type on the
   validation examples vs `lantern eval`'s (and, single-label, scikit-learn's Matthews correlation
   of transformers' predictions vs `lantern eval`'s).
4. A token classifier (IOB2 tags of the fortune-tags task, scripts/make_fortune_tags.py)
   fine-tuned by Lantern and exported: BertForTokenClassification in transformers, the words
   tokenised with `is_split_into_words=True` and labelled on each word's first sub-token (-100
   elsewhere, as run_ner does): its logits there vs `lantern predict`'s, its loss vs `lantern
   eval`'s, and seqeval's precision/recall/F1/accuracy of its predictions vs `lantern eval`'s.
5. The golden BertForMaskedLM (tests/golden/bert_tiny/mlm) through `lantern export`: logits of
   the export in transformers vs the original in transformers.
6. The golden BertForQuestionAnswering (tests/golden/bert_tiny/qa) the same way: start and end
   logits and the loss of the export in transformers vs the original's.
7. RoBERTa: a tiny RobertaForMaskedLM made by transformers with the byte-level BPE tokenizer of
   tests/golden/roberta_tiny: `lantern encode` vs transformers' encoder (ids, then hidden
   states: RoBERTa's position ids from pad_token_id + 1); a RobertaForSequenceClassification
   fine-tuned from it by `lantern finetune` and exported: logits in transformers vs `lantern
   predict`, loss vs `lantern eval`; and the golden RobertaForQuestionAnswering exported by
   Lantern, in transformers.
8. DistilBERT the same way: a tiny DistilBertForMaskedLM made by transformers with the WordPiece
   tokenizer of section 3 (no token types reach the model), a DistilBertForSequenceClassification
   fine-tuned from it and exported, and the golden DistilBertForQuestionAnswering
   (tests/golden/distilbert_tiny/qa) exported by Lantern.
9. ELECTRA the same way, from an ElectraForPreTraining (the discriminator, as released) with
   embeddings narrower than its layers and token types, and tests/golden/electra_tiny/qa.
10. Multiple choice in every family: a BertForMultipleChoice fine-tuned from MiniLM, and
   Roberta/DistilBert/ElectraForMultipleChoice from the bases of sections 7 to 9, by `lantern
   finetune` on fortunes cut in two (which second half goes with this first half, of three),
   exported: transformers' AutoModelForMultipleChoice logits on each (first, choice) pair vs
   `lantern predict`'s, its loss vs `lantern eval`'s; and the golden multiple-choice models
   (tests/golden/multiple_choice) exported by Lantern, logits in transformers vs the originals'.
11. ModernBERT as sections 7 to 9: a tiny ModernBertForMaskedLM (every bias, mean pooling, local
   windows narrower than the texts) with the WordPiece tokenizer of section 3, a
   ModernBertForSequenceClassification fine-tuned from it and exported, and the golden
   ModernBertForQuestionAnswering (tests/golden/modernbert_tiny/qa) exported by Lantern.
Prints one line per check and exits non-zero if any difference exceeds its tolerance.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file
from transformers import (AutoTokenizer, BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                          BertForTokenClassification, BertModel)

TEXTS = [
    {"text": "Computers are useless. They can only give you answers.", "text_pair": "Pablo Picasso said that."},
    {"text": "A short one."},
    {"text": "Science is what we understand well enough to explain to a computer; art is everything else."},
]
TOL = 1e-4


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def report(name, d, tol=TOL):
    ok = d <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs diff {d:.3e} (tolerance {tol:.0e})")
    return ok


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lantern", default=os.path.join(repo, "target", "release", "lantern"))
    ap.add_argument("--minilm", required=True)
    ap.add_argument("--work", default=os.path.join(repo, "target", "bert-parity"))
    args = ap.parse_args()
    torch.manual_seed(0)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    w = lambda *p: os.path.join(args.work, *p)
    ok = True

    # 1. MiniLM as published.
    texts = w("texts.jsonl")
    with open(texts, "w") as f:
        for t in TEXTS:
            f.write(json.dumps(t) + "\n")
    run([args.lantern, "encode", "--model", args.minilm, "--input", texts, "--out", w("minilm.safetensors")])
    ours = load_file(w("minilm.safetensors"))
    tok = AutoTokenizer.from_pretrained(args.minilm)
    # Pairs: the tokenizer takes a list of (text, pair) only when every row has a pair, so
    # encode rows one by one and pad by hand, exactly as the batch collator does.
    rows = [tok(t["text"], t.get("text_pair"), truncation=True, max_length=128) for t in TEXTS]
    T = max(len(r["input_ids"]) for r in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([r["input_ids"] + [pad] * (T - len(r["input_ids"])) for r in rows])
    tt = torch.tensor([r["token_type_ids"] + [0] * (T - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (T - len(r["input_ids"])) for r in rows])
    same_ids = torch.equal(ids, ours["input_ids"]) and torch.equal(tt, ours["token_type_ids"]) \
        and torch.equal(mask, ours["attention_mask"])
    print(f"{'ok  ' if same_ids else 'FAIL'} MiniLM tokenisation: ids, token types and mask "
          f"{'identical' if same_ids else 'differ'} ({ids.shape[0]} x {ids.shape[1]})")
    ok &= same_ids
    ref = BertModel.from_pretrained(args.minilm).eval()
    with torch.no_grad():
        out = ref(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    m = mask.bool()
    ok &= report("MiniLM last hidden state (real tokens)",
                 (out.last_hidden_state - ours["last_hidden_state"])[m].abs().max().item())
    ok &= report("MiniLM pooler output", (out.pooler_output - ours["pooler_output"]).abs().max().item())

    # 2. Our export of MiniLM in transformers.
    run([args.lantern, "export", "--model", args.minilm, "--out", w("minilm-export")])
    # The export keeps the folder's own tokenizer_config.json (transformers' file is the authority).
    with open(os.path.join(args.minilm, "tokenizer_config.json"), "rb") as a, \
            open(w("minilm-export", "tokenizer_config.json"), "rb") as b:
        kept = a.read() == b.read()
    print(f"{'ok  ' if kept else 'FAIL'} MiniLM export: tokenizer_config.json "
          f"{'is MiniLM' if kept else 'differs from MiniLM'}'s")
    ok &= kept
    exp = BertModel.from_pretrained(w("minilm-export")).eval()
    with torch.no_grad():
        out2 = exp(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    ok &= report("MiniLM exported by Lantern, in transformers",
                 (out2.last_hidden_state - out.last_hidden_state).abs().max().item(), 0.0)

    # 3. A classifier fine-tuned by Lantern, in transformers.
    corpus = os.path.join(repo, "data", "raw", "fortunes")
    data = os.path.join(repo, "data", "fortune-categories")
    if not os.path.isfile(os.path.join(data, "train.jsonl")):
        run([sys.executable, os.path.join(repo, "scripts", "make_fortune_categories.py")])
    run([args.lantern, "wordpiece", "--input", os.path.join(corpus, "computers"), os.path.join(corpus, "science"),
         "--out", w("wp.json"), "--vocab-size", "2000"])
    with open(os.path.join(data, "train.jsonl")) as f:
        small = [json.loads(next(f)) for _ in range(200)]
    from transformers import PreTrainedTokenizerFast
    # The same examples with a label of each problem type: the category; the category plus
    # "long" for long texts (a set); a number made from the length (regression).
    problems = {
        "single_label_classification": lambda r: r["label"],
        "multi_label_classification": lambda r: [r["label"]] + (["long"] if len(r["text"]) > 120 else []),
        "regression": lambda r: min(len(r["text"]), 400) / 100.0,
    }
    # Single-label trains longer and keeps the model of the best Matthews correlation, so that
    # its predictions are not one class (whose correlation is 0 on both sides whatever the
    # formula).
    epochs = {"single_label_classification": 12, "multi_label_classification": 1, "regression": 1}
    lrs = {"single_label_classification": 3e-3, "multi_label_classification": 1e-3, "regression": 1e-3}
    stopping = {"single_label_classification": "[early_stopping]\nmetric = \"matthews_correlation\"\n",
                "multi_label_classification": "", "regression": ""}
    for problem, label in problems.items():
        name = problem.split("_")[0]
        rows = [{"text": r["text"], "label": label(r)} for r in small]
        with open(w(f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[:160])
        with open(w(f"{name}-val.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[160:])
        with open(w(f"{name}.toml"), "w") as f:
            f.write(f"""[run]\ndir = "{w(name + '-run')}"\n[model]\ntokenizer = "{w('wp.json')}"\nhidden_size = 32
num_hidden_layers = 2\nnum_attention_heads = 4\nintermediate_size = 64\n[data]\ntrain = "{w(name + '.jsonl')}"
validation = "{w(name + '-val.jsonl')}"\nmax_length = 64\nproblem_type = "{problem}"\n[train]\nepochs = {epochs[problem]}
batch_size = 16\nlr = {lrs[problem]}\n{stopping[problem]}""")
        run([args.lantern, "finetune", "--config", w(f"{name}.toml"), "--quiet"])
        export = w(f"{name}-export")
        run([args.lantern, "export", "--model", w(f"{name}-run"), "--out", export])
        run([args.lantern, "predict", "--checkpoint", export, "--input", texts, "--out", w(f"{name}-pred.jsonl")])
        run([args.lantern, "eval", "--checkpoint", export, "--data", w(f"{name}-val.jsonl"),
             "--out", w(f"{name}-eval.json")])
        with open(w(f"{name}-pred.jsonl")) as f:
            lantern_logits = torch.tensor([json.loads(l)["logits"] for l in f])
        with open(w(f"{name}-eval.json")) as f:
            lantern_eval = json.load(f)
        lantern_loss = lantern_eval["eval_loss"]
        ttok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(export, "tokenizer.json"), pad_token="[PAD]")
        cls = BertForSequenceClassification.from_pretrained(export).eval()
        assert cls.config.problem_type == problem, cls.config.problem_type
        enc = lambda t: ttok(t["text"], t.get("text_pair"), truncation=True, max_length=64,
                             return_token_type_ids=True, return_tensors="pt")
        names = [cls.config.id2label[i] for i in range(cls.config.num_labels)]

        def target(r):
            if problem == "single_label_classification":
                return torch.tensor([names.index(r["label"])])
            if problem == "multi_label_classification":
                return torch.tensor([[1.0 if n in r["label"] else 0.0 for n in names]])
            return torch.tensor([r["label"]])

        with torch.no_grad():
            logits = torch.stack([cls(**enc(t)).logits[0] for t in TEXTS])
            # transformers' own loss for the config's problem_type, one example at a time
            # (each is a mean over its labels), averaged: the mean over the validation set.
            losses = [cls(**enc(r), labels=target(r)).loss.item() for r in rows[160:]]
        ok &= report(f"{problem} head fine-tuned and exported by Lantern ({cls.config.num_labels} outputs): "
                     "logits in transformers vs lantern predict", (logits - lantern_logits).abs().max().item())
        ok &= report(f"{problem}: validation loss, transformers' (problem_type from config.json) vs lantern eval",
                     abs(sum(losses) / len(losses) - lantern_loss))
        if problem == "single_label_classification":
            from sklearn.metrics import matthews_corrcoef
            with torch.no_grad():
                preds = [cls(**enc(r)).logits[0].argmax().item() for r in rows[160:]]
            mcc = matthews_corrcoef([names.index(r["label"]) for r in rows[160:]], preds)
            ok &= report("single-label: Matthews correlation, scikit-learn's on transformers' predictions vs "
                         "lantern eval", abs(mcc - lantern_eval["matthews_correlation"]), 1e-12)

    # 4. A token classifier fine-tuned by Lantern, in transformers (and seqeval).
    ok &= token_parity(args, w, corpus_files=[os.path.join(corpus, "computers"), os.path.join(corpus, "science")],
                       repo=repo)

    # 5. MLM round trip through the binary.
    golden = os.path.join(repo, "tests", "golden", "bert_tiny")
    run([args.lantern, "export", "--model", os.path.join(golden, "mlm"), "--out", w("mlm-export")])
    with open(os.path.join(golden, "inputs.json")) as f:
        inp = json.load(f)
    kw = {k: torch.tensor(inp[k]) for k in ["input_ids", "token_type_ids", "attention_mask"]}
    with torch.no_grad():
        a = BertForMaskedLM.from_pretrained(os.path.join(golden, "mlm")).eval()(**kw).logits
        b = BertForMaskedLM.from_pretrained(w("mlm-export")).eval()(**kw).logits
    ok &= report("BertForMaskedLM exported by Lantern, logits in transformers", (a - b).abs().max().item(), 0.0)

    # 6. Question answering round trip through the binary.
    ok &= qa_parity(args, w, golden)

    # 7, 8, 9, 11. RoBERTa, DistilBERT, ELECTRA and ModernBERT.
    for family in ["roberta", "distilbert", "electra", "modernbert"]:
        ok &= family_parity(args, w, texts, small, repo, family)

    # 10. Multiple choice.
    ok &= choice_parity(args, w, small, repo)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def family_parity(args, w, texts, small, repo, family):
    """RoBERTa, DistilBERT or ELECTRA through the binary against transformers (sections 7 to 9
    of the module docstring)."""
    from transformers import (AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification, DistilBertConfig, DistilBertTokenizerFast,
                              ElectraConfig, ElectraForPreTraining, ElectraTokenizerFast, ModernBertConfig,
                              PreTrainedTokenizerFast, RobertaConfig, RobertaTokenizerFast)
    sizes = dict(vocab_size=0, max_position_embeddings=130)
    if family == "roberta":
        golden = os.path.join(repo, "tests", "golden", "roberta_tiny")
        tok = RobertaTokenizerFast(tokenizer_file=os.path.join(golden, "tokenizer", "tokenizer.json"))
        sizes["vocab_size"] = len(tok)
        cfg = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            type_vocab_size=1, layer_norm_eps=1e-5, **sizes)
        name, pair = "RoBERTa", "byte-level BPE, <s> A </s></s> B </s>"
    elif family == "distilbert":
        golden = os.path.join(repo, "tests", "golden", "distilbert_tiny")
        # DistilBERT reads BERT's WordPiece tokenizer; it passes the model no token types.
        tok = DistilBertTokenizerFast(tokenizer_file=w("wp.json"))
        sizes["vocab_size"] = len(tok)
        cfg = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **sizes)
        name, pair = "DistilBERT", "WordPiece, [CLS] A [SEP] B [SEP]"
    elif family == "modernbert":
        golden = os.path.join(repo, "tests", "golden", "modernbert_tiny")
        # ModernBERT's tokenizers give the model ids and a mask only; the WordPiece tokenizer
        # stands in for its BPE one. A local window of 8 (4 keys on either side) with mean
        # pooling and every bias, so the fine-tune exercises them.
        tok = PreTrainedTokenizerFast(tokenizer_file=w("wp.json"), pad_token="[PAD]", cls_token="[CLS]",
                                      sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]",
                                      model_input_names=["input_ids", "attention_mask"])
        sizes["vocab_size"] = len(tok)
        cfg = ModernBertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                               global_attn_every_n_layers=2, local_attention=8, pad_token_id=tok.pad_token_id,
                               norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
                               classifier_pooling="mean", **sizes)
        name, pair = "ModernBERT", "WordPiece, [CLS] A [SEP] B [SEP], no token types"
    else:
        golden = os.path.join(repo, "tests", "golden", "electra_tiny")
        # ELECTRA reads BERT's WordPiece tokenizer, token types included; its embeddings are
        # narrower than its layers, as ELECTRA-small's.
        tok = ElectraTokenizerFast(tokenizer_file=w("wp.json"))
        sizes["vocab_size"] = len(tok)
        cfg = ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, **sizes)
        name, pair = "ELECTRA", "WordPiece, [CLS] A [SEP] B [SEP], token types"
    types = family == "electra"
    ok = True
    base = w(f"{family}-base")
    torch.manual_seed(0)
    # The checkpoints people start from: the masked LM, or ELECTRA's discriminator.
    (ElectraForPreTraining(cfg) if types else AutoModelForMaskedLM.from_config(cfg)).save_pretrained(base)
    tok.save_pretrained(base)

    run([args.lantern, "encode", "--model", base, "--input", texts, "--out", w(f"{family}.safetensors")])
    ours = load_file(w(f"{family}.safetensors"))
    rows = [tok(t["text"], t.get("text_pair"), truncation=True, max_length=128) for t in TEXTS]
    T = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [tok.pad_token_id] * (T - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (T - len(r["input_ids"])) for r in rows])
    tt = torch.tensor([r["token_type_ids"] + [0] * (T - len(r["input_ids"])) for r in rows]) if types else None
    same = torch.equal(ids, ours["input_ids"]) and torch.equal(mask, ours["attention_mask"]) \
        and (tt is None or torch.equal(tt, ours["token_type_ids"]))
    print(f"{'ok  ' if same else 'FAIL'} {name} tokenisation ({pair}): ids and "
          f"mask {'identical' if same else 'differ'} ({ids.shape[0]} x {ids.shape[1]})")
    ok &= same
    loader = ElectraForPreTraining if types else AutoModelForMaskedLM
    type_kw = {"token_type_ids": tt} if family != "modernbert" else {}
    with torch.no_grad():
        hidden = loader.from_pretrained(base).eval().base_model(input_ids=ids, attention_mask=mask, **type_kw)
    m = mask.bool()
    ok &= report(f"{name} last hidden state (real tokens), lantern encode vs transformers",
                 (hidden.last_hidden_state - ours["last_hidden_state"])[m].abs().max().item())

    rows = [{"text": r["text"], "label": r["label"]} for r in small]
    with open(w(f"{family}-cls.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:160])
    with open(w(f"{family}-cls-val.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[160:])
    with open(w(f"{family}-cls.toml"), "w") as f:
        f.write(f"""[run]\ndir = "{w(family + '-run')}"\n[model]\ninit_from = "{base}"\n[data]
train = "{w(family + '-cls.jsonl')}"\nvalidation = "{w(family + '-cls-val.jsonl')}"\nmax_length = 64\n[train]
epochs = 1\nbatch_size = 16\nlr = 1e-3\n""")
    run([args.lantern, "finetune", "--config", w(f"{family}-cls.toml"), "--quiet"])
    export = w(f"{family}-export")
    run([args.lantern, "export", "--model", w(f"{family}-run"), "--out", export])
    run([args.lantern, "predict", "--checkpoint", export, "--input", texts, "--out", w(f"{family}-pred.jsonl")])
    run([args.lantern, "eval", "--checkpoint", export, "--data", w(f"{family}-cls-val.jsonl"),
         "--out", w(f"{family}-eval.json")])
    with open(w(f"{family}-pred.jsonl")) as f:
        lantern_logits = torch.tensor([json.loads(l)["logits"] for l in f])
    with open(w(f"{family}-eval.json")) as f:
        lantern_loss = json.load(f)["eval_loss"]
    cls, info = AutoModelForSequenceClassification.from_pretrained(export, output_loading_info=True)
    cls.eval()
    arch = type(cls).__name__
    if any(info[k] for k in ["missing_keys", "unexpected_keys", "mismatched_keys"]):
        print(f"FAIL {arch} exported by Lantern: loading info {info}")
        ok = False
    names = [cls.config.id2label[i] for i in range(cls.config.num_labels)]
    # On a transformers folder (no fine-tuning state) Lantern truncates to the model's token
    # limit, at most 512 (section 10 the same): the WordPiece file as it is (ModernBERT's
    # tokenizer) gives some validation texts more than the 64 tokens the run trained on.
    c = cls.config
    limit = min(512, c.max_position_embeddings - (c.pad_token_id + 1 if family == "roberta" else 0))
    enc = lambda t: tok(t["text"], t.get("text_pair"), truncation=True, max_length=limit, return_tensors="pt",
                        return_token_type_ids=types)
    with torch.no_grad():
        logits = torch.stack([cls(**enc(t)).logits[0] for t in TEXTS])
        losses = [cls(**enc(r), labels=torch.tensor([names.index(r["label"])])).loss.item() for r in rows[160:]]
    ok &= report(f"{arch} fine-tuned and exported by Lantern ({len(names)} labels): "
                 "logits in transformers vs lantern predict", (logits - lantern_logits).abs().max().item())
    ok &= report(f"{name} classifier: validation loss, transformers' vs lantern eval",
                 abs(sum(losses) / len(losses) - lantern_loss))

    run([args.lantern, "export", "--model", os.path.join(golden, "qa"), "--out", w(f"{family}-qa-export")])
    with open(os.path.join(golden, "inputs.json")) as f:
        inp = json.load(f)
    kw = {k: torch.tensor(inp[k]) for k in ["input_ids", "attention_mask"] + ["token_type_ids"] * types}
    with torch.no_grad():
        a = AutoModelForQuestionAnswering.from_pretrained(os.path.join(golden, "qa")).eval()(**kw)
        exported, info = AutoModelForQuestionAnswering.from_pretrained(w(f"{family}-qa-export"),
                                                                       output_loading_info=True)
        b = exported.eval()(**kw)
    arch = type(exported).__name__
    if any(info[k] for k in ["missing_keys", "unexpected_keys", "mismatched_keys"]):
        print(f"FAIL {arch} exported by Lantern: loading info {info}")
        return False
    d = max((a.start_logits - b.start_logits).abs().max().item(), (a.end_logits - b.end_logits).abs().max().item())
    return ok & report(f"{arch} exported by Lantern, start/end logits in transformers", d, 0.0)


def choice_parity(args, w, small, repo):
    """Section 10 of the module docstring: multiple choice fine-tuned by Lantern in each family,
    in transformers; and the golden multiple-choice models exported by Lantern."""
    from transformers import AutoModelForMultipleChoice
    # Fortunes cut at the middle word: which of three second halves goes with a first half.
    halves = []
    for r in small:
        words = r["text"].split()
        if len(words) >= 6:
            halves.append((" ".join(words[:len(words) // 2]), " ".join(words[len(words) // 2:])))
    rows = []
    for i, (first, second) in enumerate(halves[:120]):
        others = [halves[(i + k) % len(halves)][1] for k in (7, 13)]
        right = i % 3
        choices = others[:right] + [second] + others[right:]
        rows.append({"text": first, "choices": choices, "label": right})
    with open(w("mc.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:96])
    with open(w("mc-val.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[96:])
    ok = True
    bases = {"bert": args.minilm, "roberta": w("roberta-base"), "distilbert": w("distilbert-base"),
             "electra": w("electra-base")}
    for family, base in bases.items():
        run_dir, export = w(f"{family}-mc-run"), w(f"{family}-mc-export")
        # The tiny random bases need a larger step for their choices' scores to spread apart.
        lr = 1e-4 if family == "bert" else 3e-3
        with open(w(f"{family}-mc.toml"), "w") as f:
            f.write(f"""[run]\ndir = "{run_dir}"\n[model]\ninit_from = "{base}"\n[data]\ntrain = "{w('mc.jsonl')}"
validation = "{w('mc-val.jsonl')}"\nmax_length = 64\nproblem_type = "multiple_choice"\n[train]\nepochs = 1
batch_size = 8\nlr = {lr}\n[early_stopping]\nmetric = "accuracy"\n""")
        run([args.lantern, "finetune", "--config", w(f"{family}-mc.toml"), "--quiet"])
        run([args.lantern, "export", "--model", run_dir, "--out", export])
        run([args.lantern, "predict", "--checkpoint", export, "--input", w("mc-val.jsonl"),
             "--out", w(f"{family}-mc-pred.jsonl")])
        run([args.lantern, "eval", "--checkpoint", export, "--data", w("mc-val.jsonl"),
             "--out", w(f"{family}-mc-eval.json")])
        with open(w(f"{family}-mc-pred.jsonl")) as f:
            lantern_logits = torch.tensor([json.loads(l)["logits"] for l in f])
        with open(w(f"{family}-mc-eval.json")) as f:
            lantern_eval = json.load(f)
        tok = AutoTokenizer.from_pretrained(base)
        model, info = AutoModelForMultipleChoice.from_pretrained(export, output_loading_info=True)
        model.eval()
        arch = type(model).__name__
        if any(info[k] for k in ["missing_keys", "unexpected_keys", "mismatched_keys"]):
            print(f"FAIL {arch} exported by Lantern: loading info {info}")
            ok = False
        # On a transformers folder (no fine-tuning state) Lantern truncates to the model's token
        # limit, at most 512: RoBERTa's positions start past the pad id.
        c = model.config
        limit = min(512, c.max_position_embeddings - (c.pad_token_id + 1 if family == "roberta" else 0))
        logits, losses, right, ties = [], [], 0, 0
        with torch.no_grad():
            for r in rows[96:]:
                # run_swag: the first segment repeated, each choice as the second; padded.
                enc = tok([r["text"]] * 3, r["choices"], truncation=True, max_length=limit, padding=True,
                          return_tensors="pt")
                out = model(**{k: v.unsqueeze(0) for k, v in enc.items()}, labels=torch.tensor([r["label"]]))
                logits.append(out.logits[0])
                losses.append(out.loss.item())
                right += int(out.logits[0].argmax().item() == r["label"])
                top = out.logits[0].sort(descending=True).values
                ties += int((top[0] - top[1]).item() < 1e-4)
        ok &= report(f"{arch} fine-tuned and exported by Lantern: logits in transformers vs lantern predict",
                     (torch.stack(logits) - lantern_logits).abs().max().item())
        ok &= report(f"{arch}: validation loss, transformers' vs lantern eval",
                     abs(sum(losses) / len(losses) - lantern_eval["eval_loss"]))
        # A choice within the logits' tolerance of the best may go either way.
        ok &= report(f"{arch}: validation accuracy, transformers' predictions vs lantern eval "
                     f"({ties} near-ties of {len(losses)})",
                     abs(right / len(losses) - lantern_eval["accuracy"]), ties / len(losses))

    golden = os.path.join(repo, "tests", "golden", "multiple_choice")
    with open(os.path.join(golden, "inputs.json")) as f:
        inp = json.load(f)
    for family in ["bert", "roberta", "distilbert", "electra"]:
        run([args.lantern, "export", "--model", os.path.join(golden, family), "--out", w(f"{family}-mc-golden")])
        kw = {k: torch.tensor(v) for k, v in inp[family].items() if k in ("input_ids", "attention_mask",
                                                                          "token_type_ids")}
        with torch.no_grad():
            a = AutoModelForMultipleChoice.from_pretrained(os.path.join(golden, family)).eval()(**kw).logits
            exported, info = AutoModelForMultipleChoice.from_pretrained(w(f"{family}-mc-golden"),
                                                                        output_loading_info=True)
            b = exported.eval()(**kw).logits
        arch = type(exported).__name__
        if any(info[k] for k in ["missing_keys", "unexpected_keys", "mismatched_keys"]):
            print(f"FAIL {arch} exported by Lantern: loading info {info}")
            ok = False
        ok &= report(f"{arch} (golden) exported by Lantern, logits in transformers", (a - b).abs().max().item(), 0.0)
    return ok


def qa_parity(args, w, golden):
    """The golden BertForQuestionAnswering exported by Lantern: transformers loads it (without
    missing or unexpected tensors) and gives the original's start/end logits and loss."""
    run([args.lantern, "export", "--model", os.path.join(golden, "qa"), "--out", w("qa-export")])
    with open(os.path.join(golden, "inputs.json")) as f:
        inp = json.load(f)
    kw = {k: torch.tensor(inp[k]) for k in ["input_ids", "token_type_ids", "attention_mask"]}
    kw["start_positions"] = torch.tensor(inp["qa_start_positions"])
    kw["end_positions"] = torch.tensor(inp["qa_end_positions"])
    with torch.no_grad():
        a = BertForQuestionAnswering.from_pretrained(os.path.join(golden, "qa")).eval()(**kw)
        exported, info = BertForQuestionAnswering.from_pretrained(w("qa-export"), output_loading_info=True)
        b = exported.eval()(**kw)
    if any(info[k] for k in ["missing_keys", "unexpected_keys", "mismatched_keys"]):
        print(f"FAIL BertForQuestionAnswering exported by Lantern: loading info {info}")
        return False
    d = max((a.start_logits - b.start_logits).abs().max().item(), (a.end_logits - b.end_logits).abs().max().item(),
            (a.loss - b.loss).abs().item())
    return report("BertForQuestionAnswering exported by Lantern, start/end logits and loss in transformers", d, 0.0)


def token_parity(args, w, corpus_files, repo):
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from transformers import PreTrainedTokenizerFast
    data = os.path.join(repo, "data", "fortune-tags")
    if not os.path.isfile(os.path.join(data, "train.jsonl")):
        run([sys.executable, os.path.join(repo, "scripts", "make_fortune_tags.py")])
    with open(os.path.join(data, "train.jsonl")) as f:
        rows = [json.loads(next(f)) for _ in range(1000)]
    for name, part in [("tok.jsonl", rows[:900]), ("tok-val.jsonl", rows[900:])]:
        with open(w(name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    val = rows[900:]
    with open(w("tok.toml"), "w") as f:
        f.write(f"""[run]\ndir = "{w('tok-run')}"\n[model]\ntokenizer = "{w('wp.json')}"\nhidden_size = 32
num_hidden_layers = 2\nnum_attention_heads = 4\nintermediate_size = 64\n[data]\ntrain = "{w('tok.jsonl')}"
validation = "{w('tok-val.jsonl')}"\nmax_length = 48\nproblem_type = "token_classification"\n[train]\nepochs = 4
batch_size = 16\nlr = 3e-3\n""")
    run([args.lantern, "finetune", "--config", w("tok.toml"), "--quiet"])
    export = w("tok-export")
    run([args.lantern, "export", "--model", w("tok-run"), "--out", export])
    run([args.lantern, "predict", "--checkpoint", export, "--input", w("tok-val.jsonl"), "--out", w("tok-pred.jsonl")])
    run([args.lantern, "eval", "--checkpoint", export, "--data", w("tok-val.jsonl"), "--out", w("tok-eval.json")])
    with open(w("tok-pred.jsonl")) as f:
        preds = [json.loads(l) for l in f]
    with open(w("tok-eval.json")) as f:
        ours = json.load(f)
    ttok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(export, "tokenizer.json"), pad_token="[PAD]")
    model = BertForTokenClassification.from_pretrained(export).eval()
    label2id = model.config.label2id
    ok, worst = True, 0.0
    gold_seqs, pred_seqs, total_loss, words = [], [], 0.0, 0
    for r, p in zip(val, preds):
        enc = ttok(r["tokens"], is_split_into_words=True, truncation=True, max_length=48,
                   return_token_type_ids=True, return_tensors="pt")
        wid = enc.word_ids(0)
        first = [i for i, x in enumerate(wid) if x is not None and (i == 0 or wid[i - 1] != x)]
        labels = torch.full((1, len(wid)), -100)
        for i in first:
            labels[0, i] = label2id[r["tags"][wid[i]]]
        with torch.no_grad():
            out = model(**enc, labels=labels)
        n = len(first)
        total_loss += out.loss.item() * n
        words += n
        for i in first:
            ours_row = p["logits"][wid[i]]
            worst = max(worst, (out.logits[0, i] - torch.tensor(ours_row)).abs().max().item())
        gold_seqs.append([r["tags"][wid[i]] for i in first])
        pred_seqs.append([model.config.id2label[out.logits[0, i].argmax().item()] for i in first])
        ok &= [t for t in p["tags"] if t is not None] == pred_seqs[-1]
    print(f"{'ok  ' if ok else 'FAIL'} token classifier: lantern predict's tags are transformers' argmax "
          f"({sum(t.startswith('B-') for s in pred_seqs for t in s)} entities predicted)")
    ok &= report(f"token classifier fine-tuned and exported by Lantern ({model.config.num_labels} tags): "
                 "first-sub-token logits in transformers vs lantern predict", worst)
    ok &= report("token classifier: validation loss, transformers' (labels -100 off first sub-tokens) vs lantern eval",
                 abs(total_loss / words - ours["eval_loss"]))
    for key, fn in [("precision", precision_score), ("recall", recall_score), ("f1", f1_score),
                    ("accuracy", accuracy_score)]:
        ok &= report(f"token classifier: seqeval {key} of transformers' predictions vs lantern eval",
                     abs(fn(gold_seqs, pred_seqs) - ours[key]), 1e-12)
    return ok


if __name__ == "__main__":
    sys.exit(main())

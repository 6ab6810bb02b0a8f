#!/usr/bin/env python3
"""Checks a Lantern LoRA continued-pretraining run (`lantern train` with [lora], peft's
CAUSAL_LM, over a GPT-2 or a Llama) against live peft and transformers (run by
scripts/lora_lm_parity.sh, which prepares the text and trains first).

The text: the run's validation documents, `<data>/val.bin` decoded back to text document by
document, each followed by <|endoftext|> (the shard's end-of-document token, which both
tokenizers read back as that one token): the documents the run never trained on, tokenised as
`lantern score --file` and scripts/perplexity_torch.py tokenise a file (the whole text, no
special tokens added). Windows: the model's context, not overlapping (`lantern score`'s
default), scored as perplexity_torch.py scores them.

1. peft: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
   <checkpoint>/adapter)` has `lantern score --model <run> --file <text> --json`'s
   perplexity, relative difference <= 1e-5;
2. its logits on a few windows of the validation token ids are `lantern score --tokens ...
   --dump`'s, max abs diff <= 1e-4;
3. peft's `merge_and_unload()` state dict is the checkpoint's model.safetensors: every tensor
   of the file within 1e-6 (bit-equality reported), and every tensor of the state dict in the
   file or tied to one that is (GPT-2's lm_head.weight is transformer.wte.weight);
4. transformers alone loads the checkpoint folder (the merged model) with the same perplexity;
5. peft, loading the adapter to train it further (`is_trainable=True`), counts as many trained
   parameters (and as many in all) as the `LoRA r=... : N of M parameters trained` line of
   `lantern train`'s log;
6. the adapted model's perplexity is below the base model's (transformers on `base`; `lantern
   score` of the base is reported beside it).
Prints an ok/FAIL line per check and exits 1 when one fails.

A BERT run (the checkpoint's config.json has model_type "bert": masked-LM pretraining,
BertForMaskedLM, peft's `modules_to_save=["cls"]`, no causal LM so no perplexity) is checked by
main_bert instead: (a) PeftModel over `BertForMaskedLM.from_pretrained(base)` (a bare BertModel
gets a random MLM head there, which the adapter's trained `cls` replaces) with the checkpoint's
adapter/ gives the logits of `BertForMaskedLM.from_pretrained(<checkpoint>)` on a few rows of
the validation shard (`[CLS]` + seq_len - 2 ids + `[SEP]`, some ids masked), max abs diff <=
1e-4; (b) merge_and_unload() is the checkpoint's model.safetensors (every tensor <= 1e-6; the
state dict's other tensors tied to, or equal copies of, ones in the file); (c) peft's trained
parameters are lantern's (the difference, if any, accounted for tensor by tensor); (d)
adapter_config.json has task_type null and modules_to_save ["cls"].

    python scripts/lora_lm_parity.py --run RUN --base PRETRAINED --data PREPARED \
        --lantern target/release/lantern --log train.log
"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, BertForMaskedLM
from transformers.utils import logging as hf_logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perplexity_torch import sliding_nll  # noqa: E402

WINDOWS = 4  # rows of token ids for the logits check


def check(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def rel(a, b):
    return abs(a - b) / abs(b)


def read_shard(path):
    """A `lantern prepare` shard (crates/data/src/shard.rs): 32-byte header, then the ids."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"LNTNTOK\0", f"{path}: not a token shard"
    dtype = {1: np.uint16, 2: np.uint32}[int.from_bytes(raw[12:16], "little")]
    count = int.from_bytes(raw[16:24], "little")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=32).astype(np.int64).tolist()


def compare_state(merged, ckpt_tensors):
    """The checkpoint's tensors against a merged state dict: the largest difference and its
    tensor, how many are bit-equal, the names the state dict lacks or shapes otherwise."""
    worst, worst_name, equal, missing, bad_shape = 0.0, None, 0, [], []
    for k, t in ckpt_tensors.items():
        if k not in merged:
            missing.append(k)
            continue
        m = merged[k]
        if m.shape != t.shape:
            bad_shape.append(k)
            continue
        equal += torch.equal(m.float(), t.float())
        dk = (m.float() - t.float()).abs().max().item()
        if dk > worst:
            worst, worst_name = dk, k
    return worst, worst_name, equal, missing, bad_shape


def lantern_count(log_path):
    """The match of lantern train's `LoRA r=...: N of M parameters trained` line (stderr, in
    the saved log), or None."""
    log = open(log_path, encoding="utf-8").read()
    return re.search(r"LoRA r=.*?: (\d+) of (\d+) parameters trained", log)


def check_merge(merged, ckpt_tensors, copies_ok):
    """peft's merge_and_unload() state dict against the checkpoint's model.safetensors: every
    tensor of the file within 1e-6, and every tensor of the state dict the file lacks a tie to
    one it holds (or, with `copies_ok`, a bit-equal untied copy of one: a masked LM's output
    layer after peft's modules_to_save). Prints the check's line; returns whether it passed."""
    worst, worst_name, equal, missing, bad_shape = compare_state(merged, ckpt_tensors)
    ptr = {merged[k].data_ptr(): k for k in ckpt_tensors if k in merged}
    ties, copies, extra = [], [], []
    for k, t in merged.items():
        if k in ckpt_tensors:
            continue
        if t.data_ptr() in ptr:
            ties.append(f"{k} = {ptr[t.data_ptr()]}")
            continue
        same = [f for f, u in ckpt_tensors.items()
                if copies_ok and u.shape == t.shape and torch.equal(u, t)]
        if same:
            copies.append(f"{k} == {same[0]}")
        else:
            extra.append(k)
    return check("merge_and_unload() vs the checkpoint's model.safetensors",
                 worst <= 1e-6 and not (missing or bad_shape or extra),
                 f"{len(ckpt_tensors)} tensors, {equal} bit-equal, max abs diff {worst:.2e}"
                 f"{f' ({worst_name})' if worst_name else ''}; tied: {ties or 'none'}; "
                 f"untied copies, bit-equal: {copies or 'none'}; "
                 f"not in peft's: {missing or 'none'}; other shape: {bad_shape or 'none'}; "
                 f"neither in the file nor tied nor a copy: {extra or 'none'}")


def newest_checkpoint(run):
    steps = sorted(glob.glob(os.path.join(run, "checkpoints", "step-*")))
    if not steps:
        raise SystemExit(f"{run}: no checkpoints/step-*")
    return steps[-1]


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def context_of(model):
    c = model.config
    return getattr(c, "n_positions", None) or c.max_position_embeddings


def main_bert(args):
    """The BERT masked-LM checks (see the module's docstring)."""
    ckpt = newest_checkpoint(args.run)
    adapter = os.path.join(ckpt, "adapter")
    acfg = json.load(open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8"))
    print(f"checkpoint: {ckpt}; adapter: r={acfg['r']} lora_alpha={acfg['lora_alpha']} "
          f"target_modules={acfg['target_modules']} modules_to_save={acfg.get('modules_to_save')} "
          f"task_type={acfg.get('task_type')} over {acfg['base_model_name_or_path']}")
    ok = True

    # (d) the adapter's config.
    ok &= check("adapter_config.json: task_type null, modules_to_save [\"cls\"]",
                acfg.get("task_type") is None and acfg.get("modules_to_save") == ["cls"],
                f"task_type {acfg.get('task_type')!r}, modules_to_save "
                f"{acfg.get('modules_to_save')!r}")

    # Rows of validation ids as the run's samples are laid out: [CLS] + T-2 ids + [SEP].
    seq_len = 128
    cfg_toml = os.path.join(args.run, "config.toml")
    if os.path.exists(cfg_toml):
        import tomllib
        seq_len = tomllib.load(open(cfg_toml, "rb"))["train"]["seq_len"]
    tok = Tokenizer.from_file(os.path.join(args.base, "tokenizer.json"))
    cls_id, sep_id, mask_id = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
    val = read_shard(os.path.join(args.data, "val.bin"))
    width = seq_len - 2
    n = max(1, min(WINDOWS, len(val) // width))
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        body = torch.tensor(val[i * width:(i + 1) * width])
        chosen = torch.rand(len(body), generator=gen) < 0.15
        body[chosen] = mask_id
        rows.append([cls_id] + body.tolist() + [sep_id])
    width = min(len(r) for r in rows)
    rows = torch.tensor([r[:width] for r in rows])
    print(f"validation rows: {n} x {width} ids from val.bin ({len(val)} tokens), "
          f"{int((rows == mask_id).sum())} of them [MASK]")

    def load_mlm(folder):
        model, info = BertForMaskedLM.from_pretrained(folder, dtype=torch.float32,
                                                      output_loading_info=True)
        return model.eval(), info

    plain, info = load_mlm(ckpt)
    print(f"transformers loads the checkpoint: missing {info['missing_keys'] or 'none'}, "
          f"unexpected {info['unexpected_keys'] or 'none'}")
    base_model, binfo = load_mlm(args.base)
    print(f"transformers loads the base: missing {sorted(binfo['missing_keys']) or 'none'} "
          f"(drawn at random), unexpected {sorted(binfo['unexpected_keys']) or 'none'}")

    # (a) logits: peft over the base vs the merged checkpoint folder.
    peft = PeftModel.from_pretrained(base_model, adapter).eval()
    with torch.no_grad():
        theirs = peft(input_ids=rows).logits
        ours = plain(input_ids=rows).logits
    d = (theirs - ours).abs().max().item()
    ok &= check("logits, peft (base + adapter) vs transformers' from_pretrained(<checkpoint>)",
                d <= 1e-4 and not info["missing_keys"],
                f"max abs diff {d:.2e} over {n}x{width} positions x {theirs.shape[-1]} "
                f"(largest |logit| {theirs.abs().max().item():.2f}, std {theirs.std().item():.2f})")
    del plain

    # (b) merge_and_unload() vs the checkpoint's model.safetensors.
    merged = peft.merge_and_unload().state_dict()
    ckpt_tensors = load_file(os.path.join(ckpt, "model.safetensors"))
    ok &= check_merge(merged, ckpt_tensors, copies_ok=True)
    del peft, merged

    # (c) trained parameters.
    from peft.utils import ModulesToSaveWrapper
    pm = PeftModel.from_pretrained(load_mlm(args.base)[0], adapter, is_trainable=True)
    trainable, total = pm.get_nb_trainable_parameters()
    m = lantern_count(args.log)
    # What peft counts that lantern does not: the original head peft keeps beside its trained
    # copy (frozen, counted in the total), and in the copy any parameter that lantern ties to a
    # frozen one (the decoder weight = the word embeddings) but peft holds as its own, trainable.
    seen = {}
    for name, p in pm.named_parameters():
        seen.setdefault(p.data_ptr(), (name, p))
    emb = pm.get_input_embeddings().weight
    orig_extra, copy_untied = 0, []
    for wname, w in pm.named_modules():
        if not isinstance(w, ModulesToSaveWrapper):
            continue
        for name, p in w.original_module.named_parameters():
            if seen.get(p.data_ptr(), (None,))[0] == f"{wname}.original_module.{name}":
                orig_extra += p.numel()
        for name, p in w.modules_to_save["default"].named_parameters():
            if p.requires_grad and p.shape == emb.shape and p.data_ptr() != emb.data_ptr() \
                    and torch.equal(p, emb):
                copy_untied.append((f"{wname}.modules_to_save.default.{name}", p.numel()))
    untied = sum(c for _, c in copy_untied)
    raw = m is not None and int(m[1]) == trainable and int(m[2]) == total
    accounted = m is not None and int(m[1]) == trainable - untied \
        and int(m[2]) == total - orig_extra - untied
    why = ""
    if not raw:
        why = (f"; the difference: the original head peft keeps beside its copy ({orig_extra} "
               f"in the total) and the copy's decoder weight, which peft holds untied and "
               f"trainable ({', '.join(f'{n} {c}' for n, c in copy_untied) or 'none'}) while "
               f"lantern ties it to the frozen word embeddings: peft less those "
               f"{trainable - untied} of {total - orig_extra - untied}")
    ok &= check("trained parameters, peft vs lantern train" if raw else
                "trained parameters, peft less its kept original head and untied decoder copy "
                "vs lantern train",
                raw or accounted,
                f"peft {trainable} of {total}, lantern {m[1] if m else '?'} of "
                f"{m[2] if m else '?'}" + (f" ({m[0]})" if m else "")
                + ("; equal as counted" if raw else why))

    print("all checks passed" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="the lantern train run folder")
    ap.add_argument("--base", required=True, help="the pretrained transformers folder (init_from)")
    ap.add_argument("--data", required=True, help="the folder `lantern prepare` wrote")
    ap.add_argument("--lantern", required=True)
    ap.add_argument("--log", required=True, help="lantern train's output, stderr included")
    args = ap.parse_args()
    torch.manual_seed(0)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    ckpt = newest_checkpoint(args.run)
    if json.load(open(os.path.join(ckpt, "config.json"), encoding="utf-8")).get("model_type") == "bert":
        return main_bert(args)
    adapter = os.path.join(ckpt, "adapter")
    acfg = json.load(open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8"))
    print(f"checkpoint: {ckpt}; adapter: r={acfg['r']} lora_alpha={acfg['lora_alpha']} "
          f"target_modules={acfg['target_modules']} over {acfg['base_model_name_or_path']}")

    # The validation documents as text, and that text's token ids.
    meta = json.load(open(os.path.join(args.data, "meta.json"), encoding="utf-8"))
    eot = meta["eot_id"]
    val = read_shard(os.path.join(args.data, "val.bin"))
    tok = Tokenizer.from_file(os.path.join(args.base, "tokenizer.json"))
    eot_text = tok.id_to_token(eot)
    docs, start = [], 0
    for i, t in enumerate(val):
        if t == eot:
            docs.append(val[start:i])
            start = i + 1
    text = "".join(tok.decode(d, skip_special_tokens=False) + eot_text for d in docs)
    ids = tok.encode(text, add_special_tokens=False).ids
    print(f"validation text: {len(docs)} documents, {len(text.encode('utf-8'))} bytes, "
          f"{len(ids)} tokens (val.bin: {len(val)} tokens, "
          f"{'the same ids' if ids == val else 'other ids'})")

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "validation.txt")
        with open(text_path, "w", encoding="utf-8", newline="") as f:
            f.write(text)

        def score(model, *extra):
            out = subprocess.run([args.lantern, "score", "--model", model, *extra, "--device", "cpu"],
                                 check=True, capture_output=True, text=True).stdout
            return out

        ours = json.loads(score(args.run, "--file", text_path, "--json"))
        ours_base = json.loads(score(args.base, "--file", text_path, "--json"))
        L, S = ours["max_length"], ours["stride"]

        # Logits of a few windows of token ids, one forward.
        n = max(1, min(WINDOWS, len(ids) // L))
        width = min(L, len(ids))
        rows = [ids[i * width:(i + 1) * width] for i in range(n)]
        tokens_path, dump_path = os.path.join(tmp, "tokens.json"), os.path.join(tmp, "dump.safetensors")
        json.dump({"input_ids": rows}, open(tokens_path, "w"))
        score(args.run, "--tokens", tokens_path, "--dump", dump_path)
        dumped = load_file(dump_path)

    # The base model alone, for the gain of the adaptation.
    base = load(args.base)
    assert L <= context_of(base), (L, context_of(base))
    r_base = sliding_nll(base, ids, L, S)
    del base

    # 1. peft: the base with the checkpoint's adapter.
    peft = PeftModel.from_pretrained(load(args.base), adapter).eval()
    r_peft = sliding_nll(peft, ids, L, S)
    d = rel(r_peft["perplexity"], ours["perplexity"])
    ok &= check("perplexity, peft (base + adapter) vs lantern score --model <run>",
                d <= 1e-5 and r_peft["tokens_scored"] == ours["tokens_scored"],
                f"peft {r_peft['perplexity']:.6f}, lantern {ours['perplexity']:.6f}, "
                f"rel diff {d:.2e} ({ours['tokens_scored']} tokens, {ours['windows']} windows "
                f"of {L}, stride {S})")

    # 2. Logits on windows of token ids.
    with torch.no_grad():
        theirs = peft(torch.tensor(rows)).logits
    d = (theirs - dumped["logits"]).abs().max().item()
    scale = theirs.abs().max().item()
    ok &= check("logits, peft vs lantern score --dump", d <= 1e-4,
                f"max abs diff {d:.2e} over {n}x{width} positions x {theirs.shape[-1]} "
                f"(largest |logit| {scale:.2f})")

    # 3. merge_and_unload() vs the checkpoint's model.safetensors.
    merged_model = peft.merge_and_unload()
    merged = merged_model.state_dict()
    ckpt_tensors = load_file(os.path.join(ckpt, "model.safetensors"))
    ok &= check_merge(merged, ckpt_tensors, copies_ok=False)
    del peft, merged_model, merged

    # 4. transformers alone loads the merged checkpoint folder.
    plain = load(ckpt)
    r_plain = sliding_nll(plain, ids, L, S)
    d1 = rel(r_plain["perplexity"], ours["perplexity"])
    d2 = rel(r_plain["perplexity"], r_peft["perplexity"])
    ok &= check("perplexity, transformers' from_pretrained(<checkpoint>) vs lantern and peft",
                d1 <= 1e-5 and d2 <= 1e-5,
                f"transformers {r_plain['perplexity']:.6f}: rel diff {d1:.2e} to lantern, "
                f"{d2:.2e} to peft")
    del plain

    # 5. Trained parameters.
    trainable, total = PeftModel.from_pretrained(load(args.base), adapter, is_trainable=True) \
        .get_nb_trainable_parameters()
    m = lantern_count(args.log)
    ok &= check("trained parameters, peft vs lantern train",
                m is not None and int(m[1]) == trainable and int(m[2]) == total,
                f"peft {trainable} of {total}, lantern {m[1] if m else '?'} of "
                f"{m[2] if m else '?'}" + (f" ({m[0]})" if m else ""))

    # 6. The adaptation lowers the validation perplexity.
    d = rel(r_base["perplexity"], ours_base["perplexity"])
    ok &= check("validation perplexity, adapted < base", r_peft["perplexity"] < r_base["perplexity"],
                f"base {r_base['perplexity']:.4f} (lantern score of the base "
                f"{ours_base['perplexity']:.4f}, rel diff {d:.2e}), adapted {r_peft['perplexity']:.4f} "
                f"(mean NLL {r_base['mean_nll']:.4f} -> {r_peft['mean_nll']:.4f} nats)")

    print("all checks passed" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write tests/golden/lora_{bert,gpt2,llama}/ and lora_{gpt2,llama}_lm/: LoRA adapters made by
Hugging Face peft itself on top of three existing sequence-classification goldens and two
existing causal language models, plus the outputs, loss, gradients and merged weights peft
computes, for the Rust parity tests of LoRA fine-tuning and of LoRA language-model training
(loading a peft adapter, its forward and backward, saving it, merging it).

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_lora_golden.py [--golden tests/golden]

The base goldens are read, never written:
    lora_bert/   base tests/golden/bert_tiny/cls/ (BertForSequenceClassification, 3 labels),
                 inputs from bert_tiny/inputs.json: input_ids, token_type_ids, attention_mask,
                 cls_labels (B=3, T=12)
                 LoraConfig(task_type=SEQ_CLS, r=4, lora_alpha=8, lora_dropout=0.0,
                            target_modules=["query", "value"])            scale alpha/r = 2
    lora_gpt2/   base tests/golden/gpt2_cls/ (GPT2ForSequenceClassification, 3 labels),
                 inputs from its inputs.json: input_ids, attention_mask, cls_labels (B=4, T=12)
                 LoraConfig(task_type=SEQ_CLS, r=4, lora_alpha=8, target_modules=["c_attn"])
                                                                          scale alpha/r = 2
                 c_attn is a transformers Conv1D (weight [in, out] = [32, 96]): peft warns and
                 sets fan_in_fan_out=True itself (adapter_config.json records true). lora_A is
                 still [r, in] = [4, 32] and lora_B [out, r] = [96, 4], as for a Linear; the
                 update B @ A [96, 32] is transposed before it is added to the Conv1D weight.
    lora_llama/  base tests/golden/llama_cls/ (LlamaForSequenceClassification, 3 labels),
                 inputs as gpt2_cls/ (the same bytes)
                 LoraConfig(task_type=SEQ_CLS, r=4, lora_alpha=8, use_rslora=True,
                            target_modules=["q_proj", "v_proj", "down_proj"])
                                                                 scale alpha/sqrt(r) = 4 (rsLoRA)
    lora_gpt2_lm/   base tests/golden/gpt2_tiny/ (GPT2LMHeadModel, lm_head tied to wte),
                    inputs from its inputs.json: input_ids (B=2, T=16), labels = input_ids
                    LoraConfig(task_type=CAUSAL_LM, r=4, lora_alpha=8,
                               target_modules=["c_attn", "c_fc"])         scale alpha/r = 2
                    Both are Conv1D (c_attn [32, 96], c_fc [32, 128]): fan_in_fan_out=True as
                    for lora_gpt2/.
    lora_llama_lm/  base tests/golden/llama_tiny/ (LlamaForCausalLM, grouped-query attention,
                    UNTIED lm_head), inputs from its inputs.json: input_ids (B=2, T=16),
                    labels = input_ids
                    LoraConfig(task_type=CAUSAL_LM, r=4, lora_alpha=8, use_rslora=True,
                               target_modules="all-linear")    scale alpha/sqrt(r) = 4 (rsLoRA)
                    peft expands "all-linear" to every torch Linear but the output layer
                    (model.get_output_embeddings(), lm_head), and peft 0.21.2 records the FULL
                    module paths, not the layers' last names: adapter_config.json lists the 14
                    "model.layers.{0,1}.self_attn.{q,k,v,o}_proj" and
                    "model.layers.{0,1}.mlp.{gate,up,down}_proj" (set order).
    lora_dropout is 0.0 everywhere (peft 0.21.2's default; given explicitly for BERT).

Recipe, the same for each folder:
    - base = <Model>.from_pretrained(<base folder>), fp32; its logits on the inputs are checked
      against the base golden's expected.safetensors `cls_logits` (the classifiers) or `logits`
      (the language models) (1e-5).
    - model = get_peft_model(base, config). task_type SEQ_CLS makes peft add
      modules_to_save=["classifier", "score"]: the head (BERT `classifier` weight+bias, GPT-2 and
      Llama `score.weight`) gets a trainable copy (`<head>.modules_to_save.default.*`); the base
      model's own weights are frozen. task_type CAUSAL_LM adds nothing (modules_to_save stays
      None, written null): only lora_A and lora_B train; the output layer (GPT-2's tied
      lm_head = wte, Llama's own lm_head) stays frozen.
    - torch.manual_seed(2468), then EVERY trainable parameter, in model.named_parameters()
      order, redrawn normal_(mean=0, std=0.2): lora_A, lora_B (peft initialises B to zero, so
      the adapter would otherwise be a no-op and its gradient for A zero) and the head copy.
    - model.eval() (BERT's hidden/attention dropout 0.1 off; the others have none), gradients
      enabled; out = model(**inputs, labels=cls_labels) (the language models:
      labels=input_ids); out.loss.backward(). The loss is transformers' own: for the
      classifiers single_label_classification cross-entropy, mean over the rows; GPT-2 and
      Llama pool each row at its rightmost token whose id is not the pad id 95 (positions
      [11, 6, 3, 0]), BERT at [CLS] through its pooler. For the language models the causal-LM
      loss (ForCausalLMLoss): labels shifted inside transformers, mean cross-entropy over the
      B * (T - 1) = 30 next-token predictions (asserted equal to F.cross_entropy of
      logits[:, :-1] against input_ids[:, 1:], 1e-6).
    - Checks: with model.disable_adapter() the logits equal the base golden's; the merged model
      gives the peft model's logits within 1e-5; PeftModel.from_pretrained(<fresh base>,
      <dir>/adapter) gives them within 1e-6; merged.safetensors has exactly the base
      model.safetensors' names and shapes, and differs from it only in the LoRA-targeted
      weights and the head (a language model: only in the targeted weights; lm_head is never
      changed). Tied weights: GPT-2's lm_head is wte, and save_pretrained writes it once, as
      transformer.wte.weight (gpt2_tiny/model.safetensors has no lm_head.weight either);
      Llama's untied lm_head.weight is saved, unchanged.

Files written to each folder:
    adapter/adapter_config.json        -- PeftModel.save_pretrained(<dir>/adapter) as peft 0.21.2
                                          writes it (indent 2, sorted keys, no final newline),
                                          with ONE edit: base_model_name_or_path, which peft
                                          sets to the absolute path of the base folder on the
                                          machine that ran this, is replaced by null (only that
                                          value's text is changed).
    adapter/adapter_model.safetensors  -- as peft writes it, metadata {"format": "pt"}: names
                                          without the adapter name, i.e.
                                          base_model.model.<module>.lora_A.weight [r, in],
                                          base_model.model.<module>.lora_B.weight [out, r] and
                                          the head as base_model.model.<head>.weight (/.bias):
                                          "modules_to_save.default." is dropped on save (the
                                          language models have no head in it).
    (save_pretrained also writes adapter/README.md, a model card template that holds the base
    folder's absolute path; it is deleted.)
    expected.safetensors               -- float32, metadata {"format": "pt"}: `logits` [B, 3]
                                          (the language models: [B, T, 96]),
                                          `loss` [] (0-d), and `grad.<saved name>` for every
                                          trainable parameter, named as in
                                          adapter_model.safetensors (the script asserts the
                                          in-memory -> saved name mapping covers the saved keys
                                          exactly, shapes equal, values bit for bit)
    merged.safetensors                 -- model.merge_and_unload() (W + scale * B @ A folded
                                          into each target, transposed for GPT-2's Conv1D; the
                                          head copy replaces the head), saved with
                                          save_pretrained into a temporary folder and its
                                          model.safetensors copied: plain transformers names,
                                          metadata {"format": "pt"}.

peft writes target_modules (a Python set) as a list in set iteration order, which depends on
the string hash seed; the script re-runs itself with PYTHONHASHSEED=0 so that
adapter_config.json is the same bytes on every run.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile

if os.environ.get("PYTHONHASHSEED") != "0":
    # Before torch/peft are imported: the hash seed only takes effect at interpreter start.
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (BertForSequenceClassification, GPT2ForSequenceClassification, GPT2LMHeadModel,
                          LlamaForCausalLM, LlamaForSequenceClassification)

from golden_common import report_files

LORA_SEED = 2468
INIT_STD = 0.2
ADAPTER = "default"  # peft's adapter name

# The two kinds of case: a sequence classifier (its head a trainable copy, peft's
# modules_to_save; labels cls_labels) and a causal language model (only the adapters train;
# labels = input_ids, shifted inside transformers).
SEQ_CLS = dict(task_type=TaskType.SEQ_CLS, modules_to_save=["classifier", "score"], causal=False)
CAUSAL_LM = dict(task_type=TaskType.CAUSAL_LM, modules_to_save=None, causal=True)

CASES = [
    dict(
        name="lora_bert",
        base="bert_tiny/cls",
        inputs="bert_tiny/inputs.json",
        base_expected=("bert_tiny/expected.safetensors", "cls_logits"),
        model_cls=BertForSequenceClassification,
        input_keys=["input_ids", "token_type_ids", "attention_mask"],
        lora=dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"]),
        scale=8 / 4,
        fan_in_fan_out=False,
        head=["classifier.weight", "classifier.bias"],
        **SEQ_CLS,
    ),
    dict(
        name="lora_gpt2",
        base="gpt2_cls",
        inputs="gpt2_cls/inputs.json",
        base_expected=("gpt2_cls/expected.safetensors", "cls_logits"),
        model_cls=GPT2ForSequenceClassification,
        input_keys=["input_ids", "attention_mask"],
        lora=dict(r=4, lora_alpha=8, target_modules=["c_attn"]),
        scale=8 / 4,
        fan_in_fan_out=True,
        head=["score.weight"],
        **SEQ_CLS,
    ),
    dict(
        name="lora_llama",
        base="llama_cls",
        inputs="llama_cls/inputs.json",
        base_expected=("llama_cls/expected.safetensors", "cls_logits"),
        model_cls=LlamaForSequenceClassification,
        input_keys=["input_ids", "attention_mask"],
        lora=dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
        scale=8 / math.sqrt(4),
        fan_in_fan_out=False,
        head=["score.weight"],
        **SEQ_CLS,
    ),
    dict(
        name="lora_gpt2_lm",
        base="gpt2_tiny",
        inputs="gpt2_tiny/inputs.json",
        base_expected=("gpt2_tiny/expected.safetensors", "logits"),
        model_cls=GPT2LMHeadModel,
        input_keys=["input_ids"],
        lora=dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"]),
        scale=8 / 4,
        fan_in_fan_out=True,
        head=[],
        **CAUSAL_LM,
    ),
    dict(
        name="lora_llama_lm",
        base="llama_tiny",
        inputs="llama_tiny/inputs.json",
        base_expected=("llama_tiny/expected.safetensors", "logits"),
        model_cls=LlamaForCausalLM,
        input_keys=["input_ids"],
        lora=dict(r=4, lora_alpha=8, use_rslora=True, target_modules="all-linear"),
        # What peft 0.21.2 expands "all-linear" to: the full path of every Linear but the
        # output layer (lm_head), not the layers' last names.
        targets=[f"model.layers.{i}.{m}" for i in range(2)
                 for m in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]],
        scale=8 / math.sqrt(4),
        fan_in_fan_out=False,
        head=[],
        **CAUSAL_LM,
    ),
]


def saved_name(name: str) -> str:
    """The name peft gives an in-memory trainable parameter in adapter_model.safetensors."""
    lora = f".{ADAPTER}."
    mts = f".modules_to_save.{ADAPTER}."
    if mts in name:
        return name.replace(mts, ".")
    assert (".lora_A" + lora) in name or (".lora_B" + lora) in name, name
    return name.replace(lora, ".")


def load_base(case, golden):
    base = case["model_cls"].from_pretrained(os.path.join(golden, case["base"]))
    base.eval()
    return base


def logits_of(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits.detach().to(torch.float32)


def write_case(case, golden) -> None:
    tag = case["name"]
    out_dir = os.path.join(golden, tag)
    adapter_dir = os.path.join(out_dir, "adapter")
    base_dir = os.path.abspath(os.path.join(golden, case["base"]))
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(adapter_dir):
        shutil.rmtree(adapter_dir)

    with open(os.path.join(golden, case["inputs"])) as f:
        raw = json.load(f)
    inputs = {k: torch.tensor(raw[k], dtype=torch.long) for k in case["input_keys"]}
    # A language model's labels are its inputs (transformers shifts them).
    labels = inputs["input_ids"] if case["causal"] else torch.tensor(raw["cls_labels"], dtype=torch.long)
    targets = case.get("targets", case["lora"]["target_modules"])

    # The base as its golden has it.
    base = load_base(case, golden)
    base_logits = logits_of(base, inputs)
    path, key = case["base_expected"]
    want = load_file(os.path.join(golden, path))[key]
    base_gap = (base_logits - want).abs().max().item()
    assert base_gap < 1e-5, (tag, base_gap)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}

    config = LoraConfig(task_type=case["task_type"], **case["lora"])
    model = get_peft_model(base, config)
    pc = model.peft_config[ADAPTER]
    assert pc.fan_in_fan_out == case["fan_in_fan_out"], (tag, pc.fan_in_fan_out)
    assert pc.modules_to_save == case["modules_to_save"], (tag, pc.modules_to_save)
    assert sorted(pc.target_modules) == sorted(targets), (tag, pc.target_modules)

    # Every trainable parameter redrawn (lora_B included: peft starts it at zero).
    torch.manual_seed(LORA_SEED)
    trainable = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(mean=0.0, std=INIT_STD)
                trainable.append(name)
    heads = [n for n in trainable if ".modules_to_save." in n]
    assert sorted(saved_name(n) for n in heads) == sorted(f"base_model.model.{h}" for h in case["head"]), heads

    # The scale on every LoRA layer.
    scales = set()
    lora_layers = 0
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and ADAPTER in getattr(mod, "scaling", {}):
            scales.add(mod.scaling[ADAPTER])
            assert mod.fan_in_fan_out == case["fan_in_fan_out"], name
            lora_layers += 1
    assert scales == {case["scale"]}, (tag, scales, case["scale"])

    model.eval()  # BERT's dropout off; gradients stay enabled
    model.zero_grad(set_to_none=True)
    out = model(**inputs, labels=labels)
    out.loss.backward()
    logits = out.logits.detach().to(torch.float32).contiguous()
    loss = out.loss.detach().to(torch.float32).reshape(()).contiguous()
    with torch.no_grad():
        if case["causal"]:
            # The mean over the B * (T - 1) next-token predictions.
            v = logits.shape[-1]
            manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1))
        else:
            manual = torch.nn.functional.cross_entropy(logits, labels)
    assert abs(manual.item() - loss.item()) < 1e-6, (manual.item(), loss.item())

    grads = {}
    for name in trainable:
        p = model.get_parameter(name)
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad).item() > 0, name
        grads[f"grad.{saved_name(name)}"] = p.grad.detach().to(torch.float32).contiguous()

    # Adapters off: the base golden's logits (the head copy is bypassed too).
    with model.disable_adapter():
        off = logits_of(model, inputs)
    off_gap = (off - base_logits).abs().max().item()
    assert off_gap < 1e-6, (tag, off_gap)
    lora_moves = (logits - base_logits).abs().max().item()

    # rsLoRA: how far the plain alpha/r scale would be.
    wrong_scale_gap = None
    if pc.use_rslora:
        for mod in model.modules():
            if hasattr(mod, "lora_A") and ADAPTER in getattr(mod, "scaling", {}):
                mod.scaling[ADAPTER] = pc.lora_alpha / pc.r
        wrong_scale_gap = (logits_of(model, inputs) - logits).abs().max().item()
        for mod in model.modules():
            if hasattr(mod, "lora_A") and ADAPTER in getattr(mod, "scaling", {}):
                mod.scaling[ADAPTER] = case["scale"]
        again = logits_of(model, inputs)
        assert torch.equal(again, logits), (again - logits).abs().max().item()

    # The adapter as peft saves it.
    model.save_pretrained(adapter_dir)
    assert sorted(os.listdir(adapter_dir)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"], \
        os.listdir(adapter_dir)
    os.remove(os.path.join(adapter_dir, "README.md"))
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(cfg_path) as f:
        text = f.read()
    written = json.loads(text)
    assert written["base_model_name_or_path"] == base_dir, (written["base_model_name_or_path"], base_dir)
    old = f'"base_model_name_or_path": {json.dumps(base_dir)},'
    assert text.count(old) == 1, old
    text = text.replace(old, '"base_model_name_or_path": null,')
    with open(cfg_path, "w") as f:
        f.write(text)
    written = json.loads(text)
    assert written["base_model_name_or_path"] is None
    assert written["fan_in_fan_out"] is case["fan_in_fan_out"]
    assert written["use_rslora"] is bool(case["lora"].get("use_rslora", False))
    assert written["r"] == 4 and written["lora_alpha"] == 8 and written["task_type"] == case["task_type"].value
    assert written["modules_to_save"] == case["modules_to_save"], written["modules_to_save"]
    assert sorted(written["target_modules"]) == sorted(targets), written["target_modules"]

    # Saved names: the mapping covers the file's keys exactly, with the same values.
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
        saved = {k: f.get_tensor(k) for k in f.keys()}
    mapped = {saved_name(n): n for n in trainable}
    assert len(mapped) == len(trainable)
    assert set(mapped) == set(saved), (set(mapped) ^ set(saved))
    for k, n in mapped.items():
        assert torch.equal(saved[k], model.get_parameter(n).detach()), k

    save_file({"logits": logits, "loss": loss, **grads}, os.path.join(out_dir, "expected.safetensors"),
              metadata={"format": "pt"})

    # Reload the adapter on a fresh base: the same logits.
    reloaded = PeftModel.from_pretrained(load_base(case, golden), adapter_dir)
    reloaded.eval()
    reload_gap = (logits_of(reloaded, inputs) - logits).abs().max().item()
    assert reload_gap < 1e-6, (tag, reload_gap)

    # Merged: the LoRA update folded in, the head copy in place of the head.
    merged = model.merge_and_unload()
    assert type(merged) is case["model_cls"], type(merged)
    merged.eval()
    merged_logits = logits_of(merged, inputs)
    merge_gap = (merged_logits - logits).abs().max().item()
    assert merge_gap < 1e-5, (tag, merge_gap)
    with tempfile.TemporaryDirectory() as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(os.path.join(tmp, "model.safetensors"), os.path.join(out_dir, "merged.safetensors"))
    with safe_open(os.path.join(out_dir, "merged.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
        merged_file = {k: f.get_tensor(k) for k in f.keys()}
    with safe_open(os.path.join(base_dir, "model.safetensors"), framework="pt") as f:
        base_file = {k: f.get_tensor(k) for k in f.keys()}
    assert set(merged_file) == set(base_file), set(merged_file) ^ set(base_file)
    changed = sorted(k for k in base_file if not torch.equal(merged_file[k], base_file[k]))
    expect_changed = sorted(k for k in base_file if k in case["head"]
                            or (k.endswith(".weight") and (k.split(".")[-2] in targets
                                                           or k[:-len(".weight")] in targets)))
    assert changed == expect_changed, (changed, expect_changed)
    for k in base_file:
        assert merged_file[k].shape == base_file[k].shape, k
        assert torch.equal(base_file[k], base_state[k]), k
    # The merged file alone, loaded into the base config, gives the merged logits.
    fresh = load_base(case, golden)
    missing, unexpected = fresh.load_state_dict(merged_file, strict=False)
    assert not unexpected and all(k not in base_file for k in missing), (missing, unexpected)
    file_gap = (logits_of(fresh, inputs) - merged_logits).abs().max().item()
    assert file_gap == 0.0, (tag, file_gap)

    report_lora_files(out_dir, tag)
    print(f"[{tag}] base {case['base']}; {lora_layers} LoRA layers, scale {case['scale']} "
          f"({'alpha/sqrt(r), rsLoRA' if pc.use_rslora else 'alpha/r'}), fan_in_fan_out {pc.fan_in_fan_out}",
          file=sys.stderr)
    print(f"[{tag}] trainable parameters (named_parameters order): {len(trainable)}", file=sys.stderr)
    for n in trainable:
        print(f"  {n} -> {saved_name(n)}", file=sys.stderr)
    print(f"[{tag}] merged.safetensors: changed vs base {changed}", file=sys.stderr)
    print(f"[{tag}] base logits vs base golden {base_gap:.3e}; adapters disabled vs base {off_gap:.3e}; "
          f"LoRA moves the logits by up to {lora_moves:.6f}", file=sys.stderr)
    if wrong_scale_gap is not None:
        print(f"[{tag}] scale alpha/r = {pc.lora_alpha / pc.r} instead of alpha/sqrt(r): logits move "
              f"{wrong_scale_gap:.6f}", file=sys.stderr)
    print(f"[{tag}] merged vs peft logits {merge_gap:.3e}; reloaded adapter vs peft {reload_gap:.3e}",
          file=sys.stderr)
    if logits.numel() <= 64:
        print(f"[{tag}] logits = {logits.tolist()}", file=sys.stderr)
    print(f"[{tag}] logits range [{logits.min().item():.6f}, {logits.max().item():.6f}]", file=sys.stderr)
    for k, g in grads.items():
        print(f"  max|{k}| = {g.abs().max().item():.3e}", file=sys.stderr)
    print(f"[{tag}] loss = {loss.item():.6f}", file=sys.stderr)
    print(out_dir)


def report_lora_files(out_dir, tag):
    """Prints to stderr the tensors (name, dtype, shape) of a LoRA golden folder's files."""
    report_files(out_dir, tag, ("adapter/adapter_model.safetensors", "expected.safetensors",
                                "merged.safetensors"))
    path = os.path.join(out_dir, "adapter", "adapter_config.json")
    print(f"[{tag}] adapter/adapter_config.json ({os.path.getsize(path)} bytes)", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--golden", default=os.path.join(repo, "tests", "golden"),
                    help="the golden folder: bases read from it, lora_* written into it")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    for case in CASES:
        write_case(case, args.golden)
    return 0


if __name__ == "__main__":
    sys.exit(main())

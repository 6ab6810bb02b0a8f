#!/usr/bin/env python3
"""Write tests/golden/llama_cls/: a tiny LlamaForSequenceClassification made by transformers
itself, plus its inputs and expected outputs (logits, loss, last hidden state and the
gradient of the loss for every parameter), for the Rust parity tests of Llama sequence
classification; then tests/golden/llama_tok/, the same for LlamaForTokenClassification (below).

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_llama_cls_golden.py [--out tests/golden/llama_cls] [--out-tok tests/golden/llama_tok]

The model is llama_tiny/'s body (vocabulary 96, width 32, MLP width 64, 2 layers, 4 query
heads sharing 2 key/value heads, context 32, RoPE base 100, rms_norm_eps 1e-6, untied) with
3 labels, pad_token_id 95, bos_token_id 0 and eos_token_id 95; every parameter (score.weight
included) is redrawn N(0, 0.2) from torch.manual_seed(1234) (make_golden.randomised).

The inputs are gpt2_cls/'s (the same constants, imported from make_gpt2_cls_golden): B=4, T=12,
ids from torch.Generator().manual_seed(4321) in 0..94; row 0 holds the pad id 95 as a real
token at position 3 (mask 1 there) and is pooled at position 11; rows 1-3 are right-padded
with 95 to lengths 7, 4 and 1. transformers pools each row at its RIGHTMOST token whose id is
not the pad id (not at the last position the attention mask covers).

LlamaModel builds embed_tokens as nn.Embedding(vocab, width, padding_idx=pad_token_id): after
the redraw its row 95 is non-zero and is kept as drawn (the forward reads it, for row 0's real
token at position 3 and at every padding position), but torch's padding_idx gives that row a
zero gradient in the backward, although id 95 occurs as a real token. The script asserts both.

Files written:
    config.json, model.safetensors   -- LlamaForSequenceClassification.save_pretrained(safe_serialization=True)
    inputs.json                      -- {"input_ids": [4][12], "attention_mask": [4][12],
                                         "cls_labels": [4], "last_token": [4]}
    expected.safetensors             -- float32 `cls_logits` [4,3], `cls_loss` [], `hidden` [4,12,32]
                                        (LlamaModel's last hidden state, after the final norm),
                                        `grad.<param>` for every parameter in named_parameters
                                        order; metadata {"format": "pt"}

It then writes tests/golden/llama_tok/ (--out-tok): a tiny LlamaForTokenClassification on the
same body (5 BIO tags, classifier_dropout 0.1, off under model.eval()), every parameter
redrawn N(0, 0.2) from torch.manual_seed(1234) the same way, run on the SAME input_ids and
attention_mask, with gpt2_tok/'s per-token labels (-100 at every padding position and at a few
real positions, as run_ner labels only the first sub-token of a word). transformers'
GenericForTokenClassification names the head `score` (a Linear WITH bias, as
token_classification_bias defaults to true) and the body `model.`. The llama_cls/ files do not
depend on it (it runs after them and touches no state they use).

Files written to llama_tok/:
    config.json, model.safetensors   -- LlamaForTokenClassification.save_pretrained(safe_serialization=True)
    inputs.json                      -- {"input_ids": [4][12], "attention_mask": [4][12],
                                         "tok_labels": [4][12]}
    expected.safetensors             -- float32 `tok_logits` [4,12,5], `tok_loss` [], `grad.<param>`
                                        for every parameter in named_parameters order;
                                        metadata {"format": "pt"}
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForSequenceClassification, LlamaForTokenClassification

from golden_common import report_files, save_golden
from make_golden import randomised
from make_gpt2_cls_golden import (
    B,
    CLS_LABELS,
    ID2LABEL,
    IGNORE,
    INPUT_SEED,
    LAST_TOKEN,
    LENGTHS,
    PAD,
    PAD_INSIDE,
    T,
    TOK_CLASSIFIER_DROPOUT,
    TOK_ID2LABEL,
    tok_labels_for,
)
from make_llama_golden import ROPE_THETA, V, tiny_llama_config

WIDTH = 32
# The keys that make llama_tiny/'s body; tiny_llama_cls_config must agree with it on each.
BODY_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
             "rope_parameters", "rms_norm_eps", "hidden_act", "attention_dropout",
             "attention_bias", "mlp_bias", "tie_word_embeddings")


def tiny_llama_cls_config(**extra) -> LlamaConfig:
    """llama_tiny/'s body (make_llama_golden.tiny_llama_config(kv_heads=2, tied=False)) with the
    special ids of the classifiers (pad 95, bos 0, eos 95); `extra` adds the label keys."""
    config = LlamaConfig(
        vocab_size=V,
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-6,
        hidden_act="silu",
        attention_dropout=0.0,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=PAD,
        **extra,
    )
    body = tiny_llama_config(kv_heads=2, tied=False)
    for key in BODY_KEYS:
        assert getattr(config, key) == getattr(body, key), (key, getattr(config, key), getattr(body, key))
    return config


def make_inputs():
    """gpt2_cls/'s input_ids, attention_mask and class labels, rebuilt from the same constants."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    input_ids = torch.randint(0, PAD, (B, T), generator=g, dtype=torch.long)  # ids 0..94: no pad id
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        input_ids[b, n:] = PAD
        attention_mask[b, :n] = 1
    input_ids[PAD_INSIDE] = PAD  # mask stays 1: a real token equal to the pad id
    labels = torch.tensor(CLS_LABELS, dtype=torch.long)
    return input_ids, attention_mask, labels


def check_pad_row(model, tag: str) -> tuple[float, int]:
    """The embedding has padding_idx = pad id; its row 95 is kept as drawn (non-zero) but gets a
    zero gradient. Returns the row's largest |weight| and the number of rows with a gradient."""
    emb = model.model.embed_tokens
    assert emb.padding_idx == PAD, (tag, emb.padding_idx)
    row_max = emb.weight[PAD].abs().max().item()
    assert row_max > 0.0, (tag, "pad row is zero")
    grad = emb.weight.grad
    assert grad is not None, tag
    assert torch.count_nonzero(grad[PAD]).item() == 0, (tag, grad[PAD].abs().max().item())
    rows_with_grad = int((grad.abs().amax(dim=1) > 0).sum().item())
    return row_max, rows_with_grad


def write_tok(out_dir: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """tests/golden/llama_tok/: LlamaForTokenClassification on llama_cls's inputs."""
    config = tiny_llama_cls_config(
        num_labels=len(TOK_ID2LABEL),
        id2label=dict(TOK_ID2LABEL),
        label2id={v: k for k, v in TOK_ID2LABEL.items()},
        classifier_dropout=TOK_CLASSIFIER_DROPOUT,
    )
    model = randomised(LlamaForTokenClassification, config)  # score.weight/.bias redrawn too
    # transformers takes config.classifier_dropout when set (else hidden_dropout, else 0.1).
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == TOK_CLASSIFIER_DROPOUT
    # GenericForTokenClassification: the head is `score`, with a bias (token_classification_bias
    # defaults to true), the body `model.`.
    assert model.score.bias is not None, "score has no bias"
    assert list(model.score.weight.shape) == [len(TOK_ID2LABEL), WIDTH]
    assert list(model.score.bias.shape) == [len(TOK_ID2LABEL)]
    names = [name for name, _ in model.named_parameters()]
    assert names[-2:] == ["score.weight", "score.bias"], names[-2:]
    assert all(n.startswith("model.") for n in names[:-2]), names
    model.eval()  # turns the head's dropout (p = 0.1) off; gradients stay enabled

    input_ids = input_ids.clone()
    attention_mask = attention_mask.clone()
    labels = tok_labels_for(attention_mask)
    real = attention_mask.bool()

    logits, loss, hidden = forward_backward(model, input_ids, attention_mask, labels)
    assert list(logits.shape) == [B, T, len(TOK_ID2LABEL)]

    # Independent checks: logits are the head on every position's last hidden state (no
    # dropout in eval), the loss is the mean cross-entropy over the labelled positions only.
    with torch.no_grad():
        head = model.score(hidden)
        assert torch.equal(head, logits), (head - logits).abs().max().item()
        manual_head = hidden @ model.score.weight.t() + model.score.bias
        head_diff = (manual_head - logits).abs().max().item()
        assert head_diff < 1e-6, head_diff
        manual = F.cross_entropy(logits.view(-1, len(TOK_ID2LABEL)), labels.view(-1), ignore_index=IGNORE)
        loss_diff = abs(manual.item() - loss.item())
        assert loss_diff < 1e-6, (manual.item(), loss.item())
        n_labelled = int((labels != IGNORE).sum().item())
        by_hand = sum(
            -torch.log_softmax(logits[b, t], dim=-1)[labels[b, t]].item()
            for b in range(B)
            for t in range(T)
            if labels[b, t].item() != IGNORE
        ) / n_labelled
        assert abs(by_hand - loss.item()) < 1e-6, (by_hand, loss.item())

    pad_row_max, rows_with_grad = check_pad_row(model, "tok")

    # Without the attention mask: right padding + causal attention leave every real position
    # unchanged (padding comes after it); padding positions may change.
    with torch.no_grad():
        nomask = model(input_ids=input_ids).logits
    nomask_diff = (nomask - logits)[real].abs().max().item()
    assert nomask_diff <= 1e-6, nomask_diff
    nomask_pad_diff = (nomask - logits)[~real].abs().max().item()

    grads = {}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grads[f"grad.{name}"] = p.grad.detach().to(torch.float32).contiguous()

    tensors = {"tok_logits": logits, "tok_loss": loss}
    tensors.update(grads)
    save_golden(
        model,
        out_dir,
        {
            "input_ids": input_ids.tolist(),
            "attention_mask": attention_mask.tolist(),
            "tok_labels": labels.tolist(),
        },
        tensors,
    )

    with open(os.path.join(out_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["architectures"] == ["LlamaForTokenClassification"], saved["architectures"]
    assert saved["pad_token_id"] == PAD, saved.get("pad_token_id")
    assert saved["eos_token_id"] == PAD, saved.get("eos_token_id")
    assert saved["tie_word_embeddings"] is False, saved.get("tie_word_embeddings")
    assert saved["id2label"] == {str(k): v for k, v in TOK_ID2LABEL.items()}, saved.get("id2label")
    assert saved["classifier_dropout"] == TOK_CLASSIFIER_DROPOUT, saved.get("classifier_dropout")
    assert saved["rope_parameters"]["rope_theta"] == ROPE_THETA, saved.get("rope_parameters")

    reloaded, info = LlamaForTokenClassification.from_pretrained(out_dir, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, bad
    assert reloaded.dropout.p == TOK_CLASSIFIER_DROPOUT
    # from_pretrained does not zero the loaded pad row.
    assert torch.equal(reloaded.model.embed_tokens.weight[PAD], model.model.embed_tokens.weight[PAD])
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(again, logits), (again - logits).abs().max().item()

    report_files(out_dir, "tok")
    print(f"[tok] dropout {model.dropout}; token_classification_bias in config.json: "
          f"{saved.get('token_classification_bias', '(absent)')}", file=sys.stderr)
    print(f"[tok] labelled positions {n_labelled} of {int(real.sum().item())} real", file=sys.stderr)
    print(f"[tok] score by hand: max diff {head_diff:.3e}; loss vs F.cross_entropy {loss_diff:.3e}", file=sys.stderr)
    print(f"[tok] embed_tokens row {PAD}: max |weight| {pad_row_max:.6f} (kept), gradient zero; "
          f"{rows_with_grad} rows with a gradient", file=sys.stderr)
    print(f"[tok] no attention mask: logits max diff {nomask_diff:.3e} at real positions, "
          f"{nomask_pad_diff:.3e} at padding", file=sys.stderr)
    print(f"[tok] tok_labels = {labels.tolist()}", file=sys.stderr)
    print(f"[tok] tok_logits range [{logits.min().item():.6f}, {logits.max().item():.6f}]", file=sys.stderr)
    print(f"[tok] tok_logits[0] = {logits[0].tolist()}", file=sys.stderr)
    print(f"[tok] tok_loss = {loss.item():.6f}", file=sys.stderr)
    print(out_dir)


def forward_backward(model, input_ids, attention_mask, labels):
    """One forward with labels and its backward (gradients left on the parameters): fp32
    logits, the loss and LlamaModel's last hidden state (after the final norm), captured in the
    same pass."""
    captured = {}

    def hook(_module, _inputs, output):
        captured["hidden"] = output.last_hidden_state

    handle = model.model.register_forward_hook(hook)
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    out.loss.backward()
    handle.remove()
    logits = out.logits.detach().to(torch.float32).contiguous()
    loss = out.loss.detach().to(torch.float32).reshape(()).contiguous()
    hidden = captured["hidden"].detach().to(torch.float32).contiguous()
    return logits, loss, hidden


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "llama_cls"))
    ap.add_argument("--out-tok", default=os.path.join(repo, "tests", "golden", "llama_tok"))
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    config = tiny_llama_cls_config(
        num_labels=3,
        id2label=dict(ID2LABEL),
        label2id={v: k for k, v in ID2LABEL.items()},
        problem_type="single_label_classification",
    )
    # score.weight is redrawn with the rest, and so is embed_tokens' pad row (kept as drawn).
    model = randomised(LlamaForSequenceClassification, config)
    assert model.score.bias is None, "score has a bias"
    assert list(model.score.weight.shape) == [3, WIDTH]
    model.eval()  # no dropout anyway (attention_dropout 0); gradients stay enabled

    input_ids, attention_mask, labels = make_inputs()
    gpt2_inputs = os.path.join(repo, "tests", "golden", "gpt2_cls", "inputs.json")
    if os.path.exists(gpt2_inputs):
        with open(gpt2_inputs) as f:
            theirs = json.load(f)
        assert theirs["input_ids"] == input_ids.tolist() and theirs["attention_mask"] == attention_mask.tolist()
        assert theirs["cls_labels"] == CLS_LABELS and theirs["last_token"] == LAST_TOKEN

    logits, loss, hidden = forward_backward(model, input_ids, attention_mask, labels)
    assert list(logits.shape) == [B, 3] and list(hidden.shape) == [B, T, WIDTH]

    # Independent checks: the pooled position is the rightmost id != pad (row 0: 11, although
    # position 3 holds the pad id), the logits are the score head at those positions, and the
    # loss is the mean cross-entropy over the 4 rows.
    picked = [max(t for t in range(T) if input_ids[b, t].item() != PAD) for b in range(B)]
    assert picked == LAST_TOKEN, picked
    assert picked[1:] == [n - 1 for n in LENGTHS[1:]]
    with torch.no_grad():
        rows = torch.arange(B)
        pos = torch.tensor(picked)
        head = model.score(hidden)[rows, pos]
        assert torch.equal(head, logits), (head - logits).abs().max().item()
        manual_head = hidden[rows, pos] @ model.score.weight.t()
        head_diff = (manual_head - logits).abs().max().item()
        assert head_diff < 1e-6, head_diff
        manual = F.cross_entropy(logits, labels)
        assert abs(manual.item() - loss.item()) < 1e-6, (manual.item(), loss.item())
        by_hand = sum(-torch.log_softmax(logits[b], dim=-1)[labels[b]].item() for b in range(B)) / B
        loss_diff = abs(by_hand - loss.item())
        assert loss_diff < 1e-6, (by_hand, loss.item())

    pad_row_max, rows_with_grad = check_pad_row(model, "cls")

    # Without the attention mask: right padding + causal attention leave the picked positions
    # unchanged (padding comes after them), so the pooled logits agree.
    with torch.no_grad():
        nomask = model(input_ids=input_ids).logits
    nomask_diff = (nomask - logits).abs().max().item()
    assert nomask_diff < 1e-5, nomask_diff

    grads = {}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grads[f"grad.{name}"] = p.grad.detach().to(torch.float32).contiguous()

    tensors = {"cls_logits": logits, "cls_loss": loss, "hidden": hidden}
    tensors.update(grads)
    save_golden(
        model,
        args.out,
        {
            "input_ids": input_ids.tolist(),
            "attention_mask": attention_mask.tolist(),
            "cls_labels": CLS_LABELS,
            "last_token": LAST_TOKEN,
        },
        tensors,
    )

    # What transformers wrote into config.json.
    with open(os.path.join(args.out, "config.json")) as f:
        saved = json.load(f)
    assert saved["architectures"] == ["LlamaForSequenceClassification"], saved["architectures"]
    assert saved["pad_token_id"] == PAD, saved.get("pad_token_id")
    assert saved["bos_token_id"] == 0, saved.get("bos_token_id")
    assert saved["eos_token_id"] == PAD, saved.get("eos_token_id")
    assert saved["tie_word_embeddings"] is False, saved.get("tie_word_embeddings")
    assert saved["id2label"] == {str(k): v for k, v in ID2LABEL.items()}, saved.get("id2label")
    assert saved["problem_type"] == "single_label_classification", saved.get("problem_type")
    assert saved["rope_parameters"]["rope_theta"] == ROPE_THETA, saved.get("rope_parameters")

    # Reload: no missing/unexpected/mismatched keys, the pad row as saved, the same logits bit
    # for bit.
    reloaded, info = LlamaForSequenceClassification.from_pretrained(args.out, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, bad
    assert torch.equal(reloaded.model.embed_tokens.weight[PAD], model.model.embed_tokens.weight[PAD])
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(again, logits), (again - logits).abs().max().item()

    # Report what was written.
    report_files(args.out)
    print(f"picked positions = {picked}", file=sys.stderr)
    print(f"score head by hand: max diff {head_diff:.3e}; loss by hand {loss_diff:.3e}", file=sys.stderr)
    print(f"embed_tokens row {PAD}: max |weight| {pad_row_max:.6f} (kept), gradient zero; "
          f"{rows_with_grad} rows with a gradient", file=sys.stderr)
    print(f"no attention mask: pooled logits max diff {nomask_diff:.3e}", file=sys.stderr)
    print(f"cls_logits = {logits.tolist()}", file=sys.stderr)
    print(f"cls_logits range [{logits.min().item():.6f}, {logits.max().item():.6f}]", file=sys.stderr)
    print(f"hidden range [{hidden.min().item():.6f}, {hidden.max().item():.6f}]", file=sys.stderr)
    print(f"cls_loss = {loss.item():.6f}", file=sys.stderr)
    print(args.out)

    # llama_tok/: after everything above, so the llama_cls/ files are as before.
    write_tok(args.out_tok, input_ids, attention_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())

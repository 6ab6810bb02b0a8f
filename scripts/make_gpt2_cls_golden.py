#!/usr/bin/env python3
"""Write tests/golden/gpt2_cls/: a tiny GPT2ForSequenceClassification made by transformers
itself, plus its inputs and expected outputs (logits, loss, last hidden state and the
gradient of the loss for every parameter), for the Rust parity tests of GPT-2 sequence
classification; then tests/golden/gpt2_tok/, the same for GPT2ForTokenClassification (below).

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_gpt2_cls_golden.py [--out tests/golden/gpt2_cls] [--out-tok tests/golden/gpt2_tok]

The model is gpt2_tiny/'s config (vocabulary 96, context 32, 2 layers, 4 heads, width 32) with
3 labels and pad_token_id 95; every parameter (score.weight included) is redrawn N(0, 0.2) from
torch.manual_seed(1234). transformers pools each row at its RIGHTMOST token whose id is not the
pad id (not at the last position the attention mask covers): row 0 holds the pad id 95 as a
real token at position 3 (mask 1 there) and is pooled at position 11; rows 1-3 are right-padded
with 95 to lengths 7, 4 and 1.

Files written:
    config.json, model.safetensors   -- GPT2ForSequenceClassification.save_pretrained(safe_serialization=True)
    inputs.json                      -- {"input_ids": [4][12], "attention_mask": [4][12],
                                         "cls_labels": [4], "last_token": [4]}
    expected.safetensors             -- float32 `cls_logits` [4,3], `cls_loss` [], `hidden` [4,12,32]
                                        (last hidden state, after ln_f), `grad.<param>` for every
                                        parameter in named_parameters order; metadata {"format": "pt"}

It then writes tests/golden/gpt2_tok/ (--out-tok): a tiny GPT2ForTokenClassification on the
same config body (5 BIO tags, classifier_dropout 0.1, off under model.eval()), every parameter
redrawn N(0, 0.2) from torch.manual_seed(1234) the same way, run on the SAME input_ids and
attention_mask, with per-token labels (-100 at every padding position and at a few real
positions, as run_ner labels only the first sub-token of a word). The gpt2_cls/ files do not
depend on it (it runs after them and touches no state they use).

Files written to gpt2_tok/:
    config.json, model.safetensors   -- GPT2ForTokenClassification.save_pretrained(safe_serialization=True)
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
from transformers import GPT2ForSequenceClassification, GPT2ForTokenClassification

from golden_common import report_files, save_golden
from make_golden import randomised, tiny_gpt2_config

INPUT_SEED = 4321
B, T = 4, 12
PAD = 95
LENGTHS = [12, 7, 4, 1]  # real tokens at the start of each row, padding (id 95, mask 0) after
PAD_INSIDE = (0, 3)  # (row, position): a real token whose id happens to be the pad id
CLS_LABELS = [2, 0, 1, 2]
LAST_TOKEN = [11, 6, 3, 0]
ID2LABEL = {0: "negative", 1: "neutral", 2: "positive"}

# gpt2_tok/: BIO tags sorted as run_ner sorts its label list.
TOK_ID2LABEL = {0: "B-LOC", 1: "B-PER", 2: "I-LOC", 3: "I-PER", 4: "O"}
TOK_CLASSIFIER_DROPOUT = 0.1
IGNORE = -100
# Real positions left unlabelled (-100), as run_ner does for the non-first sub-tokens of a word.
TOK_UNLABELLED = [(0, 1), (0, 7), (1, 2)]


def tok_labels_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """-100 at padding (mask 0) and at TOK_UNLABELLED; tag (3*b + t) % 5 elsewhere."""
    labels = torch.full(attention_mask.shape, IGNORE, dtype=torch.long)
    for b in range(attention_mask.shape[0]):
        for t in range(attention_mask.shape[1]):
            if attention_mask[b, t].item() == 1 and (b, t) not in TOK_UNLABELLED:
                labels[b, t] = (3 * b + t) % len(TOK_ID2LABEL)
    return labels


def write_tok(out_dir: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """tests/golden/gpt2_tok/: GPT2ForTokenClassification on gpt2_cls's inputs."""
    config = tiny_gpt2_config(
        num_labels=len(TOK_ID2LABEL),
        id2label=dict(TOK_ID2LABEL),
        label2id={v: k for k, v in TOK_ID2LABEL.items()},
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=PAD,
        classifier_dropout=TOK_CLASSIFIER_DROPOUT,
    )
    model = randomised(GPT2ForTokenClassification, config)  # classifier.weight/.bias redrawn too
    # transformers takes config.classifier_dropout when set (else hidden_dropout, else 0.1).
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == TOK_CLASSIFIER_DROPOUT
    assert list(model.classifier.weight.shape) == [len(TOK_ID2LABEL), 32]
    assert list(model.classifier.bias.shape) == [len(TOK_ID2LABEL)]
    model.eval()  # turns the classifier's dropout (p = 0.1) off; gradients stay enabled

    input_ids = input_ids.clone()
    attention_mask = attention_mask.clone()
    labels = tok_labels_for(attention_mask)
    real = attention_mask.bool()

    logits, loss, hidden = forward_backward(model, input_ids, attention_mask, labels)
    assert list(logits.shape) == [B, T, len(TOK_ID2LABEL)]

    # Independent checks: logits are the classifier on every position's last hidden state (no
    # dropout in eval), the loss is the mean cross-entropy over the labelled positions only.
    with torch.no_grad():
        head = model.classifier(hidden)
        assert torch.equal(head, logits), (head - logits).abs().max().item()
        manual_head = hidden @ model.classifier.weight.t() + model.classifier.bias
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
    assert saved["architectures"] == ["GPT2ForTokenClassification"], saved["architectures"]
    assert saved["pad_token_id"] == PAD, saved.get("pad_token_id")
    assert saved["id2label"] == {str(k): v for k, v in TOK_ID2LABEL.items()}, saved.get("id2label")
    assert saved["classifier_dropout"] == TOK_CLASSIFIER_DROPOUT, saved.get("classifier_dropout")

    reloaded, info = GPT2ForTokenClassification.from_pretrained(out_dir, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, bad
    assert reloaded.dropout.p == TOK_CLASSIFIER_DROPOUT
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(again, logits), (again - logits).abs().max().item()

    report_files(out_dir, "tok")
    print(f"[tok] dropout {model.dropout}", file=sys.stderr)
    print(f"[tok] labelled positions {n_labelled} of {int(real.sum().item())} real", file=sys.stderr)
    print(f"[tok] classifier by hand: max diff {head_diff:.3e}; loss vs F.cross_entropy {loss_diff:.3e}", file=sys.stderr)
    print(f"[tok] no attention mask: logits max diff {nomask_diff:.3e} at real positions, "
          f"{nomask_pad_diff:.3e} at padding", file=sys.stderr)
    print(f"[tok] tok_labels = {labels.tolist()}", file=sys.stderr)
    print(f"[tok] tok_logits range [{logits.min().item():.6f}, {logits.max().item():.6f}]", file=sys.stderr)
    print(f"[tok] tok_logits[0] = {logits[0].tolist()}", file=sys.stderr)
    print(f"[tok] tok_loss = {loss.item():.6f}", file=sys.stderr)
    print(out_dir)


def forward_backward(model, input_ids, attention_mask, labels):
    """One forward with labels and its backward (gradients left on the parameters): fp32
    logits, the loss and the transformer's last hidden state (after ln_f), captured in the
    same pass."""
    captured = {}

    def hook(_module, _inputs, output):
        captured["hidden"] = output.last_hidden_state

    handle = model.transformer.register_forward_hook(hook)
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
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "gpt2_cls"))
    ap.add_argument("--out-tok", default=os.path.join(repo, "tests", "golden", "gpt2_tok"))
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    config = tiny_gpt2_config(
        num_labels=3,
        id2label=dict(ID2LABEL),
        label2id={v: k for k, v in ID2LABEL.items()},
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=PAD,
        problem_type="single_label_classification",
    )
    # score.weight is redrawn with the rest.
    model = randomised(GPT2ForSequenceClassification, config)
    model.eval()  # no dropout anyway (all p = 0); gradients stay enabled

    g = torch.Generator().manual_seed(INPUT_SEED)
    input_ids = torch.randint(0, PAD, (B, T), generator=g, dtype=torch.long)  # ids 0..94: no pad id
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        input_ids[b, n:] = PAD
        attention_mask[b, :n] = 1
    input_ids[PAD_INSIDE] = PAD  # mask stays 1: a real token equal to the pad id
    labels = torch.tensor(CLS_LABELS, dtype=torch.long)

    logits, loss, hidden = forward_backward(model, input_ids, attention_mask, labels)
    assert list(logits.shape) == [B, 3] and list(hidden.shape) == [B, T, 32]

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
    assert saved["architectures"] == ["GPT2ForSequenceClassification"], saved["architectures"]
    assert saved["pad_token_id"] == PAD, saved.get("pad_token_id")
    assert saved["id2label"] == {str(k): v for k, v in ID2LABEL.items()}, saved.get("id2label")
    assert saved["problem_type"] == "single_label_classification", saved.get("problem_type")

    # Reload: no missing/unexpected/mismatched keys, the same logits bit for bit.
    reloaded, info = GPT2ForSequenceClassification.from_pretrained(args.out, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, bad
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(again, logits), (again - logits).abs().max().item()

    # Report what was written.
    report_files(args.out)
    print(f"picked positions = {picked}", file=sys.stderr)
    print(f"score head by hand: max diff {head_diff:.3e}", file=sys.stderr)
    print(f"no attention mask: pooled logits max diff {nomask_diff:.3e}", file=sys.stderr)
    print(f"cls_logits = {logits.tolist()}", file=sys.stderr)
    print(f"cls_logits range [{logits.min().item():.6f}, {logits.max().item():.6f}]", file=sys.stderr)
    print(f"cls_loss = {loss.item():.6f}", file=sys.stderr)
    print(args.out)

    # gpt2_tok/: after everything above, so the gpt2_cls/ files are as before.
    write_tok(args.out_tok, input_ids, attention_mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())

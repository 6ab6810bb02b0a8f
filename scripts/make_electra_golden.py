#!/usr/bin/env python3
"""Write tests/golden/electra_tiny/: a tiny ElectraForPreTraining (the discriminator, as the
released google/electra-*-discriminator checkpoints are), ElectraForSequenceClassification,
ElectraForTokenClassification, ElectraForQuestionAnswering and ElectraModel made by transformers
itself, plus padded inputs and the outputs transformers computed on them, for the Rust parity
tests. CI has no PyTorch; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_electra_golden.py [--out tests/golden/electra_tiny]

Files written:
    pre/{config.json,model.safetensors}   ElectraForPreTraining.save_pretrained (safetensors):
                                          the encoder plus discriminator_predictions.dense
                                          [32,32] and .dense_prediction [1,32] (one logit a token)
    cls/{config.json,model.safetensors}   ElectraForSequenceClassification, 3 labels
                                          (classifier.dense, GELU, classifier.out_proj on the
                                          [CLS] token)
    tok/{config.json,model.safetensors}   ElectraForTokenClassification, 5 IOB2 tags
    qa/{config.json,model.safetensors}    ElectraForQuestionAnswering (no labels)
    enc/{config.json,model.safetensors}   ElectraModel (no pooler: ELECTRA has none)
    inputs.json     input_ids, token_type_ids (1 on row 0's second segment), attention_mask
                    (zeros = padding in rows 1 and 2), cls_labels, tok_labels (-100 at [CLS],
                    [SEP], padding and unlabelled tokens), qa_start_positions, qa_end_positions
                    (one start at T and one end beyond it, which transformers clamps to T and
                    ignores). The ids, type ids and mask are tests/golden/bert_tiny/inputs.json's
                    ([MASK]=4 at 5 positions included; no mlm_labels here).
    expected.safetensors   float32 pre_logits [3,12] (the discriminator's per-token logits),
                           hidden [3,12,32] (the pre model's `electra` last hidden state),
                           cls_logits [3,3], cls_loss [], tok_logits [3,12,5], tok_loss [],
                           qa_start_logits [3,12], qa_end_logits [3,12], qa_loss [],
                           enc_hidden [3,12,32] (the ElectraModel's last hidden state)

embedding_size (16) differs from hidden_size (32) on purpose, so that every model has
`embeddings_project`. Each model is drawn after the ones before it, so adding one leaves the
others' files as they were. Before it finishes the script recomputes the encoder and the heads
by hand, reloads every folder with from_pretrained (no missing, unexpected or mismatched keys;
the same outputs, also with eager attention) and loads pre/ into
ElectraForSequenceClassification (printing the keys reported missing and unexpected).
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (ElectraConfig, ElectraForPreTraining, ElectraForQuestionAnswering,  # noqa: E402
                          ElectraForSequenceClassification, ElectraForTokenClassification, ElectraModel)
from transformers.utils import logging as hf_logging  # noqa: E402

from golden_common import LABELS, PAD, SEED, TAGS, B, T, V, bert_style_inputs, label_config, randomise  # noqa: E402

E, H, HEADS, EPS = 16, 32, 4, 1e-12


def config(**extra):
    return ElectraConfig(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=48,
        hidden_act="gelu",
        max_position_embeddings=24,
        type_vocab_size=2,
        layer_norm_eps=EPS,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=PAD,
        **extra,
    )


def run_all(models, ids, tt, mask, cls_labels, tok_labels, qa_start, qa_end):
    pre, cls, tok_model, qa_model, enc = models
    kw = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    with torch.no_grad():
        pout = pre(**kw)
        hidden = pre.electra(**kw).last_hidden_state
        cout = cls(**kw, labels=cls_labels)
        tout = tok_model(**kw, labels=tok_labels)
        qout = qa_model(**kw, start_positions=qa_start, end_positions=qa_end)
        eout = enc(**kw)
    return {
        "pre_logits": pout.logits.float().contiguous(),
        "hidden": hidden.float().contiguous(),
        "cls_logits": cout.logits.float().contiguous(),
        "cls_loss": cout.loss.float().reshape(()),
        "tok_logits": tout.logits.float().contiguous(),
        "tok_loss": tout.loss.float().reshape(()),
        "qa_start_logits": qout.start_logits.float().contiguous(),
        "qa_end_logits": qout.end_logits.float().contiguous(),
        "qa_loss": qout.loss.float().reshape(()),
        "enc_hidden": eout.last_hidden_state.float().contiguous(),
    }


def encoder_by_hand(m, ids, tt, mask):
    # ElectraModel written out (eval: no dropout), so that the README's description is checked:
    # LayerNorm over the embedding_size sum, then embeddings_project to hidden_size, then BERT's
    # post-LN layers with the exact (erf) GELU.
    emb = m.embeddings
    x = emb.word_embeddings(ids) + emb.token_type_embeddings(tt) + emb.position_embeddings(torch.arange(T))
    x = F.layer_norm(x, (E,), emb.LayerNorm.weight, emb.LayerNorm.bias, eps=EPS)
    x = m.embeddings_project(x)
    bias = torch.zeros(B, 1, 1, T).masked_fill(mask[:, None, None, :] == 0, torch.finfo(torch.float32).min)
    d = H // HEADS
    for layer in m.encoder.layer:
        att = layer.attention
        q, k, v = (lin(x).view(B, T, HEADS, d).transpose(1, 2) for lin in (att.self.query, att.self.key, att.self.value))
        p = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + bias, dim=-1)
        a = (p @ v).transpose(1, 2).reshape(B, T, H)
        x = F.layer_norm(att.output.dense(a) + x, (H,), att.output.LayerNorm.weight, att.output.LayerNorm.bias,
                         eps=EPS)
        f = layer.output.dense(F.gelu(layer.intermediate.dense(x)))
        x = F.layer_norm(f + x, (H,), layer.output.LayerNorm.weight, layer.output.LayerNorm.bias, eps=EPS)
    return x


def check_by_hand(models, expected, ids, tt, mask):
    # The encoder and the heads recomputed by hand from each model's own weights.
    pre, cls, tok_model, qa_model, enc = models
    with torch.no_grad():
        h = encoder_by_hand(pre.electra, ids, tt, mask)
        assert torch.allclose(h, expected["hidden"], atol=1e-5), (h - expected["hidden"]).abs().max()
        assert torch.allclose(encoder_by_hand(enc, ids, tt, mask), expected["enc_hidden"], atol=1e-5)
        h = expected["hidden"]
        dp = pre.discriminator_predictions
        logits = F.linear(F.gelu(dp.dense(h)), dp.dense_prediction.weight, dp.dense_prediction.bias).squeeze(-1)
        assert torch.allclose(logits, expected["pre_logits"], atol=1e-6)
        hc = encoder_by_hand(cls.electra, ids, tt, mask)
        # GELU, not BERT's tanh pooler: ElectraClassificationHead fixes "gelu" in the code.
        logits = cls.classifier.out_proj(F.gelu(cls.classifier.dense(hc[:, 0])))
        assert torch.allclose(logits, expected["cls_logits"], atol=1e-5)
        ht = encoder_by_hand(tok_model.electra, ids, tt, mask)
        assert torch.allclose(tok_model.classifier(ht), expected["tok_logits"], atol=1e-5)
        hq = encoder_by_hand(qa_model.electra, ids, tt, mask)
        q = qa_model.qa_outputs(hq)
        assert torch.allclose(q[..., 0], expected["qa_start_logits"], atol=1e-5)
        assert torch.allclose(q[..., 1], expected["qa_end_logits"], atol=1e-5)


def check_reload(out_dir, classes, expected, inputs):
    for attn in ("sdpa", "eager"):
        models = []
        for sub, klass in classes:
            model, info = klass.from_pretrained(os.path.join(out_dir, sub), output_loading_info=True,
                                                attn_implementation=attn)
            assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                             "error_msgs")), (sub, info)
            assert not model.training
            models.append(model)
        got = run_all(models, *inputs)
        for k, v in expected.items():
            if attn == "sdpa":
                assert torch.equal(got[k], v), (attn, k)
            else:
                assert torch.allclose(got[k], v, atol=1e-5), (attn, k, (got[k] - v).abs().max())


def check_pre_into_cls(out_dir, pre):
    # What run_glue does with a released discriminator: the encoder is kept, the discriminator
    # head is dropped and the classification head is initialised afresh.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    model, info = ElectraForSequenceClassification.from_pretrained(
        os.path.join(out_dir, "pre"), output_loading_info=True, num_labels=len(LABELS))
    hf_logging.set_verbosity(verbosity)
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    assert missing == ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias",
                       "classifier.out_proj.weight"], missing
    assert unexpected == ["discriminator_predictions.dense.bias", "discriminator_predictions.dense.weight",
                          "discriminator_predictions.dense_prediction.bias",
                          "discriminator_predictions.dense_prediction.weight"], unexpected
    assert not info["mismatched_keys"] and not info["error_msgs"], info
    kept = dict(pre.electra.state_dict())
    for k, v in model.electra.state_dict().items():
        assert torch.equal(v, kept[k]), k
    print("pre/ into ElectraForSequenceClassification: newly initialised", missing)
    print("pre/ into ElectraForSequenceClassification: unexpected", unexpected)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "electra_tiny"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    torch.manual_seed(SEED)
    pre = ElectraForPreTraining(config())
    randomise(pre)
    # No tied weights: every parameter of every model below is saved.
    assert hasattr(pre.electra, "embeddings_project")
    cls = ElectraForSequenceClassification(config(**label_config(LABELS)))
    randomise(cls)
    tok_model = ElectraForTokenClassification(config(**label_config(TAGS)))
    randomise(tok_model)
    # transformers' default num_labels (2) sizes qa_outputs.
    qa_model = ElectraForQuestionAnswering(config())
    randomise(qa_model)
    enc = ElectraModel(config())
    randomise(enc)
    models = (pre, cls, tok_model, qa_model, enc)
    for model in models:
        model.eval()

    # The inputs of scripts/make_bert_golden.py ([MASK] where its MLM labels are); a
    # discriminator has no MLM labels.
    x = bert_style_inputs()
    ids, tt, mask, cls_labels = x["ids"], x["tt"], x["mask"], x["cls_labels"]
    tok_labels, qa_start, qa_end = x["tok_labels"], x["qa_start"], x["qa_end"]
    inputs = (ids, tt, mask, cls_labels, tok_labels, qa_start, qa_end)
    record = {
        "input_ids": ids.tolist(),
        "token_type_ids": tt.tolist(),
        "attention_mask": mask.tolist(),
        "cls_labels": cls_labels.tolist(),
        "tok_labels": tok_labels.tolist(),
        "qa_start_positions": qa_start.tolist(),
        "qa_end_positions": qa_end.tolist(),
    }
    bert_inputs = os.path.join(repo, "tests", "golden", "bert_tiny", "inputs.json")
    if os.path.exists(bert_inputs):
        with open(bert_inputs) as f:
            bert = json.load(f)
        for k, v in record.items():
            assert bert[k] == v, k

    expected = run_all(models, *inputs)
    check_by_hand(models, expected, ids, tt, mask)

    classes = [("pre", ElectraForPreTraining), ("cls", ElectraForSequenceClassification),
               ("tok", ElectraForTokenClassification), ("qa", ElectraForQuestionAnswering),
               ("enc", ElectraModel)]
    for (sub, _), model in zip(classes, models):
        model.save_pretrained(os.path.join(args.out, sub), safe_serialization=True)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump(record, f)
    save_file(expected, os.path.join(args.out, "expected.safetensors"), metadata={"format": "pt"})
    check_reload(args.out, classes, expected, inputs)
    check_pre_into_cls(args.out, pre)
    print(f"wrote {args.out}: cls_loss {expected['cls_loss'].item():.6f} "
          f"tok_loss {expected['tok_loss'].item():.6f} qa_loss {expected['qa_loss'].item():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

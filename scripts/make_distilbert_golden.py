#!/usr/bin/env python3
"""Write tests/golden/distilbert_tiny/: a tiny DistilBertForMaskedLM,
DistilBertForSequenceClassification, DistilBertForTokenClassification,
DistilBertForQuestionAnswering and DistilBertModel made by transformers itself, plus padded inputs
and the outputs transformers computed on them, for the Rust parity tests. CI has no PyTorch;
these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_distilbert_golden.py [--out tests/golden/distilbert_tiny]

Files written:
    mlm/{config.json,model.safetensors}   DistilBertForMaskedLM.save_pretrained (safetensors;
                                          vocab_projector.weight is tied to the word embeddings
                                          and not saved, vocab_projector.bias is saved)
    cls/{config.json,model.safetensors}   DistilBertForSequenceClassification, 3 labels
                                          (pre_classifier, ReLU, classifier on the [CLS] token)
    tok/{config.json,model.safetensors}   DistilBertForTokenClassification, 5 IOB2 tags
    qa/{config.json,model.safetensors}    DistilBertForQuestionAnswering (no labels)
    enc/{config.json,model.safetensors}   DistilBertModel (no pooler: DistilBERT has none)
    inputs.json     input_ids ([CLS]=2 first; row 0 a pair [CLS] A [SEP] B [SEP] filling the
                    row, rows 1 and 2 single sentences ending in [SEP]=3 and padded with
                    [PAD]=0), attention_mask (zeros = padding), mlm_labels (-100 except at the
                    [MASK]=4 positions), cls_labels, tok_labels (-100 at [CLS], [SEP], padding
                    and unlabelled tokens), qa_start_positions, qa_end_positions (one start at T
                    and one end beyond it, which transformers clamps to T and ignores). No
                    token_type_ids: DistilBERT has no token type embeddings and its forward takes
                    none. The ids are the same as tests/golden/bert_tiny/inputs.json's.
    expected.safetensors   float32 mlm_logits [3,12,100], mlm_loss [], hidden [3,12,32] (the
                           MLM model's `distilbert` last hidden state), cls_logits [3,3],
                           cls_loss [], tok_logits [3,12,5], tok_loss [], qa_start_logits [3,12],
                           qa_end_logits [3,12], qa_loss [], enc_hidden [3,12,32] (the
                           DistilBertModel's last hidden state)

Each model is drawn after the ones before it, so adding one leaves the others' files as they were.
The script reloads every folder with from_pretrained (no missing, unexpected or mismatched keys;
the same outputs, also with eager attention) before it finishes.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (DistilBertConfig, DistilBertForMaskedLM, DistilBertForQuestionAnswering,  # noqa: E402
                          DistilBertForSequenceClassification, DistilBertForTokenClassification,
                          DistilBertModel)

from golden_common import LABELS, PAD, SEED, TAGS, B, T, V, bert_style_inputs, label_config, randomise  # noqa: E402


def config(**extra):
    return DistilBertConfig(
        vocab_size=V,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=48,
        activation="gelu",
        max_position_embeddings=24,
        sinusoidal_pos_embds=False,
        dropout=0.1,
        attention_dropout=0.1,
        seq_classif_dropout=0.2,
        qa_dropout=0.1,
        pad_token_id=PAD,
        **extra,
    )


def run_all(models, ids, mask, mlm_labels, cls_labels, tok_labels, qa_start, qa_end):
    mlm, cls, tok_model, qa_model, enc = models
    with torch.no_grad():
        out = mlm(input_ids=ids, attention_mask=mask, labels=mlm_labels)
        hidden = mlm.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        cout = cls(input_ids=ids, attention_mask=mask, labels=cls_labels)
        tout = tok_model(input_ids=ids, attention_mask=mask, labels=tok_labels)
        qout = qa_model(input_ids=ids, attention_mask=mask, start_positions=qa_start, end_positions=qa_end)
        eout = enc(input_ids=ids, attention_mask=mask)
    return {
        "mlm_logits": out.logits.float().contiguous(),
        "mlm_loss": out.loss.float().reshape(()),
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


def check_heads(models, expected, ids, mask):
    # The heads recomputed by hand from each model's own encoder output (eval: no dropout), so
    # that the README's description of them is checked.
    mlm, cls, tok_model, qa_model, _ = models
    with torch.no_grad():
        h = expected["hidden"]
        x = F.layer_norm(F.gelu(mlm.vocab_transform(h)), (32,), mlm.vocab_layer_norm.weight,
                         mlm.vocab_layer_norm.bias, eps=1e-12)
        logits = F.linear(x, mlm.distilbert.embeddings.word_embeddings.weight, mlm.vocab_projector.bias)
        assert torch.allclose(logits, expected["mlm_logits"], atol=1e-6)
        hc = cls.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = cls.classifier(torch.relu(cls.pre_classifier(hc[:, 0])))
        assert torch.allclose(logits, expected["cls_logits"], atol=1e-6)
        ht = tok_model.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.allclose(tok_model.classifier(ht), expected["tok_logits"], atol=1e-6)
        hq = qa_model.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state
        q = qa_model.qa_outputs(hq)
        assert torch.allclose(q[..., 0], expected["qa_start_logits"], atol=1e-6)
        assert torch.allclose(q[..., 1], expected["qa_end_logits"], atol=1e-6)


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
        assert models[0].vocab_projector.weight is models[0].distilbert.embeddings.word_embeddings.weight
        got = run_all(models, *inputs)
        for k, v in expected.items():
            if attn == "sdpa":
                assert torch.equal(got[k], v), (attn, k)
            else:
                assert torch.allclose(got[k], v, atol=1e-5), (attn, k, (got[k] - v).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "distilbert_tiny"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    torch.manual_seed(SEED)
    mlm = DistilBertForMaskedLM(config())
    randomise(mlm)
    # vocab_projector.weight is the word embedding matrix (tie_word_embeddings=True, the default),
    # so it is drawn once and not saved; vocab_projector.bias is a parameter of its own and saved.
    assert mlm.vocab_projector.weight is mlm.distilbert.embeddings.word_embeddings.weight
    assert "vocab_projector.bias" in dict(mlm.named_parameters())
    cls = DistilBertForSequenceClassification(config(**label_config(LABELS)))
    randomise(cls)
    tok_model = DistilBertForTokenClassification(config(**label_config(TAGS)))
    randomise(tok_model)
    # transformers' default num_labels (2) sizes qa_outputs (DistilBERT refuses any other).
    qa_model = DistilBertForQuestionAnswering(config())
    randomise(qa_model)
    enc = DistilBertModel(config())
    randomise(enc)
    models = (mlm, cls, tok_model, qa_model, enc)
    for model in models:
        model.eval()

    x = bert_style_inputs()
    ids, mask, mlm_labels, cls_labels = x["ids"], x["mask"], x["mlm_labels"], x["cls_labels"]
    tok_labels, qa_start, qa_end = x["tok_labels"], x["qa_start"], x["qa_end"]
    inputs = (ids, mask, mlm_labels, cls_labels, tok_labels, qa_start, qa_end)

    expected = run_all(models, *inputs)
    check_heads(models, expected, ids, mask)

    classes = [("mlm", DistilBertForMaskedLM), ("cls", DistilBertForSequenceClassification),
               ("tok", DistilBertForTokenClassification), ("qa", DistilBertForQuestionAnswering),
               ("enc", DistilBertModel)]
    for (sub, _), model in zip(classes, models):
        model.save_pretrained(os.path.join(args.out, sub), safe_serialization=True)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump(
            {
                "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(),
                "mlm_labels": mlm_labels.tolist(),
                "cls_labels": cls_labels.tolist(),
                "tok_labels": tok_labels.tolist(),
                "qa_start_positions": qa_start.tolist(),
                "qa_end_positions": qa_end.tolist(),
            },
            f,
        )
    save_file(expected, os.path.join(args.out, "expected.safetensors"), metadata={"format": "pt"})
    check_reload(args.out, classes, expected, inputs)
    print(f"wrote {args.out}: mlm_loss {expected['mlm_loss'].item():.6f} "
          f"cls_loss {expected['cls_loss'].item():.6f} tok_loss {expected['tok_loss'].item():.6f} "
          f"qa_loss {expected['qa_loss'].item():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Write tests/golden/bert_tiny/: a tiny BertForMaskedLM, BertForSequenceClassification,
BertForTokenClassification and BertForQuestionAnswering made by transformers itself, plus padded
inputs and the outputs transformers computed on them, for the Rust parity tests
(tests/tests/hf_bert_golden.rs). CI has no PyTorch; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_bert_golden.py [--out tests/golden/bert_tiny]

Files written:
    mlm/{config.json,model.safetensors}   BertForMaskedLM.save_pretrained (safetensors)
    cls/{config.json,model.safetensors}   BertForSequenceClassification, 3 labels
    tok/{config.json,model.safetensors}   BertForTokenClassification, 5 IOB2 tags
    qa/{config.json,model.safetensors}    BertForQuestionAnswering (no labels, no pooler)
    inputs.json     input_ids, token_type_ids (a sentence pair in row 0), attention_mask (zeros
                    = padding in rows 1 and 2), mlm_labels (-100 except at masked positions),
                    cls_labels, tok_labels (-100 at special tokens, padding and later sub-tokens),
                    qa_start_positions, qa_end_positions (one start at T and one end beyond it,
                    which transformers clamps to T and ignores)
    expected.safetensors   float32 mlm_logits [3,12,100], mlm_loss [], cls_logits [3,3],
                           cls_loss [], hidden [3,12,32] (the encoder's last hidden state),
                           tok_logits [3,12,5], tok_loss [], qa_start_logits [3,12],
                           qa_end_logits [3,12], qa_loss []

Each model is drawn after the ones before it, so adding one left the others' files as they were.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (BertConfig, BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                          BertForTokenClassification)

from golden_common import LABELS, SEED, TAGS, V, bert_style_inputs, label_config, randomise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "bert_tiny"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    common = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_act="gelu",
        max_position_embeddings=24,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
    )
    torch.manual_seed(SEED)
    mlm = BertForMaskedLM(BertConfig(**common))
    randomise(mlm)
    assert mlm.cls.predictions.decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()
    cls_cfg = BertConfig(**common, **label_config(LABELS))
    cls = BertForSequenceClassification(cls_cfg)
    randomise(cls)
    # Drawn after the others, so that adding it left their files as they were.
    tok_model = BertForTokenClassification(BertConfig(**common, **label_config(TAGS)))
    randomise(tok_model)
    # Drawn last for the same reason. transformers' default num_labels (2) sizes qa_outputs.
    qa_model = BertForQuestionAnswering(BertConfig(**common))
    randomise(qa_model)
    mlm.eval()
    cls.eval()
    tok_model.eval()
    qa_model.eval()

    x = bert_style_inputs()
    ids, tt, mask, mlm_labels = x["ids"], x["tt"], x["mask"], x["mlm_labels"]
    cls_labels, tok_labels, qa_start, qa_end = x["cls_labels"], x["tok_labels"], x["qa_start"], x["qa_end"]

    with torch.no_grad():
        out = mlm(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=mlm_labels)
        hidden = mlm.bert(input_ids=ids, token_type_ids=tt, attention_mask=mask).last_hidden_state
        cout = cls(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=cls_labels)
        tout = tok_model(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=tok_labels)
        qout = qa_model(input_ids=ids, token_type_ids=tt, attention_mask=mask, start_positions=qa_start,
                        end_positions=qa_end)

    for sub, model in [("mlm", mlm), ("cls", cls), ("tok", tok_model), ("qa", qa_model)]:
        model.save_pretrained(os.path.join(args.out, sub), safe_serialization=True)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump(
            {
                "input_ids": ids.tolist(),
                "token_type_ids": tt.tolist(),
                "attention_mask": mask.tolist(),
                "mlm_labels": mlm_labels.tolist(),
                "cls_labels": cls_labels.tolist(),
                "tok_labels": tok_labels.tolist(),
                "qa_start_positions": qa_start.tolist(),
                "qa_end_positions": qa_end.tolist(),
            },
            f,
        )
    save_file(
        {
            "mlm_logits": out.logits.float().contiguous(),
            "mlm_loss": out.loss.float().reshape(()),
            "cls_logits": cout.logits.float().contiguous(),
            "cls_loss": cout.loss.float().reshape(()),
            "hidden": hidden.float().contiguous(),
            "tok_logits": tout.logits.float().contiguous(),
            "tok_loss": tout.loss.float().reshape(()),
            "qa_start_logits": qout.start_logits.float().contiguous(),
            "qa_end_logits": qout.end_logits.float().contiguous(),
            "qa_loss": qout.loss.float().reshape(()),
        },
        os.path.join(args.out, "expected.safetensors"),
        metadata={"format": "pt"},
    )
    print(f"wrote {args.out}: mlm_loss {out.loss.item():.6f} cls_loss {cout.loss.item():.6f} "
          f"tok_loss {tout.loss.item():.6f} qa_loss {qout.loss.item():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Write tests/golden/modernbert_tiny/: a tiny ModernBertForMaskedLM,
ModernBertForSequenceClassification, ModernBertForTokenClassification,
ModernBertForQuestionAnswering, ModernBertForMultipleChoice and ModernBertModel made by
transformers itself, plus padded inputs and the outputs transformers computed on them, for the
Rust parity tests. CI has no PyTorch; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_modernbert_golden.py [--out tests/golden/modernbert_tiny]

The models: 4 layers (full attention in layers 0 and 3, a local window in 1 and 2:
global_attn_every_n_layers 3), 32 wide, 4 heads, intermediate 48, local_attention 16 (a token
sees the keys at most 8 positions away in a local layer: the full 12-token row is cut by the
window, and every padded query still has a real token in its window), RoPE bases 160000
(full) and 10000 (local). The masked LM, token classifier, question
answering model and bare encoder have ModernBertConfig's default biases (none but the
decoder's); the sequence classifier has every bias (norm_bias, attention_bias, mlp_bias,
classifier_bias) and mean pooling (classifier_pooling "mean"); the multiple-choice model pools
the first token ("cls"). Dropouts are set (0.1) but the outputs are computed in eval mode.

Files written:
    mlm/, cls/, tok/, qa/, mc/, enc/   {config.json, model.safetensors} from save_pretrained
    inputs.json     input_ids ([CLS]=2 first, [SEP]=3, [PAD]=0, [MASK]=4 at the masked-LM
                    positions; rows 1 and 2 padded), attention_mask, mlm_labels, cls_labels,
                    tok_labels, qa_start_positions, qa_end_positions (tests/golden/bert_tiny's
                    batch), mc_labels (the three rows as the choices of one example)
    expected.safetensors   float32 mlm_logits [3,12,100], mlm_loss [], hidden [3,12,32] (the
                           MLM model's encoder output), cls_logits [3,3], cls_loss [],
                           tok_logits [3,12,5], tok_loss [], qa_start_logits [3,12],
                           qa_end_logits [3,12], qa_loss [], mc_logits [1,3], mc_loss [],
                           enc_hidden [3,12,32]; grad.mlm.<name> and grad.cls.<name>: the
                           gradient of each parameter of the masked LM (its loss) and of the
                           sequence classifier (its loss), in eval mode

A padded query whose window holds no real token would attend to nothing, and what an attention
kernel makes of such a row is its own choice (eager attention and SDPA differ there); the
window above keeps the batch clear of them, so every output is defined.
The script reloads every folder with from_pretrained (no missing, unexpected or mismatched keys;
the same outputs, also with eager attention) before it finishes.
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (ModernBertConfig, ModernBertForMaskedLM, ModernBertForMultipleChoice,  # noqa: E402
                          ModernBertForQuestionAnswering, ModernBertForSequenceClassification,
                          ModernBertForTokenClassification, ModernBertModel)

from golden_common import LABELS, PAD, CLS, SEP, SEED, TAGS, V, bert_style_inputs, label_config, randomise  # noqa: E402


def config(**extra):
    extra.setdefault("global_attn_every_n_layers", 3)
    return ModernBertConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=24,
        local_attention=16,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        embedding_dropout=0.1,
        attention_dropout=0.1,
        mlp_dropout=0.1,
        classifier_dropout=0.1,
        pad_token_id=PAD,
        bos_token_id=CLS,
        cls_token_id=CLS,
        eos_token_id=SEP,
        sep_token_id=SEP,
        **extra,
    )


def run_all(models, ids, mask, mlm_labels, cls_labels, tok_labels, qa_start, qa_end, mc_labels):
    mlm, cls, tok_model, qa_model, mc, enc = models
    with torch.no_grad():
        out = mlm(input_ids=ids, attention_mask=mask, labels=mlm_labels)
        hidden = mlm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        cout = cls(input_ids=ids, attention_mask=mask, labels=cls_labels)
        tout = tok_model(input_ids=ids, attention_mask=mask, labels=tok_labels)
        qout = qa_model(input_ids=ids, attention_mask=mask, start_positions=qa_start, end_positions=qa_end)
        mout = mc(input_ids=ids.unsqueeze(0), attention_mask=mask.unsqueeze(0), labels=mc_labels)
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
        "mc_logits": mout.logits.float().contiguous(),
        "mc_loss": mout.loss.float().reshape(()),
        "enc_hidden": eout.last_hidden_state.float().contiguous(),
    }


def gradients(models, ids, mask, mlm_labels, cls_labels):
    """The gradient of every parameter of the masked LM (its loss at the masked tokens) and of the
    sequence classifier (its cross-entropy), in eval mode (no dropout), as grad.mlm.<name> and
    grad.cls.<name>. The masked LM's token embeddings collect the tied decoder's gradient too."""
    mlm, cls = models[0], models[1]
    out = {}
    for tag, model, kw in [("mlm", mlm, dict(labels=mlm_labels)), ("cls", cls, dict(labels=cls_labels))]:
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, **kw).loss.backward()
        for name, p in model.named_parameters():
            out[f"grad.{tag}.{name}"] = p.grad.float().contiguous().clone()
        model.zero_grad()
    return out


def check_window(enc, ids, mask):
    # The local window matters: the same model with every layer full gives other outputs.
    full = ModernBertModel(config(global_attn_every_n_layers=1))
    full.load_state_dict(enc.state_dict())
    full.eval()
    with torch.no_grad():
        a = enc(input_ids=ids, attention_mask=mask).last_hidden_state
        b = full(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (a - b)[0].abs().max() > 1e-3


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
        assert models[0].decoder.weight is models[0].model.embeddings.tok_embeddings.weight
        got = run_all(models, *inputs)
        for k, v in expected.items():
            assert torch.allclose(got[k], v, atol=1e-5), (attn, k, (got[k] - v).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "modernbert_tiny"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    torch.manual_seed(SEED)
    mlm = ModernBertForMaskedLM(config())
    randomise(mlm)
    assert mlm.decoder.weight is mlm.model.embeddings.tok_embeddings.weight
    assert "decoder.bias" in dict(mlm.named_parameters())
    every_bias = dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
                      classifier_pooling="mean")
    cls = ModernBertForSequenceClassification(config(**every_bias, **label_config(LABELS)))
    randomise(cls)
    tok_model = ModernBertForTokenClassification(config(**label_config(TAGS)))
    randomise(tok_model)
    qa_model = ModernBertForQuestionAnswering(config())
    randomise(qa_model)
    mc = ModernBertForMultipleChoice(config())
    randomise(mc)
    enc = ModernBertModel(config())
    randomise(enc)
    models = (mlm, cls, tok_model, qa_model, mc, enc)
    for model in models:
        model.eval()

    x = bert_style_inputs()
    ids, mask, mlm_labels, cls_labels = x["ids"], x["mask"], x["mlm_labels"], x["cls_labels"]
    tok_labels, qa_start, qa_end = x["tok_labels"], x["qa_start"], x["qa_end"]
    mc_labels = torch.tensor([1])
    inputs = (ids, mask, mlm_labels, cls_labels, tok_labels, qa_start, qa_end, mc_labels)

    expected = run_all(models, *inputs)
    check_window(enc, ids, mask)
    grads = gradients(models, ids, mask, mlm_labels, cls_labels)

    classes = [("mlm", ModernBertForMaskedLM), ("cls", ModernBertForSequenceClassification),
               ("tok", ModernBertForTokenClassification), ("qa", ModernBertForQuestionAnswering),
               ("mc", ModernBertForMultipleChoice), ("enc", ModernBertModel)]
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
                "mc_labels": mc_labels.tolist(),
            },
            f,
        )
    save_file({**expected, **grads}, os.path.join(args.out, "expected.safetensors"), metadata={"format": "pt"})
    check_reload(args.out, classes, expected, inputs)
    print(f"wrote {args.out}: " + " ".join(
        f"{k} {expected[k].item():.6f}" for k in ("mlm_loss", "cls_loss", "tok_loss", "qa_loss", "mc_loss")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

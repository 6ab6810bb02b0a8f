#!/usr/bin/env python3
"""Write tests/golden/multiple_choice/: tiny BertForMultipleChoice, RobertaForMultipleChoice,
DistilBertForMultipleChoice and ElectraForMultipleChoice made by transformers itself, plus a
padded batch of choices and the outputs transformers computed on it, for the Rust parity tests.
CI has no PyTorch; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_multiple_choice_golden.py [--out tests/golden/multiple_choice]

Each family's config is the one of its *_tiny golden (make_{bert,roberta,distilbert,electra}
_golden.py: distilbert's and electra's `config()` are imported, bert's and roberta's values are
restated, and the script checks that every saved config.json equals the family's
`*_tiny/qa/config.json` but for `architectures`). Every model is drawn from
`torch.manual_seed(1234)` on its own and every parameter redrawn N(0, 0.2).

Files written (all models have num_choices folded into the batch: [B, C, T] is run as
[B*C, T], one logit a row, viewed back as [B, C]; the loss is CrossEntropyLoss over the C
choices):
    bert/{config.json,model.safetensors}         BertForMultipleChoice (with its pooler):
        logits = classifier(dropout(tanh(bert.pooler.dense(h[:, 0])))).view(B, C)
        head tensors: bert.pooler.dense.weight [32,32], .bias [32], classifier.weight [1,32],
        classifier.bias [1]; dropout = classifier_dropout (null), so hidden_dropout_prob 0.1
    roberta/{config.json,model.safetensors}      RobertaForMultipleChoice (with its pooler):
        logits = classifier(dropout(tanh(roberta.pooler.dense(h[:, 0])))).view(B, C)
        head tensors: roberta.pooler.dense.weight [32,32], .bias [32], classifier.weight
        [1,32], classifier.bias [1]; dropout = hidden_dropout_prob 0.1 (RoBERTa's multiple
        choice head ignores classifier_dropout)
    distilbert/{config.json,model.safetensors}   DistilBertForMultipleChoice:
        logits = classifier(dropout(relu(pre_classifier(h[:, 0])))).view(B, C)
        head tensors: pre_classifier.weight [32,32], .bias [32], classifier.weight [1,32],
        classifier.bias [1]; dropout = seq_classif_dropout 0.2
    electra/{config.json,model.safetensors}      ElectraForMultipleChoice:
        logits = classifier(last_dropout(gelu(sequence_summary.summary(first_dropout(h[:, 0])))))
                 .view(B, C)
        head tensors: sequence_summary.summary.weight [32,32], sequence_summary.summary.bias
        [32], classifier.weight [1,32], classifier.bias [1]. ElectraSequenceSummary with
        ElectraConfig's defaults as saved in config.json: summary_type "first" (the token at
        position 0, [CLS]), summary_use_proj true (a Linear hidden->hidden, 32->32: config has
        no summary_proj_to_labels), summary_activation "gelu" (transformers' GELUActivation =
        torch.nn.functional.gelu, the exact erf GELU, not the tanh approximation),
        summary_last_dropout 0.1 (after the activation); ElectraConfig has no
        summary_first_dropout, so first_dropout is the identity. No pooler; embedding_size 16
        != hidden 32, so embeddings_project exists.
    inputs.json     {"bert": ..., "roberta": ..., "distilbert": ..., "electra": ...}, B=2
                    examples x C=3 choices x T=10 tokens, SWAG-style: in each example the first
                    segment (the context) is shared by the choices, the second is the choice.
                    bert, electra: input_ids [2][3][10] ([CLS]=2 A [SEP]=3 B [SEP]=3, then
                    [PAD]=0), token_type_ids (0 on [CLS] A [SEP] and padding, 1 on B [SEP]),
                    attention_mask, labels [2, 0].
                    distilbert: the same input_ids, attention_mask and labels, no token_type_ids
                    (DistilBERT's forward takes none).
                    roberta: input_ids (<s>=0 A </s>=2 </s>=2 B </s>=2, then <pad>=1; the context
                    one token shorter so that every row has the same length as in bert),
                    attention_mask, position_ids (what RobertaEmbeddings computes: 1 +
                    cumsum(ids != 1) at tokens, 1 at padding), labels [2, 0]; no token_type_ids
                    (RobertaTokenizerFast returns none; the model is called without them, zeros).
                    Row lengths (the same for every family): example 0: 10, 8, 7; example 1:
                    10, 6, 8.
    expected.safetensors   float32, for each family f in bert, roberta, distilbert, electra:
                           {f}_logits [2,3], {f}_loss [] (transformers' loss with the labels),
                           {f}_logits_single [1,3] (example 0 alone, run as a batch of one)

Before it finishes the script recomputes every head by hand from its base model's last hidden
state and the head's weights (to 1e-6), checks each loss against F.cross_entropy, checks that a
batch of one gives example 0's logits, and reloads every folder with from_pretrained (no missing,
unexpected or mismatched keys; the same logits bit for bit, and within 1e-5 with
attn_implementation="eager").
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (BertConfig, BertForMultipleChoice, DistilBertForMultipleChoice,  # noqa: E402
                          ElectraForMultipleChoice, RobertaConfig, RobertaForMultipleChoice)

import make_distilbert_golden  # noqa: E402
import make_electra_golden  # noqa: E402
from golden_common import CLS, PAD, SEED, SEP, V, randomise  # noqa: E402
from make_roberta_golden import BOS as R_BOS, EOS as R_EOS, PAD as R_PAD, position_ids_of  # noqa: E402

B, C, T = 2, 3, 10
LABELS = [2, 0]
# Per example: the context length and the choices' lengths, in tokens (BERT-style layout; RoBERTa's
# context is one token shorter, for its extra </s>). Example 0's rows are 10, 8 and 7 tokens,
# example 1's 10, 6 and 8.
LAYOUT = [(3, [4, 2, 1]), (2, [5, 1, 3])]
FAMILIES = ["bert", "roberta", "distilbert", "electra"]


def bert_config():
    # make_bert_golden.py's `common`, restated (it keeps its config inside main()).
    return BertConfig(
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


def roberta_config():
    # make_roberta_golden.py's `common`, restated (it keeps its config inside make_models()).
    return RobertaConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_act="gelu",
        max_position_embeddings=16,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=R_PAD,
        bos_token_id=R_BOS,
        eos_token_id=R_EOS,
    )


CLASSES = {
    "bert": (BertForMultipleChoice, bert_config),
    "roberta": (RobertaForMultipleChoice, roberta_config),
    "distilbert": (DistilBertForMultipleChoice, make_distilbert_golden.config),
    "electra": (ElectraForMultipleChoice, make_electra_golden.config),
}


def make_inputs():
    """The batch of every family: {family: {name: tensor}}."""
    g = torch.Generator().manual_seed(4321)
    # Content ids drawn once (>= 5: no special token of either vocabulary, no mask); the RoBERTa
    # rows use the same words with the context's last one left out.
    contexts = [torch.randint(5, V, (n,), generator=g) for n, _ in LAYOUT]
    choices = [[torch.randint(5, V, (n,), generator=g) for n in lens] for _, lens in LAYOUT]

    ids = torch.full((B, C, T), PAD, dtype=torch.long)
    tt = torch.zeros(B, C, T, dtype=torch.long)
    mask = torch.zeros(B, C, T, dtype=torch.long)
    r_ids = torch.full((B, C, T), R_PAD, dtype=torch.long)
    r_mask = torch.zeros(B, C, T, dtype=torch.long)
    for b in range(B):
        for c in range(C):
            a, z = contexts[b], choices[b][c]
            row = [CLS, *a.tolist(), SEP, *z.tolist(), SEP]
            n = len(row)
            ids[b, c, :n] = torch.tensor(row)
            tt[b, c, len(a) + 2:n] = 1
            mask[b, c, :n] = 1
            r_row = [R_BOS, *a[:-1].tolist(), R_EOS, R_EOS, *z.tolist(), R_EOS]
            assert len(r_row) == n
            r_ids[b, c, :n] = torch.tensor(r_row)
            r_mask[b, c, :n] = 1
    assert torch.equal(mask, r_mask)
    lengths = mask.sum(-1).tolist()
    assert lengths == [[10, 8, 7], [10, 6, 8]], lengths
    assert int(ids.max()) < V and int(r_ids.max()) < V
    r_pos = position_ids_of(r_ids.view(B * C, T)).view(B, C, T)
    labels = torch.tensor(LABELS)
    bert_style = dict(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=labels)
    return {
        "bert": bert_style,
        "roberta": dict(input_ids=r_ids, attention_mask=mask, position_ids=r_pos, labels=labels),
        "distilbert": dict(input_ids=ids, attention_mask=mask, labels=labels),
        "electra": bert_style,
    }


def model_kwargs(inputs):
    # What the model is called with: RoBERTa's positions are recorded, not passed (the model
    # computes them; check_by_hand checks they are the recorded ones).
    return {k: v for k, v in inputs.items() if k != "position_ids"}


def run(family, model, inputs):
    kw = model_kwargs(inputs)
    with torch.no_grad():
        out = model(**kw)
        single = model(**{k: v[:1] for k, v in kw.items()})
    return {
        f"{family}_logits": out.logits.float().contiguous(),
        f"{family}_loss": out.loss.float().reshape(()),
        f"{family}_logits_single": single.logits.float().contiguous(),
    }


def check_by_hand(family, model, inputs, expected):
    # The head recomputed from the base model's last hidden state (eval: no dropout).
    kw = {k: v.view(B * C, T) for k, v in inputs.items() if k not in ("labels",)}
    with torch.no_grad():
        if family == "bert":
            h = model.bert(**kw).last_hidden_state
            pooled = torch.tanh(model.bert.pooler.dense(h[:, 0]))
            logits = model.classifier(pooled)
        elif family == "roberta":
            pos = kw.pop("position_ids")
            h = model.roberta(**kw).last_hidden_state
            assert torch.equal(h, model.roberta(**kw, position_ids=pos).last_hidden_state)
            pooled = torch.tanh(model.roberta.pooler.dense(h[:, 0]))
            logits = model.classifier(pooled)
        elif family == "distilbert":
            h = model.distilbert(**kw).last_hidden_state
            logits = model.classifier(torch.relu(model.pre_classifier(h[:, 0])))
        else:
            h = model.electra(**kw).last_hidden_state
            s = model.sequence_summary.summary(h[:, 0])
            logits = model.classifier(F.gelu(s))
            tanh_logits = model.classifier(F.gelu(s, approximate="tanh")).view(B, C)
            gap = (tanh_logits - expected[f"{family}_logits"]).abs().max().item()
            print(f"electra: the tanh-approximate GELU would move the logits by {gap:.2e}")
        logits = logits.view(B, C)
    got = expected[f"{family}_logits"]
    assert torch.allclose(logits, got, atol=1e-6, rtol=0), (family, (logits - got).abs().max())
    loss = F.cross_entropy(got, inputs["labels"])
    assert torch.allclose(loss, expected[f"{family}_loss"], atol=1e-6, rtol=0), family
    single = expected[f"{family}_logits_single"]
    gap = (single - got[:1]).abs().max().item()
    assert gap <= 1e-6, (family, gap)
    print(f"{family}: by hand ok; batch of one vs batch of two: max abs {gap:.2e}")


def check_config(out_dir, family):
    # The same config as the family's *_tiny golden (its qa/ model: no labels either).
    tiny = os.path.join(os.path.dirname(os.path.normpath(out_dir)), f"{family}_tiny", "qa", "config.json")
    with open(os.path.join(out_dir, family, "config.json")) as f:
        ours = json.load(f)
    with open(tiny) as f:
        theirs = json.load(f)
    for d in (ours, theirs):
        d.pop("architectures")
    assert ours == theirs, (family, set(ours.items()) ^ set(theirs.items()))


def check_reload(out_dir, inputs, expected):
    for attn in ("sdpa", "eager"):
        for family in FAMILIES:
            klass = CLASSES[family][0]
            model, info = klass.from_pretrained(os.path.join(out_dir, family), output_loading_info=True,
                                                attn_implementation=attn)
            assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                             "error_msgs")), (family, info)
            assert not model.training
            got = run(family, model, inputs[family])
            for k, v in got.items():
                if attn == "sdpa":
                    assert torch.equal(v, expected[k]), (attn, k)
                else:
                    assert torch.allclose(v, expected[k], atol=1e-5, rtol=0), (attn, k, (v - expected[k]).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "multiple_choice"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    inputs = make_inputs()
    expected = {}
    models = {}
    for family in FAMILIES:
        klass, config = CLASSES[family]
        torch.manual_seed(SEED)
        model = klass(config())
        randomise(model)
        model.eval()
        models[family] = model
        expected.update(run(family, model, inputs[family]))
        check_by_hand(family, model, inputs[family], expected)
    assert hasattr(models["electra"].electra, "embeddings_project")
    assert isinstance(models["electra"].sequence_summary.first_dropout, torch.nn.Identity)

    for family, model in models.items():
        model.save_pretrained(os.path.join(args.out, family), safe_serialization=True)
        if os.path.exists(os.path.join(os.path.dirname(os.path.normpath(args.out)), f"{family}_tiny")):
            check_config(args.out, family)
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump({family: {k: v.tolist() for k, v in inputs[family].items()} for family in FAMILIES}, f)
    save_file(expected, os.path.join(args.out, "expected.safetensors"), metadata={"format": "pt"})
    check_reload(args.out, inputs, expected)
    print(f"wrote {args.out}: " + " ".join(f"{f}_loss {expected[f + '_loss'].item():.6f}" for f in FAMILIES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

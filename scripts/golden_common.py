"""What the golden-file scripts of the BERT family share (make_{bert,distilbert,electra,
roberta}_golden.py): the sizes and seed, the random initialisation, the label names, and the
WordPiece-style batch every BERT-shaped golden is computed on.

Run the scripts with the reference venv (scripts/ref_env.sh); this module is imported by them
from the scripts folder.
"""
import json

import torch

SEED = 1234
INIT_STD = 0.2
V, B, T = 100, 3, 12
PAD, CLS, SEP, MASK = 0, 2, 3, 4
LABELS = ["negative", "neutral", "positive"]
TAGS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]


def randomise(model):
    # Every parameter (LayerNorm gains and biases included) drawn at random, so that a mix-up of
    # tensors, a missed bias or a wrong eps shows in the outputs.
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.normal_(mean=0.0, std=INIT_STD)


def label_config(names):
    """The config keys of a classifier over `names`."""
    return dict(num_labels=len(names), id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)})


def bert_style_inputs():
    """The padded WordPiece-style batch of the BERT-shaped goldens: ids (with [MASK] at the
    masked-LM positions), token types, attention mask and the labels of every head."""
    g = torch.Generator().manual_seed(4321)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0] = CLS
    tt = torch.zeros(B, T, dtype=torch.long)
    mask = torch.ones(B, T, dtype=torch.long)
    # Row 0: a sentence pair filling the row ([SEP] at 6 and 11, second segment 7..11).
    ids[0, 6] = SEP
    ids[0, 11] = SEP
    tt[0, 7:] = 1
    # Rows 1 and 2: single sentences padded at the end.
    for row, length in [(1, 8), (2, 5)]:
        ids[row, length - 1] = SEP
        ids[row, length:] = PAD
        mask[row, length:] = 0
    mlm_labels = torch.full((B, T), -100, dtype=torch.long)
    for r, c in [(0, 2), (0, 9), (1, 3), (1, 5), (2, 1)]:
        mlm_labels[r, c] = ids[r, c]
        ids[r, c] = MASK
    # Tags at some real positions only, as run_ner labels first sub-tokens: never at [CLS],
    # [SEP] or padding.
    tok_labels = torch.full((B, T), -100, dtype=torch.long)
    for r, c, tag in [(0, 1, 1), (0, 2, 3), (0, 4, 4), (0, 8, 0), (0, 9, 2), (1, 1, 4), (1, 2, 0),
                      (1, 6, 4), (2, 2, 1), (2, 3, 4)]:
        assert ids[r, c] not in (CLS, SEP, PAD)
        tok_labels[r, c] = tag
    # Answer spans: row 0 in the second segment, row 1 in its sentence. Row 2's start is T and
    # row 1's end is beyond T: clamped to T and ignored, so the start loss is the mean over rows
    # 0 and 1 and the end loss over rows 0 and 2.
    return dict(ids=ids, tt=tt, mask=mask, mlm_labels=mlm_labels, cls_labels=torch.tensor([2, 0, 1]),
                tok_labels=tok_labels, qa_start=torch.tensor([8, 2, T]), qa_end=torch.tensor([9, 40, 3]))


def enc_record(enc, *, word_ids=False):
    """One encoding of a transformers fast tokenizer as the tokenizer goldens record it."""
    rec = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
    }
    if "token_type_ids" in enc:
        rec["token_type_ids"] = enc["token_type_ids"]
    rec["offsets"] = [list(o) for o in enc["offset_mapping"]]
    rec["tokens"] = enc.tokens()
    if word_ids:
        rec["word_ids"] = enc.word_ids()
    return rec


def write_tokenizer_expected(path, vocab_size, cases, encodings):
    """Writes a tokenizer golden's expected.json (the layout tests/tests/hf_roberta_golden.rs
    reads): `cases` holds single, pair (text, text_pair), words, add_prefix_space, question and
    context; `encodings` transformers' encodings of the first three and run_qa's windows of
    the last two (max_length 16, stride 4). Returns the number of windows."""
    e_single, e_pair, e_words, e_qa = encodings
    windows = []
    for i in range(len(e_qa["input_ids"])):
        windows.append({
            "input_ids": e_qa["input_ids"][i],
            "attention_mask": e_qa["attention_mask"][i],
            "offset_mapping": [list(o) for o in e_qa["offset_mapping"][i]],
            "sequence_ids": e_qa.sequence_ids(i),
            "tokens": e_qa.tokens(i),
        })
    assert len(windows) >= 3
    assert all(m == 0 for m in e_qa["overflow_to_sample_mapping"])
    text, text_pair = cases["pair"]
    expected = {
        "vocab_size": vocab_size,
        "single": {"text": cases["single"], **enc_record(e_single)},
        "pair": {"text": text, "text_pair": text_pair, **enc_record(e_pair)},
        "split_words": {"words": cases["words"], "add_prefix_space": cases["add_prefix_space"],
                        **enc_record(e_words, word_ids=True)},
        "qa_windows": {
            "question": cases["question"],
            "context": cases["context"],
            "truncation": "only_second",
            "max_length": 16,
            "stride": 4,
            "windows": windows,
        },
    }
    with open(path, "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return len(windows)


def save_golden(model, out_dir, inputs, tensors):
    """A golden folder: model.save_pretrained (safetensors; no generation_config.json, which
    our tests do not read), `inputs` as inputs.json and `tensors` (float32) as
    expected.safetensors with metadata {"format": "pt"}."""
    import json
    import os

    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    with open(os.path.join(out_dir, "inputs.json"), "w") as f:
        json.dump(inputs, f)
        f.write("\n")
    save_file(tensors, os.path.join(out_dir, "expected.safetensors"), metadata={"format": "pt"})


def report_files(out_dir, tag="", names=("model.safetensors", "expected.safetensors")):
    """Prints to stderr the tensors (name, dtype, shape) of a golden folder's safetensors
    files (`names`, relative to `out_dir`; by default the model and the expected outputs)."""
    import os
    import sys

    from safetensors import safe_open

    prefix = f"[{tag}] " if tag else ""
    for name in names:
        path = os.path.join(out_dir, name)
        with safe_open(path, framework="pt") as f:
            print(f"{prefix}{name} ({os.path.getsize(path)} bytes, metadata {f.metadata()}):", file=sys.stderr)
            for k in f.keys():
                t = f.get_tensor(k)
                print(f"  {k}: {str(t.dtype).replace('torch.', '')} {list(t.shape)}", file=sys.stderr)

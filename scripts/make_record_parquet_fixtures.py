#!/usr/bin/env python3
"""Record files as `datasets` writes them to Parquet, for the Parquet reading of every
records reader (crates/data/src/records.rs and its tests).

    .venv-ref/bin/python scripts/make_record_parquet_fixtures.py [--out tests/golden/parquet/records]

Needs `datasets` (the reference venv, scripts/ref_env.sh, pins 5.2.0 with pyarrow 26.0.1).
Writes to `<out>/`:
- the JSON Lines files the golden tests of SFT, DPO, KTO, reward models, question answering
  and language-model choices read (tests/golden/{sft,dpo,kto,reward,qa,lm_choice}), each
  loaded with `Dataset.from_json` and written with `Dataset.to_parquet`, as a user converts
  their data or as the Hub serves it: `<group>-<name>.parquet` (nested messages become lists of
  structs, SQuAD's answers a struct of lists, KTO's labels booleans);
- labelled records made here with `datasets`' own features, each as `<name>.jsonl`
  (`Dataset.to_json`) and `<name>.parquet` (`Dataset.to_parquet`): `classification` (a
  `ClassLabel`, stored as its index, -1 for no label, and a second text), `tokens` (words and a sequence of
  `ClassLabel` tags, as conll2003), `regression` (float32 labels), `multilabel` (lists of
  names).
- `saved-classification/`, `saved-sft-messages/` (two Arrow files): `Dataset.save_to_disk` of
  the Parquet files of the same names, as `load_from_disk` reads them; `saved-docs/` (three
  Arrow files) of `../docs.jsonl`, the documents `lantern prepare`'s Parquet tests read. Their
  `state.json` holds a random `_fingerprint`; everything else is the same on every run;
- `null-rows.arrow`: an Arrow stream whose one batch claims 10^9 rows of a null-typed column
  (a few hundred bytes: such rows hold no data); `null-list.arrow`: a row whose list holds
  10^9 null-typed items;
- `classification-past-names.parquet`: `classification.parquet` with a label index 5, past
  the three names its metadata declares (pyarrow; `datasets` would refuse it).
The tests compare what is read from each Parquet file with what is read from its JSON Lines.
"""
import argparse
import os

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, Features, Sequence, Value

SOURCES = [
    ("sft", "text"),
    ("sft", "prompt-completion"),
    ("sft", "messages"),
    ("sft", "messages-assistant"),
    ("sft", "conv-prompt-completion"),
    ("dpo", "text"),
    ("dpo", "conversational"),
    ("kto", "text"),
    ("kto", "conversational"),
    ("reward", "text-margin"),
    ("reward", "conversational"),
]
FLAT_SOURCES = [
    ("qa", "tests/golden/qa/examples.jsonl"),
    ("lm_choice-swag", "tests/golden/lm_choice/swag.jsonl"),
    ("lm_choice-hellaswag", "tests/golden/lm_choice/hellaswag.jsonl"),
]


def labelled():
    texts = [
        "The sky is blue.",
        "Ünïcödé: αβγ — 日本語 🙂",
        "Two\nlines, \"quoted\" and \\backslashed\\",
        "Short",
        "Tabs\tinside",
        "The last one.",
    ]
    n = len(texts)
    yield "classification", Dataset.from_dict(
        {
            "text": texts,
            "text_pair": [f"pair {i}" for i in range(n)],
            # -1: `ClassLabel`'s "no label" (GLUE's test splits).
            "label": [i % 3 if i != 4 else -1 for i in range(n)],
        },
        features=Features(
            {
                "text": Value("string"),
                "text_pair": Value("string"),
                "label": ClassLabel(names=["negative", "neutral", "positive"]),
            }
        ),
    )
    yield "tokens", Dataset.from_dict(
        {
            "tokens": [t.split() or ["x"] for t in texts],
            "ner_tags": [[(i + j) % 3 for j in range(len(t.split() or ["x"]))] for i, t in enumerate(texts)],
        },
        features=Features(
            {
                "tokens": Sequence(Value("string")),
                "ner_tags": Sequence(ClassLabel(names=["O", "B-PER", "I-PER"])),
            }
        ),
    )
    yield "regression", Dataset.from_dict(
        {"text": texts, "label": [0.1, -2.5, 3.75, 0.0, 1e-3, 100.0]},
        features=Features({"text": Value("string"), "label": Value("float32")}),
    )
    yield "multilabel", Dataset.from_dict(
        {"text": texts, "label": [["a"], ["b", "a"], [], ["c"], ["a", "c"], ["b"]]},
        features=Features({"text": Value("string"), "label": Sequence(Value("string"))}),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/parquet/records")
    out = ap.parse_args().out
    datasets.disable_progress_bars()
    os.makedirs(out, exist_ok=True)
    sources = [(f"{g}-{name}", f"tests/golden/{g}/{name}/train.jsonl") for g, name in SOURCES]
    for name, src in sources + FLAT_SOURCES:
        ds = Dataset.from_json(src, keep_in_memory=True)
        ds.to_parquet(os.path.join(out, f"{name}.parquet"))
        print(f"{name}: {len(ds)} rows {ds.features}")
    for name, ds in labelled():
        ds.to_json(os.path.join(out, f"{name}.jsonl"), force_ascii=False)
        ds.to_parquet(os.path.join(out, f"{name}.parquet"))
        print(f"{name}: {len(ds)} rows {ds.features}")
    # save_to_disk folders (Arrow IPC streams): `max_shard_size` small enough that the SFT
    # records take two Arrow files, read one after the other.
    for name in ["classification", "sft-messages"]:
        ds = Dataset.from_parquet(os.path.join(out, f"{name}.parquet"), keep_in_memory=True)
        shards = 2 if name == "sft-messages" else 1
        ds.save_to_disk(os.path.join(out, f"saved-{name}"), num_shards=shards)
    # The documents of `lantern prepare`'s Parquet fixtures (../docs.jsonl), saved in 3 files.
    docs = Dataset.from_json(os.path.join(out, "..", "docs.jsonl"), keep_in_memory=True)
    docs.save_to_disk(os.path.join(out, "saved-docs"), num_shards=3)
    # An Arrow stream of a billion rows of a null-typed column: no data, a few hundred bytes.
    with pa.ipc.new_stream(
        os.path.join(out, "null-rows.arrow"), pa.schema([("text", pa.null())])
    ) as w:
        w.write_batch(pa.record_batch([pa.nulls(10**9)], names=["text"]))
    # One row whose list holds 10^9 null-typed items, beside a text.
    items = pa.ListArray.from_arrays(pa.array([0, 10**9], pa.int32()), pa.nulls(10**9))
    batch = pa.record_batch([pa.array(["a"]), items], names=["text", "x"])
    with pa.ipc.new_stream(os.path.join(out, "null-list.arrow"), batch.schema) as w:
        w.write_batch(batch)
    table = pq.read_table(os.path.join(out, "classification.parquet"))
    labels = table.column("label").to_pylist()
    labels[1] = 5
    table = table.set_column(
        table.schema.get_field_index("label"), "label", pa.array(labels, pa.int64())
    )
    pq.write_table(table, os.path.join(out, "classification-past-names.parquet"))


if __name__ == "__main__":
    main()

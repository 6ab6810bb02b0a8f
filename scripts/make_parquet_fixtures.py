#!/usr/bin/env python3
"""Parquet files written by pyarrow, for `lantern prepare`'s Parquet reader tests
(crates/data/src/documents.rs).

    .venv-ref/bin/python scripts/make_parquet_fixtures.py [--out tests/golden/parquet]

Needs pyarrow (the reference venv, scripts/ref_env.sh, pins 26.0.1). Writes to `<out>/`:
- `docs.jsonl`: the documents, one JSON record per line (`{"text": ...}`), the reference the
  Parquet files are compared with: a few by hand (several lines, non-ASCII, a document that is
  empty and one that is whitespace, which every format drops), then 2,200 short numbered ones,
  so that a file holds several row groups and a row group more than one read batch.
- the same documents as Parquet, in the layouts corpora ship in:
  - `snappy.parquet`: pyarrow's defaults (snappy, dictionary pages, data page v1), row groups
    of 1,000 rows and pages of 4 KiB, beside an `id` (int64), a `meta` struct (`source`, a
    string; `score`, a double) and `tags` (a list of strings);
  - `zstd-v2.parquet`: zstd, data page v2, `large_string`, not nullable (a required column:
    no definition levels), no dictionary, one row group;
  - `gzip.parquet`, `brotli.parquet`, `lz4.parquet` (LZ4_RAW), `plain.parquet` (no codec);
- `null.parquet`: the text column with a null at row 3 (an error to report);
- `meta.source` of `snappy.parquet` is `"src-<row mod 7>"`: a field inside a struct column.
"""
import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq


def documents():
    by_hand = [
        "First document.\nIt has two lines.\n",
        "Ünïcödé: αβγ — 日本語 🙂\n",
        "",
        "  \n\t",
        "No newline at the end",
        "Tabs\tand \"quotes\" and \\backslashes\\\n",
    ]
    numbered = [f"{i}{'xyzw'[i % 4] * (1 + i % 3)}{chr(0x3B1 + i % 20)}\n" for i in range(2200)]
    return by_hand + numbered


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/parquet")
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    docs = documents()
    n = len(docs)
    with open(os.path.join(out, "docs.jsonl"), "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")

    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "text": pa.array(docs, pa.string()),
            "meta": pa.array(
                [{"source": f"src-{i % 7}", "score": i / 10} for i in range(n)],
                pa.struct([("source", pa.string()), ("score", pa.float64())]),
            ),
            "tags": pa.array([["a", "b"][: i % 3] for i in range(n)], pa.list_(pa.string())),
        }
    )
    pq.write_table(
        table, os.path.join(out, "snappy.parquet"), row_group_size=1000, data_page_size=4096
    )
    large = pa.table(
        {"text": pa.array(docs, pa.large_string())},
        schema=pa.schema([pa.field("text", pa.large_string(), nullable=False)]),
    )
    pq.write_table(
        large,
        os.path.join(out, "zstd-v2.parquet"),
        compression="zstd",
        data_page_version="2.0",
        use_dictionary=False,
    )
    plain = pa.table({"text": pa.array(docs, pa.string())})
    for name, codec in [("gzip", "gzip"), ("brotli", "brotli"), ("lz4", "lz4"), ("plain", "none")]:
        pq.write_table(plain, os.path.join(out, f"{name}.parquet"), compression=codec)
    nulls = pa.table({"text": pa.array(["a\n", "b\n", "c\n", None, "e\n"], pa.string())})
    pq.write_table(nulls, os.path.join(out, "null.parquet"))
    print(f"{n} documents, pyarrow {pa.__version__}")


if __name__ == "__main__":
    main()

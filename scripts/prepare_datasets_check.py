"""Writes the fortunes' documents the way `datasets` hands corpora around, for
scripts/prepare_datasets_check.sh: Dataset.to_json as JSON Lines (its default), as one JSON
array (lines=False) and gzipped, and Dataset.to_parquet (and pyarrow's zstd Parquet), each
record the document's text and an id.

    python prepare_datasets_check.py RAW_FORTUNES_DIR OUT_DIR

The documents are split here independently of Lantern: by the fortune format's rule (a line
holding only `%` ends a document), whitespace-only ones dropped, files in sorted order
(strfile's .dat indexes, links, hidden and binary files passed over), as `lantern prepare`
walks a folder.
"""
import os
import sys

import datasets
import pyarrow.parquet as pq


def fortune_documents(raw):
    docs = []
    for name in sorted(os.listdir(raw)):
        path = os.path.join(raw, name)
        if name.startswith(".") or name.endswith(".dat") or os.path.islink(path):
            continue
        if not os.path.isfile(path):
            continue
        data = open(path, "rb").read()
        if b"\0" in data:
            continue
        current = []
        for line in data.decode("utf-8", "replace").split("\n"):
            if line.rstrip() == "%":
                docs.append("\n".join(current) + "\n")
                current = []
            else:
                current.append(line)
        docs.append("\n".join(current))
    return [d for d in docs if d.strip()]


def main():
    raw, out = sys.argv[1], sys.argv[2]
    docs = fortune_documents(raw)
    ds = datasets.Dataset.from_dict({"text": docs, "id": list(range(len(docs)))})
    ds.to_json(os.path.join(out, "lines.jsonl"))
    # datasets writes an array whole only from one batch.
    ds.to_json(os.path.join(out, "array.json"), lines=False, batch_size=len(docs))
    ds.to_json(os.path.join(out, "lines.jsonl.gz"), compression="gzip")
    # Parquet as `datasets` writes it (snappy, row groups of its batch size) and as FineWeb
    # ships it (zstd, larger row groups), beside other columns.
    ds.to_parquet(os.path.join(out, "table.parquet"))
    pq.write_table(
        ds.data.table, os.path.join(out, "zstd.parquet"), compression="zstd", row_group_size=5000
    )
    print(f"{len(docs)} documents, datasets {datasets.__version__}")


if __name__ == "__main__":
    main()

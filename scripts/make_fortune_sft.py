#!/usr/bin/env python3
"""Build a supervised fine-tuning dataset from the fortunes corpus: name who said a quote.

    python3 scripts/make_fortune_sft.py [--raw data/raw/fortunes] [--out data/fortune-sft]
        [--max-words 64]

Many fortunes end with an attribution line, `-- Dave Barry, "Kids Today"`. Each such fortune
whose attribution starts with a name (its capitalised words before the first comma or quote,
the rules of make_fortune_tags.py) becomes one example in three of TRL's SFTTrainer layouts,
each in its own folder:
- prompt-completion/: {"prompt": "<quote>\\n\\nWho said this?", "completion": " <name>"}
  (the loss on the name alone);
- messages/: {"messages": [{"role": "user", "content": "Who said this?\\n\\n<quote>"},
  {"role": "assistant", "content": "<name>"}]} (rendered by the model's chat template);
- text/: {"text": "<quote>\\n-- <name>"} (the loss on every token);
- preference/: {"prompt": "<quote>\\n\\nWho said this?", "chosen": " <name>",
  "rejected": " <other name>"} for DPO (TRL's DPOTrainer layout), the other name the nearest
  earlier example's of the same split that differs (the split's last for its first).
The quote keeps its line breaks (trailing spaces removed). Fortunes of more than `--max-words`
words are left out; exact duplicates (across category files too) are kept once. The split is
fixed by a hash of the fortune, as in make_fortune_categories.py (about 70% train, 10%
validation, 20% test). Writes train.jsonl, validation.jsonl and test.jsonl in each folder and
prints the counts. Standard library only.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fortune_categories import bucket  # noqa: E402
from make_fortune_tags import attributed, tag_attribution  # noqa: E402

QUESTION = "Who said this?"


def name_of(attribution):
    """The attribution's leading name (its B-PER/I-PER words), without trailing punctuation."""
    words = attribution.split()
    tags = tag_attribution(words)
    name = []
    for w, t in zip(words, tags):
        if t == "B-PER" and name:
            break
        if t in ("B-PER", "I-PER"):
            name.append(w)
        elif name:
            break
    return " ".join(name).strip(".,;:") or None


def layouts(quote, name):
    return {
        "prompt-completion": {"prompt": f"{quote}\n\n{QUESTION}", "completion": f" {name}"},
        "messages": {"messages": [{"role": "user", "content": f"{QUESTION}\n\n{quote}"},
                                  {"role": "assistant", "content": name}]},
        "text": {"text": f"{quote}\n-- {name}"},
    }


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", default=os.path.join(repo, "data", "raw", "fortunes"))
    ap.add_argument("--out", default=os.path.join(repo, "data", "fortune-sft"))
    ap.add_argument("--max-words", type=int, default=64)
    args = ap.parse_args()
    if not os.path.isdir(args.raw):
        sys.exit(f"error: {args.raw} does not exist (run scripts/fetch_fortunes.sh)")
    splits = {"train": [], "validation": [], "test": []}
    for _, e, body, attribution in attributed(args.raw):
        if len(body.split()) + len(attribution.split()) > args.max_words:
            continue
        name = name_of(attribution)
        if name is None:
            continue
        quote = "\n".join(line.rstrip() for line in body.splitlines())
        b = bucket(e)
        split = "train" if b < 70 else "validation" if b < 80 else "test"
        splits[split].append(layouts(quote, name))
    for rows in splits.values():
        for i, r in enumerate(rows):
            name = r["prompt-completion"]["completion"]
            other = next((rows[j]["prompt-completion"]["completion"] for j in range(i - 1, -len(rows), -1)
                          if rows[j]["prompt-completion"]["completion"] != name), None)
            if other is not None:
                r["preference"] = {"prompt": r["prompt-completion"]["prompt"], "chosen": name,
                                   "rejected": other}
    for layout in ("prompt-completion", "messages", "text", "preference"):
        d = os.path.join(args.out, layout)
        os.makedirs(d, exist_ok=True)
        for split, rows in splits.items():
            with open(os.path.join(d, f"{split}.jsonl"), "w", encoding="utf-8") as f:
                for r in rows:
                    if layout in r:
                        f.write(json.dumps(r[layout], ensure_ascii=False) + "\n")
    counts = ", ".join(f"{len(v)} {k}" for k, v in splits.items())
    print(f"{args.out}: {counts} examples in each of prompt-completion/, messages/, text/, "
          "preference/")


if __name__ == "__main__":
    main()

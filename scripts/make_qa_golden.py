#!/usr/bin/env python3
"""Write tests/golden/qa/: extractive question answering features as transformers makes them,
for the Rust parity test of lantern-data's `qa` module (crates/data/src/qa.rs). CI has no
Python; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_qa_golden.py [--out tests/golden/qa]

How the files are made:
  1. tokenizer.json: a BERT-style WordPiece tokenizer built here with the `tokenizers` library
     (no training, so it is the same on every run): [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4),
     then every character of the examples' words (as BertNormalizer leaves them: lowercased,
     accents stripped, CJK characters split off) alone and with the `##` prefix, a few common
     suffixes, and the words seen at least twice. Rarer words therefore split into several
     pieces, and the emoji is outside the vocabulary ([UNK]). BertNormalizer (lowercase),
     BertPreTokenizer, and the post-processor `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1 [SEP]:1`.
  2. The examples (EXAMPLES below) are tokenised by `transformers.PreTrainedTokenizerFast`
     loaded from that file exactly as examples/pytorch/question-answering/run_qa.py does:
     questions `lstrip`ped, question first, truncation="only_second", max_length=MAX_LENGTH,
     stride=DOC_STRIDE, return_overflowing_tokens=True, return_offsets_mapping=True, and
     padding=False (the caller pads; padding only appends [PAD] tokens whose offsets and
     sequence ids run_qa ignores).
  3. Each window's answer span is run_qa's prepare_train_features, transcribed below
     (`run_qa_span`); its offsets are prepare_validation_features' (the context's, None
     elsewhere).

One deliberate difference from run_qa, kept in the file: when the answer starts in the LAST
context token of a window, run_qa's start search runs on past the context (the [SEP] after it
has offsets (0, 0), which is <= any start) and labels the start at the window's last token, the
final [SEP] (with padding, the last [PAD]), after the end. `span` holds the label confined to
the context (start = that last context token); `run_qa_span` is written beside it only where
the two differ. Elsewhere they are asserted equal.

Files written:
    tokenizer.json   the tokenizer above
    examples.jsonl   the examples in Hugging Face datasets' `squad` layout, one per line
                     ("answers" left out for an unlabelled one)
    examples.json    the same examples as an official SQuAD v1.1 file (questions on one
                     paragraph share it; the unlabelled one has "answers": [])
    features.json    {"max_length", "doc_stride", "examples": [the JSONL records],
                      "features": [{"example", "ids", "type_ids", "span", "offsets"
                      (and "run_qa_span" where it differs)}]}; span null for an example
                     without an answer, offsets null outside the context.
"""
import argparse
import collections
import json
import os

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

MAX_LENGTH = 40
DOC_STRIDE = 12
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SUFFIXES = ["##s", "##ed", "##ing", "##er", "##ly", "##es", "##ion"]
# Words of the examples left out of the vocabulary, so that they split into several pieces.
SPLIT = {"lantern", "marrow", "fishermen", "waterfall", "bridges", "rises", "destroyed", "replacing",
         "orsted", "ørsted", "brulee", "renee", "upstream", "levels", "quickly", "visitors"}
# Common words outside the examples: a vocabulary of a realistic make-up (most entries unused).
COMMON = """about after again all also an any are as at back be because been before being between both
but by can could day did do down each even first for get give go good great had has have he her here
him his how if into it just know like little long look make man many may me more most much must my
never new no not now of off old on one only or other our out over own people right said same see she
should so some still such take than that their them then there these they thing think this those
time to too two under up us use very want was way we well were what when where which while who why
will with work would year you your""".split()

RIVER = (
    "The river Lantern flows from the northern hills through the old town of Marrow. In spring "
    "the water rises quickly and the bridges close for a few weeks. Fishermen say the best "
    "season is late autumn, when the salmon return upstream to the quiet pools below the "
    "waterfall. The town council built a new stone bridge in 1884, replacing the wooden one "
    "that the great flood had destroyed. Today visitors walk along the eastern bank to see the "
    "mills, the market square and the small museum of river boats."
)
CAFE = (
    "Café Zoë in São Paulo serves naïve crème brûlée 😀 and 東京 tea, which is fun😀 for "
    "everyone. Its owner, Renée Ørsted, opened the café in 2019 after many years in the old "
    "town, and the tea still comes from a small farm near the river."
)
CAT = "The cat sat on the mat."

# (id, title, question, context, [answer texts], occurrence of the first answer's text to use
# (0-based; later answers use their first occurrence)); answers None = unlabelled.
EXAMPLES = [
    ("cat-1", "Cat", "Where did the cat sit?", CAT, ["on the mat"], 0),
    # Leading whitespace: run_qa strips it (lstrip) before tokenising.
    ("cat-2", "Cat", "  \t What did the cat sit on?", CAT, ["the mat"], 0),
    # A long context: several windows, the answer in only some of them.
    ("river-1", "River", "When was the new stone bridge built?", RIVER, ["1884"], 0),
    # Straddles the end of the first window: cut there, whole in the next (the overlap).
    ("river-2", "River", "What happens in spring?", RIVER, ["the water rises quickly", "the water rises"], 0),
    # Several answers (as SQuAD's dev set): the first is the target.
    ("river-3", "River", "Where do the salmon go?", RIVER, ["upstream", "to the quiet pools below the waterfall"], 0),
    # One word that is the last context token of a window (run_qa's start search overruns).
    ("river-4", "River", "What was built?", RIVER, ["bridge"], 1),
    # Accents, an emoji and CJK before the answer: character and byte offsets differ.
    ("cafe-1", "Café", "Who opened the café?", CAFE, ["Renée Ørsted"], 0),
    ("cafe-2", "Café", "Where does the tea come from?", CAFE, ["a small farm near the river"], 0),
    # Unlabelled (prediction): no span.
    ("cafe-3", "Café", "What does it serve?", CAFE, None, 0),
]


def answer_start(context, text, occurrence):
    at = -1
    for _ in range(occurrence + 1):
        at = context.index(text, at + 1)
    return at


def records():
    out = []
    for id_, title, question, context, texts, occurrence in EXAMPLES:
        rec = {"id": id_, "title": title, "context": context, "question": question}
        if texts is not None:
            starts = [answer_start(context, texts[0], occurrence)]
            starts += [answer_start(context, t, 0) for t in texts[1:]]
            for t, s in zip(texts, starts):
                assert context[s : s + len(t)] == t
            rec["answers"] = {"text": list(texts), "answer_start": starts}
        out.append(rec)
    return out


def build_tokenizer(recs):
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre = pre_tokenizers.BertPreTokenizer()
    words = set()
    for r in recs:
        for text in (r["question"], r["context"]):
            words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    # The emoji stays out of the vocabulary: it and "fun😀" become [UNK].
    chars = sorted({c for w in words for c in w if ord(c) < 0x1F000})
    vocab = list(SPECIALS)
    for piece in chars + ["##" + c for c in chars] + SUFFIXES + sorted((words | set(COMMON)) - SPLIT):
        if piece not in vocab and "😀" not in piece:
            vocab.append(piece)
    tok = Tokenizer(
        models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100)
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(SPECIALS)
    return tok


def run_qa_span(input_ids, sequence_ids, offsets, answers, cls_token_id):
    """run_qa.py's prepare_train_features for one window (pad_on_right), verbatim."""
    cls_index = input_ids.index(cls_token_id) if cls_token_id in input_ids else 0
    if len(answers["answer_start"]) == 0:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    token_start_index = 0
    while sequence_ids[token_start_index] != 1:
        token_start_index += 1
    token_end_index = len(input_ids) - 1
    while sequence_ids[token_end_index] != 1:
        token_end_index -= 1
    if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
        return cls_index, cls_index
    while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
        token_start_index += 1
    start = token_start_index - 1
    while offsets[token_end_index][1] >= end_char:
        token_end_index -= 1
    return start, token_end_index + 1


def confined_span(sequence_ids, offsets, answers):
    """The same, with the start search kept to the context tokens (see the docstring)."""
    ctx = [k for k, s in enumerate(sequence_ids) if s == 1]
    first, last = ctx[0], ctx[-1]
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return 0, 0
    s = first
    while s <= last and offsets[s][0] <= start_char:
        s += 1
    e = last
    while e >= first and offsets[e][1] >= end_char:
        e -= 1
    return s - 1, e + 1


def squad_json(recs):
    data = []
    for r in recs:
        if not data or data[-1]["title"] != r["title"]:
            data.append({"title": r["title"], "paragraphs": []})
        paragraphs = data[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != r["context"]:
            paragraphs.append({"context": r["context"], "qas": []})
        answers = r.get("answers", {"text": [], "answer_start": []})
        paragraphs[-1]["qas"].append(
            {
                "id": r["id"],
                "question": r["question"],
                "answers": [
                    {"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])
                ],
            }
        )
    return {"version": "1.1", "data": data}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "qa"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    recs = records()
    raw = build_tokenizer(recs)
    tok_path = os.path.join(args.out, "tokenizer.json")
    raw.save(tok_path)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=tok_path,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        # BertTokenizerFast's inputs: run_qa feeds token_type_ids to BertForQuestionAnswering.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    assert tokenizer.padding_side == "right"  # run_qa's pad_on_right: question first

    questions = [r["question"].lstrip() for r in recs]
    contexts = [r["context"] for r in recs]
    enc = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=MAX_LENGTH,
        stride=DOC_STRIDE,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )

    # The same windows straight from the tokenizers library, as a check that transformers
    # added nothing of its own.
    plain = Tokenizer.from_file(tok_path)
    plain.enable_truncation(MAX_LENGTH, stride=DOC_STRIDE, strategy="only_second")
    flat = []
    for e in plain.encode_batch(list(zip(questions, contexts))):
        flat += [e] + e.overflowing
    assert [e.ids for e in flat] == enc["input_ids"]

    features = []
    windows = collections.Counter()
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        ids = enc["input_ids"][i]
        offsets = [tuple(o) for o in enc["offset_mapping"][i]]
        seq = enc.sequence_ids(i)
        assert len(ids) <= MAX_LENGTH
        f = {
            "example": sample,
            "ids": ids,
            "type_ids": enc["token_type_ids"][i],
            "span": None,
            "offsets": [list(o) if seq[k] == 1 else None for k, o in enumerate(offsets)],
        }
        answers = recs[sample].get("answers")
        if answers is not None:
            verbatim = run_qa_span(ids, seq, offsets, answers, tokenizer.cls_token_id)
            ours = confined_span(seq, offsets, answers)
            f["span"] = list(ours)
            if verbatim != ours:
                # Only the overrun described in the docstring may differ.
                last = max(k for k, s in enumerate(seq) if s == 1)
                assert verbatim == (len(ids) - 1, last) and ours == (last, last), (verbatim, ours)
                f["run_qa_span"] = list(verbatim)
        features.append(f)
        windows[sample] += 1

    # What the examples are there to show.
    by_id = {r["id"]: k for k, r in enumerate(recs)}
    spans = lambda id_: [f["span"] for f in features if f["example"] == by_id[id_]]
    assert windows[by_id["river-1"]] >= 3, windows
    assert [0, 0] in spans("river-2") and any(s != [0, 0] for s in spans("river-2")), spans("river-2")
    assert any("run_qa_span" in f for f in features if f["example"] == by_id["river-4"]), spans("river-4")
    assert windows[by_id["cafe-1"]] >= 2 and any(s != [0, 0] for s in spans("cafe-1"))
    assert all(f["span"] is None for f in features if f["example"] == by_id["cafe-3"])
    # The windows of each example reach the end of its context: tokenizers 0.23.1 and 0.23.2
    # stop tokenising a truncated sequence at max_length tokens and lose the later windows.
    for k, r in enumerate(recs):
        last = [f for f in features if f["example"] == k][-1]
        end = max(o[1] for o in last["offsets"] if o is not None)
        assert end == len(r["context"].rstrip()), (r["id"], end)
    # Every labelled window with a span points at the answer's text.
    for f in features:
        r = recs[f["example"]]
        if f["span"] and f["span"] != [0, 0]:
            s, e = f["span"]
            got = r["context"][f["offsets"][s][0] : f["offsets"][e][1]]
            assert got.lower() == r["answers"]["text"][0].lower() or "run_qa_span" in f, (got, r)

    with open(os.path.join(args.out, "features.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {"max_length": MAX_LENGTH, "doc_stride": DOC_STRIDE, "examples": recs, "features": features},
            fh,
            ensure_ascii=False,
        )
        fh.write("\n")
    with open(os.path.join(args.out, "examples.jsonl"), "w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "examples.json"), "w", encoding="utf-8") as fh:
        json.dump(squad_json(recs), fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    print(
        f"{len(recs)} examples, {len(features)} windows, vocab {raw.get_vocab_size()}; "
        f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

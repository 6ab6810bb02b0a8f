#!/usr/bin/env python3
"""Golden answers and scores of extractive question answering, for crates/train/src/metrics_qa.rs.

    /work/main/.venv-ref/bin/python scripts/make_qa_metric_golden.py   # writes tests/golden/qa_metrics.json

Standard library and numpy only. Two references are transcribed here, step by step:

- the per-example answer selection of transformers' examples/pytorch/question-answering/utils_qa.py
  (`postprocess_qa_predictions`, version_2_with_negative=False, no token_is_max_context): the
  n_best highest start and end logits of every window, the valid (start, end) pairs, sorted by
  score (stable), cut to n_best, the "empty" stand-in when nothing (or a single empty text) is
  left, and the softmax of the scores;
- the official SQuAD v1.1 evaluation script (the `squad` metric of `evaluate`): answer
  normalisation, exact match, token F1, the max over gold answers and the totals in percent.

The logits are float32, as run_qa.py hands them over, so scores and probabilities are float32
sums and softmaxes exactly as numpy computes them there. No array of logits has a tie (argsort's
order of equal values is unspecified), which the script asserts. Running it twice gives the same
bytes.
"""
import collections
import json
import pathlib
import re
import string
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/golden/qa_metrics.json"

# ---------------------------------------------------------------- answer selection (utils_qa, v1)


def best_answers(context, windows, n_best, max_answer_length):
    """The n-best list of one example; windows: [(start_logits, end_logits, offsets)]."""
    prelim = []
    for start_logits, end_logits, offsets in windows:
        # Largest first: the last n_best of an ascending argsort, read backwards.
        starts = np.argsort(start_logits)[-1 : -n_best - 1 : -1].tolist()
        ends = np.argsort(end_logits)[-1 : -n_best - 1 : -1].tolist()
        for s in starts:
            for e in ends:
                if s >= len(offsets) or e >= len(offsets):
                    continue
                if offsets[s] is None or len(offsets[s]) < 2 or offsets[e] is None or len(offsets[e]) < 2:
                    continue
                if e < s or e - s + 1 > max_answer_length:
                    continue
                prelim.append(
                    {
                        "offsets": (offsets[s][0], offsets[e][1]),
                        # float32 + float32: a float32 score, as in run_qa.py.
                        "score": start_logits[s] + end_logits[e],
                    }
                )
    # sorted() is stable, also with reverse=True: equal scores keep their insertion order.
    preds = sorted(prelim, key=lambda p: p["score"], reverse=True)[:n_best]
    for p in preds:
        a, b = p["offsets"]
        p["text"] = context[a:b]
        p["start"], p["end"] = a, b
    if len(preds) == 0 or (len(preds) == 1 and preds[0]["text"] == ""):
        # utils_qa's stand-in; it has no offsets there, Lantern gives it 0..0.
        preds.insert(0, {"text": "empty", "start": 0, "end": 0, "score": 0.0})
    scores = np.array([p["score"] for p in preds])
    exp = np.exp(scores - np.max(scores))
    probs = exp / exp.sum()
    return [
        {"text": p["text"], "start": p["start"], "end": p["end"], "score": float(p["score"]), "probability": float(q)}
        for p, q in zip(preds, probs)
    ]


# ------------------------------------------------------------------------ SQuAD v1.1 evaluation


def normalize_answer(s):
    lowered = s.lower()
    punct = set(string.punctuation)
    no_punct = "".join(ch for ch in lowered if ch not in punct)
    no_articles = re.sub(r"\b(a|an|the)\b", " ", no_punct)
    return " ".join(no_articles.split())


def f1_score(prediction, gold):
    p = normalize_answer(prediction).split()
    g = normalize_answer(gold).split()
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    if same == 0:
        return 0
    precision = 1.0 * same / len(p)
    recall = 1.0 * same / len(g)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, gold):
    return normalize_answer(prediction) == normalize_answer(gold)


def max_over_golds(fn, prediction, golds):
    return max(fn(prediction, g) for g in golds)


def evaluate(predictions, golds):
    em = f1 = total = 0
    for i, gs in enumerate(golds):
        total += 1
        if i >= len(predictions):
            continue  # the official script warns and scores a missing prediction 0
        em += max_over_golds(exact_match_score, predictions[i], gs)
        f1 += max_over_golds(f1_score, predictions[i], gs)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


# ------------------------------------------------------------------------------- span cases

CONTEXTS = [
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France.",
    "Zürich is the largest city in Switzerland; its old town lies on both banks of the Limmat.",
    "東京 is the capital of Japan, and Ōsaka is its second city — busy, crowded, and proud.",
    "The naïve café owner said “hello” to the señor at 9:30, then left for Kraków by train.",
    "Water boils at 100 °C at sea level; at altitude it boils at a lower temperature.",
    "Résumé: Ελληνικά, русский, and العربية are written in different scripts 🎉 of the world.",
    "An apple a day keeps the doctor away, or so the old saying goes in England.",
    "In 1905 Einstein published four papers, including special relativity and E = mc².",
]
QUESTION_TOKENS = (2, 8)  # [CLS] + question words + [SEP], all outside the context


def words(context):
    """Character spans of the context's tokens: runs of word characters, each other mark alone."""
    return [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", context)]


def make_windows(rng, context, n_windows, width, spare_tail):
    """Windows as a tokenizer with a stride makes them: question tokens (None), a slice of the
    context's tokens, a final special token and padding (None); overlapping slices."""
    spans = words(context)
    out = []
    step = max(1, (len(spans) - width) // max(1, n_windows - 1)) if n_windows > 1 else len(spans)
    for w in range(n_windows):
        lo = min(w * step, max(0, len(spans) - width))
        piece = spans[lo : lo + width]
        q = int(rng.integers(*QUESTION_TOKENS))
        pad = int(rng.integers(0, 4))
        offsets = [None] * q + [list(s) for s in piece] + [None] + [None] * pad
        t = len(offsets) + spare_tail  # logits past the offsets: skipped, never indexed
        while True:
            start = (rng.standard_normal(t) * 3).astype(np.float32)
            end = (rng.standard_normal(t) * 3).astype(np.float32)
            if len(set(start.tolist())) == t and len(set(end.tolist())) == t:
                break
        out.append((start, end, offsets))
    return out


def span_case(name, context, windows, n_best, max_answer_length):
    for start, end, _ in windows:
        assert len(set(start.tolist())) == len(start) and len(set(end.tolist())) == len(end), name
    expected = best_answers(context, windows, n_best, max_answer_length)
    return {
        "name": name,
        "context": context,
        "n_best": n_best,
        "max_answer_length": max_answer_length,
        "windows": [
            {"start": [float(x) for x in s], "end": [float(x) for x in e], "offsets": o} for s, e, o in windows
        ],
        "expected": expected,
    }


def span_cases(rng):
    cases = []
    settings = [(20, 30), (5, 30), (3, 3), (1, 30), (10, 1), (7, 5), (20, 2), (4, 10)]
    for i in range(26):
        context = CONTEXTS[i % len(CONTEXTS)]
        n_best, max_len = settings[i % len(settings)]
        n_windows = 1 + i % 3
        width = int(rng.integers(5, 14))
        spare_tail = 2 if i % 5 == 4 else 0
        windows = make_windows(rng, context, n_windows, width, spare_tail)
        cases.append(span_case(f"random_{i:02}", context, windows, n_best, max_len))

    # No valid pair: the two highest start and end logits sit on the question and the padding.
    context = CONTEXTS[0]
    (start, end, offsets), = make_windows(rng, context, 1, 8, 0)
    start[1], start[-1] = 50.0, 49.0
    end[1], end[-1] = 48.0, 47.0
    cases.append(span_case("no_valid_candidate", context, [(start, end, offsets)], 2, 30))

    # The only candidate has an empty text (a zero-width token): utils_qa puts "empty" first.
    context = CONTEXTS[1]
    (start, end, offsets), = make_windows(rng, context, 1, 6, 0)
    k = next(i for i, o in enumerate(offsets) if o is not None) + 2
    offsets[k] = [offsets[k][0], offsets[k][0]]
    start[k], end[k] = 30.0, 29.5
    cases.append(span_case("single_empty_text", context, [(start, end, offsets)], 1, 30))

    # Offsets shorter than the logits and a long span cut by max_answer_length, three windows.
    context = CONTEXTS[5]
    windows = make_windows(rng, context, 3, 10, 3)
    cases.append(span_case("non_ascii_three_windows", context, windows, 20, 4))

    # n_best larger than the window.
    context = CONTEXTS[2]
    windows = make_windows(rng, context, 2, 5, 0)
    cases.append(span_case("n_best_past_window", context, windows, 40, 30))
    return cases


# ----------------------------------------------------------------------------- string cases

STRING_CASES = [
    ("Normandy", ["Normandy"]),
    ("normandy.", ["Normandy"]),
    ("The Normans", ["Normans"]),
    ("the theater", ["theater"]),
    ("A man, a plan, a canal: Panama!", ["man plan canal panama"]),
    ("An apple", ["apple"]),
    ("AN APPLE", ["an apple"]),
    ("anthem of the nation", ["anthem nation"]),
    ("then there was an answer", ["then there was answer"]),
    ("a-the", ["athe"]),
    ("the-end", ["end"]),
    ("the_end", ["end"]),
    ("  lots   of\tspace\n here ", ["lots of space here"]),
    ("10th and 11th centuries", ["10th and 11th centuries", "10th century"]),
    ("in the 10th century", ["10th and 11th centuries", "the 10th century"]),
    ("France", ["Normandy", "a region in France", "France"]),
    ("", ["something"]),
    ("", [""]),
    ("the", ["a"]),
    ("the a an", ["an"]),
    ("Ole—Gunnar", ["Ole Gunnar"]),
    ("Ole — Gunnar", ["Ole Gunnar"]),
    ("it’s", ["its"]),
    ("it's", ["its"]),
    ("“quoted”", ["quoted"]),
    ('"quoted"', ["quoted"]),
    ("Zürich", ["zürich"]),
    ("ZÜRICH", ["zürich"]),
    ("Ελληνικά", ["ελληνικά"]),
    ("the Ωmega", ["ωmega"]),
    ("ΟΔΥΣΣΕΥΣ", ["οδυσσευς"]),
    ("İstanbul", ["i\u0307stanbul"]),
    ("thé", ["thé"]),
    ("a\u0301 la carte", ["la carte"]),
    ("café the", ["café"]),
    ("a1 the2 an_", ["a1 the2 an"]),
    ("$100", ["100"]),
    ("100 °C", ["100 c"]),
    ("red red red blue", ["red blue blue"]),
    ("blue red", ["red blue"]),
    ("the cat sat on the mat", ["cat on mat", "a dog"]),
    ("Einstein", ["Albert Einstein", "Einstein's"]),
    ("x\x1cy", ["x y"]),
    ("non\u00a0breaking", ["non breaking"]),
]


def string_cases():
    out = []
    for prediction, golds in STRING_CASES:
        out.append(
            {
                "prediction": prediction,
                "golds": golds,
                "normalized_prediction": normalize_answer(prediction),
                "normalized_golds": [normalize_answer(g) for g in golds],
                "exact_match": bool(max_over_golds(exact_match_score, prediction, golds)),
                "f1": float(max_over_golds(f1_score, prediction, golds)),
            }
        )
    return out


def report_case():
    predictions = [p for p, _ in STRING_CASES[:20]]
    golds = [g for _, g in STRING_CASES[:20]]
    return {"predictions": predictions, "golds": golds, **evaluate(predictions, golds)}


def main():
    rng = np.random.default_rng(20240917)
    golden = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "spans": span_cases(rng),
        "strings": string_cases(),
        "report": report_case(),
    }
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(golden['spans'])} span cases, {len(golden['strings'])} string cases")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden answers and scores of SQuAD 2.0 question answering (questions that may have no answer),
for crates/train/src/metrics_qa.rs.

    /work/main/.venv-ref/bin/python scripts/make_qa_v2_metric_golden.py   # writes tests/golden/qa_v2_metrics.json

Standard library and numpy only; the sibling of scripts/make_qa_metric_golden.py (SQuAD v1.1),
whose windows and normalisation it reuses. Two references are transcribed here, step by step:

- the per-example answer selection of transformers' examples/pytorch/question-answering/utils_qa.py
  (`postprocess_qa_predictions`, version_2_with_negative=True, null_score_diff_threshold, no
  token_is_max_context), as run_qa.py --version_2_with_negative calls it: each window's null score
  start_logits[0] + end_logits[0] and the minimum over the windows (the first of equal ones), the
  null prediction appended after the spans, the sort and cut to n_best, the null added back when no
  entry has offsets (0, 0), the "empty" stand-in, the softmax, the best non-null prediction (the
  first non-empty text) and `score_diff = null_score - start_logit - end_logit` against the
  threshold (a float32 compared with a Python float: numpy rounds the float to float32);
- the official SQuAD 2.0 evaluation script (the `squad_v2` metric of `evaluate`) with
  `no_answer_probability` 0.0 for every question, as run_qa passes it: raw exact and F1 (golds
  whose normalised text is empty dropped, [""] for none; F1 1 when both token lists are empty),
  `exact`/`f1`/`total`, the HasAns_ and NoAns_ parts (present only when non-empty), and
  find_best_thresh's `best_exact`/`best_f1` and their thresholds.

Where utils_qa has no defined result (every n-best entry has an empty text, when a zero-width span
sits beside the null prediction: its `while predictions[i]["text"] == ""` runs off the list with an
IndexError), the case records Lantern's rule (the best non-null prediction is then the first entry
that is not the null prediction) and says so with `"utils_qa_fails": true`.

As in the v1.1 golden, logits are float32 and no window's start or end logits hold a tie (argsort
orders ties arbitrarily; the script asserts it). Ties of SCORES are made on purpose (null vs span,
null vs null across windows) with dyadic logits whose float32 sums are exact. Running the script
twice gives the same bytes.
"""
import collections
import json
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_qa_metric_golden import CONTEXTS, make_windows, normalize_answer  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/golden/qa_v2_metrics.json"

# ------------------------------------------------------------- answer selection (utils_qa, v2)


def best_answers_v2(context, windows, n_best, max_answer_length, null_score_diff_threshold):
    """One example of postprocess_qa_predictions(version_2_with_negative=True); windows:
    [(start_logits, end_logits, offsets)] with float32 logits."""
    min_null_prediction = None
    prelim_predictions = []
    for start_logits, end_logits, offset_mapping in windows:
        # Update minimum null prediction.
        feature_null_score = start_logits[0] + end_logits[0]
        if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
            min_null_prediction = {
                "offsets": (0, 0),
                "score": feature_null_score,
                "start_logit": start_logits[0],
                "end_logit": end_logits[0],
                "null": True,  # not in utils_qa: which entry is the null prediction
            }
        start_indexes = np.argsort(start_logits)[-1 : -n_best - 1 : -1].tolist()
        end_indexes = np.argsort(end_logits)[-1 : -n_best - 1 : -1].tolist()
        for start_index in start_indexes:
            for end_index in end_indexes:
                if (
                    start_index >= len(offset_mapping)
                    or end_index >= len(offset_mapping)
                    or offset_mapping[start_index] is None
                    or len(offset_mapping[start_index]) < 2
                    or offset_mapping[end_index] is None
                    or len(offset_mapping[end_index]) < 2
                ):
                    continue
                if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                    continue
                prelim_predictions.append(
                    {
                        "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                        "score": start_logits[start_index] + end_logits[end_index],
                        "start_logit": start_logits[start_index],
                        "end_logit": end_logits[end_index],
                        "null": False,
                    }
                )
    if min_null_prediction is not None:
        # Add the minimum null prediction
        prelim_predictions.append(min_null_prediction)
        null_score = min_null_prediction["score"]

    # Only keep the best `n_best_size` predictions (sorted() is stable, also with reverse=True).
    predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best]

    # Add back the minimum null prediction if it was removed because of its low score.
    if min_null_prediction is not None and not any(p["offsets"] == (0, 0) for p in predictions):
        predictions.append(min_null_prediction)

    for pred in predictions:
        offsets = pred.pop("offsets")
        pred["text"] = context[offsets[0] : offsets[1]]
        pred["start"], pred["end"] = offsets

    if len(predictions) == 0 or (len(predictions) == 1 and predictions[0]["text"] == ""):
        predictions.insert(
            0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0, "start": 0, "end": 0, "null": False}
        )

    scores = np.array([pred.pop("score") for pred in predictions])
    exp_scores = np.exp(scores - np.max(scores))
    probs = exp_scores / exp_scores.sum()
    for prob, pred in zip(probs, predictions):
        pred["probability"] = prob
    # The float32 scores again (popped above), for the record.
    for pred, score in zip(predictions, scores.tolist()):
        pred["score"] = score

    # Otherwise we first need to find the best non-empty prediction.
    utils_qa_fails = all(p["text"] == "" for p in predictions)
    i = 0
    while i < len(predictions) and predictions[i]["text"] == "":
        i += 1
    if utils_qa_fails:
        # utils_qa: IndexError. Lantern: the first entry that is not the null prediction.
        i = next(k for k, p in enumerate(predictions) if not p["null"])
    best_non_null_pred = predictions[i]

    # Then we compare to the null prediction using the threshold.
    score_diff = null_score - best_non_null_pred["start_logit"] - best_non_null_pred["end_logit"]
    if score_diff > null_score_diff_threshold:
        prediction = ""
        # Lantern's index of the answer: the null prediction, or the (0, 0) span that kept it out.
        answer = next(
            (k for k, p in enumerate(predictions) if p["null"]),
            None,
        )
        if answer is None:
            answer = next(k for k, p in enumerate(predictions) if (p["start"], p["end"]) == (0, 0) and p["text"] == "")
    else:
        prediction = best_non_null_pred["text"]
        answer = i
    assert predictions[answer]["text"] == prediction
    return {
        "n_best": [
            {
                "text": p["text"],
                "start": p["start"],
                "end": p["end"],
                "score": float(p["score"]),
                "start_logit": float(p["start_logit"]),
                "end_logit": float(p["end_logit"]),
                "probability": float(p["probability"]),
                "null": p["null"],
            }
            for p in predictions
        ],
        "prediction": prediction,
        "answer": answer,
        "null_score": float(null_score),
        "score_diff": float(score_diff),
        "utils_qa_fails": utils_qa_fails,
    }


# --------------------------------------------------------------------- SQuAD 2.0 evaluation


def get_tokens(s):
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold, a_pred):
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold, a_pred):
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def raw_scores(prediction, golds):
    gold_answers = [t for t in golds if normalize_answer(t)]
    if not gold_answers:
        # For unanswerable questions, only correct answer is empty string
        gold_answers = [""]
    return max(compute_exact(a, prediction) for a in gold_answers), max(compute_f1(a, prediction) for a in gold_answers)


def squad_v2(predictions, golds):
    """evaluate's squad_v2 `_compute` with no_answer_threshold 1.0 and every no_answer_probability
    0.0 (run_qa's post_processing_function). Question i has id f"q{i}"; golds[i] == [] is an
    unanswerable question."""
    ids = [f"q{i}" for i in range(len(golds))]
    preds = dict(zip(ids, predictions))
    na_probs = {k: 0.0 for k in ids}
    qid_to_has_ans = {k: bool(g) for k, g in zip(ids, golds)}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = {}, {}
    for k, g in zip(ids, golds):
        exact_raw[k], f1_raw[k] = raw_scores(preds[k], g)

    def apply_no_ans_threshold(scores, na_prob_thresh=1.0):
        new_scores = {}
        for qid, s in scores.items():
            pred_na = na_probs[qid] > na_prob_thresh
            new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
        return new_scores

    exact_thresh = apply_no_ans_threshold(exact_raw)
    f1_thresh = apply_no_ans_threshold(f1_raw)

    def make_eval_dict(qid_list=None):
        if not qid_list:
            total = len(exact_thresh)
            return collections.OrderedDict(
                [
                    ("exact", 100.0 * sum(exact_thresh.values()) / total),
                    ("f1", 100.0 * sum(f1_thresh.values()) / total),
                    ("total", total),
                ]
            )
        total = len(qid_list)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_thresh[k] for k in qid_list) / total),
                ("f1", 100.0 * sum(f1_thresh[k] for k in qid_list) / total),
                ("total", total),
            ]
        )

    out = make_eval_dict()
    if has_ans_qids:
        for k, v in make_eval_dict(has_ans_qids).items():
            out[f"HasAns_{k}"] = v
    if no_ans_qids:
        for k, v in make_eval_dict(no_ans_qids).items():
            out[f"NoAns_{k}"] = v

    def find_best_thresh(scores):
        num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
        cur_score = num_no_ans
        best_score = cur_score
        best_thresh = 0.0
        qid_list = sorted(na_probs, key=lambda k: na_probs[k])
        for qid in qid_list:
            if qid not in scores:
                continue
            if qid_to_has_ans[qid]:
                diff = scores[qid]
            else:
                if preds[qid]:
                    diff = -1
                else:
                    diff = 0
            cur_score += diff
            if cur_score > best_score:
                best_score = cur_score
                best_thresh = na_probs[qid]
        return 100.0 * best_score / len(scores), best_thresh

    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(exact_raw)
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(f1_raw)
    return {k: (float(v) if k not in ("total", "HasAns_total", "NoAns_total") else v) for k, v in out.items()}


# ------------------------------------------------------------------------------- span cases


def no_ties(windows, name):
    for start, end, _ in windows:
        assert len(set(start.tolist())) == len(start) and len(set(end.tolist())) == len(end), name


def span_case(name, context, windows, n_best, max_answer_length, threshold):
    no_ties(windows, name)
    expected = best_answers_v2(context, windows, n_best, max_answer_length, threshold)
    return {
        "name": name,
        "context": context,
        "n_best": n_best,
        "max_answer_length": max_answer_length,
        "null_score_diff_threshold": threshold,
        "windows": [
            {"start": [float(x) for x in s], "end": [float(x) for x in e], "offsets": o} for s, e, o in windows
        ],
        "expected": expected,
    }


def diff_of(context, windows, n_best, max_len):
    """score_diff, whatever the threshold (it does not depend on it)."""
    return best_answers_v2(context, windows, n_best, max_len, math.inf)["score_diff"]


def dyadic_windows(rng, context, n_windows, width):
    """make_windows' layout with logits that are distinct multiples of 1/8 in [-8, 8): every sum
    of two is exact in float32, so scores can tie on purpose."""
    windows = make_windows(rng, context, n_windows, width, 0)
    out = []
    for _, _, offsets in windows:
        t = len(offsets)
        grid = np.arange(-64, 64, dtype=np.float32) / np.float32(8)
        start = rng.permutation(grid)[:t].astype(np.float32)
        end = rng.permutation(grid)[:t].astype(np.float32)
        out.append((start, end, offsets))
    return out


def tie_pair(start, end, target, near):
    """(s0, e0), multiples of 1/8 with s0 + e0 == target exactly in float32, s0 near `near`, neither
    already among the window's start or end logits (which would be a tie for argsort)."""
    taken_s, taken_e = set(start[1:].tolist()), set(end[1:].tolist())
    for k in range(0, 4096):
        for s0 in (near + k / 8, near - k / 8):
            e0 = target - s0
            if s0 not in taken_s and e0 not in taken_e:
                s0, e0 = np.float32(s0), np.float32(e0)
                assert float(s0 + e0) == target
                return s0, e0
    raise AssertionError


def span_cases(rng):
    cases = []
    settings = [(20, 30), (5, 30), (3, 3), (1, 30), (10, 1), (7, 5), (20, 2), (4, 10)]
    thresholds = [0.0, -2.0, 1.5, 5.0, -6.5, 0.0]
    for i in range(24):
        context = CONTEXTS[i % len(CONTEXTS)]
        n_best, max_len = settings[i % len(settings)]
        windows = make_windows(rng, context, 1 + i % 3, int(rng.integers(5, 14)), 2 if i % 5 == 4 else 0)
        # Half the cases lift [CLS] so that the null answer competes.
        if i % 2 == 1:
            for start, end, _ in windows:
                start[0] = np.float32(start[0] + np.float32(4.0))
                end[0] = np.float32(end[0] + np.float32(3.0))
        cases.append(span_case(f"random_{i:02}", context, windows, n_best, max_len, thresholds[i % len(thresholds)]))

    # Threshold boundaries: diff equal to the threshold keeps the span (a strict >); one float32
    # step below it gives the null answer; a Python float just below the float32 diff rounds to
    # it in numpy's comparison, so the span stays (a float64 comparison would say null).
    context = CONTEXTS[3]
    windows = make_windows(rng, context, 2, 9, 0)
    d = diff_of(context, windows, 5, 30)
    below = float(np.nextafter(np.float32(d), np.float32(-np.inf)))
    cases.append(span_case("threshold_equal_keeps_span", context, windows, 5, 30, d))
    cases.append(span_case("threshold_one_float32_step_below", context, windows, 5, 30, below))
    rounds = d - abs(d) * 1e-12 - 1e-30
    assert rounds < d and np.float32(rounds) == np.float32(d)
    cases.append(span_case("threshold_rounds_to_float32", context, windows, 5, 30, rounds))

    # The null score tied with the best span's: the span sorts first (the null is appended
    # after it); diff 0 against threshold 0 keeps the span, against -1/8 gives the null answer.
    # n_best covers the whole window, so moving [CLS]'s logits changes no span's rank.
    context = CONTEXTS[0]
    windows = dyadic_windows(rng, context, 1, 10)
    probe = best_answers_v2(context, windows, 40, 30, math.inf)
    top = next(p for p in probe["n_best"] if not p["null"])
    start, end, _ = windows[0]
    start[0], end[0] = tie_pair(start, end, top["score"], top["score"] / 2 - 3)
    tied = best_answers_v2(context, windows, 40, 30, math.inf)
    assert tied["n_best"][0]["score"] == tied["n_best"][1]["score"] and tied["n_best"][1]["null"]
    assert tied["score_diff"] == 0.0
    cases.append(span_case("null_ties_best_span", context, windows, 40, 30, 0.0))
    cases.append(span_case("null_ties_best_span_negative_threshold", context, windows, 40, 30, -0.125))

    # Equal null scores in two windows: the first window's stays (its logits differ from the
    # second's); a third window with a lower one replaces it.
    context = CONTEXTS[6]
    windows = dyadic_windows(rng, context, 3, 7)
    for w, (target, near) in enumerate([(0.75, 1.25), (0.75, 0.5), (3.5, 2.0)]):
        start, end, _ = windows[w]
        start[0], end[0] = tie_pair(start, end, target, near)
    (s_a, e_a, _), (s_b, e_b, _) = windows[0], windows[1]
    assert float(s_a[0] + e_a[0]) == float(s_b[0] + e_b[0]) and s_a[0] != s_b[0]
    cases.append(span_case("null_tie_across_windows_first_stays", context, windows, 6, 30, -20.0))
    s_c, e_c, _ = windows[2]
    s_c[0], e_c[0] = tie_pair(s_c, e_c, -5.0, -3.0)
    cases.append(span_case("null_lowest_in_last_window", context, windows, 6, 30, -20.0))

    # No span qualifies (the top logits sit on question and padding tokens): the null answer is
    # alone, the stand-in "empty" goes in front of it and is the best non-null prediction; the
    # answer is "" when the null score beats the threshold, else the word "empty".
    context = CONTEXTS[0]
    (start, end, offsets), = make_windows(rng, context, 1, 8, 0)
    start[1], start[-1] = 50.0, 49.0
    end[1], end[-1] = 48.0, 47.0
    start[0], end[0] = np.float32(2.5), np.float32(1.25)
    cases.append(span_case("all_null_beats_threshold", context, [(start, end, offsets)], 2, 30, 0.0))
    cases.append(span_case("all_null_below_threshold_answers_empty", context, [(start, end, offsets)], 2, 30, 4.0))
    start2, end2 = start.copy(), end.copy()
    start2[0], end2[0] = np.float32(-2.5), np.float32(-1.25)
    cases.append(span_case("all_null_negative_score", context, [(start2, end2, offsets)], 2, 30, 0.0))

    # The null answer cut by n_best and added back at the end (n_best + 1 entries).
    context = CONTEXTS[4]
    windows = make_windows(rng, context, 2, 9, 0)
    for start, end, _ in windows:
        start[0], end[0] = np.float32(-30.0) - start[0] ** 2, np.float32(-30.5) - end[0] ** 2
    cases.append(span_case("null_cut_and_added_back", context, windows, 2, 30, 0.0))
    cases.append(span_case("null_added_back_answer_null", context, windows, 3, 30, -100.0))
    for c in cases[-2:]:
        got = c["expected"]["n_best"]
        assert len(got) == c["n_best"] + 1 and got[-1]["null"] and got[0]["text"] != "empty", c["name"]

    # A zero-width span at character 0 (offsets (0, 0)) in the n-best: utils_qa takes it for the
    # null answer and does not add the null back; the diff still uses the null score.
    context = CONTEXTS[1]
    (start, end, offsets), = make_windows(rng, context, 1, 8, 0)
    k = next(i for i, o in enumerate(offsets) if o is not None)
    assert offsets[k][0] == 0
    offsets[k] = [0, 0]
    start[k], end[k], end[k + 1] = 30.0, 29.5, 29.0
    start[0], end[0] = np.float32(-40.0), np.float32(-41.0)
    cases.append(span_case("zero_width_at_zero_hides_null", context, [(start, end, offsets)], 2, 30, 0.0))
    cases.append(span_case("zero_width_at_zero_answer_null", context, [(start, end, offsets)], 2, 30, -200.0))
    for c in cases[-2:]:
        got = c["expected"]["n_best"]
        assert len(got) == 2 and not any(p["null"] for p in got) and got[1]["text"], c["name"]

    # Every entry has an empty text: a zero-width span (not at 0) and the null answer; utils_qa
    # fails (IndexError), Lantern takes the span as the best non-null answer.
    context = CONTEXTS[2]
    (start, end, offsets), = make_windows(rng, context, 1, 6, 0)
    k = next(i for i, o in enumerate(offsets) if o is not None) + 2
    offsets[k] = [offsets[k][0], offsets[k][0]]
    start[k], end[k] = 30.0, 29.5
    start[0], end[0] = np.float32(1.0), np.float32(0.5)
    cases.append(span_case("all_texts_empty", context, [(start, end, offsets)], 1, 30, 0.0))
    cases.append(span_case("all_texts_empty_null_wins", context, [(start, end, offsets)], 1, 30, -100.0))

    # Three windows, non-ASCII text, logits past the offsets, the null answer in the middle.
    context = CONTEXTS[5]
    windows = make_windows(rng, context, 3, 10, 3)
    windows[1][0][0] = np.float32(-9.0)
    cases.append(span_case("non_ascii_three_windows", context, windows, 20, 4, 0.0))

    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names)
    preds = [c["expected"]["prediction"] for c in cases]
    assert sum(p == "" for p in preds) >= 8 and sum(p not in ("", "empty") for p in preds) >= 8, preds
    assert "empty" in preds
    return cases


# ----------------------------------------------------------------------------- score cases

# (prediction, golds): golds [] is an unanswerable question.
STRING_CASES = [
    ("Normandy", ["Normandy"]),
    ("normandy.", ["Normandy", "in Normandy"]),
    ("the Normans", ["Normans"]),
    ("", ["France"]),
    ("", []),
    ("France", []),
    (" ", []),
    ("the", []),
    ("a.", []),
    ("", ["the"]),
    ("an", ["the", "a"]),
    ("x", ["the"]),
    ("the cat", ["the", "cat"]),
    ("cat", ["the", "the cat"]),
    ("10th and 11th centuries", ["10th and 11th centuries", "10th century"]),
    ("in the 10th century", ["10th and 11th centuries", "the 10th century"]),
    ("red red red blue", ["red blue blue"]),
    ("Zürich", ["zürich"]),
    ("it’s", ["its"]),
    ("$100", ["100", ""]),
    ("", ["", "x"]),
]


def string_cases():
    out = []
    for prediction, golds in STRING_CASES:
        exact, f1 = raw_scores(prediction, golds)
        out.append({"prediction": prediction, "golds": golds, "exact": int(exact), "f1": float(f1)})
    return out


def report_cases(rng):
    reports = []

    def add(name, predictions, golds):
        reports.append({"name": name, "predictions": predictions, "golds": golds, "expected": squad_v2(predictions, golds)})

    preds = [p for p, _ in STRING_CASES]
    golds = [g for _, g in STRING_CASES]
    add("strings", preds, golds)
    has = [(p, g) for p, g in STRING_CASES if g]
    add("has_answers_only", [p for p, _ in has], [g for _, g in has])
    no = [(p, g) for p, g in STRING_CASES if not g]
    add("no_answers_only", [p for p, _ in no], [g for _, g in no])
    # best_* above the overall figures: right answers first, then unanswerable questions
    # answered with text (each -1 in find_best_thresh), the best prefix stopping before them.
    add(
        "best_stops_early",
        ["Normandy", "red fox", "France", "wrong", " ", "", "fox"],
        [["Normandy"], ["the red fox"], [], [], [], [], ["fox"]],
    )
    # A random mix: float F1 sums in question order, to the bit.
    pool = [
        ("the red fox", ["red fox"]),
        ("red", ["red fox", "fox"]),
        ("jumps high", ["jumps over the dog"]),
        ("quick brown fox", ["the quick brown fox jumps"]),
        ("", ["fox"]),
        ("", []),
        ("dog", []),
        ("the", []),
        ("lazy dog sleeps", ["the lazy dog", "a dog"]),
        ("over", ["over the lazy dog"]),
        ("an apple a day", ["apple day"]),
        ("one two three four five six seven", ["two four six eight ten"]),
    ]
    picks = rng.integers(0, len(pool), 211).tolist()
    add("random_mix", [pool[i][0] for i in picks], [pool[i][1] for i in picks])
    return reports


def main():
    rng = np.random.default_rng(20251205)
    golden = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "spans": span_cases(rng),
        "strings": string_cases(),
        "reports": report_cases(rng),
    }
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(
        f"wrote {OUT}: {len(golden['spans'])} span cases, {len(golden['strings'])} string cases, "
        f"{len(golden['reports'])} reports"
    )


if __name__ == "__main__":
    main()

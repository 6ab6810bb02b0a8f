//! Extractive question answering (SQuAD v1.1 and 2.0): choosing an answer span from the start
//! and end logits of a context's windows, the SQuAD scores of the answers, and the span loss.
//!
//! The span choice is the per-example step of transformers' `utils_qa.py`
//! (`postprocess_qa_predictions`), which `run_qa.py` uses; the scores are those of the official
//! SQuAD v1.1 evaluation script, which is also the `squad` metric of Hugging Face's `evaluate`
//! (exact match and F1 in percent), and with unanswerable questions (run_qa's
//! `--version_2_with_negative`) those of the official SQuAD 2.0 script, the `squad_v2` metric.
//! Matching them, quirks included, keeps Lantern's figures comparable with published ones:
//! - a window's candidates are only the `n_best` highest start logits crossed with the `n_best`
//!   highest end logits, not every valid span;
//! - when no candidate is left (or only one, with an empty text), the answer is utils_qa's
//!   stand-in whose text is the literal word `empty`, with score 0 — with SQuAD 2.0 also when
//!   the null answer is the only candidate and its score does not beat the threshold;
//! - the v1.1 F1 of two answers that are both empty after normalisation is 0 (their exact match
//!   is 1); the v2.0 F1 of an empty prediction against an unanswerable question is 1.
//!
//! `tests/golden/qa_metrics.json` (made by `scripts/make_qa_metric_golden.py`) and
//! `tests/golden/qa_v2_metrics.json` (`scripts/make_qa_v2_metric_golden.py`), from Python
//! transcriptions of these references, pin the behaviour down.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{json, Value};

/// The early-stopping metrics of question answering, and whether higher is better.
pub const QA_METRICS: &[(&str, bool)] =
    &[("eval_loss", false), ("exact_match", true), ("f1", true)];

/// The early-stopping metrics of question answering with unanswerable questions: the `squad_v2`
/// metric's figures of merit under its own names (`exact` is `exact_match`; `f1` and
/// `exact_match` are the overall figures, as for SQuAD v1.1). The `HasAns_*` and `NoAns_*`
/// figures exist only when the questions include answerable, respectively unanswerable, ones.
pub const QA_V2_METRICS: &[(&str, bool)] = &[
    ("eval_loss", false),
    ("exact_match", true),
    ("f1", true),
    ("exact", true),
    ("HasAns_exact", true),
    ("HasAns_f1", true),
    ("NoAns_exact", true),
    ("NoAns_f1", true),
    ("best_exact", true),
    ("best_f1", true),
];

/// The text utils_qa answers with when no span qualifies. It is a real word on purpose there
/// (so that the answer is never blank), and it is scored like any other prediction.
pub const EMPTY_ANSWER: &str = "empty";

/// One window's logits and where its tokens are in the context.
#[derive(Debug, Clone, Copy)]
pub struct FeatureLogits<'a> {
    /// (T) start logits of the window's tokens.
    pub start: &'a [f32],
    /// (T) end logits.
    pub end: &'a [f32],
    /// (T): each token's (start, end) character offsets in the context, `None` outside it
    /// (question, special tokens, padding). A token past the end of this slice counts as
    /// outside the context too.
    pub offsets: &'a [Option<(usize, usize)>],
}

/// One candidate answer of an example.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QaPrediction {
    /// The context's characters `start..end`, [`EMPTY_ANSWER`] for the stand-in, or "" for
    /// the null answer (SQuAD 2.0).
    pub text: String,
    /// Character offsets of the answer in the context: [start, end). 0..0 for the stand-in
    /// and the null answer.
    pub start: usize,
    pub end: usize,
    /// start_logit + end_logit of the chosen span (an f32 sum, as numpy adds float32 logits);
    /// 0 for the stand-in.
    pub score: f32,
    /// The start token's start logit and the end token's end logit (for the null answer,
    /// both at `[CLS]`), as utils_qa's n-best file holds them; 0 for the stand-in.
    pub start_logit: f32,
    pub end_logit: f32,
    /// Softmax of the score over the n-best candidates (utils_qa's "probability").
    pub probability: f32,
}

/// A question's answer as utils_qa picks it: the n-best list and which entry is the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QaChoice {
    /// The n-best answers, best first ([`best_answers`]; with SQuAD 2.0 the null answer, text
    /// "", is among them).
    pub n_best: Vec<QaPrediction>,
    /// The answer's index in `n_best`: 0 for SQuAD v1.1; with SQuAD 2.0 the null answer or
    /// the best answer with a text ([`best_answers_v2`]).
    pub answer: usize,
    /// SQuAD 2.0: the null score and its difference with the best non-null answer; `None`
    /// for SQuAD v1.1 (and for a question without windows).
    pub null: Option<NullScore>,
}

impl QaChoice {
    /// The chosen entry of the n-best list.
    pub fn best(&self) -> &QaPrediction {
        &self.n_best[self.answer]
    }

    /// The answer's text: "" when the question is found unanswerable.
    pub fn text(&self) -> &str {
        &self.best().text
    }
}

/// The null answer's standing in utils_qa's SQuAD 2.0 choice.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NullScore {
    /// The smallest over the question's windows of start_logits[0] + end_logits[0] (the
    /// `[CLS]` position; float32).
    pub score: f32,
    /// `score` − the best non-null answer's start logit − its end logit, in float32 and that
    /// order (utils_qa's `scores_diff_json`, run_qa's null_odds file); the answer is null when
    /// it is above `null_score_diff_threshold`.
    pub diff: f32,
}

/// numpy's ascending order of floats: NaN after every number (all NaNs equal), -0 equal to +0.
/// A total order, which `sort_by` needs.
fn numpy_order(a: f32, b: f32) -> Ordering {
    a.partial_cmp(&b)
        .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}

/// The indices of the `n` largest values, largest first: `np.argsort(x)[-1:-n-1:-1]`.
///
/// numpy leaves the order of equal values unspecified (its default sort is not stable for
/// long arrays); here a stable ascending sort is read backwards, so of equal values the higher
/// index comes first. NaN ranks above every number, as it sorts last in numpy.
fn top_indices(x: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| numpy_order(x[a], x[b]));
    idx.into_iter().rev().take(n).collect()
}

/// Characters `a..b` of `s`, with Python's slicing rules for out-of-range or reversed bounds
/// (clamped to the length; empty when `a >= b`). `bounds` holds the byte offset of every
/// character and then `s.len()`.
fn char_slice<'s>(s: &'s str, bounds: &[usize], a: usize, b: usize) -> &'s str {
    let n = bounds.len() - 1;
    let (a, b) = (a.min(n), b.min(n));
    if a >= b {
        ""
    } else {
        &s[bounds[a]..bounds[b]]
    }
}

/// utils_qa's `postprocess_qa_predictions` for one example (`version_2_with_negative=False`):
/// the n-best answers over all of the example's windows, best first.
///
/// In every window the `n_best` highest start logits are crossed with the `n_best` highest end
/// logits (see [`top_indices`] for ties); a pair is skipped when either token is outside the
/// context (offset `None`, or an index past `offsets`), when end < start, or when the span has
/// more than `max_answer_length` tokens. The candidates are sorted by score, stably as Python's
/// `sorted(..., reverse=True)` is (equal scores keep window order, then start rank, then end
/// rank), and the best `n_best` kept; each one's text is the context's characters (not bytes)
/// from its start token's start to its end token's end.
///
/// When nothing is left, or a single candidate with an empty text, utils_qa's stand-in
/// ([`EMPTY_ANSWER`], score 0, offsets 0..0) goes first, so the list is never empty (it has
/// one entry for `n_best` = 0, and can have `n_best` + 1 with the stand-in). Probabilities
/// are the softmax of the scores, exp(score − max) / Σ, computed in f64.
pub fn best_answers(
    context: &str,
    features: &[FeatureLogits<'_>],
    n_best: usize,
    max_answer_length: usize,
) -> Vec<QaPrediction> {
    n_best_list(context, features, n_best, max_answer_length, false)
        .0
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// utils_qa's `postprocess_qa_predictions` for one example with `version_2_with_negative=True`
/// and `null_score_diff_threshold`: the n-best list with the null answer, and the answer.
///
/// As [`best_answers`], with these steps of utils_qa in its order:
/// - each window's null score is start_logits[0] + end_logits[0] (float32); the question's
///   null answer (text "", offsets 0..0) is that of the window with the smallest one (the
///   first of equal ones: utils_qa replaces it only on a strict `>`);
/// - the null answer joins the candidates after every span, so a span with the same score
///   ranks before it; after the cut to `n_best` it is added back at the end when no entry has
///   the offsets (0, 0) (utils_qa's test, which a zero-width span at character 0 also passes);
/// - the stand-in rule and the softmax as in v1.1, the null answer included (the list can
///   hold `n_best` + 2 entries);
/// - the best non-null answer is the first entry whose text is not empty — the stand-in
///   ("empty", logits 0) when the null answer is the only candidate;
/// - diff = null score − its start logit − its end logit (float32, left to right), and the
///   answer is the null one ("") when diff > `null_score_diff_threshold`, compared in float32
///   as numpy compares a float32 with a Python float; else the best non-null answer. A diff
///   equal to the threshold keeps the non-null answer.
///
/// Where utils_qa has no rule: when every entry has an empty text (a zero-width span beside
/// the null answer) it fails with an IndexError; here the best non-null answer is then the
/// first entry that is not the null answer, so the text is "" either way. Without any window
/// (no null score) the result is that of [`best_answers`] with `null` None.
pub fn best_answers_v2(
    context: &str,
    features: &[FeatureLogits<'_>],
    n_best: usize,
    max_answer_length: usize,
    null_score_diff_threshold: f64,
) -> QaChoice {
    let (entries, null_score) = n_best_list(context, features, n_best, max_answer_length, true);
    let is_null: Vec<bool> = entries.iter().map(|(_, n)| *n).collect();
    let n_best: Vec<QaPrediction> = entries.into_iter().map(|(p, _)| p).collect();
    let Some(null_score) = null_score else {
        return QaChoice {
            n_best,
            answer: 0,
            null: None,
        };
    };
    let best = n_best
        .iter()
        .position(|p| !p.text.is_empty())
        .or_else(|| is_null.iter().position(|n| !n))
        .expect("an n-best list of empty texts holds a span besides the null answer");
    let diff = null_score - n_best[best].start_logit - n_best[best].end_logit;
    // numpy compares float32 with a Python float in float32 (NEP 50): the threshold is
    // rounded to float32 first (0.1 is then not below float32(0.1)).
    let answer = if diff > null_score_diff_threshold as f32 {
        // The null answer; utils_qa only writes "": when a zero-width span at (0, 0) kept it
        // out of the list, that span's entry (also "") stands for it.
        is_null.iter().position(|n| *n).unwrap_or_else(|| {
            n_best
                .iter()
                .position(|p| (p.start, p.end) == (0, 0) && p.text.is_empty())
                .expect("the null answer, or the (0, 0) span that kept it out, is listed")
        })
    } else {
        best
    };
    QaChoice {
        n_best,
        answer,
        null: Some(NullScore {
            score: null_score,
            diff,
        }),
    }
}

/// A candidate of utils_qa's search: offsets, score and its two logits, and whether it is the
/// null answer.
#[derive(Clone, Copy)]
struct Candidate {
    start: usize,
    end: usize,
    score: f32,
    start_logit: f32,
    end_logit: f32,
    null: bool,
}

/// The n-best list of one example, each entry with whether it is the null answer, and (with
/// `with_null`, SQuAD 2.0) the question's null score; see [`best_answers`] and
/// [`best_answers_v2`].
fn n_best_list(
    context: &str,
    features: &[FeatureLogits<'_>],
    n_best: usize,
    max_answer_length: usize,
    with_null: bool,
) -> (Vec<(QaPrediction, bool)>, Option<f32>) {
    // In the order utils_qa appends them.
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut min_null: Option<Candidate> = None;
    for f in features {
        if with_null {
            // A window always has [CLS]; an empty one (never made) has no null score.
            if let (Some(&s0), Some(&e0)) = (f.start.first(), f.end.first()) {
                let score = s0 + e0;
                // utils_qa: `min_null_prediction is None or min_null_prediction["score"] >
                // feature_null_score` — the first of equal scores stays.
                if min_null.as_ref().is_none_or(|n| n.score > score) {
                    min_null = Some(Candidate {
                        start: 0,
                        end: 0,
                        score,
                        start_logit: s0,
                        end_logit: e0,
                        null: true,
                    });
                }
            }
        }
        let ends = top_indices(f.end, n_best);
        for s in top_indices(f.start, n_best) {
            let Some(&Some((a, _))) = f.offsets.get(s) else {
                continue;
            };
            for &e in &ends {
                let Some(&Some((_, b))) = f.offsets.get(e) else {
                    continue;
                };
                if e < s || e - s + 1 > max_answer_length {
                    continue;
                }
                candidates.push(Candidate {
                    start: a,
                    end: b,
                    score: f.start[s] + f.end[e],
                    start_logit: f.start[s],
                    end_logit: f.end[e],
                    null: false,
                });
            }
        }
    }
    let null_score = min_null.as_ref().map(|n| n.score);
    // utils_qa appends the null answer after every window's spans.
    if let Some(n) = min_null {
        candidates.push(n);
    }
    // `sort_by` is stable, as Python's `sorted` is.
    candidates.sort_by(|x, y| numpy_order(y.score, x.score));
    candidates.truncate(n_best);
    // "Add back the minimum null prediction if it was removed because of its low score."
    if let Some(n) = min_null {
        if !candidates.iter().any(|c| (c.start, c.end) == (0, 0)) {
            candidates.push(n);
        }
    }

    let bounds: Vec<usize> = context
        .char_indices()
        .map(|(i, _)| i)
        .chain([context.len()])
        .collect();
    let mut preds: Vec<(QaPrediction, bool)> = candidates
        .into_iter()
        .map(|c| {
            let p = QaPrediction {
                text: char_slice(context, &bounds, c.start, c.end).to_string(),
                start: c.start,
                end: c.end,
                score: c.score,
                start_logit: c.start_logit,
                end_logit: c.end_logit,
                probability: 0.0,
            };
            (p, c.null)
        })
        .collect();
    if preds.is_empty() || (preds.len() == 1 && preds[0].0.text.is_empty()) {
        let stand_in = QaPrediction {
            text: EMPTY_ANSWER.to_string(),
            start: 0,
            end: 0,
            score: 0.0,
            start_logit: 0.0,
            end_logit: 0.0,
            probability: 0.0,
        };
        preds.insert(0, (stand_in, false));
    }
    let max = preds
        .iter()
        .map(|(p, _)| f64::from(p.score))
        .fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = preds
        .iter()
        .map(|(p, _)| (f64::from(p.score) - max).exp())
        .collect();
    let sum: f64 = exp.iter().sum();
    for ((p, _), e) in preds.iter_mut().zip(exp) {
        p.probability = (e / sum) as f32;
    }
    (preds, null_score)
}

/// A word character of Python's `re` on `str` (for `\b`): alphanumeric or `_`. Rust's
/// `is_alphanumeric` is Python's `isalnum` except for a few combining marks that Unicode
/// calls alphabetic (e.g. Devanagari vowel signs), which Python does not count; next to an
/// article they would keep it. Common accents (U+0301 and the like) agree.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// White space of Python's `str.split()`: Unicode's White_Space plus the separators
/// U+001C..U+001F, which Python also splits on.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The official SQuAD v1.1 normalisation: lower case, remove ASCII punctuation (Python's
/// `string.punctuation`), remove the articles a/an/the as whole words (`\b(a|an|the)\b`,
/// Unicode word boundaries), collapse white space — in that order, so "the-end" becomes the
/// one word "theend" and keeps its "the", while "The" and "AN" are removed. Other punctuation
/// ("—", "’", "“") stays.
pub fn normalize_answer(s: &str) -> String {
    let lowered = s.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // The regex's matches are exactly the maximal runs of word characters that equal an
    // article (the boundaries on both sides forbid a longer run), each replaced by a space.
    let mut no_articles = String::with_capacity(no_punct.len());
    let mut rest = no_punct.as_str();
    while let Some(first) = rest.chars().next() {
        let word = is_word_char(first);
        let len = rest
            .find(|c: char| is_word_char(c) != word)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(len);
        if word && matches!(run, "a" | "an" | "the") {
            no_articles.push(' ');
        } else {
            no_articles.push_str(run);
        }
        rest = tail;
    }
    no_articles
        .split(is_py_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The words of a normalised answer.
fn tokens(normalized: &str) -> Vec<&str> {
    normalized.split(' ').filter(|t| !t.is_empty()).collect()
}

/// SQuAD's F1 of one prediction against one gold answer: the bag-of-words overlap of the
/// normalised answers, 0 when they share no word (so also when both are empty).
fn f1_one(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize_answer(prediction), normalize_answer(gold));
    let (p, g) = (tokens(&p), tokens(&g));
    let mut left: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *left.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(n) = left.get_mut(t).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    // The script's own operations and order, so the figures agree to the last bit.
    let precision = 1.0 * same as f64 / p.len() as f64;
    let recall = 1.0 * same as f64 / g.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// Whether the normalised prediction equals a normalised gold answer (false with no gold).
pub fn exact_match(prediction: &str, golds: &[String]) -> bool {
    let p = normalize_answer(prediction);
    golds.iter().any(|g| normalize_answer(g) == p)
}

/// The token-bag F1 of the prediction, the best over the gold answers, in [0, 1] (0 with no
/// gold, where the official script fails).
pub fn f1_score(prediction: &str, golds: &[String]) -> f64 {
    golds
        .iter()
        .map(|g| f1_one(prediction, g))
        .fold(0.0, f64::max)
}

/// The official SQuAD 2.0 script's F1 of one prediction against one gold answer
/// (`compute_f1`): as [`f1_one`], except that when either normalised answer is empty the
/// score is 1 if both are, else 0 — the empty prediction is right for an unanswerable question.
fn f1_v2(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize_answer(prediction), normalize_answer(gold));
    let (p, g) = (tokens(&p), tokens(&g));
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p.is_empty() && g.is_empty()));
    }
    f1_one(prediction, gold)
}

/// The SQuAD 2.0 script's exact match and F1 of one question (`get_raw_scores`), each the max
/// over its gold answers: the golds whose normalised text is not empty, or the one gold ""
/// when none is (an unanswerable question, or answers such as "the" that normalise to
/// nothing).
fn raw_scores_v2(prediction: &str, golds: &[String]) -> (f64, f64) {
    let mut kept: Vec<&str> = golds
        .iter()
        .map(String::as_str)
        .filter(|g| !normalize_answer(g).is_empty())
        .collect();
    if kept.is_empty() {
        kept.push("");
    }
    let p = normalize_answer(prediction);
    let exact = kept.iter().any(|g| normalize_answer(g) == p);
    let f1 = kept
        .iter()
        .map(|g| f1_v2(prediction, g))
        .fold(f64::NEG_INFINITY, f64::max);
    (f64::from(u8::from(exact)), f1)
}

/// The squad_v2 metric's exact and F1 (percent) and count of one part of the questions: those
/// with answers (`HasAns_*`) or those without (`NoAns_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QaPart {
    pub exact: f64,
    pub f1: f64,
    pub total: u64,
}

/// The squad_v2 metric's figures beyond the overall exact and F1 ([`QaReport`] holds those).
#[derive(Debug, Clone, PartialEq)]
pub struct SquadV2 {
    /// The questions with answers; `None` when there is none (the metric leaves the keys out).
    pub has_ans: Option<QaPart>,
    /// The questions without answers; `None` when there is none.
    pub no_ans: Option<QaPart>,
    /// The best exact and F1 (percent) over the no-answer probability thresholds, and the
    /// threshold. run_qa passes `no_answer_probability` 0 for every question, so the search
    /// is over prefixes of the questions in their order and the threshold is always 0.
    pub best_exact: f64,
    pub best_exact_thresh: f64,
    pub best_f1: f64,
    pub best_f1_thresh: f64,
}

/// The official SQuAD 2.0 script's `find_best_thresh` with every no-answer probability 0 (as
/// run_qa gives them): the sort by probability keeps the questions' order, the score starts
/// at the number of unanswerable questions (all answered null), and each question in turn
/// adds its raw score if it has answers, else −1 when the (raw, unnormalised) prediction is
/// not empty; the best running score, in percent of the questions, and its threshold (0).
fn best_thresh(predictions: &[String], scores: &[f64], has_ans: &[bool]) -> (f64, f64) {
    let no_ans = has_ans.iter().filter(|h| !**h).count() as f64;
    let (mut cur, mut best, mut thresh) = (no_ans, no_ans, 0.0);
    for ((p, s), h) in predictions.iter().zip(scores).zip(has_ans) {
        cur += match (h, p.is_empty()) {
            (true, _) => *s,
            (false, false) => -1.0,
            (false, true) => 0.0,
        };
        if cur > best {
            best = cur;
            // na_probs[qid]: 0 for every question.
            thresh = 0.0;
        }
    }
    (100.0 * best / scores.len() as f64, thresh)
}

/// Report of an evaluation: mean loss, and the squad metric's exact_match and f1 in PERCENT
/// (0–100, as `evaluate`'s squad metric gives them), over `examples` questions; with
/// unanswerable questions the squad_v2 metric's figures ([`QaReport::new_v2`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QaReport {
    /// Mean span loss ([`span_loss`]) over the evaluated windows.
    pub loss: f64,
    /// Questions answered exactly (after normalisation), in percent (squad_v2's `exact`).
    pub exact_match: f64,
    /// Mean of the questions' best F1, in percent.
    pub f1: f64,
    /// Questions scored (squad_v2's `total`).
    pub examples: u64,
    /// SQuAD 2.0 (`data.version_2_with_negative`): the squad_v2 metric's other figures.
    pub v2: Option<SquadV2>,
}

impl QaReport {
    /// Scores `predictions[i]` against the gold answers `golds[i]`, as the official script
    /// does: every question of `golds` counts, and one without a prediction (the list is
    /// shorter) scores 0; extra predictions are ignored. With no question both scores are 0.
    pub fn new(loss: f64, predictions: &[String], golds: &[Vec<String>]) -> QaReport {
        let (mut em, mut f1) = (0u64, 0f64);
        for (p, g) in predictions.iter().zip(golds) {
            em += exact_match(p, g) as u64;
            f1 += f1_score(p, g);
        }
        let total = golds.len() as u64;
        let percent = |x: f64| {
            if total == 0 {
                0.0
            } else {
                100.0 * x / total as f64
            }
        };
        QaReport {
            loss,
            exact_match: percent(em as f64),
            f1: percent(f1),
            examples: total,
            v2: None,
        }
    }

    /// The squad_v2 metric (the official SQuAD 2.0 script) of `predictions[i]` ("" = no
    /// answer) against `golds[i]` (empty = an unanswerable question, whose gold is ""), with
    /// `no_answer_probability` 0 for every question as run_qa gives it (so the no-answer
    /// threshold changes nothing): `exact` and `f1` over all questions, the same over those
    /// with answers (`HasAns_*`) and without (`NoAns_*`), and `best_*`. Sums run in question
    /// order with the script's operations, so the figures agree to the bit.
    ///
    /// Only questions with a prediction are scored (the script skips the others in its
    /// overall figures and fails in its parts; here they are left out of all); with none
    /// every figure is 0.
    pub fn new_v2(loss: f64, predictions: &[String], golds: &[Vec<String>]) -> QaReport {
        let n = predictions.len().min(golds.len());
        let (predictions, golds) = (&predictions[..n], &golds[..n]);
        let has_ans: Vec<bool> = golds.iter().map(|g| !g.is_empty()).collect();
        let (exact, f1): (Vec<f64>, Vec<f64>) = predictions
            .iter()
            .zip(golds)
            .map(|(p, g)| raw_scores_v2(p, g))
            .unzip();
        // `make_eval_dict`: 100 · Σ / total, the sum in question order.
        let part = |want: Option<bool>| -> Option<QaPart> {
            let pick = |i: &usize| want.is_none_or(|w| has_ans[*i] == w);
            let idx: Vec<usize> = (0..n).filter(pick).collect();
            if idx.is_empty() {
                return None;
            }
            let total = idx.len() as f64;
            let sum = |x: &[f64]| idx.iter().fold(0.0, |acc, &i| acc + x[i]);
            Some(QaPart {
                exact: 100.0 * sum(&exact) / total,
                f1: 100.0 * sum(&f1) / total,
                total: idx.len() as u64,
            })
        };
        let all = part(None).unwrap_or(QaPart {
            exact: 0.0,
            f1: 0.0,
            total: 0,
        });
        let (best_exact, best_exact_thresh, best_f1, best_f1_thresh) = if n == 0 {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            let (be, bet) = best_thresh(predictions, &exact, &has_ans);
            let (bf, bft) = best_thresh(predictions, &f1, &has_ans);
            (be, bet, bf, bft)
        };
        QaReport {
            loss,
            exact_match: all.exact,
            f1: all.f1,
            examples: all.total,
            v2: Some(SquadV2 {
                has_ans: part(Some(true)),
                no_ans: part(Some(false)),
                best_exact,
                best_exact_thresh,
                best_f1,
                best_f1_thresh,
            }),
        }
    }

    /// A metric by its config name (one of [`QA_METRICS`], or [`QA_V2_METRICS`] for a SQuAD
    /// 2.0 report); `loss` is read as `eval_loss`. `None` for a name the report does not have
    /// (a squad_v2 name of a v1.1 report; `HasAns_*` without answerable questions, `NoAns_*`
    /// without unanswerable ones).
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" | "loss" => self.loss,
            "exact_match" => self.exact_match,
            "f1" => self.f1,
            _ => {
                let v2 = self.v2.as_ref()?;
                match name {
                    "exact" => self.exact_match,
                    "HasAns_exact" => v2.has_ans?.exact,
                    "HasAns_f1" => v2.has_ans?.f1,
                    "NoAns_exact" => v2.no_ans?.exact,
                    "NoAns_f1" => v2.no_ans?.f1,
                    "best_exact" => v2.best_exact,
                    "best_f1" => v2.best_f1,
                    _ => return None,
                }
            }
        })
    }

    /// One JSON object, with the keys of the other reports: `eval_loss`, `exact_match`, `f1`
    /// (both in percent) and `examples`; a SQuAD 2.0 report adds the squad_v2 metric's keys
    /// under its names (`exact`, `total`, `HasAns_exact`, `HasAns_f1`, `HasAns_total`,
    /// `NoAns_*` likewise, `best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`).
    pub fn to_json(&self) -> Value {
        let mut j = json!({
            "eval_loss": self.loss,
            "exact_match": self.exact_match,
            "f1": self.f1,
            "examples": self.examples,
        });
        if let Some(v2) = &self.v2 {
            j["exact"] = json!(self.exact_match);
            j["total"] = json!(self.examples);
            for (prefix, part) in [("HasAns", v2.has_ans), ("NoAns", v2.no_ans)] {
                if let Some(p) = part {
                    j[format!("{prefix}_exact")] = json!(p.exact);
                    j[format!("{prefix}_f1")] = json!(p.f1);
                    j[format!("{prefix}_total")] = json!(p.total);
                }
            }
            j["best_exact"] = json!(v2.best_exact);
            j["best_exact_thresh"] = json!(v2.best_exact_thresh);
            j["best_f1"] = json!(v2.best_f1);
            j["best_f1_thresh"] = json!(v2.best_f1_thresh);
        }
        j
    }

    /// The report [`QaReport::to_json`] wrote; `None` when a field is missing or mistyped, or
    /// when the record has a key that marks another kind of report (a token report also has
    /// `f1`), so that no record reads as the wrong kind. A record with `total` is a SQuAD 2.0
    /// report, whose own keys must all be there (each part's three, or none of them).
    pub fn from_json(v: &Value) -> Option<Self> {
        const OTHERS: &[&str] = &[
            "accuracy",
            "confusion_matrix",
            "per_class",
            "labels",
            "per_type",
            "subset_accuracy",
            "pearson",
            "mse",
        ];
        if OTHERS.iter().any(|k| v.get(k).is_some()) {
            return None;
        }
        let f = |k: &str| v.get(k)?.as_f64();
        let v2 = match v.get("total") {
            None => None,
            Some(total) => {
                let total = total.as_u64()?;
                if f("exact")? != f("exact_match")? || total != v.get("examples")?.as_u64()? {
                    return None;
                }
                let part = |prefix: &str| -> Option<Option<QaPart>> {
                    let keys = ["exact", "f1", "total"].map(|k| format!("{prefix}_{k}"));
                    match keys.iter().filter(|k| v.get(k.as_str()).is_some()).count() {
                        0 => Some(None),
                        3 => Some(Some(QaPart {
                            exact: f(&keys[0])?,
                            f1: f(&keys[1])?,
                            total: v.get(&keys[2])?.as_u64()?,
                        })),
                        _ => None,
                    }
                };
                Some(SquadV2 {
                    has_ans: part("HasAns")?,
                    no_ans: part("NoAns")?,
                    best_exact: f("best_exact")?,
                    best_exact_thresh: f("best_exact_thresh")?,
                    best_f1: f("best_f1")?,
                    best_f1_thresh: f("best_f1_thresh")?,
                })
            }
        };
        Some(Self {
            loss: f("eval_loss")?,
            exact_match: f("exact_match")?,
            f1: f("f1")?,
            examples: v.get("examples")?.as_u64()?,
            v2,
        })
    }

    /// A readable table: the headline line, then one row per score.
    pub fn pretty(&self) -> String {
        let mut s = format!(
            "loss {:.4} | exact match {:.2} | F1 {:.2} | {} questions",
            self.loss, self.exact_match, self.f1, self.examples
        );
        let Some(v2) = &self.v2 else {
            s += "\n  metric       percent\n";
            s += &format!("  exact_match  {:7.2}\n", self.exact_match);
            s += &format!("  f1           {:7.2}\n", self.f1);
            return s;
        };
        let count = |p: Option<QaPart>| p.map_or(0, |p| p.total);
        s += &format!(
            " ({} with answers, {} without)\n",
            count(v2.has_ans),
            count(v2.no_ans)
        );
        s += &format!("  {:<14}percent\n", "metric");
        let mut row = |name: &str, value: f64, note: &str| {
            s += &format!("  {name:<14}{value:7.2}{note}\n");
        };
        row("exact", self.exact_match, "");
        row("f1", self.f1, "");
        for (prefix, part) in [("HasAns", v2.has_ans), ("NoAns", v2.no_ans)] {
            if let Some(p) = part {
                row(&format!("{prefix}_exact"), p.exact, "");
                row(&format!("{prefix}_f1"), p.f1, "");
            }
        }
        let thresh = |t: f64| format!("  (threshold {t})");
        row("best_exact", v2.best_exact, &thresh(v2.best_exact_thresh));
        row("best_f1", v2.best_f1, &thresh(v2.best_f1_thresh));
        s
    }

    /// One line of the headline figures.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "eval loss {:.4}, exact match {:.2}, F1 {:.2}",
            self.loss, self.exact_match, self.f1
        );
        if let Some(v2) = &self.v2 {
            let f1 = |p: Option<QaPart>| p.map_or("-".to_string(), |p| format!("{:.2}", p.f1));
            s += &format!(
                " (HasAns F1 {}, NoAns F1 {})",
                f1(v2.has_ans),
                f1(v2.no_ans)
            );
        }
        s
    }
}

/// Cross-entropy of one logit row against class `target`, in f64; 0 when `target` is past the
/// row (see [`span_loss`]).
fn cross_entropy(logits: &[f32], target: usize) -> f64 {
    let Some(&t) = logits.get(target) else {
        return 0.0;
    };
    let max = logits
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln() - f64::from(t)
}

/// The training loss of one window: (CE(start logits, s) + CE(end logits, e)) / 2, as
/// BertForQuestionAnswering computes it (in f64 from f32 logits).
///
/// transformers clamps a position past the window to T and ignores it (`ignore_index`); such a
/// term adds 0 here. (Over a batch whose every position is ignored torch gives NaN; run_qa.py's
/// preprocessing never makes one, as it points unanswerable windows at token 0.)
pub fn span_loss(start: &[f32], end: &[f32], (s, e): (usize, usize)) -> f64 {
    (cross_entropy(start, s) + cross_entropy(end, e)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/golden/qa_metrics.json"
        );
        let text = std::fs::read_to_string(path).expect("tests/golden/qa_metrics.json");
        serde_json::from_str(&text).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        // 1e-6 relative; the floor only matters for values below f32's normal range.
        (a - b).abs() <= 1e-6 * a.abs().max(b.abs()) + 1e-37
    }

    fn strings(v: &Value) -> Vec<String> {
        serde_json::from_value(v.clone()).unwrap()
    }

    /// Windows owning their data, for [`FeatureLogits`] to borrow.
    type Window = (Vec<f32>, Vec<f32>, Vec<Option<(usize, usize)>>);

    fn features(windows: &[Window]) -> Vec<FeatureLogits<'_>> {
        windows
            .iter()
            .map(|(s, e, o)| FeatureLogits {
                start: s,
                end: e,
                offsets: o,
            })
            .collect()
    }

    /// A golden span case's windows: start and end logits and offsets of each.
    fn case_windows(case: &Value) -> Vec<Window> {
        let floats = |v: &Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        case["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let offsets = serde_json::from_value(w["offsets"].clone()).unwrap();
                (floats(&w["start"]), floats(&w["end"]), offsets)
            })
            .collect()
    }

    fn texts(p: &[QaPrediction]) -> Vec<&str> {
        p.iter().map(|p| p.text.as_str()).collect()
    }

    #[test]
    fn golden_answers_match_utils_qa() {
        let g = golden();
        let cases = g["spans"].as_array().unwrap();
        assert!(cases.len() >= 30);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let windows = case_windows(case);
            let got = best_answers(
                case["context"].as_str().unwrap(),
                &features(&windows),
                case["n_best"].as_u64().unwrap() as usize,
                case["max_answer_length"].as_u64().unwrap() as usize,
            );
            let want = case["expected"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for (i, (p, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(p.text, w["text"].as_str().unwrap(), "{name} #{i}");
                assert_eq!(p.start as u64, w["start"].as_u64().unwrap(), "{name} #{i}");
                assert_eq!(p.end as u64, w["end"].as_u64().unwrap(), "{name} #{i}");
                let (score, prob) = (
                    w["score"].as_f64().unwrap(),
                    w["probability"].as_f64().unwrap(),
                );
                assert!(
                    close(p.score.into(), score),
                    "{name} #{i}: score {} vs {score}",
                    p.score
                );
                assert!(
                    close(p.probability.into(), prob),
                    "{name} #{i}: probability {} vs {prob}",
                    p.probability
                );
            }
        }
    }

    #[test]
    fn golden_normalisation_and_scores_match_squad_v1_1() {
        let g = golden();
        let cases = g["strings"].as_array().unwrap();
        assert!(cases.len() >= 40);
        for case in cases {
            let prediction = case["prediction"].as_str().unwrap();
            let golds = strings(&case["golds"]);
            assert_eq!(
                normalize_answer(prediction),
                case["normalized_prediction"].as_str().unwrap(),
                "{prediction:?}"
            );
            let normalized: Vec<String> = golds.iter().map(|s| normalize_answer(s)).collect();
            assert_eq!(normalized, strings(&case["normalized_golds"]), "{golds:?}");
            let em = case["exact_match"].as_bool().unwrap();
            assert_eq!(
                exact_match(prediction, &golds),
                em,
                "{prediction:?} {golds:?}"
            );
            let f1 = case["f1"].as_f64().unwrap();
            assert_eq!(f1_score(prediction, &golds), f1, "{prediction:?} {golds:?}");
        }
    }

    #[test]
    fn golden_report_matches_the_squad_metric() {
        let g = golden();
        let r = &g["report"];
        let golds: Vec<Vec<String>> = serde_json::from_value(r["golds"].clone()).unwrap();
        let report = QaReport::new(0.5, &strings(&r["predictions"]), &golds);
        // Same operations in the same order as the script: equal to the bit.
        assert_eq!(report.exact_match, r["exact_match"].as_f64().unwrap());
        assert_eq!(report.f1, r["f1"].as_f64().unwrap());
        assert_eq!(report.examples, golds.len() as u64);
    }

    /// One window: [CLS] q q [SEP] then context tokens with the given offsets, then [SEP].
    fn window(start: Vec<f32>, end: Vec<f32>, context: &[(usize, usize)]) -> Window {
        let mut offsets = vec![None; 4];
        offsets.extend(context.iter().map(|&o| Some(o)));
        offsets.push(None);
        (start, end, offsets)
    }

    // "red fox jumps high": tokens at 0..3, 4..7, 8..13, 14..18.
    const FOX: &str = "red fox jumps high";
    const FOX_TOKENS: [(usize, usize); 4] = [(0, 3), (4, 7), (8, 13), (14, 18)];

    #[test]
    fn a_span_longer_than_max_answer_length_is_skipped() {
        // Best pair: start on "red" (4), end on "high" (7): 4 tokens.
        let s = vec![0.0, 0.1, 0.2, 0.3, 9.0, 1.0, 0.5, 0.4, 0.6];
        let e = vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 9.0, 0.6];
        let w = [window(s, e, &FOX_TOKENS)];
        let all = best_answers(FOX, &features(&w), 2, 4);
        assert_eq!(all[0].text, "red fox jumps high");
        assert_eq!((all[0].start, all[0].end, all[0].score), (0, 18, 18.0));
        let short = best_answers(FOX, &features(&w), 2, 3);
        // Starts {4, 5} × ends {7, 6}: (4, 7) is too long; (4, 6) scores 10, (5, 7) 10 too, but
        // (4, 6) came first (start rank 0), and (5, 6) scores 2.
        assert_eq!(texts(&short), ["red fox jumps", "fox jumps high"]);
        assert_eq!(short[0].score, 10.0);
        // Two equal scores: probability one half each.
        assert!((short[0].probability - 0.5).abs() < 1e-7);
    }

    #[test]
    fn a_span_reaching_into_the_question_or_past_the_context_is_skipped() {
        // The highest start is a question token (2) and the highest end is the final [SEP] (8).
        let s = vec![0.0, 0.1, 9.0, 0.3, 0.4, 5.0, 0.5, 0.6, 0.7];
        let e = vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 4.0, 0.6, 9.0];
        let w = [window(s, e, &FOX_TOKENS)];
        let got = best_answers(FOX, &features(&w), 2, 30);
        assert_eq!(texts(&got), ["fox jumps"]);
        assert_eq!(got[0].score, 9.0);
        assert_eq!(got[0].probability, 1.0);
    }

    #[test]
    fn end_before_start_is_skipped_and_nothing_left_gives_the_stand_in() {
        let s = vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 9.0, 0.7];
        let e = vec![0.0, 0.1, 0.2, 0.3, 9.0, 0.5, 0.6, 0.4, 0.7];
        let w = [window(s, e, &FOX_TOKENS)];
        let got = best_answers(FOX, &features(&w), 1, 30);
        let stand_in = vec![QaPrediction {
            text: EMPTY_ANSWER.into(),
            start: 0,
            end: 0,
            score: 0.0,
            start_logit: 0.0,
            end_logit: 0.0,
            probability: 1.0,
        }];
        assert_eq!(got, stand_in);
        // No window at all, empty windows, and n_best 0: the same stand-in, no panic.
        assert_eq!(best_answers(FOX, &[], 20, 30), stand_in);
        let empty = FeatureLogits {
            start: &[],
            end: &[],
            offsets: &[],
        };
        assert_eq!(best_answers("", &[empty], 20, 30), stand_in);
        assert_eq!(best_answers(FOX, &features(&w), 0, 30), stand_in);
        assert_eq!(best_answers(FOX, &features(&w), 5, 0), stand_in);
    }

    #[test]
    fn a_single_empty_text_gets_the_stand_in_in_front() {
        // Token 5 has zero width: its span's text is "", so utils_qa puts "empty" first.
        let (s, e, mut o) = window(
            vec![0.0, 0.1, 0.2, 0.3, 0.4, 5.0, 0.6, 0.7, 0.8],
            vec![0.0, 0.1, 0.2, 0.3, 0.4, 3.0, 0.6, 0.7, 0.8],
            &FOX_TOKENS,
        );
        o[5] = Some((4, 4));
        let w = [(s, e, o)];
        let got = best_answers(FOX, &features(&w), 1, 30);
        assert_eq!(texts(&got), [EMPTY_ANSWER, ""]);
        assert_eq!((got[1].start, got[1].end, got[1].score), (4, 4, 8.0));
        let p = 1.0 / (1.0 + 8f64.exp());
        assert!((f64::from(got[0].probability) - p).abs() < 1e-9);
    }

    #[test]
    fn offsets_shorter_than_the_logits_are_skipped_not_indexed() {
        // Logits for 9 tokens, offsets for 6: tokens 6..9 are past them.
        let s = vec![0.0, 0.1, 0.2, 0.3, 1.0, 0.5, 0.6, 9.0, 8.0];
        let e = vec![0.0, 0.1, 0.2, 0.3, 0.4, 2.0, 0.6, 9.0, 8.0];
        let (s, e, mut o) = window(s, e, &FOX_TOKENS);
        o.truncate(6);
        let w = [(s, e, o)];
        let got = best_answers(FOX, &features(&w), 3, 30);
        assert_eq!(texts(&got), ["red fox"]);
        // Start and end rows of different lengths are fine too.
        let odd = FeatureLogits {
            start: &[0.0, 0.0, 0.0, 0.0, 3.0],
            end: &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 5.0],
            offsets: &w[0].2,
        };
        assert_eq!(texts(&best_answers(FOX, &[odd], 3, 30)), ["red fox", "red"]);
    }

    #[test]
    fn ties_rank_the_higher_index_first_and_equal_scores_keep_window_order() {
        assert_eq!(top_indices(&[1.0, 3.0, 3.0, 2.0], 3), [2, 1, 3]);
        assert_eq!(top_indices(&[1.0, f32::NAN, 2.0], 2), [1, 2]);
        assert_eq!(top_indices(&[1.0], 5), [0]);
        // Two windows with the same best span score: the first window's answer leads.
        let a = window(
            vec![0.0, 0.0, 0.0, 0.0, 4.0, 0.1, 0.2, 0.3, 0.0],
            vec![0.0, 0.0, 0.0, 0.0, 3.0, 0.1, 0.2, 0.3, 0.0],
            &FOX_TOKENS,
        );
        let b = window(
            vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 5.0, 0.0],
            vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 2.0, 0.0],
            &FOX_TOKENS,
        );
        let got = best_answers(FOX, &features(&[a.clone(), b.clone()]), 2, 30);
        assert_eq!(texts(&got), ["red", "high"]);
        let got = best_answers(FOX, &features(&[b, a]), 2, 30);
        assert_eq!(texts(&got), ["high", "red"]);
    }

    #[test]
    fn text_is_cut_by_characters_not_bytes() {
        let context = "Zürich — 東京 🎉 ok";
        // Characters: Z ü r i c h ␠ — ␠ 東 京 ␠ 🎉 ␠ o k
        let tokens = [(0, 6), (7, 8), (9, 11), (12, 13), (14, 16)];
        let s = vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 6.0, 0.3, 0.4, 0.0];
        let e = vec![0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 5.0, 0.4, 0.0];
        let w = [window(s, e, &tokens)];
        let got = best_answers(context, &features(&w), 1, 30);
        assert_eq!(got[0].text, "東京 🎉");
        assert_eq!((got[0].start, got[0].end), (9, 13));
        // Offsets past the end of the context are clamped as Python slices are.
        let far = [(14, 16), (17, 40)];
        let s = vec![0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        let e = vec![0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0];
        let w = [window(s, e, &far)];
        assert_eq!(best_answers(context, &features(&w), 1, 30)[0].text, "ok");
    }

    #[test]
    fn normalisation_by_hand() {
        assert_eq!(
            normalize_answer("The  Theater, an ANTHEM!"),
            "theater anthem"
        );
        assert_eq!(normalize_answer("a.b the-end"), "ab theend");
        assert_eq!(normalize_answer("l’été — the end"), "l’été — end");
        assert_eq!(normalize_answer(""), "");
        let golds = vec!["the Red Fox".to_string(), "fox".to_string()];
        assert!(exact_match("red fox.", &golds));
        assert!(!exact_match("red", &golds));
        // "red fox jumps" vs "red fox": P 2/3, R 1; vs "fox": P 1/3, R 1.
        assert!((f1_score("red fox jumps", &golds) - 0.8).abs() < 1e-12);
        assert_eq!(f1_score("", &golds), 0.0);
        // Both empty after normalisation: an exact match, but F1 0 (the v1.1 script).
        assert!(exact_match("the", &["an".to_string()]));
        assert_eq!(f1_score("the", &["an".to_string()]), 0.0);
        assert!(!exact_match("x", &[]));
        assert_eq!(f1_score("x", &[]), 0.0);
    }

    #[test]
    fn span_loss_matches_a_hand_computation() {
        let start = [1.0f32, 2.0, 3.0];
        let end = [0.5f32, -1.0, 0.0, 2.0];
        // By hand (Python's math): ln(e + e² + e³) − 2 and ln(e^0.5 + e^−1 + 1 + e²) − 2.
        let (ce_s, ce_e) = (1.407_605_964_444_380_1, 0.342_349_582_389_822_16);
        let got = span_loss(&start, &end, (1, 3));
        assert!((got - (ce_s + ce_e) / 2.0).abs() < 1e-12, "{got}");
        // Large logits do not overflow.
        let big = span_loss(&[1000.0, 0.0], &[0.0, 1000.0], (0, 1));
        assert!(big.abs() < 1e-12, "{big}");
        // A position past the window is ignored, as transformers ignores it: that term adds 0.
        assert!((span_loss(&start, &end, (7, 3)) - ce_e / 2.0).abs() < 1e-12);
        assert_eq!(span_loss(&[], &[], (0, 0)), 0.0);
    }

    #[test]
    fn missing_predictions_score_zero_and_no_question_scores_zero() {
        let golds = vec![vec!["fox".to_string()], vec!["red".to_string()]];
        let r = QaReport::new(1.0, &["Fox".to_string()], &golds);
        assert_eq!((r.exact_match, r.f1, r.examples), (50.0, 50.0, 2));
        let r = QaReport::new(0.0, &[], &[]);
        assert_eq!((r.exact_match, r.f1, r.examples), (0.0, 0.0, 0));
    }

    #[test]
    fn report_json_round_trip_and_metric_names() {
        let golds = vec![vec!["fox".to_string()], vec!["red fox".to_string()]];
        let preds = vec!["the fox".to_string(), "red".to_string()];
        let r = QaReport::new(0.75, &preds, &golds);
        assert_eq!(r.exact_match, 50.0);
        assert!((r.f1 - 100.0 * (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let j = r.to_json();
        let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["eval_loss", "exact_match", "examples", "f1"]);
        assert_eq!(QaReport::from_json(&j), Some(r.clone()));
        for (name, _) in QA_METRICS {
            assert!(r.metric(name).is_some(), "{name}");
        }
        assert_eq!(r.metric("loss"), Some(0.75));
        assert_eq!(r.metric("accuracy"), None);
        assert!(r.pretty().contains("exact_match") && r.pretty().lines().count() > 1);
        assert!(r.summary().contains("F1 83.33") && !r.summary().contains('\n'));
        // A field missing or mistyped: no report.
        assert_eq!(
            QaReport::from_json(&json!({"eval_loss": 1.0, "f1": 2.0})),
            None
        );
        assert_eq!(
            QaReport::from_json(
                &json!({"eval_loss": 1.0, "exact_match": "x", "f1": 2.0, "examples": 1})
            ),
            None
        );
    }

    #[test]
    fn from_json_refuses_the_other_reports() {
        use crate::metrics_cls::{multi_label_report, regression_report, report};
        use crate::metrics_tok::token_report;
        let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let cls = report(&[0, 1], &[0, 0], 2, 0.5).to_json(&names);
        let multi = multi_label_report(&[vec![1.0, -1.0]], &[&[true, false][..]]).to_json(&names);
        let reg = regression_report(&[1.0, 2.0], &[1.0, 3.0]).to_json();
        let tags = vec![vec!["B-X".to_string(), "O".to_string()]];
        let tok = token_report(&tags, &tags, 0.1).to_json();
        for (kind, v) in [
            ("cls", &cls),
            ("multi", &multi),
            ("reg", &reg),
            ("tok", &tok),
        ] {
            assert_eq!(QaReport::from_json(v), None, "{kind}");
        }
        // Even with the QA keys added, a record carrying another report's keys is refused.
        let mut mixed = tok.clone();
        mixed["exact_match"] = json!(10.0);
        mixed["examples"] = json!(3);
        assert_eq!(QaReport::from_json(&mixed), None);
        // And the other way round: a QA record is none of the others.
        let qa = QaReport::new(0.1, &[], &[vec!["x".to_string()]]).to_json();
        assert_eq!(crate::metrics_cls::ClsReport::from_json(&qa), None);
        assert_eq!(crate::metrics_tok::TokenReport::from_json(&qa), None);
        assert_eq!(crate::metrics_cls::RegReport::from_json(&qa), None);
        assert_eq!(crate::metrics_cls::MultiReport::from_json(&qa), None);
        // A SQuAD 2.0 record too.
        let golds = vec![vec!["x".to_string()], vec![]];
        let qa = QaReport::new_v2(0.1, &["x".into(), "y".into()], &golds).to_json();
        assert_eq!(crate::metrics_cls::ClsReport::from_json(&qa), None);
        assert_eq!(crate::metrics_tok::TokenReport::from_json(&qa), None);
        assert_eq!(crate::metrics_cls::RegReport::from_json(&qa), None);
        assert_eq!(crate::metrics_cls::MultiReport::from_json(&qa), None);
        assert_eq!(crate::metrics_cls::ChoiceReport::from_json(&qa), None);
    }

    fn golden_v2() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/golden/qa_v2_metrics.json"
        );
        let text = std::fs::read_to_string(path).expect("tests/golden/qa_v2_metrics.json");
        serde_json::from_str(&text).unwrap()
    }

    /// A golden float32 (written as the f64 of an f32): equal to the bit.
    fn same_f32(got: f32, want: &Value) -> bool {
        let want = want.as_f64().unwrap();
        want as f32 as f64 == want && got.to_bits() == (want as f32).to_bits()
    }

    #[test]
    fn golden_v2_answers_match_utils_qa() {
        let g = golden_v2();
        let cases = g["spans"].as_array().unwrap();
        assert!(cases.len() >= 40);
        let (mut null, mut stand_in, mut fails) = (0, 0, 0);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let windows = case_windows(case);
            let got = best_answers_v2(
                case["context"].as_str().unwrap(),
                &features(&windows),
                case["n_best"].as_u64().unwrap() as usize,
                case["max_answer_length"].as_u64().unwrap() as usize,
                case["null_score_diff_threshold"].as_f64().unwrap(),
            );
            let want = &case["expected"];
            let list = want["n_best"].as_array().unwrap();
            assert_eq!(got.n_best.len(), list.len(), "{name}: {got:?}");
            for (i, (p, w)) in got.n_best.iter().zip(list).enumerate() {
                assert_eq!(p.text, w["text"].as_str().unwrap(), "{name} #{i}");
                assert_eq!(p.start as u64, w["start"].as_u64().unwrap(), "{name} #{i}");
                assert_eq!(p.end as u64, w["end"].as_u64().unwrap(), "{name} #{i}");
                for (v, k) in [
                    (p.score, "score"),
                    (p.start_logit, "start_logit"),
                    (p.end_logit, "end_logit"),
                ] {
                    assert!(same_f32(v, &w[k]), "{name} #{i}: {k} {v} vs {}", w[k]);
                }
                let prob = w["probability"].as_f64().unwrap();
                assert!(
                    close(p.probability.into(), prob),
                    "{name} #{i}: probability {} vs {prob}",
                    p.probability
                );
            }
            assert_eq!(
                got.answer as u64,
                want["answer"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(got.text(), want["prediction"].as_str().unwrap(), "{name}");
            let n = got.null.expect("windows give a null score");
            assert!(same_f32(n.score, &want["null_score"]), "{name}: {n:?}");
            assert!(same_f32(n.diff, &want["score_diff"]), "{name}: {n:?}");
            null += usize::from(got.text().is_empty());
            stand_in += usize::from(got.text() == EMPTY_ANSWER);
            fails += usize::from(want["utils_qa_fails"].as_bool().unwrap());
        }
        // The golden holds what it is there for: null answers, the stand-in as the answer, and
        // the cases where utils_qa fails (Lantern's rule recorded).
        assert!(
            null >= 10 && stand_in >= 2 && fails >= 2,
            "{null} {stand_in} {fails}"
        );
    }

    #[test]
    fn golden_v2_scores_match_the_squad_v2_metric() {
        let g = golden_v2();
        for case in g["strings"].as_array().unwrap() {
            let prediction = case["prediction"].as_str().unwrap();
            let golds = strings(&case["golds"]);
            let (exact, f1) = raw_scores_v2(prediction, &golds);
            assert_eq!(
                exact,
                case["exact"].as_f64().unwrap(),
                "{prediction:?} {golds:?}"
            );
            assert_eq!(f1, case["f1"].as_f64().unwrap(), "{prediction:?} {golds:?}");
        }
        let reports = g["reports"].as_array().unwrap();
        assert!(reports.len() >= 5);
        for r in reports {
            let name = r["name"].as_str().unwrap();
            let golds: Vec<Vec<String>> = serde_json::from_value(r["golds"].clone()).unwrap();
            let report = QaReport::new_v2(0.5, &strings(&r["predictions"]), &golds);
            let got = report.to_json();
            let want = r["expected"].as_object().unwrap();
            // Every key of the metric, each value to the bit; and none besides Lantern's own.
            for (k, v) in want {
                assert_eq!(got.get(k), Some(v), "{name}: {k}");
            }
            for k in got.as_object().unwrap().keys() {
                let ours = ["eval_loss", "exact_match", "examples"].contains(&k.as_str());
                assert!(ours || want.contains_key(k), "{name}: {k}");
            }
            assert_eq!(report.metric("exact_match"), want["exact"].as_f64());
            assert_eq!(QaReport::from_json(&got), Some(report));
        }
    }

    #[test]
    fn squad_v2_by_hand() {
        // "" is right for an unanswerable question (exact and F1 1), wrong for an answerable
        // one; text for an unanswerable question scores 0.
        let golds = vec![
            vec![],
            vec!["red fox".to_string()],
            vec![],
            vec!["fox".into()],
        ];
        let preds: Vec<String> = ["", "", "the fox", "red fox"].map(String::from).to_vec();
        let r = QaReport::new_v2(0.25, &preds, &golds);
        assert_eq!((r.exact_match, r.examples), (25.0, 4));
        assert!((r.f1 - 100.0 * (1.0 + 2.0 / 3.0) / 4.0).abs() < 1e-12);
        let v2 = r.v2.clone().unwrap();
        let has = v2.has_ans.unwrap();
        assert_eq!((has.exact, has.total), (0.0, 2));
        assert!((has.f1 - 100.0 * (2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(
            v2.no_ans.map(|p| (p.exact, p.f1, p.total)),
            Some((50.0, 50.0, 2))
        );
        // find_best_thresh: 2 (all null), +0, +0, −1 (text for unanswerable), +2/3: best 2.
        assert_eq!((v2.best_exact, v2.best_exact_thresh), (50.0, 0.0));
        assert_eq!((v2.best_f1, v2.best_f1_thresh), (50.0, 0.0));
        // The v1.1 F1 of "" against "" is 0; SQuAD 2.0's is 1.
        assert_eq!(f1_score("the", &["".to_string()]), 0.0);
        assert_eq!(raw_scores_v2("the", &[]), (1.0, 1.0));
        // Names: the squad_v2 ones and the overall v1.1 ones; parts only when present.
        for (name, _) in QA_V2_METRICS {
            assert!(r.metric(name).is_some(), "{name}");
        }
        assert_eq!(r.metric("exact"), Some(25.0));
        assert_eq!(r.metric("HasAns_f1"), Some(has.f1));
        assert_eq!(r.metric("best_f1_thresh"), None);
        let only_no = QaReport::new_v2(0.0, &["".into()], &[vec![]]);
        assert_eq!(only_no.metric("HasAns_f1"), None);
        assert_eq!(only_no.metric("NoAns_f1"), Some(100.0));
        let keys = only_no.to_json();
        assert!(keys.get("HasAns_total").is_none() && keys["NoAns_total"] == 1);
        // A v1.1 report has none of the squad_v2 names.
        let v1 = QaReport::new(0.0, &["x".into()], &[vec!["x".into()]]);
        assert_eq!((v1.metric("exact"), v1.metric("best_f1")), (None, None));
        assert_eq!(QaReport::from_json(&v1.to_json()), Some(v1));
        // No question: zeros, no parts.
        let none = QaReport::new_v2(0.0, &[], &[]);
        assert_eq!((none.exact_match, none.f1, none.examples), (0.0, 0.0, 0));
        let v2 = none.v2.unwrap();
        assert!(v2.has_ans.is_none() && v2.no_ans.is_none() && v2.best_f1 == 0.0);
        // Output for people.
        assert!(r.pretty().contains("HasAns_f1") && r.pretty().contains("(threshold 0)"));
        assert!(r.summary().contains("NoAns F1 50.00") && !r.summary().contains('\n'));
    }

    #[test]
    fn squad_v2_records_are_whole_or_refused() {
        let golds = vec![vec!["fox".to_string()], vec![]];
        let r = QaReport::new_v2(0.5, &["fox".into(), "".into()], &golds);
        let j = r.to_json();
        assert_eq!(QaReport::from_json(&j), Some(r));
        for (key, value) in [
            ("HasAns_total", Value::Null),
            ("best_f1", Value::Null),
            ("exact", json!(3.0)),
            ("total", json!(7)),
        ] {
            let mut bad = j.clone();
            match value {
                Value::Null => {
                    bad.as_object_mut().unwrap().remove(key);
                }
                v => bad[key] = v,
            }
            assert_eq!(QaReport::from_json(&bad), None, "{key}");
        }
    }

    #[test]
    fn v2_without_windows_has_no_null_score_and_is_the_v1_choice() {
        let got = best_answers_v2(FOX, &[], 20, 30, 0.0);
        assert_eq!(got.null, None);
        assert_eq!((got.text(), got.answer), (EMPTY_ANSWER, 0));
        assert_eq!(got.n_best, best_answers(FOX, &[], 20, 30));
    }

    #[test]
    fn v2_null_answer_by_hand() {
        // [CLS] at 3 + 2 = 5; the best span "fox" 4 + 3 = 7: diff −2.
        let s = vec![3.0, 0.1, 0.2, 0.3, 0.4, 4.0, 0.5, 0.6, 0.0];
        let e = vec![2.0, 0.1, 0.2, 0.3, 0.4, 3.0, 0.5, 0.6, 0.0];
        let w = [window(s, e, &FOX_TOKENS)];
        let at = |t: f64| best_answers_v2(FOX, &features(&w), 2, 30, t);
        let keep = at(0.0);
        assert_eq!(keep.text(), "fox");
        assert_eq!(
            keep.null,
            Some(NullScore {
                score: 5.0,
                diff: -2.0
            })
        );
        // The null answer is in the list (text "", offsets 0..0, [CLS]'s logits).
        let null = keep.n_best.iter().find(|p| p.text.is_empty()).unwrap();
        assert_eq!((null.start, null.end, null.score), (0, 0, 5.0));
        assert_eq!((null.start_logit, null.end_logit), (3.0, 2.0));
        // −2 is not above −2: the span stays; below it the null answer wins.
        assert_eq!(at(-2.0).text(), "fox");
        let none = at(-2.5);
        assert_eq!(none.text(), "");
        assert_eq!(none.best(), null);
        // SQuAD v1.1's choice of the same windows never answers "".
        assert_eq!(best_answers(FOX, &features(&w), 2, 30)[0].text, "fox");
    }
}

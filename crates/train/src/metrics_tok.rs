//! Evaluation metrics of token classification (named-entity recognition), as the Python
//! package seqeval 1.2.2 computes them in its default (non-strict, conlleval-compatible)
//! mode, which is what Hugging Face's `run_ner.py` reports: micro precision / recall / F1
//! over exact entity matches, per entity type precision / recall / F1 / support, and the
//! accuracy of the word tags.
//!
//! Tags follow a prefix scheme (IOB1, IOB2, IOE1/2 or IOBES): `B-X`, `I-X`, `E-X`, `S-X` and
//! `O`. The non-strict reading is lenient on purpose, so that scores are comparable with the
//! published ones: an `I-X` with no `B-X` before it still starts an entity, and an entity
//! ends wherever the type changes, whatever the prefixes say. An entity counts as found only
//! when its type, first word and last word all match.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Map, Value};

use crate::metrics_cls::{prf, ClassMetrics};

/// The early-stopping metrics of token classification, and whether higher is better.
pub const TOKEN_METRICS: &[(&str, bool)] = &[
    ("eval_loss", false),
    ("accuracy", true),
    ("precision", true),
    ("recall", true),
    ("f1", true),
];

/// One entity of a tag sequence: words `start..=end` of type `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    pub kind: String,
    pub start: usize,
    /// The last word of the entity (inclusive, as seqeval gives it).
    pub end: usize,
}

/// A tag split the way seqeval splits it: the prefix is the first character and the type is
/// what follows the first `-` after it (or the whole rest when there is no `-`), `_` when
/// that is empty. Reading the first character rather than matching `B-`/`I-`/... keeps the
/// same answer as seqeval on odd tags too. An empty tag, on which seqeval fails, reads as
/// `O`: an unlabelled word is outside every entity.
fn split_tag(tag: &str) -> (char, &str) {
    let Some(prefix) = tag.chars().next() else {
        return ('O', "_");
    };
    let rest = &tag[prefix.len_utf8()..];
    let kind = rest.split_once('-').map_or(rest, |(_, k)| k);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

/// Whether an entity ended on the previous word (seqeval's `end_of_chunk`).
fn ends(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        // A type change ends an entity even where the prefixes would continue it.
        || (prev != 'O' && prev != '.' && prev_kind != kind)
}

/// Whether an entity starts on this word (seqeval's `start_of_chunk`).
fn starts(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        // An `I-` or `E-` that cannot continue the word before it starts an entity of its
        // own: the lenient reading that makes IOB1 and IOE work without special cases.
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_kind != kind)
}

/// The entities of one sentence as (type, first word, last word), in the order they end.
fn chunks<S: AsRef<str>>(tags: &[S]) -> Vec<(&str, usize, usize)> {
    // seqeval starts from an `O` whose type is empty (not `_`), which matters only for odd
    // tags like a bare `X`; kept so that those read the same way too.
    let (mut prev, mut prev_kind) = ('O', "");
    let mut begin = 0;
    let mut out = Vec::new();
    // A trailing `O` closes an entity that runs to the end of the sentence.
    let tagged = tags.iter().map(|t| split_tag(t.as_ref()));
    for (i, (tag, kind)) in tagged.chain([('O', "_")]).enumerate() {
        if ends(prev, tag, prev_kind, kind) {
            out.push((prev_kind, begin, i.saturating_sub(1)));
        }
        if starts(prev, tag, prev_kind, kind) {
            begin = i;
        }
        (prev, prev_kind) = (tag, kind);
    }
    out
}

/// The entities of a tag sequence (seqeval's `get_entities` in its default prefix mode), e.g.
/// `["B-PER", "I-PER", "O", "I-LOC"]` gives PER 0..=1 and LOC 3..=3.
pub fn entities(tags: &[&str]) -> Vec<Entity> {
    chunks(tags)
        .into_iter()
        .map(|(kind, start, end)| Entity {
            kind: kind.to_string(),
            start,
            end,
        })
        .collect()
}

/// Entity counts of one type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    /// Entities of the type in the gold tags.
    pub gold: u64,
    /// Entities of the type in the predicted tags.
    pub predicted: u64,
    /// Predicted entities that match a gold one exactly (type, first and last word).
    pub matched: u64,
}

/// The sufficient statistics of a [`TokenReport`], gathered sentence by sentence so that an
/// evaluation can add its batches as they come and combine shares of the data (counts add;
/// the metrics computed from them do not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// By entity type, sorted by name.
    pub per_type: BTreeMap<String, EntityCounts>,
    /// Words whose predicted tag equals the gold tag.
    pub correct: u64,
    /// Words scored (the gold tags).
    pub words: u64,
}

impl TokenCounts {
    /// Adds one sentence. The two sides should have one tag per word; where they do not
    /// (seqeval refuses such input), a gold word without a prediction counts as wrong and
    /// each side's entities are still read from its own tags.
    pub fn add<S: AsRef<str>>(&mut self, gold: &[S], pred: &[S]) {
        self.words += gold.len() as u64;
        self.correct += gold
            .iter()
            .zip(pred)
            .filter(|(g, p)| g.as_ref() == p.as_ref())
            .count() as u64;
        // Sets, as seqeval's: an entity read twice from odd tags is still one entity.
        let gold: HashSet<_> = chunks(gold).into_iter().collect();
        let pred: HashSet<_> = chunks(pred).into_iter().collect();
        for e in &gold {
            let c = self.counts(e.0);
            c.gold += 1;
            c.matched += pred.contains(e) as u64;
        }
        for e in &pred {
            self.counts(e.0).predicted += 1;
        }
    }

    /// Adds the counts of another share of the data.
    pub fn merge(&mut self, other: &TokenCounts) {
        for (kind, o) in &other.per_type {
            let c = self.counts(kind);
            c.gold += o.gold;
            c.predicted += o.predicted;
            c.matched += o.matched;
        }
        self.correct += other.correct;
        self.words += other.words;
    }

    fn counts(&mut self, kind: &str) -> &mut EntityCounts {
        self.per_type.entry(kind.to_string()).or_default()
    }

    /// The metrics of these counts; `loss` is passed through.
    pub fn report(&self, loss: f64) -> TokenReport {
        let per_type = self
            .per_type
            .iter()
            .map(|(kind, c)| {
                let (precision, recall, f1) = prf(c.matched, c.predicted, c.gold);
                let m = ClassMetrics {
                    precision,
                    recall,
                    f1,
                    support: c.gold,
                };
                (kind.clone(), m)
            })
            .collect();
        let total = |f: fn(&EntityCounts) -> u64| self.per_type.values().map(f).sum::<u64>();
        let (precision, recall, f1) = prf(
            total(|c| c.matched),
            total(|c| c.predicted),
            total(|c| c.gold),
        );
        TokenReport {
            loss,
            accuracy: if self.words == 0 {
                0.0
            } else {
                self.correct as f64 / self.words as f64
            },
            precision,
            recall,
            f1,
            per_type,
            words: self.words,
        }
    }
}

/// Token-classification metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenReport {
    /// Mean cross-entropy over the scored words.
    pub loss: f64,
    /// Words whose predicted tag is right, over all words (seqeval's `accuracy_score`).
    pub accuracy: f64,
    /// Micro-averaged over entities of every type.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Sorted by type; support: gold entities of the type. A type found only in the
    /// predictions is listed with support 0, as seqeval lists it.
    pub per_type: Vec<(String, ClassMetrics)>,
    pub words: u64,
}

/// Metrics of predicted word tags against gold ones, sentence by sentence (an entity never
/// spans two sentences). A sentence missing on one side counts as one with no tags.
pub fn token_report(gold: &[Vec<String>], pred: &[Vec<String>], loss: f64) -> TokenReport {
    let mut counts = TokenCounts::default();
    fn sentence(side: &[Vec<String>], i: usize) -> &[String] {
        side.get(i).map_or(&[], |v| v)
    }
    for i in 0..gold.len().max(pred.len()) {
        counts.add(sentence(gold, i), sentence(pred, i));
    }
    counts.report(loss)
}

impl TokenReport {
    /// A metric by its config name (one of [`TOKEN_METRICS`]).
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" => self.loss,
            "accuracy" => self.accuracy,
            "precision" => self.precision,
            "recall" => self.recall,
            "f1" => self.f1,
            _ => return None,
        })
    }

    /// One JSON object; the types key `per_type` (their names come from the tags, so no label
    /// names are needed).
    pub fn to_json(&self) -> Value {
        let per_type: Map<String, Value> = self
            .per_type
            .iter()
            .map(|(kind, m)| {
                let v = json!({
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "support": m.support,
                });
                (kind.clone(), v)
            })
            .collect();
        json!({
            "eval_loss": self.loss,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "words": self.words,
            "per_type": per_type,
        })
    }

    /// The report [`TokenReport::to_json`] wrote; `None` when a field is missing or mistyped.
    pub fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k)?.as_f64();
        let mut per_type = v
            .get("per_type")?
            .as_object()?
            .iter()
            .map(|(kind, m)| {
                let g = |k: &str| m.get(k)?.as_f64();
                let metrics = ClassMetrics {
                    precision: g("precision")?,
                    recall: g("recall")?,
                    f1: g("f1")?,
                    support: m.get("support")?.as_u64()?,
                };
                Some((kind.clone(), metrics))
            })
            .collect::<Option<Vec<_>>>()?;
        // A JSON object need not keep its keys in order; the report does.
        per_type.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Self {
            loss: f("eval_loss")?,
            accuracy: f("accuracy")?,
            precision: f("precision")?,
            recall: f("recall")?,
            f1: f("f1")?,
            per_type,
            words: v.get("words")?.as_u64()?,
        })
    }

    /// A readable table: the headline line, then a row per entity type.
    pub fn pretty(&self) -> String {
        let w = self
            .per_type
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let mut s = format!(
            "loss {:.4} | accuracy {:.4} | entities P {:.4} R {:.4} F1 {:.4} | {} words\n",
            self.loss, self.accuracy, self.precision, self.recall, self.f1, self.words
        );
        s += &format!("  {:w$}  precision  recall      f1  support\n", "entity");
        for (kind, m) in &self.per_type {
            s += &format!(
                "  {kind:w$}  {:9.4}  {:6.4}  {:6.4}  {:7}\n",
                m.precision, m.recall, m.f1, m.support
            );
        }
        s
    }

    /// One line of the headline figures.
    pub fn summary(&self) -> String {
        format!(
            "eval loss {:.4}, accuracy {:.4}, F1 {:.4} (P {:.4}, R {:.4})",
            self.loss, self.accuracy, self.f1, self.precision, self.recall
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_cls::EvalReport;

    fn spans(tags: &[&str]) -> Vec<(String, usize, usize)> {
        entities(tags)
            .into_iter()
            .map(|e| (e.kind, e.start, e.end))
            .collect()
    }

    fn want(v: &[(&str, usize, usize)]) -> Vec<(String, usize, usize)> {
        v.iter().map(|&(k, s, e)| (k.to_string(), s, e)).collect()
    }

    fn sentences(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|s| s.iter().map(|t| t.to_string()).collect())
            .collect()
    }

    #[test]
    fn entities_of_iob2() {
        let tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"];
        let got = spans(&tags);
        assert_eq!(got, want(&[("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)]));
        // An entity that runs to the end of the sentence is closed there.
        assert_eq!(spans(&["O", "B-ORG", "I-ORG"]), want(&[("ORG", 1, 2)]));
        assert_eq!(spans(&[]), want(&[]));
        assert_eq!(spans(&["O", "O"]), want(&[]));
    }

    #[test]
    fn an_inside_tag_after_outside_starts_an_entity() {
        // IOB1 and sloppy predictions: no `B-` needed (seqeval agrees).
        assert_eq!(spans(&["O", "I-PER", "I-PER", "O"]), want(&[("PER", 1, 2)]));
        assert_eq!(spans(&["I-MISC"]), want(&[("MISC", 0, 0)]));
        // With a type, the change from `O` (type `_`) starts the entity anyway; untyped tags
        // rest on the `O` → `I`/`E` rule alone.
        // seqeval: get_entities(['O','I','I','O','E']) == [('_', 1, 2), ('_', 4, 4)]
        let got = spans(&["O", "I", "I", "O", "E"]);
        assert_eq!(got, want(&[("_", 1, 2), ("_", 4, 4)]));
    }

    #[test]
    fn a_type_change_ends_an_entity() {
        // seqeval: get_entities(['B-PER','I-PER','O','I-LOC','B-LOC','I-PER'])
        //   == [('PER', 0, 1), ('LOC', 3, 3), ('LOC', 4, 4), ('PER', 5, 5)]
        let tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"];
        let got = spans(&tags);
        let expected = want(&[("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("PER", 5, 5)]);
        assert_eq!(got, expected);
        // seqeval: get_entities(['B-PER','I-LOC','E-LOC']) == [('PER', 0, 0), ('LOC', 1, 2)]
        let got = spans(&["B-PER", "I-LOC", "E-LOC"]);
        assert_eq!(got, want(&[("PER", 0, 0), ("LOC", 1, 2)]));
    }

    #[test]
    fn iobes_single_and_end_tags() {
        // seqeval: get_entities(['S-PER','B-LOC','I-LOC','E-LOC','E-ORG','O'])
        //   == [('PER', 0, 0), ('LOC', 1, 3), ('ORG', 4, 4)]
        let tags = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "E-ORG", "O"];
        let got = spans(&tags);
        assert_eq!(got, want(&[("PER", 0, 0), ("LOC", 1, 3), ("ORG", 4, 4)]));
        // seqeval: get_entities(['E-PER','E-PER','S-LOC','I-LOC'])
        //   == [('PER', 0, 0), ('PER', 1, 1), ('LOC', 2, 2), ('LOC', 3, 3)]
        let got = spans(&["E-PER", "E-PER", "S-LOC", "I-LOC"]);
        let expected = want(&[("PER", 0, 0), ("PER", 1, 1), ("LOC", 2, 2), ("LOC", 3, 3)]);
        assert_eq!(got, expected);
    }

    #[test]
    fn bare_prefixes_have_type_underscore() {
        // seqeval: get_entities(['B','I','O','I']) == [('_', 0, 1), ('_', 3, 3)]
        assert_eq!(
            spans(&["B", "I", "O", "I"]),
            want(&[("_", 0, 1), ("_", 3, 3)])
        );
        // The type is what follows the first `-`; an empty tag is outside, not a panic.
        // seqeval: get_entities(['B-A-B','O','É-X']) == [('A-B', 0, 0), ('X', 2, 2)]
        let got = spans(&["B-A-B", "", "É-X"]);
        assert_eq!(got, want(&[("A-B", 0, 0), ("X", 2, 2)]));
        // seqeval: get_entities(['X','O','PER','PER']) == [('ER', 2, 3)]: the prefix is the
        // first character whatever it is, and the bare `X` never closes.
        let got = spans(&["X", "O", "PER", "PER"]);
        assert_eq!(got, want(&[("ER", 2, 3)]));
        // seqeval: get_entities(['B-PER','E-PER','X-PER','O']) == [('PER', 0, 1), ('PER', 0, 2)]:
        // an odd prefix neither starts nor ends, so the next end reuses the last start.
        let got = spans(&["B-PER", "E-PER", "X-PER", "O"]);
        assert_eq!(got, want(&[("PER", 0, 1), ("PER", 0, 2)]));
    }

    /// A case whose every expected number comes from seqeval 1.2.2 itself:
    ///
    /// ```python
    /// from seqeval.metrics import (precision_score, recall_score, f1_score,
    ///                              accuracy_score, classification_report)
    /// y_true = [["B-PER", "I-PER", "O", "B-LOC", "O"],
    ///           ["O", "B-ORG", "I-ORG", "I-ORG"],
    ///           ["I-PER", "O", "B-LOC", "I-LOC"],
    ///           ["B-MISC", "O", "O"]]
    /// y_pred = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"],
    ///           ["O", "I-ORG", "I-ORG", "I-ORG"],
    ///           ["I-PER", "O", "B-LOC", "I-PER"],
    ///           ["O", "B-DATE", "O"]]
    /// precision_score(y_true, y_pred)  # 0.42857142857142855
    /// recall_score(y_true, y_pred)     # 0.5
    /// f1_score(y_true, y_pred)         # 0.4615384615384615
    /// accuracy_score(y_true, y_pred)   # 0.6875
    /// classification_report(y_true, y_pred, output_dict=True)
    /// # DATE: 0.0, 0.0, 0.0, support 0;  LOC: 0.0, 0.0, 0.0, 2;  MISC: 0.0, 0.0, 0.0, 1;
    /// # ORG: 1.0, 1.0, 1.0, 1;  PER: 0.6666666666666666, 1.0, 0.8, 2
    /// ```
    #[test]
    fn multi_sentence_report_matches_seqeval() {
        let gold = sentences(&[
            &["B-PER", "I-PER", "O", "B-LOC", "O"],
            &["O", "B-ORG", "I-ORG", "I-ORG"],
            &["I-PER", "O", "B-LOC", "I-LOC"],
            &["B-MISC", "O", "O"],
        ]);
        let pred = sentences(&[
            &["B-PER", "I-PER", "O", "B-LOC", "I-LOC"],
            &["O", "I-ORG", "I-ORG", "I-ORG"],
            &["I-PER", "O", "B-LOC", "I-PER"],
            &["O", "B-DATE", "O"],
        ]);
        let r = token_report(&gold, &pred, 0.25);
        // Same operations as seqeval's in the same order: the floats agree to the bit.
        assert_eq!(r.precision, 0.428_571_428_571_428_55);
        assert_eq!(r.recall, 0.5);
        assert_eq!(r.f1, 0.461_538_461_538_461_5);
        assert_eq!(r.accuracy, 0.6875);
        assert_eq!((r.words, r.loss), (16, 0.25));
        let m = |p: f64, r: f64, f1: f64, support: u64| ClassMetrics {
            precision: p,
            recall: r,
            f1,
            support,
        };
        let expected = vec![
            ("DATE".to_string(), m(0.0, 0.0, 0.0, 0)),
            ("LOC".to_string(), m(0.0, 0.0, 0.0, 2)),
            ("MISC".to_string(), m(0.0, 0.0, 0.0, 1)),
            ("ORG".to_string(), m(1.0, 1.0, 1.0, 1)),
            ("PER".to_string(), m(0.666_666_666_666_666_6, 1.0, 0.8, 2)),
        ];
        assert_eq!(r.per_type, expected);
        assert_eq!(r.metric("f1"), Some(r.f1));
        assert_eq!(r.metric("eval_loss"), Some(0.25));
        assert_eq!(r.metric("macro_f1"), None);
    }

    /// IOBES, and the lenient match of an entity whose last tag is `I-` instead of `E-`:
    ///
    /// ```python
    /// y_true = [["S-PER", "O", "B-LOC", "E-LOC"], ["B-ORG", "I-ORG", "E-ORG", "S-LOC"]]
    /// y_pred = [["S-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "E-ORG", "E-ORG", "S-PER"]]
    /// # precision 0.4, recall 0.5, f1 0.4444444444444445, accuracy 0.625
    /// # LOC: 1.0, 0.5, 0.6666666666666666, 2;  ORG: 0.0, 0.0, 0.0, 1;
    /// # PER: 0.5, 1.0, 0.6666666666666666, 1
    /// ```
    #[test]
    fn iobes_report_matches_seqeval() {
        let gold = sentences(&[
            &["S-PER", "O", "B-LOC", "E-LOC"],
            &["B-ORG", "I-ORG", "E-ORG", "S-LOC"],
        ]);
        let pred = sentences(&[
            &["S-PER", "O", "B-LOC", "I-LOC"],
            &["B-ORG", "E-ORG", "E-ORG", "S-PER"],
        ]);
        let r = token_report(&gold, &pred, 0.0);
        assert_eq!((r.precision, r.recall), (0.4, 0.5));
        assert_eq!(r.f1, 0.444_444_444_444_444_5);
        assert_eq!(r.accuracy, 0.625);
        let f1s: Vec<(&str, f64, u64)> = r
            .per_type
            .iter()
            .map(|(k, m)| (k.as_str(), m.f1, m.support))
            .collect();
        let two_thirds = 0.666_666_666_666_666_6;
        let expected = [
            ("LOC", two_thirds, 2),
            ("ORG", 0.0, 1),
            ("PER", two_thirds, 1),
        ];
        assert_eq!(f1s, expected);
    }

    #[test]
    fn sentences_do_not_run_together_and_counts_add() {
        // An entity at the end of one sentence and an `I-` of the same type at the start of
        // the next are two entities.
        let gold = sentences(&[&["O", "B-PER"], &["I-PER", "O"]]);
        let r = token_report(&gold, &gold, 0.0);
        assert_eq!(r.per_type[0].1.support, 2);
        assert_eq!((r.f1, r.accuracy), (1.0, 1.0));
        // Counting in two shares and merging gives the same report.
        let mut a = TokenCounts::default();
        a.add(&gold[0], &gold[0]);
        let mut b = TokenCounts::default();
        b.add(&gold[1], &gold[1]);
        a.merge(&b);
        assert_eq!(a.report(0.0), r);
    }

    #[test]
    fn empty_and_ragged_input_scores_zero_without_panicking() {
        let r = token_report(&[], &[], 1.5);
        assert_eq!(
            (r.precision, r.recall, r.f1, r.accuracy),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!((r.words, r.loss), (0, 1.5));
        assert!(r.per_type.is_empty());
        // A missing prediction is a wrong word and a missed entity.
        let gold = sentences(&[&["B-PER", "O"], &["B-LOC"]]);
        let pred = sentences(&[&["B-PER"]]);
        let r = token_report(&gold, &pred, 0.0);
        assert_eq!(r.accuracy, 1.0 / 3.0);
        assert_eq!((r.precision, r.recall), (1.0, 0.5));
    }

    #[test]
    fn json_round_trips() {
        let gold = sentences(&[&["B-PER", "I-PER", "O", "B-LOC"], &["B-ORG", "O", "I-MISC"]]);
        let pred = sentences(&[&["B-PER", "O", "O", "B-LOC"], &["B-ORG", "O", "B-LOC"]]);
        let r = token_report(&gold, &pred, 0.123_456_789_012_345_67);
        let j = r.to_json();
        assert_eq!(j["per_type"]["LOC"]["support"], 1);
        assert_eq!(j["words"], 7);
        // Through text too, as a checkpoint stores it: every float comes back exactly.
        let text = serde_json::to_string(&j).unwrap();
        let back = TokenReport::from_json(&serde_json::from_str(&text).unwrap());
        assert_eq!(back.as_ref(), Some(&r));
        let mut broken = j.clone();
        broken["per_type"]["LOC"]["support"] = json!("one");
        assert_eq!(TokenReport::from_json(&broken), None);
        let pretty = r.pretty();
        assert!(
            pretty.contains("MISC") && pretty.contains("7 words"),
            "{pretty}"
        );
        assert!(r.summary().contains("F1"));
    }

    #[test]
    fn eval_report_reads_a_token_report_back() {
        let gold = sentences(&[&["B-PER", "O"]]);
        let pred = sentences(&[&["B-PER", "B-PER"]]);
        let r = token_report(&gold, &pred, 0.5);
        let e = EvalReport::Token(r.clone());
        // The label names are not needed: the types come from the tags.
        let j = e.to_json(&["ignored".to_string()]);
        assert_eq!(j, r.to_json());
        assert_eq!(EvalReport::from_json(&j), Some(e.clone()));
        assert_eq!(e.loss(), 0.5);
        assert_eq!(e.metric("precision"), Some(0.5));
        assert_eq!(e.metric("macro_f1"), None);
        assert_eq!(e.pretty(&[]), r.pretty());
        assert_eq!(e.summary(), r.summary());
    }
}

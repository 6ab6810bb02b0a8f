//! Classification metrics: accuracy, per-class and macro precision / recall / F1, and the
//! confusion matrix, with scikit-learn's conventions (`precision_recall_fscore_support`,
//! `average="macro"`): a class never predicted has precision 0, never present recall 0, and
//! F1 is 0 when precision + recall is 0; macro averages weigh every class equally.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples of this class in the data.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClsReport {
    /// Mean cross-entropy over the examples.
    pub loss: f64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub examples: u64,
}

/// Metrics of `preds` against `labels` (both class indices < `num_classes`).
pub fn report(labels: &[usize], preds: &[usize], num_classes: usize, loss: f64) -> ClsReport {
    let mut confusion = vec![vec![0u64; num_classes]; num_classes];
    for (&y, &p) in labels.iter().zip(preds) {
        confusion[y][p] += 1;
    }
    report_from_confusion(confusion, loss)
}

/// Metrics from a square confusion matrix (`confusion[true][predicted]`): what [`report`]
/// computes, from counts that may have been summed over several ranks' shares of the data.
pub fn report_from_confusion(confusion: Vec<Vec<u64>>, loss: f64) -> ClsReport {
    let num_classes = confusion.len();
    let examples: u64 = confusion.iter().flatten().sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassMetrics> = (0..num_classes)
        .map(|c| {
            let tp = confusion[c][c];
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let support: u64 = confusion[c].iter().sum();
            let (p, r) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if p + r == 0.0 {
                0.0
            } else {
                2.0 * p * r / (p + r)
            };
            ClassMetrics {
                precision: p,
                recall: r,
                f1,
                support,
            }
        })
        .collect();
    let mean = |f: fn(&ClassMetrics) -> f64| {
        per_class.iter().map(f).sum::<f64>() / num_classes.max(1) as f64
    };
    let correct: u64 = (0..num_classes).map(|c| confusion[c][c]).sum();
    ClsReport {
        loss,
        accuracy: ratio(correct, examples),
        macro_precision: mean(|m| m.precision),
        macro_recall: mean(|m| m.recall),
        macro_f1: mean(|m| m.f1),
        per_class,
        confusion,
        examples,
    }
}

impl ClsReport {
    /// A metric by its config name (`eval_loss`, `accuracy`, `macro_f1`, ...).
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" => self.loss,
            "accuracy" => self.accuracy,
            "macro_f1" => self.macro_f1,
            "macro_precision" => self.macro_precision,
            "macro_recall" => self.macro_recall,
            _ => return None,
        })
    }

    /// The report [`ClsReport::to_json`] wrote, from its confusion matrix and loss.
    pub fn from_json(v: &Value) -> Option<Self> {
        let confusion: Vec<Vec<u64>> =
            serde_json::from_value(v.get("confusion_matrix")?.clone()).ok()?;
        let n = confusion.len();
        if n == 0 || confusion.iter().any(|row| row.len() != n) {
            return None;
        }
        Some(report_from_confusion(
            confusion,
            v.get("eval_loss")?.as_f64()?,
        ))
    }

    /// One JSON object (per-class entries keyed by label name).
    pub fn to_json(&self, names: &[String]) -> Value {
        let per_class: serde_json::Map<String, Value> = self
            .per_class
            .iter()
            .zip(names)
            .map(|(m, n)| {
                (
                    n.clone(),
                    json!({"precision": m.precision, "recall": m.recall, "f1": m.f1, "support": m.support}),
                )
            })
            .collect();
        json!({
            "eval_loss": self.loss,
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "examples": self.examples,
            "per_class": per_class,
            "labels": names,
            "confusion_matrix": self.confusion,
        })
    }

    /// A readable table: the summary line, per-class rows and the confusion matrix.
    pub fn pretty(&self, names: &[String]) -> String {
        let w = names.iter().map(String::len).max().unwrap_or(5).max(9);
        let mut s = format!(
            "loss {:.4} | accuracy {:.4} | macro P {:.4} R {:.4} F1 {:.4} | {} examples\n",
            self.loss,
            self.accuracy,
            self.macro_precision,
            self.macro_recall,
            self.macro_f1,
            self.examples
        );
        s += &format!("  {:w$}  precision  recall      f1  support\n", "class");
        for (m, n) in self.per_class.iter().zip(names) {
            s += &format!(
                "  {n:w$}  {:9.4}  {:6.4}  {:6.4}  {:7}\n",
                m.precision, m.recall, m.f1, m.support
            );
        }
        s += &format!("  confusion (rows true, columns predicted)\n  {:w$}", "");
        for n in names {
            s += &format!(" {:>8}", truncate(n, 8));
        }
        s.push('\n');
        for (row, n) in self.confusion.iter().zip(names) {
            s += &format!("  {n:w$}");
            for v in row {
                s += &format!(" {v:8}");
            }
            s.push('\n');
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_sklearn_values() {
        // y_true = [0,0,0,1,1,2], y_pred = [0,0,1,1,2,2]; class 0: P 1, R 2/3; class 1: P 1/2,
        // R 1/2; class 2: P 1/2, R 1 (sklearn gives the same).
        let r = report(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], 3, 0.5);
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let want = [f1(1.0, 2.0 / 3.0), 0.5, f1(0.5, 1.0)];
        for (m, w) in r.per_class.iter().zip(want) {
            assert!((m.f1 - w).abs() < 1e-12);
        }
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((r.macro_f1 - want.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert!((r.macro_precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.metric("eval_loss"), Some(0.5));
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let j = r.to_json(&names);
        assert_eq!(j["per_class"]["c"]["support"], 1);
        assert!(r.pretty(&names).contains("confusion"));
        // What a checkpoint recorded reads back as the same report.
        assert_eq!(ClsReport::from_json(&j), Some(r));
        assert_eq!(
            ClsReport::from_json(&serde_json::json!({"eval_loss": 1.0})),
            None
        );
    }

    #[test]
    fn absent_classes_score_zero_not_nan() {
        let r = report(&[0, 0], &[0, 0], 2, 0.0);
        assert_eq!(r.per_class[1].f1, 0.0);
        assert_eq!(r.macro_f1, 0.5);
    }
}

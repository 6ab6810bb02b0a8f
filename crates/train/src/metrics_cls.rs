//! Evaluation metrics of the three problem types of sequence classification.
//!
//! Single-label: accuracy, per-class and macro precision / recall / F1, the confusion
//! matrix, with scikit-learn's conventions (`precision_recall_fscore_support`,
//! `average="macro"`): a class never predicted has precision 0, never present recall 0, and
//! F1 is 0 when precision + recall is 0; macro averages weigh every class equally. And the
//! Matthews correlation coefficient (GLUE's CoLA metric; scikit-learn's `matthews_corrcoef`,
//! its multi-class form, 0 when undefined).
//! Multi-label: a class is predicted when its sigmoid is at least 0.5 (its logit ≥ 0); subset
//! accuracy (every class of the example right), micro (pooled counts) and macro (per-class
//! mean) precision / recall / F1, per-class metrics. Regression: MSE, RMSE, MAE and the
//! Pearson and Spearman correlations (GLUE's STS-B metrics; scipy's `pearsonr` and
//! `spearmanr`, ties ranked by their mean rank; 0 when either side is constant, where scipy
//! gives NaN). Token classification has its own report, [`TokenReport`]. Multiple choice:
//! accuracy (run_swag's metric) and the mean cross-entropy over the examples' choices,
//! [`ChoiceReport`].

use serde_json::{json, Value};

use crate::metrics_qa::QaReport;
use crate::metrics_tok::TokenReport;

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
    /// Matthews correlation coefficient, in [-1, 1].
    pub matthews_correlation: f64,
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
        matthews_correlation: matthews(&confusion),
        per_class,
        confusion,
        examples,
    }
}

/// scikit-learn's `matthews_corrcoef` from the confusion matrix (Gorodkin's multi-class
/// form): (c·s − Σ t_k p_k) / √((s² − Σ p_k²)(s² − Σ t_k²)), with t_k the examples of class k,
/// p_k its predictions, c the correct ones and s all; 0 when the denominator is 0 (one class
/// only, on either side).
fn matthews(confusion: &[Vec<u64>]) -> f64 {
    let n = confusion.len();
    let t: Vec<f64> = confusion
        .iter()
        .map(|r| r.iter().sum::<u64>() as f64)
        .collect();
    let p: Vec<f64> = (0..n)
        .map(|k| confusion.iter().map(|r| r[k]).sum::<u64>() as f64)
        .collect();
    let c: f64 = (0..n).map(|k| confusion[k][k] as f64).sum();
    let s: f64 = t.iter().sum();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_ytyp = c * s - dot(&t, &p);
    let cov_ypyp = s * s - dot(&p, &p);
    let cov_ytyt = s * s - dot(&t, &t);
    if cov_ypyp * cov_ytyt == 0.0 {
        return 0.0;
    }
    cov_ytyp / (cov_ytyt * cov_ypyp).sqrt()
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
            "matthews_correlation" => self.matthews_correlation,
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
        let per_class = per_class_json(&self.per_class, names);
        json!({
            "eval_loss": self.loss,
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "matthews_correlation": self.matthews_correlation,
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
            "loss {:.4} | accuracy {:.4} | macro P {:.4} R {:.4} F1 {:.4} | MCC {:.4} | {} \
             examples\n",
            self.loss,
            self.accuracy,
            self.macro_precision,
            self.macro_recall,
            self.macro_f1,
            self.matthews_correlation,
            self.examples
        );
        s += &per_class_table(&self.per_class, names, w);
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

/// Multiple choice: how often the highest-scored choice is the right one.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceReport {
    /// Mean cross-entropy over the examples (each over its choices' scores).
    pub loss: f64,
    pub accuracy: f64,
    pub correct: u64,
    pub examples: u64,
    /// Choices per example.
    pub choices: usize,
}

/// The multiple-choice metrics: `eval_loss` (lower is better) and `accuracy`.
pub const CHOICE_METRICS: &[(&str, bool)] = &[("eval_loss", false), ("accuracy", true)];

impl ChoiceReport {
    pub fn new(correct: u64, examples: u64, choices: usize, loss: f64) -> Self {
        let accuracy = match examples {
            0 => 0.0,
            n => correct as f64 / n as f64,
        };
        Self {
            loss,
            accuracy,
            correct,
            examples,
            choices,
        }
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" => self.loss,
            "accuracy" => self.accuracy,
            _ => return None,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "eval_loss": self.loss,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "examples": self.examples,
            "choices": self.choices,
        })
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self::new(
            v.get("correct")?.as_u64()?,
            v.get("examples")?.as_u64()?,
            v.get("choices")?.as_u64()? as usize,
            v.get("eval_loss")?.as_f64()?,
        ))
    }

    pub fn summary(&self) -> String {
        format!(
            "eval loss {:.4}, accuracy {:.4} ({} of {} examples, {} choices each)",
            self.loss, self.accuracy, self.correct, self.examples, self.choices
        )
    }
}

/// Reward modeling (TRL's `RewardTrainer`): how often the chosen sequence's reward beats the
/// rejected one's, and by how much.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardReport {
    /// Mean over the preferences of `−log σ(r_c − r_r − margin)` (plus the centering term).
    pub loss: f64,
    /// Share of preferences with `r_c > r_r` (TRL's `accuracy`).
    pub accuracy: f64,
    /// Mean of `r_c − r_r` (TRL's `margin`).
    pub margin: f64,
    /// Mean, least and greatest reward over both sequences of every preference (TRL's
    /// `mean_reward`, `min_reward`, `max_reward`).
    pub mean_reward: f64,
    pub min_reward: f64,
    pub max_reward: f64,
    pub examples: u64,
}

/// The reward-modeling metrics: `eval_loss` (lower is better), `accuracy` and `margin`.
pub const REWARD_METRICS: &[(&str, bool)] =
    &[("eval_loss", false), ("accuracy", true), ("margin", true)];

impl RewardReport {
    /// The report of each preference's (chosen, rejected) rewards, their margins and the
    /// centering coefficient `center` (TRL's `center_rewards_coefficient`; 0 = none).
    pub fn new(rewards: &[(f32, f32)], margins: &[f32], center: f64) -> Self {
        let n = rewards.len().max(1) as f64;
        let (mut loss, mut correct, mut margin, mut sum) = (0f64, 0u64, 0f64, 0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for (&(c, r), &m) in rewards.iter().zip(margins) {
            let (c, r) = (f64::from(c), f64::from(r));
            let d = c - r - f64::from(m);
            // −log σ(d) = ln(1 + e^−d), stable for any d.
            loss += (-d).max(0.0) + (-d.abs()).exp().ln_1p() + center * (c + r) * (c + r);
            correct += u64::from(c > r);
            margin += c - r;
            sum += c + r;
            min = min.min(c.min(r));
            max = max.max(c.max(r));
        }
        Self {
            loss: loss / n,
            accuracy: correct as f64 / n,
            margin: margin / n,
            mean_reward: sum / (2.0 * n),
            min_reward: if rewards.is_empty() { 0.0 } else { min },
            max_reward: if rewards.is_empty() { 0.0 } else { max },
            examples: rewards.len() as u64,
        }
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" => self.loss,
            "accuracy" => self.accuracy,
            "margin" => self.margin,
            _ => return None,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "eval_loss": self.loss,
            "accuracy": self.accuracy,
            "margin": self.margin,
            "mean_reward": self.mean_reward,
            "min_reward": self.min_reward,
            "max_reward": self.max_reward,
            "examples": self.examples,
        })
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k)?.as_f64();
        Some(Self {
            loss: f("eval_loss")?,
            accuracy: f("accuracy")?,
            margin: f("margin")?,
            mean_reward: f("mean_reward")?,
            min_reward: f("min_reward")?,
            max_reward: f("max_reward")?,
            examples: v.get("examples")?.as_u64()?,
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "eval loss {:.4}, accuracy {:.4}, margin {:.4}, mean reward {:.4} ({} preferences)",
            self.loss, self.accuracy, self.margin, self.mean_reward, self.examples
        )
    }
}

/// The metrics of one evaluation, by problem type.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalReport {
    Single(ClsReport),
    Multi(MultiReport),
    Regression(RegReport),
    Token(TokenReport),
    Qa(QaReport),
    Choice(ChoiceReport),
    Reward(RewardReport),
}

impl EvalReport {
    /// The mean loss the model trains on (cross-entropy, binary cross-entropy or MSE).
    pub fn loss(&self) -> f64 {
        match self {
            Self::Single(r) => r.loss,
            Self::Multi(r) => r.loss,
            Self::Regression(r) => r.mse,
            Self::Token(r) => r.loss,
            Self::Qa(r) => r.loss,
            Self::Choice(r) => r.loss,
            Self::Reward(r) => r.loss,
        }
    }

    /// A metric by its config name (`eval_loss` for every type).
    pub fn metric(&self, name: &str) -> Option<f64> {
        match self {
            Self::Single(r) => r.metric(name),
            Self::Multi(r) => r.metric(name),
            Self::Regression(r) => r.metric(name),
            Self::Token(r) => r.metric(name),
            Self::Qa(r) => r.metric(name),
            Self::Choice(r) => r.metric(name),
            Self::Reward(r) => r.metric(name),
        }
    }

    /// One JSON object; `names` labels the classes of a classification report (regression and
    /// token reports do not need them: a token report names its entity types itself).
    pub fn to_json(&self, names: &[String]) -> Value {
        match self {
            Self::Single(r) => r.to_json(names),
            Self::Multi(r) => r.to_json(names),
            Self::Regression(r) => r.to_json(),
            Self::Token(r) => r.to_json(),
            Self::Qa(r) => r.to_json(),
            Self::Choice(r) => r.to_json(),
            Self::Reward(r) => r.to_json(),
        }
    }

    /// What [`EvalReport::to_json`] wrote, read back (a checkpoint's best evaluation).
    pub fn from_json(v: &Value) -> Option<Self> {
        // `per_type` first: a token report also has an `accuracy`, as a single-label one does.
        if v.get("per_type").is_some() {
            return TokenReport::from_json(v).map(Self::Token);
        }
        if v.get("exact_match").is_some() {
            return QaReport::from_json(v).map(Self::Qa);
        }
        if v.get("pearson").is_some() {
            return RegReport::from_json(v).map(Self::Regression);
        }
        if v.get("mean_reward").is_some() {
            return RewardReport::from_json(v).map(Self::Reward);
        }
        if v.get("choices").is_some() {
            return ChoiceReport::from_json(v).map(Self::Choice);
        }
        if v.get("subset_accuracy").is_some() {
            return MultiReport::from_json(v).map(Self::Multi);
        }
        ClsReport::from_json(v).map(Self::Single)
    }

    pub fn pretty(&self, names: &[String]) -> String {
        match self {
            Self::Single(r) => r.pretty(names),
            Self::Multi(r) => r.pretty(names),
            Self::Regression(r) => r.pretty(),
            Self::Token(r) => r.pretty(),
            Self::Qa(r) => r.pretty(),
            Self::Choice(r) => r.summary(),
            Self::Reward(r) => r.summary(),
        }
    }

    /// One line of the headline figures.
    pub fn summary(&self) -> String {
        match self {
            Self::Single(r) => format!(
                "eval loss {:.4}, accuracy {:.4}, macro-F1 {:.4}",
                r.loss, r.accuracy, r.macro_f1
            ),
            Self::Multi(r) => format!(
                "eval loss {:.4}, subset accuracy {:.4}, micro-F1 {:.4}, macro-F1 {:.4}",
                r.loss, r.subset_accuracy, r.micro_f1, r.macro_f1
            ),
            Self::Regression(r) => format!(
                "eval loss (MSE) {:.4}, Pearson {:.4}, Spearman {:.4}",
                r.mse, r.pearson, r.spearman
            ),
            Self::Token(r) => r.summary(),
            Self::Qa(r) => r.summary(),
            Self::Choice(r) => r.summary(),
            Self::Reward(r) => r.summary(),
        }
    }
}

/// Multi-label metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiReport {
    /// Mean binary cross-entropy over examples × classes.
    pub loss: f64,
    /// Examples whose every class is right.
    pub subset_accuracy: f64,
    pub micro_precision: f64,
    pub micro_recall: f64,
    pub micro_f1: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Support: examples that have the class.
    pub per_class: Vec<ClassMetrics>,
    pub examples: u64,
}

/// Precision, recall and F1 from counts of true positives, predictions and actual positives;
/// 0 where a denominator is 0 (scikit-learn's and seqeval's `zero_division` default).
pub(crate) fn prf(tp: u64, predicted: u64, actual: u64) -> (f64, f64, f64) {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(tp, predicted), ratio(tp, actual));
    let f1 = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f1)
}

/// Multi-label metrics of `logits` (N rows of L) against `targets` (N rows of L flags).
pub fn multi_label_report(logits: &[Vec<f32>], targets: &[&[bool]]) -> MultiReport {
    let l = logits.first().map_or(0, Vec::len);
    let (mut tp, mut predicted, mut actual) = (vec![0u64; l], vec![0u64; l], vec![0u64; l]);
    let (mut exact, mut loss) = (0u64, 0f64);
    for (row, t) in logits.iter().zip(targets) {
        let mut all_right = true;
        for c in 0..l {
            let x = f64::from(row[c]);
            let (pred, y) = (x >= 0.0, t[c]);
            // max(x, 0) − x·y + ln(1 + e^−|x|): BCE with logits, stable for any x.
            loss += x.max(0.0) - if y { x } else { 0.0 } + (-x.abs()).exp().ln_1p();
            tp[c] += (pred && y) as u64;
            predicted[c] += pred as u64;
            actual[c] += y as u64;
            all_right &= pred == y;
        }
        exact += all_right as u64;
    }
    let n = logits.len() as u64;
    let per_class: Vec<ClassMetrics> = (0..l)
        .map(|c| {
            let (precision, recall, f1) = prf(tp[c], predicted[c], actual[c]);
            ClassMetrics {
                precision,
                recall,
                f1,
                support: actual[c],
            }
        })
        .collect();
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    let (micro_precision, micro_recall, micro_f1) = prf(sum(&tp), sum(&predicted), sum(&actual));
    let mean = |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / l.max(1) as f64;
    MultiReport {
        loss: loss / (n as f64 * l as f64).max(1.0),
        subset_accuracy: if n == 0 { 0.0 } else { exact as f64 / n as f64 },
        micro_precision,
        micro_recall,
        micro_f1,
        macro_precision: mean(|m| m.precision),
        macro_recall: mean(|m| m.recall),
        macro_f1: mean(|m| m.f1),
        per_class,
        examples: n,
    }
}

impl MultiReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" => self.loss,
            "subset_accuracy" => self.subset_accuracy,
            "micro_precision" => self.micro_precision,
            "micro_recall" => self.micro_recall,
            "micro_f1" => self.micro_f1,
            "macro_precision" => self.macro_precision,
            "macro_recall" => self.macro_recall,
            "macro_f1" => self.macro_f1,
            _ => return None,
        })
    }

    pub fn to_json(&self, names: &[String]) -> Value {
        let per_class = per_class_json(&self.per_class, names);
        json!({
            "eval_loss": self.loss,
            "subset_accuracy": self.subset_accuracy,
            "micro_precision": self.micro_precision,
            "micro_recall": self.micro_recall,
            "micro_f1": self.micro_f1,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "examples": self.examples,
            "per_class": per_class,
            "labels": names,
        })
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k)?.as_f64();
        let names: Vec<String> = serde_json::from_value(v.get("labels")?.clone()).ok()?;
        let per_class = names
            .iter()
            .map(|n| {
                let m = v.get("per_class")?.get(n)?;
                let g = |k: &str| m.get(k)?.as_f64();
                Some(ClassMetrics {
                    precision: g("precision")?,
                    recall: g("recall")?,
                    f1: g("f1")?,
                    support: m.get("support")?.as_u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            loss: f("eval_loss")?,
            subset_accuracy: f("subset_accuracy")?,
            micro_precision: f("micro_precision")?,
            micro_recall: f("micro_recall")?,
            micro_f1: f("micro_f1")?,
            macro_precision: f("macro_precision")?,
            macro_recall: f("macro_recall")?,
            macro_f1: f("macro_f1")?,
            per_class,
            examples: v.get("examples")?.as_u64()?,
        })
    }

    pub fn pretty(&self, names: &[String]) -> String {
        let w = names.iter().map(String::len).max().unwrap_or(5).max(9);
        let mut s = format!(
            "loss {:.4} | subset accuracy {:.4} | micro P {:.4} R {:.4} F1 {:.4} | macro F1 {:.4} | {} examples\n",
            self.loss,
            self.subset_accuracy,
            self.micro_precision,
            self.micro_recall,
            self.micro_f1,
            self.macro_f1,
            self.examples
        );
        s += &per_class_table(&self.per_class, names, w);
        s
    }
}

/// Regression metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RegReport {
    /// Mean squared error: the loss (`eval_loss`).
    pub mse: f64,
    pub rmse: f64,
    pub mae: f64,
    pub pearson: f64,
    pub spearman: f64,
    pub examples: u64,
}

/// Pearson's r of two series (0 when either is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0f64, 0f64, 0f64);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Ranks from 1, ties given the mean of the ranks they span (scipy's `rankdata`).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0f64; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = mean_rank;
        }
        i = j + 1;
    }
    r
}

/// Regression metrics of predictions against targets.
pub fn regression_report(preds: &[f64], targets: &[f64]) -> RegReport {
    let n = preds.len().max(1) as f64;
    let mse = preds
        .iter()
        .zip(targets)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / n;
    let mae = preds
        .iter()
        .zip(targets)
        .map(|(p, t)| (p - t).abs())
        .sum::<f64>()
        / n;
    RegReport {
        mse,
        rmse: mse.sqrt(),
        mae,
        pearson: pearson(preds, targets),
        spearman: pearson(&ranks(preds), &ranks(targets)),
        examples: preds.len() as u64,
    }
}

impl RegReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        Some(match name {
            "eval_loss" | "mse" => self.mse,
            "rmse" => self.rmse,
            "mae" => self.mae,
            "pearson" => self.pearson,
            "spearman" => self.spearman,
            _ => return None,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "eval_loss": self.mse,
            "mse": self.mse,
            "rmse": self.rmse,
            "mae": self.mae,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "examples": self.examples,
        })
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        let f = |k: &str| v.get(k)?.as_f64();
        Some(Self {
            mse: f("mse")?,
            rmse: f("rmse")?,
            mae: f("mae")?,
            pearson: f("pearson")?,
            spearman: f("spearman")?,
            examples: v.get("examples")?.as_u64()?,
        })
    }

    pub fn pretty(&self) -> String {
        format!(
            "loss (MSE) {:.4} | RMSE {:.4} | MAE {:.4} | Pearson {:.4} | Spearman {:.4} | {} examples\n",
            self.mse, self.rmse, self.mae, self.pearson, self.spearman, self.examples
        )
    }
}

/// Per-class metrics keyed by label name.
fn per_class_json(per_class: &[ClassMetrics], names: &[String]) -> serde_json::Map<String, Value> {
    per_class
        .iter()
        .zip(names)
        .map(|(m, n)| {
            (
                n.clone(),
                json!({"precision": m.precision, "recall": m.recall, "f1": m.f1, "support": m.support}),
            )
        })
        .collect()
}

/// Per-class metrics as rows of a table whose first column is `w` wide.
fn per_class_table(per_class: &[ClassMetrics], names: &[String], w: usize) -> String {
    let mut s = format!("  {:w$}  precision  recall      f1  support\n", "class");
    for (m, n) in per_class.iter().zip(names) {
        s += &format!(
            "  {n:w$}  {:9.4}  {:6.4}  {:6.4}  {:7}\n",
            m.precision, m.recall, m.f1, m.support
        );
    }
    s
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
    fn multi_label_metrics_match_sklearn() {
        // Y = [[1,0,1],[0,1,0],[1,1,0]], predicted [[1,0,0],[0,1,0],[1,0,1]] (logit >= 0).
        // sklearn: micro P = 3/4, R = 3/5; per class P (1, 1, 0), R (1, 1/2, 0); subset 1/3.
        let logits = vec![
            vec![2.0f32, -1.0, -0.5],
            vec![-3.0, 0.0, -2.0],
            vec![1.0, -4.0, 0.5],
        ];
        let y = [
            [true, false, true],
            [false, true, false],
            [true, true, false],
        ];
        let t: Vec<&[bool]> = y.iter().map(|r| &r[..]).collect();
        let r = multi_label_report(&logits, &t);
        assert!((r.subset_accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.micro_precision - 0.75).abs() < 1e-12);
        assert!((r.micro_recall - 0.6).abs() < 1e-12);
        assert!((r.micro_f1 - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
        let f1 = [1.0, 2.0 * 0.5 / 1.5, 0.0];
        assert!((r.macro_f1 - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert_eq!(r.per_class[1].support, 2);
        // The loss is torch's BCEWithLogitsLoss (mean): by hand, in f64.
        let mut want = 0.0;
        for (row, yr) in logits.iter().zip(&y) {
            for (&x, &yy) in row.iter().zip(yr) {
                let p = 1.0 / (1.0 + (-(x as f64)).exp());
                want -= if yy { p.ln() } else { (1.0 - p).ln() };
            }
        }
        assert!(
            (r.loss - want / 9.0).abs() < 1e-12,
            "{} vs {}",
            r.loss,
            want / 9.0
        );
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let back = EvalReport::from_json(&r.to_json(&names)).unwrap();
        assert_eq!(back, EvalReport::Multi(r));
    }

    #[test]
    fn regression_metrics_match_scipy() {
        // scipy: pearsonr([1,2,3,4,5],[2,1,4,3,5]) = 0.8, spearmanr = 0.8 (no ties); with ties
        // spearmanr([1,2,2,3],[1,3,2,4]) = 0.9486832980505138.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 5.0];
        let r = regression_report(&x, &y);
        assert!((r.pearson - 0.8).abs() < 1e-12);
        assert!((r.spearman - 0.8).abs() < 1e-12);
        assert!((r.mse - 0.8).abs() < 1e-12 && (r.mae - 0.8).abs() < 1e-12);
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), [1.0, 2.5, 2.5, 4.0]);
        let tied = regression_report(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((tied.spearman - 0.948_683_298_050_513_8).abs() < 1e-12);
        // A constant prediction has no correlation: 0, not NaN.
        assert_eq!(regression_report(&[1.0, 1.0], &[0.0, 2.0]).pearson, 0.0);
        let back = EvalReport::from_json(&r.to_json()).unwrap();
        assert_eq!(back, EvalReport::Regression(r));
    }

    #[test]
    fn absent_classes_score_zero_not_nan() {
        let r = report(&[0, 0], &[0, 0], 2, 0.0);
        assert_eq!(r.per_class[1].f1, 0.0);
        assert_eq!(r.macro_f1, 0.5);
        // sklearn's matthews_corrcoef is 0 where it is undefined: one class on either side.
        assert_eq!(r.matthews_correlation, 0.0);
        assert_eq!(
            report(&[0, 1, 0, 1], &[0, 0, 0, 0], 2, 0.0).matthews_correlation,
            0.0
        );
    }

    #[test]
    fn matthews_correlation_matches_sklearn() {
        // sklearn.metrics.matthews_corrcoef (1.9.1) on the same labels.
        for (y, p, want) in [
            (
                &[0, 0, 0, 1, 1, 2][..],
                &[0, 0, 1, 1, 2, 2][..],
                0.522_232_967_867_093_5,
            ),
            (
                &[1, 0, 1, 1, 0, 0, 1][..],
                &[1, 0, 0, 1, 0, 1, 1][..],
                0.416_666_666_666_666_7,
            ),
        ] {
            let r = report(y, p, 3, 0.0);
            assert!(
                (r.matthews_correlation - want).abs() < 1e-12,
                "{}",
                r.matthews_correlation
            );
            assert_eq!(
                r.metric("matthews_correlation"),
                Some(r.matthews_correlation)
            );
        }
        // Perfect and inverted binary predictions.
        assert_eq!(
            report(&[0, 1, 1], &[0, 1, 1], 2, 0.0).matthews_correlation,
            1.0
        );
        assert_eq!(
            report(&[0, 1, 0, 1], &[1, 0, 1, 0], 2, 0.0).matthews_correlation,
            -1.0
        );
    }
}

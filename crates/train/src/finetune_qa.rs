//! Extractive question answering in the fine-tuning loop (`data.problem_type =
//! "question_answering"`, transformers' run_qa.py with `BertForQuestionAnswering`).
//!
//! A question and its context are read in windows of `max_length` tokens that overlap by
//! `doc_stride` (crates/data/src/qa.rs). Each window is one row of the loop: an [`Encoded`]
//! whose target is the answer's token span ([`Target::Span`], `(0, 0)` where the answer is not
//! wholly inside the window), trained on the mean over windows of the start and end
//! cross-entropies. Evaluation turns every window's start and end logits back into text
//! (utils_qa's n-best search, crate::metrics_qa) and scores one answer per question with the
//! `squad` metric's exact match and F1.
//!
//! With `data.version_2_with_negative` (run_qa's `--version_2_with_negative`, SQuAD 2.0) a
//! question may have no answer in its context: its windows are trained towards `[CLS]`, the
//! search weighs the null answer against the best span (`data.null_score_diff_threshold`), and
//! the `squad_v2` metric scores the answers, "" being right for an unanswerable question.

use crate::finetune_config::FtDataSection;
use crate::metrics_cls::EvalReport;
use crate::metrics_qa::{
    best_answers, best_answers_v2, span_loss, FeatureLogits, QaChoice, QaReport,
};
use crate::{Error, Result};
use lantern_data::labelled::{self, Encoded, Target};
use lantern_data::qa::{example_place, qa_features, read_qa_with, QaExample, QaFeature};
use std::path::Path;
use tokenizers::Tokenizer;

/// How questions are windowed and answers picked (run_qa's flags of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QaOptions {
    pub max_length: usize,
    pub doc_stride: usize,
    pub n_best: usize,
    pub max_answer_length: usize,
    /// SQuAD 2.0: questions may be unanswerable (an empty answer list or `is_impossible`).
    pub version_2_with_negative: bool,
    /// SQuAD 2.0: the answer is null when the null score exceeds the best span's by more.
    pub null_score_diff_threshold: f64,
}

impl QaOptions {
    pub fn of(d: &FtDataSection) -> Self {
        Self {
            max_length: d.max_length,
            doc_stride: d.doc_stride,
            n_best: d.n_best,
            max_answer_length: d.max_answer_length,
            version_2_with_negative: d.version_2_with_negative,
            null_score_diff_threshold: d.null_score_diff_threshold,
        }
    }
}

/// Questions and their windows. `features` come in example order (every window of example 0,
/// then of example 1, ...), as [`qa_features`] makes them.
#[derive(Debug, Clone)]
pub struct QaData {
    pub examples: Vec<QaExample>,
    pub features: Vec<QaFeature>,
}

impl QaData {
    /// Windows `examples` read from `path` (named in errors). With `need_answers` (training
    /// and evaluation data), every question must be labelled: have an answer, or with
    /// `version_2_with_negative` be marked unanswerable ([`QaExample::unanswerable`]).
    pub fn new(
        tokenizer: &Tokenizer,
        examples: Vec<QaExample>,
        opts: &QaOptions,
        path: &Path,
        need_answers: bool,
    ) -> Result<Self> {
        if need_answers {
            if let Some(e) = examples
                .iter()
                .find(|e| e.answers.is_empty() && !e.unanswerable)
            {
                let place = example_place(path, e);
                let why = if opts.version_2_with_negative {
                    "its \"answers\" are absent or null, which leaves it unlabelled; an \
                     unanswerable question has an empty answer list ({\"text\": [], \
                     \"answer_start\": []} in JSONL, [] in SQuAD JSON) or \"is_impossible\": true"
                } else {
                    "every training and evaluation question needs one (SQuAD 2.0's \
                     unanswerable questions: set data.version_2_with_negative = true, or pass \
                     --version-2-with-negative to lantern eval)"
                };
                return Err(Error::Config(format!(
                    "{}: {place}: the question has no answer; {why}",
                    path.display()
                )));
            }
        }
        let features = qa_features(tokenizer, &examples, opts.max_length, opts.doc_stride, path)?;
        Ok(Self { examples, features })
    }

    /// Reads ([`read_qa_with`], SQuAD 2.0 with `opts.version_2_with_negative`) and windows a
    /// file.
    pub fn load(
        tokenizer: &Tokenizer,
        path: &Path,
        opts: &QaOptions,
        need_answers: bool,
    ) -> Result<Self> {
        let examples = read_qa_with(path, opts.version_2_with_negative)?;
        Self::new(tokenizer, examples, opts, path, need_answers)
    }

    /// The windows as rows of the loop: ids, token types and, for answered questions, the
    /// answer's span; `line` is the question's.
    pub fn encoded(&self) -> Vec<Encoded> {
        self.features
            .iter()
            .map(|f| Encoded {
                ids: f.ids.clone(),
                type_ids: f.type_ids.clone(),
                label: f.span.map(|(s, e)| Target::Span(s, e)),
                line: self.examples[f.example].line,
                word_ids: Vec::new(),
                choice_lens: Vec::new(),
            })
            .collect()
    }

    /// Every question's answer and n-best list (utils_qa's choice, SQuAD 2.0's with
    /// `opts.version_2_with_negative`), from the windows' logits laid out as [`split_logits`]
    /// reads them.
    pub fn answers(&self, logits: &[Vec<f32>], opts: &QaOptions) -> Result<Vec<QaChoice>> {
        if logits.len() != self.features.len() {
            return Err(Error::Config(format!(
                "{} windows but {} rows of logits",
                self.features.len(),
                logits.len()
            )));
        }
        let mut per_example: Vec<Vec<FeatureLogits<'_>>> = vec![Vec::new(); self.examples.len()];
        for (f, row) in self.features.iter().zip(logits) {
            let (start, end) = split_logits(row);
            per_example[f.example].push(FeatureLogits {
                start,
                end,
                offsets: &f.offsets,
            });
        }
        Ok(self
            .examples
            .iter()
            .zip(&per_example)
            .map(|(e, windows)| {
                let (n, len) = (opts.n_best, opts.max_answer_length);
                if opts.version_2_with_negative {
                    best_answers_v2(&e.context, windows, n, len, opts.null_score_diff_threshold)
                } else {
                    QaChoice {
                        n_best: best_answers(&e.context, windows, n, len),
                        answer: 0,
                        null: None,
                    }
                }
            })
            .collect())
    }

    /// Loss and the `squad` metric (`squad_v2` with `opts.version_2_with_negative`): the mean
    /// over windows of the start and end cross-entropies (as the model trains), and each
    /// question's answer against its answers (none for an unanswerable question).
    pub fn evaluate(&self, logits: &[Vec<f32>], opts: &QaOptions) -> Result<EvalReport> {
        let answers = self.answers(logits, opts)?;
        let mut loss = 0f64;
        for (f, row) in self.features.iter().zip(logits) {
            let Some(span) = f.span else {
                return Err(Error::Config(format!(
                    "question {:?} has no answer to evaluate against",
                    self.examples[f.example].id
                )));
            };
            let (start, end) = split_logits(row);
            loss += span_loss(start, end, span);
        }
        let loss = loss / self.features.len().max(1) as f64;
        let predictions: Vec<String> = answers.iter().map(|a| a.text().to_string()).collect();
        let golds: Vec<Vec<String>> = self
            .examples
            .iter()
            .map(|e| e.answers.iter().map(|a| a.text.clone()).collect())
            .collect();
        Ok(EvalReport::Qa(match opts.version_2_with_negative {
            true => QaReport::new_v2(loss, &predictions, &golds),
            false => QaReport::new(loss, &predictions, &golds),
        }))
    }

    /// Splits the data by question, `fraction` of the questions held out (seeded, as the
    /// classification data): returns (kept, held out). A question's windows stay together.
    pub fn split(
        tokenizer: &Tokenizer,
        examples: Vec<QaExample>,
        (fraction, seed): (f64, u64),
        opts: &QaOptions,
        path: &Path,
    ) -> Result<(Self, Self)> {
        let (ti, vi) = labelled::split_indices(examples.len(), fraction, seed)?;
        let pick = |idx: &[usize]| idx.iter().map(|&i| examples[i].clone()).collect();
        Ok((
            Self::new(tokenizer, pick(&ti), opts, path, true)?,
            Self::new(tokenizer, pick(&vi), opts, path, true)?,
        ))
    }
}

/// A window's logits as the loop lays them out, (2·T): its T start logits, then its T end
/// logits.
pub fn split_logits(row: &[f32]) -> (&[f32], &[f32]) {
    row.split_at(row.len() / 2)
}

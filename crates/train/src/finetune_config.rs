//! The config of a fine-tuning run (`lantern finetune --config X.toml`): a BERT encoder
//! (pretrained, or a fresh one for tests), labelled data, the optimisation recipe and early
//! stopping. Typed, `deny_unknown_fields`; `--set section.key=value` overrides go through the
//! same checks; the resolved config is written into the run folder.
//!
//! Defaults are transformers `Trainer`'s (AdamW β = (0.9, 0.999), ε = 1e-8, linear decay,
//! gradient clipping at 1.0) with weight decay 0.01, the usual BERT fine-tuning value.

use crate::config::{deserialize_config, AdamWDefaults, OptimizerKeys, ScheduleKind};
use crate::precision::Precision;
use crate::{Error, Result};
use lantern_data::labelled::ProblemType;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    pub run: FtRunSection,
    pub model: FtModelSection,
    pub data: FtDataSection,
    #[serde(default)]
    pub train: FtTrainSection,
    #[serde(default)]
    pub early_stopping: EarlyStoppingSection,
    /// LoRA (peft's `LoraConfig`): train low-rank adapters of some linear layers and the task
    /// head, the rest of the pretrained model frozen. Absent = full fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::lora::LoraSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtRunSection {
    pub dir: PathBuf,
    /// Also write the metrics as TensorBoard event files in `<dir>/tensorboard`
    /// (`tensorboard --logdir <dir>`; transformers' `report_to="tensorboard"`).
    #[serde(default)]
    pub tensorboard: bool,
}

/// Either `init_from` (a Hugging Face BERT, RoBERTa, XLM-RoBERTa, DistilBERT or ELECTRA
/// folder: `BertModel`, `BertForMaskedLM`, `RobertaForMaskedLM`, `ElectraForPreTraining`, a
/// classifier, ..., or one of our fine-tuning checkpoints) or, without it, a fresh BERT
/// encoder of the given sizes (the vocabulary is the tokenizer's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtModelSection {
    pub init_from: Option<PathBuf>,
    /// Defaults to `<init_from>/tokenizer.json`.
    pub tokenizer: Option<PathBuf>,
    pub hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    /// Override the checkpoint's dropout rates.
    pub hidden_dropout_prob: Option<f64>,
    pub attention_probs_dropout_prob: Option<f64>,
    pub classifier_dropout: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtDataSection {
    /// JSONL, CSV or TSV with `text`, optional `text_pair`, and `label` (other names through
    /// the `*_column` keys); for token classification, JSONL with `tokens` and `tags` (or
    /// `ner_tags`) or a CoNLL file; for question answering, JSONL in the layout of Hugging Face
    /// datasets' `squad` (`id`, `question`, `context`, `answers`) or an official SQuAD v1.1
    /// `.json` file (`squad_v2` and v2.0 with `version_2_with_negative`).
    pub train: PathBuf,
    /// The field (JSON key, CSV/TSV header) holding a text record's text (transformers'
    /// run_classification `--text_column_names`; GLUE: `sentence`, `sentence1`, `question`).
    #[serde(default = "d_text_column")]
    pub text_column: String,
    /// The field holding the optional second text of a pair (GLUE: `sentence2`).
    #[serde(default = "d_text_pair_column")]
    pub text_pair_column: String,
    /// The field holding the label (`--label_column_name`).
    #[serde(default = "d_label_column")]
    pub label_column: String,
    /// A separate validation file; without it `val_fraction` of `train` is held out (seeded).
    pub validation: Option<PathBuf>,
    #[serde(default = "d_val_fraction")]
    pub val_fraction: f64,
    /// A labelled test file, scored once with the best model at the end of the run
    /// (transformers' `do_predict`): printed, a `"test"` record in metrics.jsonl and
    /// `<run.dir>/test_metrics.json`. Read and checked before training starts.
    pub test: Option<PathBuf>,
    /// Truncation length in tokens, special tokens included.
    #[serde(default = "d_max_length")]
    pub max_length: usize,
    /// Label names in class-index order; default: the training labels, sorted.
    pub labels: Option<Vec<String>>,
    /// `single_label_classification` (default: one class per example),
    /// `multi_label_classification` (a list of classes per example) or `regression` (a
    /// number per example): transformers' `problem_type` of `BertForSequenceClassification`;
    /// or `token_classification` (a tag per word: `BertForTokenClassification`, NER); or
    /// `question_answering` (an answer span in a context: `BertForQuestionAnswering`, SQuAD);
    /// or `multiple_choice` (the right one of an example's choices: `BertForMultipleChoice`,
    /// SWAG).
    #[serde(default)]
    pub problem_type: ProblemType,
    /// Question answering: a context longer than `max_length` (with its question) is read in
    /// windows that overlap by this many tokens (run_qa's `doc_stride`).
    #[serde(default = "d_doc_stride")]
    pub doc_stride: usize,
    /// Question answering: the longest answer predicted, in tokens (run_qa's
    /// `max_answer_length`).
    #[serde(default = "d_max_answer_length")]
    pub max_answer_length: usize,
    /// Question answering: the start and end candidates considered per window, and the
    /// answers kept per question (run_qa's `n_best_size`).
    #[serde(default = "d_n_best")]
    pub n_best: usize,
    /// Question answering: some questions have no answer in their context (SQuAD 2.0; run_qa's
    /// `--version_2_with_negative`). An empty answer list or `"is_impossible": true` marks
    /// one; it trains towards `[CLS]`, the answer search may answer "" (the null answer), and
    /// evaluation is the `squad_v2` metric. Without it an empty answer list is no answer (an
    /// unlabelled question, refused in training and evaluation data).
    #[serde(default)]
    pub version_2_with_negative: bool,
    /// Question answering with `version_2_with_negative`: the answer is null ("") when the
    /// null score minus the best span's score is above this (run_qa's
    /// `--null_score_diff_threshold`; default 0).
    #[serde(default)]
    pub null_score_diff_threshold: f64,
    /// Token classification: train on every sub-token of a word, not only its first
    /// (transformers' run_ner `--label_all_tokens`; a `B-X` word's later sub-tokens learn
    /// `I-X`). Evaluation and prediction still read each word's first sub-token.
    #[serde(default)]
    pub label_all_tokens: bool,
    /// Reward modeling: the weight of `mean((r_c + r_r)²)` added to the loss, which keeps the
    /// rewards centred on 0 (TRL's `center_rewards_coefficient`; default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_rewards_coefficient: Option<f64>,
    /// Reward modeling: train without dropout, the model's and the classifier's (TRL's
    /// `disable_dropout`; default true). The exported config keeps the rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_dropout: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtTrainSection {
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Train this many optimizer steps instead of `epochs` (transformers' `max_steps`): the
    /// epochs repeat, the last one cut short, and an evaluation ends the run.
    pub max_steps: Option<u64>,
    /// Examples per micro-batch (transformers' `per_device_train_batch_size`).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step (transformers' `gradient_accumulation_steps`): one step
    /// sees `batch_size × grad_accum` examples, and its loss is the mean over all of them, so
    /// it is exactly the step of one batch that large (up to float rounding).
    #[serde(default = "d_accum")]
    pub grad_accum: usize,
    /// `fp32` (default), `bf16` or `fp16`: forward and backward on a working copy in that
    /// dtype; master weights and the optimizer's state stay fp32 (transformers' `bf16=True` /
    /// `fp16=True`); fp16 scales the loss as PyTorch's `GradScaler` does, with its defaults,
    /// and skips the steps whose gradients overflow.
    #[serde(default)]
    pub precision: Precision,
    #[serde(default = "d_eval_batch")]
    pub eval_batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// `optimizer` (adamw, the default, sgd, adagrad or rmsprop: transformers' `optim`) and its
    /// keys, as for pretraining (docs/training.md, "Optimizers"); AdamW's β2 and the weight
    /// decay default to transformers' 0.999 and BERT's usual 0.01.
    #[serde(flatten)]
    pub optim: OptimizerKeys<FineTuning>,
    /// Warmup as a fraction of all optimizer steps (transformers' `warmup_ratio`).
    #[serde(default)]
    pub warmup_ratio: f64,
    /// Warmup in optimizer steps (transformers' `warmup_steps`; takes the place of
    /// `warmup_ratio`).
    pub warmup_steps: Option<u64>,
    /// constant, linear (the default), cosine, polynomial (to 1e-7, transformers' lr_end),
    /// cosine_with_restarts, inverse_sqrt (`wsd` needs a pretraining run's decay length).
    #[serde(default = "d_schedule")]
    pub schedule: ScheduleKind,
    /// Exponent of the `polynomial` schedule (transformers' `power`).
    #[serde(default = "crate::config::d_poly_power")]
    pub poly_power: f64,
    /// Hard restarts of `cosine_with_restarts` (transformers' `num_cycles`).
    #[serde(default = "crate::config::d_num_cycles")]
    pub num_cycles: u64,
    /// Time scale of `inverse_sqrt`; defaults to the warmup steps, or 10,000 without warmup.
    pub timescale: Option<u64>,
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    /// Label smoothing of the single-label cross-entropy (transformers'
    /// `label_smoothing_factor`, torch's `CrossEntropyLoss(label_smoothing=)`): the target puts
    /// 1 − ε on the label and spreads ε over every class. It applies to the evaluations'
    /// `eval_loss` of the run too, as in transformers' Trainer.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Keep only each encoder layer's input in the forward pass and recompute the layer in the
    /// backward (transformers' `gradient_checkpointing`): far less activation memory, about a
    /// third more compute, the same gradients (`crate::recompute`).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// NEFTune (transformers' `neftune_noise_alpha`): while training, noise uniform in
    /// ±α/√(T·C) added to the token embeddings, where transformers' hook adds it; evaluation
    /// and prediction see none. Off (unset or 0) by default.
    pub neftune_noise_alpha: Option<f64>,
    /// transformers' `group_by_length`: each epoch's shuffled order is regrouped so that the
    /// examples of a step have similar lengths (`labelled::length_grouped`), and padding
    /// each micro-batch to its longest costs less.
    #[serde(default)]
    pub group_by_length: bool,
    /// Seeds the split, the head's initialisation, the data order and dropout.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Also evaluate every N optimizer steps (besides the end of every epoch).
    pub eval_every_steps: Option<u64>,
    /// "auto" (default: the GPU when this build has CUDA and the driver sees one, else the
    /// CPU), "cpu", "cuda" (each rank's own GPU under the launcher) or "cuda:N".
    #[serde(default = "d_device")]
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingSection {
    /// The metric that picks the best checkpoint: `eval_loss` (lower is better) or one of
    /// [`metrics_for`] the problem type (single-label: `accuracy`, `macro_f1`, ...;
    /// multi-label: `micro_f1`, `subset_accuracy`, ...; regression: `pearson`, `mse`, ...;
    /// token classification: seqeval's entity-level `f1`, `precision`, `recall`, and
    /// `accuracy` over words; question answering: `f1`, `exact_match`, and with
    /// `data.version_2_with_negative` also the squad_v2 names `exact`, `HasAns_f1`, ...).
    #[serde(default = "d_metric")]
    pub metric: String,
    /// Stop after this many evaluations in a row without improvement; none = never stop early.
    pub patience: Option<usize>,
    /// An evaluation counts as an improvement only if it beats the best by more than this
    /// (transformers' `early_stopping_threshold`; default 0). Any better value still becomes
    /// the best checkpoint.
    #[serde(default)]
    pub threshold: f64,
}

fn d_val_fraction() -> f64 {
    0.1
}
fn d_max_length() -> usize {
    128
}
fn d_doc_stride() -> usize {
    128
}
fn d_max_answer_length() -> usize {
    30
}
fn d_n_best() -> usize {
    20
}
fn d_epochs() -> usize {
    3
}
fn d_batch() -> usize {
    32
}
fn d_accum() -> usize {
    1
}
fn d_eval_batch() -> usize {
    64
}
fn d_lr() -> f64 {
    5e-5
}
fn d_text_column() -> String {
    "text".into()
}
fn d_text_pair_column() -> String {
    "text_pair".into()
}
fn d_label_column() -> String {
    "label".into()
}

impl FtDataSection {
    /// The fields a text record is read from.
    pub fn columns(&self) -> lantern_data::labelled::Columns {
        lantern_data::labelled::Columns {
            text: self.text_column.clone(),
            text_pair: self.text_pair_column.clone(),
            label: self.label_column.clone(),
        }
    }
}

fn d_schedule() -> ScheduleKind {
    ScheduleKind::Linear
}
fn d_clip() -> f64 {
    1.0
}
fn d_seed() -> u64 {
    42
}
fn d_device() -> String {
    "auto".into()
}
fn d_metric() -> String {
    "eval_loss".into()
}

/// `lantern finetune`'s AdamW defaults: transformers' Trainer with BERT's usual weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FineTuning;

impl AdamWDefaults for FineTuning {
    fn beta2() -> f64 {
        0.999
    }
    fn weight_decay() -> f64 {
        0.01
    }
}

impl Default for FtTrainSection {
    fn default() -> Self {
        toml::from_str("").expect("every train key has a default")
    }
}

impl Default for EarlyStoppingSection {
    fn default() -> Self {
        Self {
            metric: d_metric(),
            patience: None,
            threshold: 0.0,
        }
    }
}

/// The early-stopping metrics of a problem type, and whether higher is better.
pub fn metrics_for(problem: ProblemType) -> &'static [(&'static str, bool)] {
    match problem {
        ProblemType::SingleLabelClassification => &[
            ("eval_loss", false),
            ("accuracy", true),
            ("macro_f1", true),
            ("macro_precision", true),
            ("macro_recall", true),
            ("matthews_correlation", true),
        ],
        ProblemType::MultiLabelClassification => &[
            ("eval_loss", false),
            ("subset_accuracy", true),
            ("micro_f1", true),
            ("micro_precision", true),
            ("micro_recall", true),
            ("macro_f1", true),
            ("macro_precision", true),
            ("macro_recall", true),
        ],
        ProblemType::TokenClassification => crate::metrics_tok::TOKEN_METRICS,
        ProblemType::Regression => &[
            ("eval_loss", false),
            ("mse", false),
            ("rmse", false),
            ("mae", false),
            ("pearson", true),
            ("spearman", true),
        ],
        // The `squad` metric's, in percent.
        ProblemType::QuestionAnswering => crate::metrics_qa::QA_METRICS,
        ProblemType::MultipleChoice => crate::metrics_cls::CHOICE_METRICS,
        ProblemType::RewardModeling => crate::metrics_cls::REWARD_METRICS,
    }
}

/// The early-stopping metrics of a run's data: [`metrics_for`] its problem type, or for
/// question answering with `version_2_with_negative` the `squad_v2` metric's names.
pub fn metrics_for_data(d: &FtDataSection) -> &'static [(&'static str, bool)] {
    match (d.problem_type, d.version_2_with_negative) {
        (ProblemType::QuestionAnswering, true) => crate::metrics_qa::QA_V2_METRICS,
        (problem, _) => metrics_for(problem),
    }
}

/// Applies `a.b=value` to a TOML table; the value is parsed as TOML (a bare word is a string).
fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let (key, value) = o
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set {o:?}: expected SECTION.KEY=VALUE")))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.len() != 2 {
        return Err(Error::Config(format!(
            "--set {o:?}: the key must be SECTION.KEY"
        )));
    }
    let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let section = table
        .entry(parts[0].to_string())
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let section = section
        .as_table_mut()
        .ok_or_else(|| Error::Config(format!("--set {o:?}: {} is not a section", parts[0])))?;
    section.insert(parts[1].to_string(), v);
    Ok(())
}

impl FinetuneConfig {
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        crate::lora::fill_from_adapter(&mut table)
            .map_err(|m| Error::Config(format!("{origin}: {m}")))?;
        let cfg: FinetuneConfig = deserialize_config::<_, FtTrainSection>(table, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("{origin}: {m}")));
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.grad_accum == 0 || t.eval_batch_size == 0 {
            return bad(
                "train.epochs, train.batch_size, train.grad_accum and train.eval_batch_size must \
                 be at least 1"
                    .into(),
            );
        }
        if !(t.lr.is_finite() && t.lr >= 0.0) {
            return bad("train.lr must be a finite, non-negative number".into());
        }
        if let Some(a) = t.neftune_noise_alpha {
            if !(a.is_finite() && a >= 0.0) {
                return bad(format!(
                    "train.neftune_noise_alpha must be a finite, non-negative number, got {a}"
                ));
            }
        }
        if let Err(m) = crate::schedule::check_shape(
            t.schedule,
            (t.lr, crate::schedule::finetune_end_lr(t.schedule)),
            (t.poly_power, t.num_cycles, t.timescale),
            "train",
        ) {
            return bad(m);
        }
        if !(0.0..1.0).contains(&t.warmup_ratio) {
            return bad("train.warmup_ratio must be in [0, 1)".into());
        }
        if let Err(m) = t.optim.check() {
            return bad(m);
        }
        if self.data.max_length < 2 {
            return bad("data.max_length must be at least 2 ([CLS] and [SEP])".into());
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return bad("train.label_smoothing must be in [0, 1)".into());
        }
        if t.label_smoothing > 0.0
            && !matches!(
                self.data.problem_type,
                ProblemType::SingleLabelClassification
                    | ProblemType::TokenClassification
                    | ProblemType::MultipleChoice
            )
        {
            return bad(format!(
                "train.label_smoothing applies to single_label_classification, \
                 token_classification and multiple_choice, not {}",
                self.data.problem_type
            ));
        }
        if self.data.label_all_tokens && self.data.problem_type != ProblemType::TokenClassification
        {
            return bad(format!(
                "data.label_all_tokens applies to token_classification, not {}",
                self.data.problem_type
            ));
        }
        let d = &self.data;
        if d.version_2_with_negative && d.problem_type != ProblemType::QuestionAnswering {
            return bad(format!(
                "data.version_2_with_negative applies to question_answering, not {}",
                d.problem_type
            ));
        }
        if d.null_score_diff_threshold.is_nan() {
            return bad("data.null_score_diff_threshold must be a number, not NaN".into());
        }
        if d.null_score_diff_threshold != 0.0 && !d.version_2_with_negative {
            return bad("data.null_score_diff_threshold applies only with \
                 data.version_2_with_negative = true (questions that may have no answer)"
                .into());
        }
        if d.problem_type == ProblemType::QuestionAnswering {
            if d.doc_stride >= d.max_length {
                return bad(format!(
                    "data.doc_stride {} must be smaller than data.max_length {}",
                    d.doc_stride, d.max_length
                ));
            }
            if d.n_best == 0 || d.max_answer_length == 0 {
                return bad("data.n_best and data.max_answer_length must be at least 1".into());
            }
            if d.labels.is_some() {
                return bad("data.labels names classes; question_answering has none".into());
            }
        }
        if d.problem_type != ProblemType::RewardModeling {
            let set = [
                (
                    "center_rewards_coefficient",
                    d.center_rewards_coefficient.is_some(),
                ),
                ("disable_dropout", d.disable_dropout.is_some()),
            ];
            if let Some((k, _)) = set.iter().find(|(_, s)| *s) {
                return bad(format!(
                    "data.{k} applies to reward_modeling, not {}",
                    d.problem_type
                ));
            }
        }
        if let Some(c) = d.center_rewards_coefficient {
            if !(c.is_finite() && c >= 0.0) {
                return bad(format!(
                    "data.center_rewards_coefficient must be a number of 0 or more, not {c}"
                ));
            }
        }
        if d.problem_type == ProblemType::RewardModeling && d.labels.is_some() {
            return bad(
                "data.labels names classes; reward_modeling has one output, the reward".into(),
            );
        }
        if d.problem_type == ProblemType::MultipleChoice && d.labels.is_some() {
            return bad(
                "data.labels names classes; multiple_choice has none (a label is the index of \
                 the right choice)"
                    .into(),
            );
        }
        if t.max_steps == Some(0) {
            return bad("train.max_steps must be at least 1".into());
        }
        if t.eval_every_steps == Some(0) {
            return bad("train.eval_every_steps must be at least 1".into());
        }
        let metrics = metrics_for_data(&self.data);
        if !metrics
            .iter()
            .any(|(m, _)| *m == self.early_stopping.metric)
        {
            let known: Vec<&str> = metrics.iter().map(|(m, _)| *m).collect();
            let v2 = match self.data.version_2_with_negative {
                true => ", data.version_2_with_negative",
                false => "",
            };
            return bad(format!(
                "early_stopping.metric {:?} is not one of {known:?} (data.problem_type {}{v2})",
                self.early_stopping.metric, self.data.problem_type
            ));
        }
        let th = self.early_stopping.threshold;
        if !(th.is_finite() && th >= 0.0) {
            return bad(format!(
                "early_stopping.threshold must be a finite, non-negative number, got {th}"
            ));
        }
        if self.early_stopping.patience == Some(0) {
            return bad("early_stopping.patience must be at least 1".into());
        }
        let m = &self.model;
        if let Some(l) = &self.lora {
            l.validate().or_else(bad)?;
            if m.init_from.is_none() {
                return bad(
                    "[lora] adapts a pretrained model: set model.init_from (a fresh model is \
                     trained in full)"
                        .into(),
                );
            }
        }
        if m.init_from.is_none() {
            if m.tokenizer.is_none() {
                return bad("model.tokenizer is required when model.init_from is not given".into());
            }
            if m.hidden_size.is_none()
                || m.num_hidden_layers.is_none()
                || m.num_attention_heads.is_none()
            {
                return bad("a fresh model (no model.init_from) needs model.hidden_size, model.num_hidden_layers and model.num_attention_heads".into());
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Whether higher values of the early-stopping metric are better.
    pub fn higher_is_better(&self) -> bool {
        metrics_for_data(&self.data)
            .iter()
            .find(|(m, _)| *m == self.early_stopping.metric)
            .is_some_and(|(_, h)| *h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[run]\ndir = \"r\"\n[model]\ninit_from = \"m\"\n[data]\ntrain = \"t.jsonl\"\n";

    #[test]
    fn transformers_schedules_and_their_keys() {
        let set = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            FinetuneConfig::parse(BASE, "ft.toml", &o)
        };
        let c = set(&["train.schedule=polynomial", "train.poly_power=2.0"]).unwrap();
        assert_eq!(
            (c.train.schedule, c.train.poly_power),
            (ScheduleKind::Polynomial, 2.0)
        );
        let c = set(&["train.schedule=inverse_sqrt", "train.timescale=50"]).unwrap();
        assert_eq!(c.train.timescale, Some(50));
        // transformers refuses an end LR not below the LR: 1e-7 is the polynomial's.
        let e = set(&["train.schedule=polynomial", "train.lr=1e-8"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ft.toml") && e.contains("end LR"), "{e}");
        let e = set(&["train.num_cycles=0"]).unwrap_err().to_string();
        assert!(e.contains("train.num_cycles"), "{e}");
    }

    #[test]
    fn defaults_overrides_and_errors() {
        let c = FinetuneConfig::parse(BASE, "x.toml", &[]).unwrap();
        assert_eq!(c.train.lr, 5e-5);
        assert_eq!(c.train.grad_accum, 1);
        assert_eq!(c.train.precision, Precision::Fp32);
        let c = FinetuneConfig::parse(
            BASE,
            "x.toml",
            &["train.grad_accum=4".into(), "train.precision=bf16".into()],
        )
        .unwrap();
        assert_eq!(
            (c.train.grad_accum, c.train.precision),
            (4, Precision::Bf16)
        );
        let e = FinetuneConfig::parse(BASE, "x.toml", &["train.precision=fp8".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.precision") && e.contains("fp8"), "{e}");
        let e = FinetuneConfig::parse(BASE, "x.toml", &["train.grad_accum=0".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.grad_accum"), "{e}");
        assert_eq!(c.early_stopping.metric, "eval_loss");
        assert!(!c.higher_is_better());
        let c = FinetuneConfig::parse(
            BASE,
            "x.toml",
            &[
                "train.lr=1e-3".into(),
                "early_stopping.metric=macro_f1".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr, 1e-3);
        assert!(c.higher_is_better());
        let e = FinetuneConfig::parse(BASE, "x.toml", &["train.lrr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("lrr"), "{e}");
        let e = FinetuneConfig::parse(BASE, "x.toml", &["early_stopping.metric=f2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("f2"), "{e}");
        assert_eq!(c.early_stopping.threshold, 0.0);
        let c = FinetuneConfig::parse(BASE, "x.toml", &["early_stopping.threshold=0.01".into()])
            .unwrap();
        assert_eq!(c.early_stopping.threshold, 0.01);
        for bad in ["-0.1", "nan"] {
            let e =
                FinetuneConfig::parse(BASE, "x.toml", &[format!("early_stopping.threshold={bad}")])
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("early_stopping.threshold"), "{e}");
        }
        // Metrics follow the problem type.
        let reg = |m: &str| {
            FinetuneConfig::parse(
                BASE,
                "x.toml",
                &[
                    "data.problem_type=regression".into(),
                    format!("early_stopping.metric={m}"),
                ],
            )
        };
        let c = reg("pearson").unwrap();
        assert_eq!(c.data.problem_type, ProblemType::Regression);
        assert!(c.higher_is_better());
        assert!(!reg("mae").unwrap().higher_is_better());
        let e = reg("accuracy").unwrap_err().to_string();
        assert!(e.contains("accuracy") && e.contains("regression"), "{e}");
        let e = FinetuneConfig::parse(BASE, "x.toml", &["data.problem_type=ranking".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("problem_type") && e.contains("ranking"), "{e}");
        let e = FinetuneConfig::parse(
            "[run]\ndir = \"r\"\n[model]\n[data]\ntrain = \"t.jsonl\"\n",
            "y.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.tokenizer"), "{e}");
        let c = FinetuneConfig::parse(BASE, "x.toml", &[]).unwrap();
        assert_eq!(FinetuneConfig::parse(&c.to_toml(), "z", &[]).unwrap(), c);
    }

    #[test]
    fn optimizer_keys_default_parse_and_are_checked() {
        use crate::config::OptimizerKind;
        use crate::optim::{AdagradConfig, AdamWConfig, OptimizerConfig, RmspropConfig, SgdConfig};
        let set = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            FinetuneConfig::parse(BASE, "ft.toml", &o)
        };
        // Without the keys: transformers' AdamW with weight decay 0.01, as before there was a
        // choice; the other optimizers' keys default as for pretraining.
        let o = set(&[]).unwrap().train.optim;
        assert_eq!(o.kind, OptimizerKind::AdamW);
        assert_eq!(
            OptimizerConfig::from_keys(&o),
            OptimizerConfig::AdamW(AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            })
        );
        // (beta1, eps, momentum, dampening, nesterov, alpha, centered, lr_decay,
        // initial_accumulator_value)
        type Shared = (f64, f64, f64, f64, bool, f64, bool, f64, f64);
        fn shared<D: AdamWDefaults>(k: &OptimizerKeys<D>) -> Shared {
            (
                k.beta1,
                k.eps,
                k.momentum,
                k.dampening,
                k.nesterov,
                k.alpha,
                k.centered,
                k.lr_decay,
                k.initial_accumulator_value,
            )
        }
        let pretraining = crate::config::RunConfig::parse("[data]\ndir = \"d\"", "t", &[])
            .unwrap()
            .train
            .optim;
        assert_eq!(shared(&o), shared(&pretraining));
        assert_eq!(
            shared(&o),
            (0.9, 1e-8, 0.0, 0.0, false, 0.99, false, 0.0, 0.0)
        );
        for (keys, want) in [
            (
                &[
                    "train.optimizer=sgd",
                    "train.momentum=0.9",
                    "train.nesterov=true",
                ][..],
                OptimizerConfig::Sgd(SgdConfig {
                    momentum: 0.9,
                    dampening: 0.0,
                    nesterov: true,
                    weight_decay: 0.01,
                }),
            ),
            (
                &[
                    "train.optimizer=adagrad",
                    "train.lr_decay=0.01",
                    "train.initial_accumulator_value=0.1",
                    "train.eps=1e-10",
                    "train.weight_decay=0",
                ],
                OptimizerConfig::Adagrad(AdagradConfig {
                    lr_decay: 0.01,
                    initial_accumulator_value: 0.1,
                    eps: 1e-10,
                    weight_decay: 0.0,
                }),
            ),
            (
                &[
                    "train.optimizer=rmsprop",
                    "train.alpha=0.9",
                    "train.momentum=0.5",
                    "train.centered=true",
                ],
                OptimizerConfig::Rmsprop(RmspropConfig {
                    alpha: 0.9,
                    eps: 1e-8,
                    weight_decay: 0.01,
                    momentum: 0.5,
                    centered: true,
                }),
            ),
            (
                &[
                    "train.optimizer=adamw",
                    "train.beta2=0.98",
                    "train.momentum=0.9",
                ],
                OptimizerConfig::AdamW(AdamWConfig {
                    beta1: 0.9,
                    beta2: 0.98,
                    eps: 1e-8,
                    weight_decay: 0.01,
                }),
            ),
        ] {
            let c = set(keys).unwrap();
            assert_eq!(OptimizerConfig::from_keys(&c.train.optim), want, "{keys:?}");
            // The resolved config keeps the choice.
            assert_eq!(FinetuneConfig::parse(&c.to_toml(), "z", &[]).unwrap(), c);
        }
        let c = set(&["train.optimizer=sgd", "train.momentum=0.9"]).unwrap();
        assert!(
            c.to_toml().contains("optimizer = \"sgd\"\n"),
            "{}",
            c.to_toml()
        );
        assert_eq!(
            OptimizerConfig::from_keys(&c.train.optim).to_string(),
            "sgd(momentum=0.9, dampening=0.0, nesterov=false, weight_decay=0.01)"
        );
        // Bad values name the key, wrong types and unknown names included.
        for (keys, key) in [
            (&["train.optimizer=adam"][..], "train.optimizer"),
            (&["train.momentum=fast"], "train.momentum"),
            (&["train.nesterov=1"], "train.nesterov"),
            (&["train.momentum=-0.5"], "train.momentum"),
            (&["train.dampening=2"], "train.dampening"),
            (&["train.alpha=1.5"], "train.alpha"),
            (&["train.lr_decay=-1"], "train.lr_decay"),
            (
                &["train.initial_accumulator_value=-0.1"],
                "train.initial_accumulator_value",
            ),
            (&["train.weight_decay=nan"], "train.weight_decay"),
            (&["train.eps=inf"], "train.eps"),
            (&["train.beta2=1.0"], "train.beta2"),
            (
                &["train.optimizer=sgd", "train.nesterov=true"],
                "train.nesterov",
            ),
        ] {
            let e = set(keys).unwrap_err().to_string();
            assert!(e.contains("ft.toml") && e.contains(key), "{keys:?}: {e}");
        }
        // torch's choices are listed; an unknown key is still refused, by name.
        let e = set(&["train.optimizer=adam"]).unwrap_err().to_string();
        assert!(e.contains("sgd") && e.contains("rmsprop"), "{e}");
        let e = set(&["train.momentun=0.9"]).unwrap_err().to_string();
        assert!(
            e.contains("ft.toml")
                && e.contains("key `train.momentun`")
                && e.contains("expected one of")
                && e.contains("`momentum`")
                && e.contains("`epochs`"),
            "{e}"
        );
        let e = FinetuneConfig::parse(
            &format!("{BASE}[train]\noptimizer = \"sgd\"\nnesterov = false\nbeta3 = 0.9\n"),
            "ft.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("beta3"), "{e}");
    }

    #[test]
    fn question_answering_keys_and_metrics() {
        let qa = |extra: &[&str]| {
            let mut o = vec!["data.problem_type=question_answering".to_string()];
            o.extend(extra.iter().map(|s| s.to_string()));
            FinetuneConfig::parse(BASE, "q.toml", &o)
        };
        let c = qa(&["data.max_length=384", "early_stopping.metric=f1"]).unwrap();
        assert_eq!(c.data.problem_type, ProblemType::QuestionAnswering);
        // run_qa's defaults.
        assert_eq!(
            (c.data.doc_stride, c.data.max_answer_length, c.data.n_best),
            (128, 30, 20)
        );
        assert!(c.higher_is_better());
        assert!(
            qa(&["data.max_length=384", "early_stopping.metric=exact_match"])
                .unwrap()
                .higher_is_better()
        );
        let e = qa(&["data.max_length=384", "early_stopping.metric=accuracy"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("accuracy") && e.contains("question_answering"),
            "{e}"
        );
        // The default max_length is 128: the default stride leaves no room.
        let e = qa(&[]).unwrap_err().to_string();
        assert!(
            e.contains("data.doc_stride 128") && e.contains("128"),
            "{e}"
        );
        assert!(qa(&["data.doc_stride=32"]).is_ok());
        let e = qa(&["data.max_length=384", "data.n_best=0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.n_best"), "{e}");
        let e = qa(&["data.max_length=384", "data.labels=[\"a\", \"b\"]"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.labels"), "{e}");
    }

    #[test]
    fn squad_2_keys_and_metrics() {
        let qa = |extra: &[&str]| {
            let mut o = vec![
                "data.problem_type=question_answering".to_string(),
                "data.max_length=384".to_string(),
            ];
            o.extend(extra.iter().map(|s| s.to_string()));
            FinetuneConfig::parse(BASE, "q.toml", &o)
        };
        // run_qa's defaults: SQuAD v1.1, threshold 0.
        let c = qa(&[]).unwrap();
        assert!(!c.data.version_2_with_negative);
        assert_eq!(c.data.null_score_diff_threshold, 0.0);
        let c = qa(&[
            "data.version_2_with_negative=true",
            "data.null_score_diff_threshold=-1.5",
            "early_stopping.metric=HasAns_f1",
        ])
        .unwrap();
        assert!(c.data.version_2_with_negative && c.higher_is_better());
        assert_eq!(c.data.null_score_diff_threshold, -1.5);
        assert_eq!(FinetuneConfig::parse(&c.to_toml(), "z", &[]).unwrap(), c);
        // The squad_v2 names, and the v1.1 ones as the overall figures.
        for m in [
            "f1",
            "exact_match",
            "exact",
            "HasAns_exact",
            "NoAns_f1",
            "best_f1",
            "best_exact",
        ] {
            let metric = format!("early_stopping.metric={m}");
            let c = qa(&["data.version_2_with_negative=true", &metric]).unwrap();
            assert!(c.higher_is_better(), "{m}");
        }
        let c = qa(&[
            "data.version_2_with_negative=true",
            "early_stopping.metric=eval_loss",
        ]);
        assert!(!c.unwrap().higher_is_better());
        // Thresholds and totals are no figures of merit; v2 names need the flag.
        for (extra, want) in [
            (
                &[
                    "data.version_2_with_negative=true",
                    "early_stopping.metric=best_f1_thresh",
                ][..],
                "data.version_2_with_negative)",
            ),
            (
                &[
                    "data.version_2_with_negative=true",
                    "early_stopping.metric=total",
                ],
                "total",
            ),
            (
                &["early_stopping.metric=HasAns_f1"],
                "(data.problem_type question_answering)",
            ),
            (&["early_stopping.metric=exact"], "\"exact\""),
            (&["data.null_score_diff_threshold=1.0"], "applies only with"),
            (
                &[
                    "data.version_2_with_negative=true",
                    "data.null_score_diff_threshold=nan",
                ],
                "not NaN",
            ),
        ] {
            let e = qa(extra).unwrap_err().to_string();
            assert!(e.contains("q.toml") && e.contains(want), "{extra:?}: {e}");
        }
        // Other problem types have no unanswerable questions.
        let e = FinetuneConfig::parse(
            BASE,
            "x.toml",
            &["data.version_2_with_negative=true".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data.version_2_with_negative applies to question_answering"),
            "{e}"
        );
    }
}

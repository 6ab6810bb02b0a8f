//! Fine-tuning a BERT-family encoder for sequence or token classification, extractive
//! question answering (crate::finetune_qa) or multiple choice, or GPT-2 for sequence or token
//! classification (the model through `lantern_models::task`): one flat loop. Per epoch: a
//! seeded shuffle; per optimizer step, `grad_accum` micro-batches, each padded to its longest
//! example: forward (dropout from a per-step stream) on the fp32 weights or their bf16/fp16
//! working copy, the loss averaged over the step's rows (examples, or labelled words for token
//! classification), backward, integrity guard on the first step, clipping, the optimizer of
//! `train.optimizer` (AdamW by default; fp32 masters and state) with a warmup + decay schedule; then an evaluation (also every `eval_every_steps`), `metrics.jsonl`,
//! the `last/` checkpoint, the `best/` one when the chosen metric improved, and early stopping.
//! At the end the best checkpoint is exported to `<run>/model/` (a Hugging Face folder) and
//! the train and validation losses are plotted to `<run>/loss.png`.
//!
//! Every checkpoint folder is itself loadable by transformers (`config.json` with
//! `id2label`/`label2id`, `model.safetensors` with HF names, `tokenizer.json`,
//! `tokenizer_config.json` with the special tokens, the padding one included) and holds
//! `finetune_state.json` (step, epoch, metrics, max_length, the resolved config). `last/` also
//! holds the optimizer's state, the loss scale and the early-stopping state, from which
//! `--resume` continues exactly where it was written; SIGTERM/SIGINT finish the current step and
//! write it.

use crate::checkpoint::{self, OptimizerState};
pub use crate::early_stopping::EarlyStopping;
use crate::error::io;
use crate::finetune_config::FinetuneConfig;
use crate::finetune_qa::{QaData, QaOptions};
use crate::finetune_reward::RewardReader;
use crate::grads::{scaled_backward, StepGrads};
use crate::lora::{self, Lora};
use crate::metrics::MetricsLog;
use crate::metrics_cls::{
    multi_label_report, regression_report, report_from_confusion, ChoiceReport, EvalReport,
    RewardReport,
};
use crate::metrics_tok::TokenCounts;
use crate::model_tokens;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::precision::{LossScaler, Precision};
use crate::recompute::{checkpointed_backward, decoder_blocks, BertBlocks};
use crate::schedule::Schedule;
use crate::trainer::{agree_on_checkpoint, agree_on_stop, reduce_step};
use crate::world::{join_world, World};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use lantern_comm::{Communicator, ReduceOp};
use lantern_data::labelled::{self, ClsBatch, Encoded, ProblemType, RawExample, Target};
use lantern_data::tokenizer::{check_vocab, load_tokenizer};
use lantern_kernels::{cross_entropy_sum, Rng};
use lantern_models::bert::{init_params, BertConfig, BertForMultipleChoice, BertHead, BertInput};
use lantern_models::decoder::DecoderConfig;
use lantern_models::task::{TaskConfig, TaskModel};
use lantern_models::{safetensors_io, Mode, Params};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokenizers::Tokenizer;

pub const STATE_FILE: &str = "finetune_state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub use lantern_data::TOKENIZER_CONFIG_FILE;
/// Streams of the run seed.
const HEAD_INIT_STREAM: u64 = 11;
const SHUFFLE_STREAM: u64 = 12;
const DROPOUT_STREAM: u64 = 13;
const LORA_STREAM: u64 = 14;
/// 2: `metric_value` may be null (a checkpoint written on a stop) and `last/` has `resume`.
const STATE_VERSION: u32 = 2;

/// What a fine-tuning checkpoint records besides the HF files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneState {
    pub format_version: u32,
    pub step: u64,
    pub epoch: usize,
    /// The metric that chose the best checkpoint, and its value here (`None`: written on a
    /// stop between two evaluations).
    pub metric: String,
    pub metric_value: Option<f64>,
    pub max_length: usize,
    /// This step's evaluation (`null` when there was none).
    pub eval: Value,
    pub config: FinetuneConfig,
    /// What `--resume` continues from (in `last/` only, next to `optimizer.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeState>,
}

/// The training state besides weights and optimizer buffers: enough to continue the run as if
/// it had never stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    pub optimizer: OptimizerState,
    /// fp16's loss scale.
    pub scaler: Option<LossScaler>,
    /// The run's labels, training examples and examples per step, which fix the shuffled order
    /// and the steps of an epoch: a resume must find the same.
    pub labels: Vec<String>,
    pub train_examples: usize,
    pub examples_per_step: usize,
    /// `train.group_by_length`, which also fixes the order.
    #[serde(default)]
    pub group_by_length: bool,
    /// Early stopping: the evaluations since the metric last improved (its best value is the
    /// best evaluation's).
    pub evals_without_improvement: usize,
    /// The best checkpoint's step and evaluation.
    pub best_step: Option<u64>,
    pub best_eval: Value,
    /// LoRA: [`Lora::base_fingerprint`] of the frozen pretrained model, which a resume must
    /// find the same (the checkpoint holds only the adapters and the head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_base: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Default)]
pub struct FinetuneOptions {
    pub quiet: bool,
    /// Continue from the run folder's `last/` checkpoint (a new run when there is none).
    pub resume: bool,
    /// Stop after this many optimizer steps (counted from the start of the run) with a `last/`
    /// checkpoint to resume from; the schedule still spans every epoch.
    pub stop_after: Option<u64>,
    /// Set (by a signal handler) to ask the loop to finish the current step, write `last/` and
    /// return with `preempted`.
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone)]
pub struct FinetuneSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// The best evaluation so far (`None` if the run was cut short before its first).
    pub best: Option<BestCheckpoint>,
    /// Where the best model was exported; `None` when the run was cut short.
    pub exported: Option<PathBuf>,
    pub labels: Vec<String>,
    pub train_seconds: f64,
    /// The step `--resume` continued from.
    pub resumed_from: Option<u64>,
    /// Cut short (`stop_after` or a stop request) with a `last/` checkpoint to resume from.
    pub cut_short: bool,
    /// Cut short by a stop request (a signal).
    pub preempted: bool,
    /// The best model on `data.test` (rank 0 of a run that ended, when the config names one).
    pub test: Option<EvalReport>,
    /// This process's rank and the world size (1 without a launcher); only rank 0 wrote the
    /// metrics, checkpoints and export, and only it reports.
    pub rank: usize,
    pub world_size: usize,
}

/// The checkpoint of the best evaluation.
#[derive(Debug, Clone)]
pub struct BestCheckpoint {
    pub step: u64,
    pub metric: f64,
    pub report: EvalReport,
    pub dir: PathBuf,
}

/// A classifier ready to run: config (with labels), parameters, tokenizer.
pub struct Classifier {
    pub source: PathBuf,
    pub cfg: TaskConfig,
    pub params: Params,
    pub tokenizer: Tokenizer,
    pub tokenizer_path: PathBuf,
    pub max_length: usize,
    pub pad_id: u32,
    /// What the outputs mean (the config's `problem_type`).
    pub problem: ProblemType,
    /// Question answering: how questions are windowed and answers picked (the fine-tuning
    /// run's, else run_qa's defaults).
    pub qa: QaOptions,
    /// The fields a text record's text, pair and label are read from (the fine-tuning run's,
    /// else `text`, `text_pair`, `label`).
    pub columns: labelled::Columns,
    /// The loss's label smoothing or reward centering (the fine-tuning run's, else 0), so
    /// that an evaluation's loss is the one training reported.
    pub loss_coef: f64,
}

/// The id batches are padded with. For the BERT family the tokenizer's `[PAD]`, else the
/// config's pad_token_id. For GPT-2 and Llama, whose sequence classifiers pool by it, the
/// config's pad_token_id, else (a language model's config, or a transformers classifier saved
/// without one, has none) its eos_token_id, else the tokenizer's end of text
/// (`<|endoftext|>`, `</s>`, `<|end_of_text|>`): what people set (`pad_token = eos_token`) to
/// fine-tune GPT-2 or Llama with transformers; the config then holds it. `config_path` names
/// the file in the error when there is none.
fn pad_id(tokenizer: &Tokenizer, cfg: &mut TaskConfig, config_path: &Path) -> Result<u32> {
    match cfg {
        TaskConfig::Bert(c) => Ok(tokenizer.token_to_id("[PAD]").unwrap_or(c.pad_token_id)),
        TaskConfig::Decoder(g) => {
            let vocab = g.lm.vocab_size() as u32;
            let ends = lantern_data::tokenizer::DECODER_ENDS;
            let pad = g
                .pad_token_id
                .or(g.eos_token_id.filter(|&e| e < vocab))
                .or_else(|| ends.iter().find_map(|t| tokenizer.token_to_id(t)))
                .filter(|&p| p < vocab)
                .ok_or_else(|| Error::Checkpoint {
                    path: config_path.to_path_buf(),
                    msg: format!(
                        "{} config has no pad_token_id or eos_token_id, and the tokenizer has \
                         no end-of-text token ({}) inside the vocabulary: no id to pad \
                         batches with",
                        g.family(),
                        ends.join(", ")
                    ),
                })?;
            g.pad_token_id = Some(pad);
            Ok(pad)
        }
    }
}

/// The loss's coefficient of a run: reward modeling's centering
/// (`data.center_rewards_coefficient`), else `train.label_smoothing`. Training and every
/// evaluation of its checkpoints use it, as the Trainer's (and TRL's) `compute_loss` serves
/// both.
fn loss_coef(cfg: &FinetuneConfig) -> f64 {
    match cfg.data.problem_type {
        ProblemType::RewardModeling => cfg.data.center_rewards_coefficient.unwrap_or(0.0),
        _ => cfg.train.label_smoothing,
    }
}

/// Newest `step-N` folder holding a model and its state under `root` (`best/` or `last/`).
fn newest_in(root: &Path) -> Result<Option<(u64, PathBuf)>> {
    if !root.is_dir() {
        return Ok(None);
    }
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(root).map_err(io(root))? {
        let e = e.map_err(io(root))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            let p = e.path();
            if p.join(checkpoint::MODEL_FILE).is_file() && p.join(STATE_FILE).is_file() {
                found.push((step, p));
            }
        }
    }
    found.sort();
    Ok(found.pop())
}

/// Resolves what `--checkpoint` names: a folder with `config.json` (a checkpoint or an HF
/// export), `best/` or `last/` (its checkpoint), a fine-tuning run folder (its exported
/// `model/`, else its best checkpoint), or a pretraining run folder (its newest checkpoint,
/// BERT's or GPT's).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(CONFIG_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join("model").join(CONFIG_FILE).is_file() {
        return Ok(path.join("model"));
    }
    for root in [path.to_path_buf(), path.join("best")] {
        if let Some((_, p)) = newest_in(&root)? {
            return Ok(p);
        }
    }
    // A pretraining run (`lantern train`, masked or causal LM): its newest complete checkpoint.
    let ckpts = path.join("checkpoints");
    if ckpts.is_dir() {
        if let Some((_, p)) = checkpoint::list_complete(&ckpts)?.pop() {
            return Ok(p);
        }
    }
    Err(Error::Checkpoint {
        path: path.to_path_buf(),
        msg: "not a model folder, checkpoint or run: no config.json, model/, best/ or complete \
              checkpoints/"
            .into(),
    })
}

/// The model a problem type trains: `BertForTokenClassification` for tags per word,
/// `BertForQuestionAnswering` for answer spans, `BertForMultipleChoice` for choices,
/// `BertForSequenceClassification` for the rest.
pub fn head_of(problem: ProblemType) -> BertHead {
    match problem {
        ProblemType::TokenClassification => BertHead::TokenClassification,
        ProblemType::QuestionAnswering => BertHead::QuestionAnswering,
        ProblemType::MultipleChoice => BertHead::MultipleChoice,
        // One output, the reward, scored on each sequence of a preference.
        _ => BertHead::SequenceClassification,
    }
}

/// Loads a `BertForSequenceClassification`, `BertForTokenClassification`,
/// `BertForQuestionAnswering` or `BertForMultipleChoice` folder (ours or transformers'; or
/// another family's), checking that its tokenizer's vocabulary matches the model's.
pub fn load_classifier(path: &Path, device: &Device) -> Result<Classifier> {
    let dir = resolve_checkpoint(path)?;
    let (mut cfg, head) = TaskConfig::from_hf(&dir.join(CONFIG_FILE))?;
    let problem = problem_of(&cfg, head, &dir.join(CONFIG_FILE))?;
    let min_labels = if problem == ProblemType::Regression {
        1
    } else {
        2
    };
    // Question answering and multiple choice have no labels.
    let unlabelled = matches!(
        head,
        Some(BertHead::QuestionAnswering | BertHead::MultipleChoice)
    );
    if !unlabelled && (!head.is_some_and(BertHead::is_classifier) || cfg.num_labels() < min_labels)
    {
        let msg = match (&cfg, head) {
            // A language model: the classifier is what fine-tuning it makes.
            (TaskConfig::Decoder(c), None) => format!(
                "a {} language model, not a fine-tuned classifier: fine-tune it first \
                 (`lantern finetune` with model.init_from)",
                c.lm.architecture()
            ),
            _ => "not a BertForSequenceClassification or BertForTokenClassification config \
                  (or another family's, or GPT-2's or Llama's) with id2label, nor a \
                  BertForQuestionAnswering or BertForMultipleChoice config"
                .into(),
        };
        return Err(Error::Checkpoint {
            path: dir.join(CONFIG_FILE),
            msg,
        });
    }
    let params = load_trained(&dir.join(checkpoint::MODEL_FILE), &cfg, problem, device)?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    check_vocab(&tokenizer, cfg.vocab_size(), &tokenizer_path)?;
    let state = std::fs::read_to_string(dir.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<FinetuneState>(&t).ok());
    let max_length = state
        .as_ref()
        .map_or(cfg.max_tokens().min(512), |s| s.max_length);
    let qa = match &state {
        Some(s) => QaOptions::of(&s.config.data),
        // A folder without our state (a transformers model): run_qa's defaults.
        None => QaOptions {
            max_length: cfg.max_tokens().min(384),
            doc_stride: 128.min(cfg.max_tokens().min(384) / 2),
            n_best: 20,
            max_answer_length: 30,
            version_2_with_negative: false,
            null_score_diff_threshold: 0.0,
        },
    };
    let columns = state
        .as_ref()
        .map_or_else(labelled::Columns::default, |s| s.config.data.columns());
    let loss_coef = state.as_ref().map_or(0.0, |s| loss_coef(&s.config));
    let pad = pad_id(&tokenizer, &mut cfg, &dir.join(CONFIG_FILE))?;
    Ok(Classifier {
        qa,
        columns,
        loss_coef,
        source: dir,
        cfg,
        params,
        tokenizer,
        tokenizer_path,
        max_length,
        pad_id: pad,
        problem,
    })
}

/// A trained classifier's fp32 weights: every parameter, the head included, must be there.
fn load_trained(
    weights: &Path,
    cfg: &TaskConfig,
    problem: ProblemType,
    device: &Device,
) -> Result<Params> {
    let (params, report) = cfg.load_params(
        weights,
        head_of(problem),
        &mut Rng::new(0),
        device,
        DType::F32,
    )?;
    if !report.newly_initialised.is_empty() {
        return Err(Error::Checkpoint {
            path: weights.to_path_buf(),
            msg: format!(
                "a trained classifier is expected, but these are missing: {}",
                report.newly_initialised.join(", ")
            ),
        });
    }
    Ok(params)
}

/// The problem type of a classifier: token classification for `BertForTokenClassification`,
/// else the one its config names (transformers' default, single-label, when it names none).
fn problem_of(cfg: &TaskConfig, head: Option<BertHead>, config_path: &Path) -> Result<ProblemType> {
    match head {
        Some(BertHead::TokenClassification) => return Ok(ProblemType::TokenClassification),
        Some(BertHead::QuestionAnswering) => return Ok(ProblemType::QuestionAnswering),
        Some(BertHead::MultipleChoice) => return Ok(ProblemType::MultipleChoice),
        _ => {}
    }
    match cfg.problem_type() {
        // transformers' reading of one label without a problem type: a number per text
        // (a reward model's reward).
        None if cfg.num_labels() == 1 => Ok(ProblemType::Regression),
        None => Ok(ProblemType::SingleLabelClassification),
        Some(name) => ProblemType::from_name(name).ok_or_else(|| Error::Checkpoint {
            path: config_path.to_path_buf(),
            msg: format!("unknown problem_type {name:?}"),
        }),
    }
}

impl Classifier {
    /// The model for evaluation and prediction: these weights, no graph recorded.
    pub fn frozen_model(&self) -> Result<TaskModel> {
        Ok(TaskModel::new(
            &self.cfg,
            &self.params.frozen(),
            head_of(self.problem),
        )?)
    }

    /// Whether `path` holds preference records this model can be scored on as a reward model:
    /// it has one output, and the file's first record has `chosen` and `rejected`.
    pub fn scores_preferences(&self, path: &Path) -> bool {
        self.cfg.num_labels() == 1 && lantern_data::dpo::is_preference_file(path) == Some(true)
    }

    /// Reward modeling: a preference file's examples, read as its training read them (records
    /// longer than `max_length` dropped; the second value says how many, when any were).
    pub fn reward_examples(&self, path: &Path) -> Result<(Vec<Encoded>, Option<String>)> {
        let tok = (&self.tokenizer, self.tokenizer_path.as_path());
        RewardReader::for_model(tok, &self.cfg, self.max_length)?.read(path, &self.tokenizer)
    }

    /// Question answering: reads and windows a question file with this model's options
    /// (`need_answers`: every question must have one, as evaluation needs).
    pub fn qa_data(&self, path: &Path, need_answers: bool) -> Result<QaData> {
        QaData::load(&self.tokenizer, path, &self.qa, need_answers)
    }

    /// Reads a data file's records with the fine-tuning run's columns (multiple-choice
    /// records for a multiple-choice model).
    pub fn read_file(&self, path: &Path) -> Result<Vec<labelled::RawExample>> {
        Ok(labelled::read_for_problem(
            path,
            &self.columns,
            self.problem,
        )?)
    }

    /// Tokenises a data file with this classifier's labels, truncation and columns.
    pub fn encode_file(&self, path: &Path) -> Result<Vec<Encoded>> {
        let raw = self.read_file(path)?;
        let tok =
            labelled::for_classification(&self.tokenizer, self.max_length, &self.tokenizer_path)?;
        Ok(labelled::encode(
            &tok,
            &raw,
            (self.problem, &self.cfg.label_names()),
            path,
        )?)
    }
}

/// What one [`classifier_step`] needs besides the model and the batches.
pub struct ClsStep {
    pub lr: f64,
    pub grad_clip: f64,
    /// Dropout masks of a micro-batch come from `Rng::derive(dropout_seed, its stream)`.
    pub dropout_seed: u64,
    /// The optimizer step, counted from 0; step 0 also checks that every parameter gets a
    /// gradient.
    pub step: u64,
    /// Examples in the whole step (labelled words, token classification), over every
    /// micro-batch and every rank: each micro-batch's summed loss is divided by it (times the
    /// classes, multi-label), so the step's loss is their mean.
    pub rows: usize,
    /// Which loss: cross-entropy, binary cross-entropy of each class, or squared error.
    pub problem: ProblemType,
    /// The loss's coefficient: label smoothing of the cross-entropy (single-label and token
    /// classification, multiple choice; 0 = none), or reward modeling's centering coefficient.
    pub loss_coef: f64,
    /// Recompute each encoder layer in the backward pass ([`crate::recompute`]).
    pub activation_checkpointing: bool,
}

/// One micro-batch of a [`classifier_step`]: a padded batch, its labels, and the stream its
/// dropout masks come from (the loop uses `(s·M + m)·W + r` for micro-batch m of M of step s
/// on rank r of W: without accumulation or ranks, `s`).
pub struct ClsMicro<'a> {
    pub input: BertInput<'a>,
    /// The targets: class indices (B) u32, 0/1 flags (B, L) f32 or values (B) f32, by
    /// [`ClsStep::problem`]; for token classification tags (B·T) u32, with
    /// [`ClsMicro::weights`].
    pub labels: Tensor,
    /// Token classification: (B·T) f32, 1 at the first sub-token of each labelled word and 0
    /// elsewhere (transformers' label -100).
    pub weights: Option<Tensor>,
    pub stream: u64,
}

/// The classifier one [`classifier_step`] trains, and its weights.
pub struct ClsModel<'a> {
    pub model: &'a TaskModel,
    /// The variables the model reads: the bf16/fp16 working copy in mixed precision, else the
    /// same store as `master`.
    pub work: &'a Params,
    /// The fp32 master weights the optimizer updates (with LoRA, the adapters and the head).
    pub master: &'a Params,
    /// LoRA: `work` is the adapters' view of the model ([`Lora::view`]), whose gradients
    /// become the adapters' and which is refreshed after each step.
    pub lora: Option<&'a Lora>,
}

/// How one [`classifier_step`] went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClsStepOutput {
    /// Mean cross-entropy over the step's rows (every rank's).
    pub loss: f64,
    /// Global gradient norm before clipping (of unscaled gradients).
    pub grad_norm: f64,
    /// fp16 only: the gradients overflowed at the current loss scale, so the update was
    /// skipped (weights and optimizer state untouched) and the scale backed off.
    pub skipped: bool,
}

/// One fine-tuning optimizer step of `m` over this rank's micro-batches `micro` (gradient
/// accumulation = their number): forward with dropout, each micro-batch's summed
/// cross-entropy divided by the rows of the whole step (so the step is that of one batch
/// holding them all, as transformers' `CrossEntropyLoss` mean), backward (of the loss times
/// the fp16 scale, when `scaler`); then, in a world of several ranks, the sum of every rank's
/// gradients and loss (a rank with no rows in a short last step adds zeros); then global-norm
/// clipping and the optimizer's update, which in mixed precision also refreshes the working copy.
/// From the sum on every rank computes the same thing, so their decisions agree.
pub fn classifier_step(
    comm: &Communicator,
    m: ClsModel<'_>,
    opt: &mut Optimizer,
    micro: &[ClsMicro<'_>],
    s: ClsStep,
    scaler: Option<&mut LossScaler>,
) -> Result<ClsStepOutput> {
    let scale = scaler.as_ref().map_or(1.0, |sc| sc.scale);
    let mut grads = StepGrads::new(m.work.len());
    let mut loss_sum = 0f64;
    for mb in micro {
        let mut rng = Rng::derive(s.dropout_seed, mb.stream);
        let targets = (&mb.labels, mb.weights.as_ref());
        let divisor = s.rows.max(1) as f64;
        if s.activation_checkpointing {
            let loss_of = |logits: &Tensor| -> Result<Tensor> {
                Ok((summed_loss(logits, targets, s.problem, s.loss_coef)? / divisor)?)
            };
            let mode = Mode::Train(&mut rng);
            let acc = (m.work, &mut grads);
            loss_sum += match m.model {
                TaskModel::Bert(model) => {
                    let blocks = BertBlocks::new(model.bert(), &mb.input)?;
                    let mask = mb.input.attention_mask;
                    let top =
                        |x: &Tensor, mode: &mut Mode<'_>| loss_of(&model.head_on(x, mask, mode)?);
                    checkpointed_backward(&blocks, mode, top, scale, acc)?
                }
                TaskModel::DecoderToken(model) => {
                    let blocks = decoder_blocks(model.decoder(), mb.input.ids, &mode)?;
                    let top = |x: &Tensor, mode: &mut Mode<'_>| loss_of(&model.head_on(x, mode)?);
                    checkpointed_backward(&*blocks, mode, top, scale, acc)?
                }
                TaskModel::DecoderSequence(model) => {
                    let ids = mb.input.ids;
                    let last = model.last_tokens(ids)?;
                    let blocks = decoder_blocks(model.decoder(), ids, &mode)?;
                    let top = |x: &Tensor, _: &mut Mode<'_>| {
                        loss_of(&model.head(x, &last, ids.dims2()?)?)
                    };
                    checkpointed_backward(&*blocks, mode, top, scale, acc)?
                }
            };
            continue;
        }
        let logits = m.model.forward(&mb.input, Mode::Train(&mut rng))?;
        let loss = (summed_loss(&logits, targets, s.problem, s.loss_coef)? / divisor)?;
        let store = scaled_backward(&loss, scale)?;
        grads.accumulate(m.work, &store)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?);
    }
    if scale != 1.0 {
        grads.scale(1.0 / scale)?;
    }
    // From here on the gradients are those of what the optimizer trains.
    let trained = match m.lora {
        Some(lora) => {
            grads = lora.master_grads(&grads)?;
            m.master
        }
        None => m.work,
    };
    if s.step == 0 && !micro.is_empty() {
        // This rank's own gradients, before they are summed. A reward model's loss reads
        // reward differences only: a bias that shifts every reward alike (the head's, GPT-2's
        // final norm's before a head without one) gets an exact zero gradient, as in TRL.
        let shift_only = |n: &str| s.problem == ProblemType::RewardModeling && n.ends_with(".bias");
        grads.check_integrity_where(trained, scaler.is_some(), Lora::is_a, shift_only)?;
    }
    if comm.world_size() > 1 {
        if micro.is_empty() {
            grads = StepGrads::zeros(trained)?;
        }
        loss_sum = reduce_step(comm, &mut grads, loss_sum)?;
    }
    let grad_norm = grads.global_norm()?;
    let finite = loss_sum.is_finite() && grad_norm.is_finite();
    if let Some(sc) = scaler {
        sc.update(!finite);
        if !finite {
            return Ok(ClsStepOutput {
                loss: loss_sum,
                grad_norm,
                skipped: true,
            });
        }
    } else if !finite {
        return Err(Error::Config(format!(
            "fine-tuning step {}: the loss ({loss_sum}) or the gradient norm ({grad_norm}) is \
             not finite; lower train.lr, or train in fp32 or bf16",
            s.step + 1
        )));
    }
    grads.clip(grad_norm, s.grad_clip)?;
    match m.lora {
        Some(lora) => {
            opt.step(m.master, &grads.grads, s.lr)?;
            lora.refresh()?;
        }
        None => opt.step_mixed(m.master, &grads.grads, s.lr, m.work)?,
    }
    Ok(ClsStepOutput {
        loss: loss_sum,
        grad_norm,
        skipped: false,
    })
}

/// The summed loss of a micro-batch's logits (B, L) against its targets, in f32 whatever the
/// working dtype: cross-entropy (transformers' single-label loss), binary cross-entropy with
/// logits over every (example, class) divided by L (so that dividing by the rows gives
/// `BCEWithLogitsLoss`'s mean), or squared error (`MSELoss`'s sum). Token classification:
/// logits (B, T, L), the cross-entropy of the positions `weights` marks. Reward modeling:
/// rewards (B·2, 1), each preference's chosen then rejected, with its margins (B) in
/// `weights`. `coef` is the label smoothing of the cross-entropies, or reward modeling's
/// centering coefficient.
fn summed_loss(
    logits: &Tensor,
    (targets, weights): (&Tensor, Option<&Tensor>),
    problem: ProblemType,
    coef: f64,
) -> Result<Tensor> {
    let label_smoothing = coef;
    Ok(match problem {
        ProblemType::RewardModeling => {
            // (B·2, 1) → (B, 2): TRL's `−log σ(r_c − r_r − margin)` summed over the
            // preferences, plus `coef·(r_c + r_r)²` each (its mean, once divided by the rows).
            let r = BertForMultipleChoice::by_example(logits, targets.elem_count())?
                .to_dtype(DType::F32)?;
            let (c, rj) = (
                r.narrow(1, 0, 1)?.squeeze(1)?,
                r.narrow(1, 1, 1)?.squeeze(1)?,
            );
            let d = (&c - &rj)?;
            let d = match weights {
                Some(m) => (d - m)?,
                None => d,
            };
            // ln(1 + e^−d), stable for any d, with σ's gradient at d = 0 too.
            let nll = crate::dpo::softplus(&d.neg()?)?.sum_all()?;
            match coef {
                0.0 => nll,
                _ => (nll + ((c + rj)?.sqr()?.sum_all()? * coef)?)?,
            }
        }
        ProblemType::SingleLabelClassification
        | ProblemType::TokenClassification
        | ProblemType::MultipleChoice => {
            let x = match logits.dims() {
                &[b, t, l] => logits.reshape((b * t, l))?,
                // Multiple choice: (B·C, 1) scores → (B, C) logits over each example's choices.
                _ if problem == ProblemType::MultipleChoice => {
                    BertForMultipleChoice::by_example(logits, targets.elem_count())?
                }
                _ => logits.clone(),
            };
            // The kernel computes in f32.
            let ce = cross_entropy_sum(&x, targets, weights)?.to_dtype(DType::F32)?;
            if label_smoothing == 0.0 {
                ce
            } else {
                // torch's label smoothing: (1 − ε)·CE + ε·mean over the classes of −log p,
                // over the labelled rows (transformers' `LabelSmoother` skips label -100).
                let x = x.to_dtype(DType::F32)?;
                let z = x.broadcast_sub(&x.max_keepdim(1)?.detach())?;
                let log_p = z.broadcast_sub(&z.exp()?.sum_keepdim(1)?.log()?)?;
                let per_row = log_p.sum(1)?;
                let per_row = match weights {
                    Some(w) => (per_row * w)?,
                    None => per_row,
                };
                let uniform = (per_row.sum_all()? * (-1.0 / x.dim(1)? as f64))?;
                ((ce * (1.0 - label_smoothing))? + (uniform * label_smoothing)?)?
            }
        }
        ProblemType::MultiLabelClassification => {
            let x = logits.to_dtype(DType::F32)?;
            // max(x, 0) − x·y + ln(1 + e^−|x|): stable for any x, as torch computes it.
            let softplus = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
            let per = ((x.relu()? - (&x * targets)?)? + softplus)?;
            (per.sum_all()? / x.dim(1)? as f64)?
        }
        ProblemType::Regression => {
            let x = logits.to_dtype(DType::F32)?.squeeze(1)?;
            (x - targets)?.sqr()?.sum_all()?
        }
        ProblemType::QuestionAnswering => {
            // (B, T, 2) → (B, 2, T) → (B·2, T): row 2b holds window b's start logits and row
            // 2b + 1 its end logits, in the order of the (B·2) targets. transformers' loss is
            // (CE(start) + CE(end)) / 2, each CE a mean over the windows: the sum over both,
            // halved, divided by the windows later.
            let (b, t, _) = logits.dims3()?;
            let x = logits.transpose(1, 2)?.contiguous()?.reshape((b * 2, t))?;
            (cross_entropy_sum(&x, targets, None)?.to_dtype(DType::F32)? * 0.5)?
        }
    })
}

/// A padded batch on the device: ids, token types, mask (B, T) u32, and the targets of
/// `problem`: class indices (B) u32, flags (B, L) f32, values (B) f32, or tags (B·T) u32 with
/// their weights (B·T) f32.
pub struct BatchTensors {
    pub ids: Tensor,
    pub type_ids: Tensor,
    pub mask: Tensor,
    pub labels: Tensor,
    pub weights: Option<Tensor>,
}

fn batch_tensors(b: &ClsBatch, problem: ProblemType, device: &Device) -> Result<BatchTensors> {
    let shape = (b.rows, b.cols);
    let (labels, weights) = match problem {
        ProblemType::SingleLabelClassification => {
            (Tensor::from_slice(&b.labels, b.rows, device)?, None)
        }
        // The rows are the examples' choices; one label per example.
        ProblemType::MultipleChoice => {
            (Tensor::from_slice(&b.labels, b.labels.len(), device)?, None)
        }
        // The rows are each preference's chosen and rejected sequences; its margin.
        ProblemType::RewardModeling => {
            let n = b.labels.len();
            (
                Tensor::from_slice(&b.labels, n, device)?,
                Some(Tensor::from_slice(&b.targets, n, device)?),
            )
        }
        ProblemType::MultiLabelClassification => {
            let l = b.targets.len() / b.rows.max(1);
            (Tensor::from_slice(&b.targets, (b.rows, l), device)?, None)
        }
        ProblemType::Regression => (Tensor::from_slice(&b.targets, b.rows, device)?, None),
        ProblemType::TokenClassification => (
            Tensor::from_slice(&b.labels, b.rows * b.cols, device)?,
            Some(Tensor::from_slice(&b.targets, b.rows * b.cols, device)?),
        ),
        ProblemType::QuestionAnswering => {
            if b.labels.len() != b.rows * 2 {
                return Err(Error::Config(
                    "question answering trains on windows with an answer span only".into(),
                ));
            }
            (Tensor::from_slice(&b.labels, b.rows * 2, device)?, None)
        }
    };
    Ok(BatchTensors {
        ids: Tensor::from_slice(&b.ids, shape, device)?,
        type_ids: Tensor::from_slice(&b.type_ids, shape, device)?,
        mask: Tensor::from_slice(&b.attention_mask, shape, device)?,
        labels,
        weights,
    })
}

/// The rows an example contributes to evaluation: 1 (a window, for question answering), or
/// for token classification its labelled words (the words whose first sub-token survived
/// truncation).
fn rows_of(e: &Encoded, problem: ProblemType) -> usize {
    match problem {
        ProblemType::TokenClassification => labelled::first_subwords(&e.word_ids).len(),
        _ => 1,
    }
}

/// The logits [`logits_of`] gives an example: [`rows_of`] × `num_labels`, or for question
/// answering a start and an end logit per token, or for multiple choice one per choice.
fn logits_len(e: &Encoded, problem: ProblemType, num_labels: usize) -> usize {
    match problem {
        ProblemType::QuestionAnswering => 2 * e.ids.len(),
        ProblemType::MultipleChoice | ProblemType::RewardModeling => e.choice_lens.len(),
        _ => rows_of(e, problem) * num_labels,
    }
}

/// The rows an example contributes to a training step's loss: [`rows_of`], or with
/// `label_all_tokens` every sub-token of its words.
fn train_rows_of(e: &Encoded, problem: ProblemType, all_tokens: bool) -> usize {
    match all_tokens {
        true => e.word_ids.iter().filter(|w| w.is_some()).count(),
        false => rows_of(e, problem),
    }
}

/// Logits of every example, in order, in eval mode: for each example its rows
/// ([`rows_of`]) of `num_labels` logits, flattened — (num_labels) per sequence, (words ×
/// num_labels) per word-level example, in word order; for a question-answering window (2·T),
/// its T start logits then its T end logits (padding left out); for a multiple-choice example
/// (C), its choices' scores.
pub fn predict_logits(
    model: &TaskModel,
    data: &[Encoded],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let refs: Vec<&Encoded> = data.iter().collect();
    logits_of(model, &refs, batch_size, pad_id, device)
}

/// [`predict_logits`] of the examples `data` points to.
fn logits_of(
    model: &TaskModel,
    data: &[&Encoded],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(batch_size.max(1)) {
        let b = labelled::pad_batch(chunk, pad_id);
        let shape = (b.rows, b.cols);
        let (ids, tt, mask) = (
            Tensor::from_slice(&b.ids, shape, device)?,
            Tensor::from_slice(&b.type_ids, shape, device)?,
            Tensor::from_slice(&b.attention_mask, shape, device)?,
        );
        let logits = model
            .forward(
                &BertInput {
                    ids: &ids,
                    token_type_ids: Some(&tt),
                    attention_mask: Some(&mask),
                },
                Mode::Eval,
            )?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        match model.head() {
            BertHead::SequenceClassification if chunk.iter().all(|e| e.choice_lens.is_empty()) => {
                out.extend(logits.to_vec2::<f32>()?)
            }
            BertHead::TokenClassification => {
                // (B, T, L): each example's first sub-token rows, in word order.
                for (rows, e) in logits.to_vec3::<f32>()?.into_iter().zip(chunk) {
                    let picked = labelled::first_subwords(&e.word_ids)
                        .into_iter()
                        .flat_map(|(pos, _)| rows[pos].iter().copied());
                    out.push(picked.collect());
                }
            }
            // Multiple choice, and a reward model's sequences (a sequence classifier with one
            // output over examples of several sequences).
            BertHead::MultipleChoice | BertHead::SequenceClassification => {
                // (B·C, 1): each example's C scores, in order.
                let scores = logits.flatten_all()?.to_vec1::<f32>()?;
                let mut at = 0;
                for e in chunk {
                    let c = e.choice_lens.len();
                    out.push(scores[at..at + c].to_vec());
                    at += c;
                }
            }
            BertHead::QuestionAnswering => {
                // (B, T, 2): each window's own tokens, starts then ends.
                for (rows, e) in logits.to_vec3::<f32>()?.into_iter().zip(chunk) {
                    let rows = &rows[..e.ids.len()];
                    let starts = rows.iter().map(|r| r[0]);
                    out.push(starts.chain(rows.iter().map(|r| r[1])).collect());
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "{} gives no task logits",
                    other.architecture()
                )))
            }
        }
    }
    Ok(out)
}

/// Softmax of one row of logits, in f64 for the sums.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| (x / z) as f32).collect()
}

/// −log p(y), label-smoothed as torch's cross-entropy: (1 − ε)·(−log p(y)) + ε·mean over the
/// classes of −log p (ε = 0: the plain negative log-likelihood).
fn smoothed_nll(log_p: &[f64], y: usize, eps: f64) -> f64 {
    let mean = log_p.iter().sum::<f64>() / log_p.len() as f64;
    -((1.0 - eps) * log_p[y] + eps * mean)
}

/// Log-softmax of one row of logits, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln();
    logits.iter().map(|&x| x as f64 - max - lse).collect()
}

/// The index of the largest value (the last of equal ones, as `Iterator::max_by` picks).
pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Loss and metrics on labelled data (every example must have a label), for `problem` with
/// the label set `names` and the loss's coefficient `loss_coef` (label smoothing or reward
/// centering, [`Classifier::loss_coef`]).
pub fn evaluate(
    model: &TaskModel,
    data: &[Encoded],
    (problem, names, loss_coef): (ProblemType, &[String], f64),
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<EvalReport> {
    let single = Communicator::single();
    evaluate_on(
        &single,
        model,
        data,
        (problem, names, loss_coef),
        (batch_size, pad_id),
        device,
        None,
    )
}

/// Question answering's [`evaluate`]: loss, exact match and F1 of `data`'s questions.
pub fn evaluate_qa(
    model: &TaskModel,
    data: &QaData,
    opts: &QaOptions,
    (batch_size, pad_id): (usize, u32),
    device: &Device,
) -> Result<EvalReport> {
    evaluate_on(
        &Communicator::single(),
        model,
        &data.encoded(),
        (ProblemType::QuestionAnswering, &[], 0.0),
        (batch_size, pad_id),
        device,
        Some((data, opts)),
    )
}

/// Every question's answer and n-best list (best first), in eval mode.
pub fn predict_answers(
    model: &TaskModel,
    data: &QaData,
    opts: &QaOptions,
    (batch_size, pad_id): (usize, u32),
    device: &Device,
) -> Result<Vec<crate::metrics_qa::QaChoice>> {
    let logits = predict_logits(model, &data.encoded(), batch_size, pad_id, device)?;
    data.answers(&logits, opts)
}

/// [`evaluate`] as one rank of a world: rank r computes the logits of examples r, r + W,
/// r + 2W, ...; an all-reduce of every example's logits, zero where another rank computed
/// them, gives every rank all of them, and the report is computed from those in data order, so
/// every rank has the same report (and early stopping decides the same everywhere).
/// Question answering also takes the questions `data`'s windows come from.
fn evaluate_on(
    comm: &Communicator,
    model: &TaskModel,
    data: &[Encoded],
    (problem, names, loss_coef): (ProblemType, &[String], f64),
    (batch_size, pad_id): (usize, u32),
    device: &Device,
    qa: Option<(&QaData, &QaOptions)>,
) -> Result<EvalReport> {
    // Checked on the whole data, so that every rank fails alike.
    if let Some(e) = data.iter().find(|e| e.label.is_none()) {
        return Err(Error::Config(format!(
            "example at line {} has no label to evaluate against",
            e.line
        )));
    }
    let num_labels = names.len();
    let (rank, world) = (comm.rank(), comm.world_size());
    let shard: Vec<&Encoded> = data.iter().skip(rank).step_by(world).collect();
    let mut logits = logits_of(model, &shard, batch_size, pad_id, device)?;
    if world > 1 {
        // Every rank knows every example's size, so the layout needs no exchange.
        let sizes: Vec<usize> = data
            .iter()
            .map(|e| logits_len(e, problem, num_labels))
            .collect();
        let starts: Vec<usize> = sizes
            .iter()
            .scan(0, |at, n| {
                *at += n;
                Some(*at - n)
            })
            .collect();
        let mut all = vec![0f32; sizes.iter().sum()];
        for (i, row) in logits.iter().enumerate() {
            let at = starts[rank + i * world];
            all[at..at + row.len()].copy_from_slice(row);
        }
        comm.all_reduce_f32(&mut all, ReduceOp::Sum)?;
        logits = starts
            .iter()
            .zip(&sizes)
            .map(|(&at, &n)| all[at..at + n].to_vec())
            .collect();
    }
    if problem == ProblemType::TokenClassification {
        return token_eval(&logits, data, names, loss_coef);
    }
    if problem == ProblemType::QuestionAnswering {
        let (qa, opts) = qa.ok_or_else(|| {
            Error::Config("question answering is evaluated against its questions".into())
        })?;
        return qa.evaluate(&logits, opts);
    }
    let targets: Vec<&Target> = data
        .iter()
        .map(|e| e.label.as_ref().expect("checked above"))
        .collect();
    report_of(problem, &logits, &targets, (num_labels, loss_coef))
}

/// Token classification's report: every labelled word (its first sub-token's logits, as
/// [`logits_of`] lays them out) scored against its tag: the mean cross-entropy over the words
/// (label-smoothed as in training, when asked) and seqeval's entity-level figures over the
/// examples' tag sequences, as transformers' run_ner computes them from the positions whose
/// label is not -100.
fn token_eval(
    logits: &[Vec<f32>],
    data: &[Encoded],
    names: &[String],
    label_smoothing: f64,
) -> Result<EvalReport> {
    let l = names.len();
    let mut counts = TokenCounts::default();
    let (mut loss, mut words) = (0f64, 0usize);
    for (e, rows) in data.iter().zip(logits) {
        let Some(Target::Tags(tags)) = &e.label else {
            return Err(Error::Config(format!(
                "example at line {}: labels do not fit problem_type token_classification",
                e.line
            )));
        };
        let (mut gold, mut pred) = (Vec::new(), Vec::new());
        for ((_, w), row) in labelled::first_subwords(&e.word_ids)
            .into_iter()
            .zip(rows.chunks(l))
        {
            let y = tags[w];
            loss += smoothed_nll(&log_softmax(row), y, label_smoothing);
            words += 1;
            gold.push(names[y].as_str());
            pred.push(names[argmax(row)].as_str());
        }
        counts.add(&gold, &pred);
    }
    Ok(EvalReport::Token(counts.report(loss / words.max(1) as f64)))
}

/// The report of `logits` (N rows) against `targets`.
fn report_of(
    problem: ProblemType,
    logits: &[Vec<f32>],
    targets: &[&Target],
    (num_labels, label_smoothing): (usize, f64),
) -> Result<EvalReport> {
    let mismatch = || Error::Config(format!("labels do not fit problem_type {problem}"));
    Ok(match problem {
        ProblemType::TokenClassification | ProblemType::QuestionAnswering => return Err(mismatch()),
        ProblemType::RewardModeling => {
            let mut rewards = Vec::with_capacity(logits.len());
            let mut margins = Vec::with_capacity(logits.len());
            for (l, t) in logits.iter().zip(targets) {
                match (t, &l[..]) {
                    (Target::Preference(m), &[c, r]) => {
                        rewards.push((c, r));
                        margins.push(*m);
                    }
                    _ => return Err(mismatch()),
                }
            }
            // `label_smoothing` carries the centering coefficient here.
            EvalReport::Reward(RewardReport::new(&rewards, &margins, label_smoothing))
        }
        ProblemType::MultipleChoice => {
            let (mut correct, mut loss) = (0u64, 0f64);
            for (l, t) in logits.iter().zip(targets) {
                let Target::Class(y) = t else {
                    return Err(mismatch());
                };
                if *y >= l.len() {
                    return Err(mismatch());
                }
                loss += smoothed_nll(&log_softmax(l), *y, label_smoothing);
                correct += u64::from(argmax(l) == *y);
            }
            let choices = logits.first().map_or(0, Vec::len);
            EvalReport::Choice(ChoiceReport::new(
                correct,
                logits.len() as u64,
                choices,
                loss / logits.len().max(1) as f64,
            ))
        }
        ProblemType::SingleLabelClassification => {
            let mut confusion = vec![vec![0u64; num_labels]; num_labels];
            let mut loss = 0f64;
            for (l, t) in logits.iter().zip(targets) {
                let Target::Class(y) = t else {
                    return Err(mismatch());
                };
                let p = softmax(l);
                if label_smoothing == 0.0 {
                    // Cross-entropy from the f32 softmax; the floor keeps a confident miss finite.
                    loss -= (p[*y].max(1e-30) as f64).ln();
                } else {
                    loss += smoothed_nll(&log_softmax(l), *y, label_smoothing);
                }
                confusion[*y][argmax(&p)] += 1;
            }
            EvalReport::Single(report_from_confusion(
                confusion,
                loss / logits.len().max(1) as f64,
            ))
        }
        ProblemType::MultiLabelClassification => {
            let flags = targets
                .iter()
                .map(|t| match t {
                    Target::Classes(f) => Some(&f[..]),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(mismatch)?;
            EvalReport::Multi(multi_label_report(logits, &flags))
        }
        ProblemType::Regression => {
            let values = targets
                .iter()
                .map(|t| match t {
                    Target::Score(x) => Some(f64::from(*x)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(mismatch)?;
            let preds: Vec<f64> = logits.iter().map(|l| f64::from(l[0])).collect();
            EvalReport::Regression(regression_report(&preds, &values))
        }
    })
}

/// Reads a fine-tuning checkpoint's state file.
fn read_state(dir: &Path) -> Result<FinetuneState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path,
        msg: format!("not a fine-tuning state: {e}"),
    })
}

/// What every checkpoint of one run shares, and how one is written.
struct CheckpointWriter<'a> {
    cfg: &'a FinetuneConfig,
    model: &'a TaskConfig,
    /// The fp32 model (with LoRA, the pretrained weights, merged with the adapters into
    /// `model.safetensors`).
    params: &'a Params,
    /// What the optimizer trains (`params`, or LoRA's adapters and head).
    trained: &'a Params,
    lora: Option<&'a Lora>,
    labels: &'a [String],
    train_examples: usize,
    examples_per_step: usize,
    /// `config.json`, `tokenizer.json` and `tokenizer_config.json`, the same in every
    /// checkpoint of the run.
    config_json: Vec<u8>,
    tokenizer: Vec<u8>,
    tokenizer_config: Vec<u8>,
    /// LoRA: peft's `adapter_config.json`, the same in every checkpoint of the run.
    adapter_config: Option<Vec<u8>>,
}

impl<'a> CheckpointWriter<'a> {
    fn new(
        cfg: &'a FinetuneConfig,
        model: &'a TaskConfig,
        (params, trained, lora): (&'a Params, &'a Params, Option<&'a Lora>),
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        labels: &'a [String],
        train_examples: usize,
        examples_per_step: usize,
    ) -> Result<Self> {
        let config = model.to_hf_config(head_of(cfg.data.problem_type), DType::F32);
        // The tokenizer's folder's or an `init_from` transformers folder's own settings for
        // the tokenizer, else built from the same config as config.json (its pad id
        // included).
        let tokenizer_config = lantern_data::tokenizer_config_bytes(
            tokenizer,
            &model_tokens::of_task(model),
            &model_tokens::tokenizer_sources(tokenizer_path, cfg.model.init_from.as_deref()),
        )?;
        Ok(Self {
            cfg,
            model,
            params,
            trained,
            lora,
            labels,
            train_examples,
            examples_per_step,
            config_json: serde_json::to_vec_pretty(&config).expect("JSON serialises"),
            tokenizer: std::fs::read(tokenizer_path).map_err(io(tokenizer_path))?,
            tokenizer_config,
            adapter_config: lora.map(|l| {
                let c = l.adapter_config(cfg.model.init_from.as_deref());
                serde_json::to_vec_pretty(&c).expect("JSON serialises")
            }),
        })
    }

    /// The weight files of one step, made once for its checkpoints: `model.safetensors` (HF
    /// names, fp32) and, with LoRA, peft's `adapter/adapter_model.safetensors`; as (file name
    /// in the checkpoint, bytes).
    fn weights(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let merged = self.lora.map(Lora::merged).transpose()?;
        let model = self
            .model
            .export_tensors(merged.as_ref().unwrap_or(self.params), DType::F32)?;
        let mut files = vec![(
            checkpoint::MODEL_FILE.to_string(),
            safetensors_io::serialize(&model)?,
        )];
        if let Some(l) = self.lora {
            files.push((
                format!("{}/{}", lora::ADAPTER_DIR, lora::ADAPTER_WEIGHTS),
                safetensors_io::serialize(&l.adapter_tensors()?)?,
            ));
        }
        Ok(files)
    }

    fn resume_state(
        &self,
        opt: &Optimizer,
        scaler: Option<&LossScaler>,
        stopper: &EarlyStopping,
        best: Option<&BestCheckpoint>,
    ) -> ResumeState {
        ResumeState {
            optimizer: opt.state(self.trained),
            scaler: scaler.cloned(),
            labels: self.labels.to_vec(),
            train_examples: self.train_examples,
            examples_per_step: self.examples_per_step,
            group_by_length: self.cfg.train.group_by_length,
            evals_without_improvement: stopper.evals_without_improvement,
            best_step: best.map(|b| b.step),
            best_eval: best.map_or(Value::Null, |b| b.report.to_json(self.labels)),
            lora_base: self.lora.map(|l| l.base_fingerprint()),
        }
    }

    /// `<root>/step-N` (atomically; older `step-*` folders under `root` are removed) with
    /// `weights` ([`CheckpointWriter::weights`]), this step's evaluation (if any) and, given
    /// the optimizer, what `--resume` needs.
    fn write(
        &self,
        root: &Path,
        (step, epoch): (u64, usize),
        weights: &[(String, Vec<u8>)],
        eval: Option<(&EvalReport, f64)>,
        resume: Option<(&Optimizer, ResumeState)>,
    ) -> Result<PathBuf> {
        let mut files: Vec<(&str, Vec<u8>)> = weights
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect();
        files.extend([
            (CONFIG_FILE, self.config_json.clone()),
            (TOKENIZER_FILE, self.tokenizer.clone()),
            (TOKENIZER_CONFIG_FILE, self.tokenizer_config.clone()),
        ]);
        let adapter_config = format!("{}/{}", lora::ADAPTER_DIR, lora::ADAPTER_CONFIG);
        if let Some(c) = &self.adapter_config {
            files.push((&adapter_config, c.clone()));
        }
        if let Some((opt, _)) = &resume {
            files.push((
                checkpoint::OPTIMIZER_FILE,
                safetensors_io::serialize(&opt.state_tensors(self.trained))?,
            ));
        }
        let state = FinetuneState {
            format_version: STATE_VERSION,
            step,
            epoch,
            metric: self.cfg.early_stopping.metric.clone(),
            metric_value: eval.map(|e| e.1),
            max_length: self.cfg.data.max_length,
            eval: eval.map_or(Value::Null, |e| e.0.to_json(self.labels)),
            config: self.cfg.clone(),
            resume: resume.map(|r| r.1),
        };
        // The state goes last: a folder is complete when it is there (and the folder is
        // renamed into place only once every file is written anyway).
        let state = serde_json::to_vec_pretty(&state).expect("state serialises");
        files.push((STATE_FILE, state));
        let dir = checkpoint::save(root, step, &files)?;
        for e in std::fs::read_dir(root).map_err(io(root))? {
            let p = e.map_err(io(root))?.path();
            if p != dir
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
            {
                std::fs::remove_dir_all(&p).map_err(io(&p))?;
            }
        }
        Ok(dir)
    }
}

/// Copies a checkpoint's HF files to `out` (replacing it), via a temporary folder.
fn export_folder(src: &Path, out: &Path) -> Result<()> {
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    for f in [
        checkpoint::MODEL_FILE,
        CONFIG_FILE,
        TOKENIZER_FILE,
        STATE_FILE,
    ] {
        std::fs::copy(src.join(f), tmp.join(f)).map_err(io(src.join(f)))?;
    }
    // Absent from a best checkpoint written before it existed (a resumed older run).
    let f = TOKENIZER_CONFIG_FILE;
    if src.join(f).is_file() {
        std::fs::copy(src.join(f), tmp.join(f)).map_err(io(src.join(f)))?;
    }
    copy_adapter(src, &tmp)?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&tmp, out).map_err(io(out))
}

/// Copies a LoRA checkpoint's `adapter/` folder (peft's files) from `src` to `dst`, if it has
/// one.
pub fn copy_adapter(src: &Path, dst: &Path) -> Result<()> {
    let (from, to) = (src.join(lora::ADAPTER_DIR), dst.join(lora::ADAPTER_DIR));
    match from.is_dir() {
        true => lora::copy_files(&from, &to),
        false => Ok(()),
    }
}

/// The model to fine-tune: a pretrained checkpoint with a classification head (fresh unless it
/// is already a classifier with the same labels; a BERT-family encoder, or GPT-2 for sequence
/// or token classification), or a fresh BERT encoder; the id batches are padded with; and the
/// tensors the pretrained folder lacked (drawn fresh, as transformers does).
fn build_model(
    cfg: &FinetuneConfig,
    labels: &[String],
    tokenizer: &Tokenizer,
    tokenizer_path: &Path,
    device: &Device,
    quiet: bool,
) -> Result<(TaskConfig, Params, u32, Vec<String>)> {
    let m = &cfg.model;
    let problem = cfg.data.problem_type;
    let head = head_of(problem);
    // transformers' config knows the problem types of sequence classification only (a reward
    // model's is none: one label, as TRL's).
    let problem_name = (head == BertHead::SequenceClassification
        && problem != ProblemType::RewardModeling)
        .then(|| problem.name().to_string());
    let mut rng = Rng::derive(cfg.train.seed, HEAD_INIT_STREAM);
    let (mut model, params, fresh) = match &m.init_from {
        Some(dir) => {
            let config_path = dir.join(CONFIG_FILE);
            let (c, _) = TaskConfig::from_hf(&config_path)?;
            c.check_head(head, &config_path)?;
            let c = c.with_labels(labels, problem_name);
            check_vocab(tokenizer, c.vocab_size(), tokenizer_path)?;
            let (p, report) = c.load_params(
                &dir.join(checkpoint::MODEL_FILE),
                head,
                &mut rng,
                device,
                DType::F32,
            )?;
            if !quiet {
                if !report.newly_initialised.is_empty() {
                    println!(
                        "newly initialised (not in {}): {}",
                        dir.display(),
                        report.newly_initialised.join(", ")
                    );
                }
                if !report.unused.is_empty() {
                    println!(
                        "unused tensors of {}: {}",
                        dir.display(),
                        report.unused.join(", ")
                    );
                }
            }
            (c, p, report.newly_initialised)
        }
        None => {
            let vocab = lantern_data::tokenizer::vocab_size(tokenizer);
            let hidden = m.hidden_size.unwrap_or(128);
            let mut c = BertConfig::new(
                vocab,
                hidden,
                m.num_hidden_layers.unwrap_or(2),
                m.num_attention_heads.unwrap_or(2),
                m.intermediate_size.unwrap_or(4 * hidden),
                m.max_position_embeddings.unwrap_or(cfg.data.max_length),
            )
            .with_labels(labels);
            c.problem_type = problem_name;
            c.pad_token_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
            let p = init_params(&c, head, &mut rng, device, DType::F32)?;
            (TaskConfig::Bert(c), p, Vec::new())
        }
    };
    match &mut model {
        TaskConfig::Bert(bert) => {
            if let Some(p) = m.hidden_dropout_prob {
                bert.hidden_dropout_prob = p;
            }
            if let Some(p) = m.attention_probs_dropout_prob {
                bert.attention_probs_dropout_prob = p;
            }
            if let Some(p) = m.classifier_dropout {
                bert.classifier_dropout = Some(p);
            }
        }
        TaskConfig::Decoder(g) => {
            // GPT-2 here has one dropout rate (embeddings, attention and residuals), Llama none;
            // their token classifiers have one of their own.
            let family = g.family();
            let one_rate = match &mut g.lm {
                DecoderConfig::Gpt(c) => {
                    if let Some(p) = m.hidden_dropout_prob {
                        c.dropout = p;
                    }
                    "GPT-2 has one dropout rate for embeddings, attention and residuals: set \
                     model.hidden_dropout_prob"
                }
                DecoderConfig::Llama(_) => {
                    if m.hidden_dropout_prob.is_some() {
                        return Err(Error::Config(
                            "model.hidden_dropout_prob: Llama has no dropout in its transformer \
                             (its token classifier's is model.classifier_dropout)"
                                .into(),
                        ));
                    }
                    "Llama has no dropout in its transformer"
                }
            };
            if m.attention_probs_dropout_prob.is_some() {
                return Err(Error::Config(format!(
                    "model.attention_probs_dropout_prob is a BERT-family setting; {one_rate}"
                )));
            }
            match (m.classifier_dropout, head) {
                (Some(p), BertHead::TokenClassification) => g.classifier_dropout = Some(p),
                (Some(_), _) => {
                    return Err(Error::Config(format!(
                        "model.classifier_dropout: the {family} sequence classifier has no \
                         dropout of its own (its token classifier has); {one_rate}"
                    )))
                }
                (None, _) => {}
            }
        }
    }
    // Only a decoder (from `init_from`) can lack a padding id: its config is the file to name.
    let config_path = m
        .init_from
        .as_ref()
        .map_or_else(|| tokenizer_path.to_path_buf(), |d| d.join(CONFIG_FILE));
    let pad = pad_id(tokenizer, &mut model, &config_path)?;
    model.validate()?;
    if cfg.data.max_length > model.max_tokens() {
        return Err(Error::Config(format!(
            "data.max_length {} exceeds the model's limit of {} tokens",
            cfg.data.max_length,
            model.max_tokens(),
        )));
    }
    Ok((model, params, pad, fresh))
}

/// Runs a fine-tuning described by `cfg`.
pub fn finetune(mut cfg: FinetuneConfig, opts: FinetuneOptions) -> Result<FinetuneSummary> {
    // `init_from` may name a run folder (a pretraining run's newest checkpoint, a fine-tuning
    // run's model); the resolved config records the folder actually read.
    if let Some(dir) = cfg.model.init_from.as_mut() {
        *dir = resolve_checkpoint(dir)?;
    }
    // The world a launcher set up (a world of one without one), and this rank's device. Rank 0
    // alone prints and writes metrics and checkpoints.
    let World {
        comm,
        device,
        device_name,
    } = join_world(&cfg.train.device)?;
    let (rank, world) = (comm.rank(), comm.world_size());
    let main = rank == 0;
    let quiet = opts.quiet || !main;
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    let run_dir = cfg.run.dir.clone();
    let (last_root, best_root) = (run_dir.join("last"), run_dir.join("best"));

    // Never silently fine-tune over an existing run: continuing it must be asked for.
    let resumed = if opts.resume {
        if main {
            for root in [&last_root, &best_root] {
                for p in checkpoint::clean_incomplete(root)? {
                    eprintln!("removed incomplete checkpoint {}", p.display());
                }
            }
        }
        // Cleaning may put a checkpoint back in place: look only once it is done.
        comm.barrier()?;
        let newest = newest_in(&last_root)?;
        agree_on_checkpoint(&comm, newest.as_ref().map(|c| c.0), &last_root)?;
        match newest {
            Some((_, dir)) => {
                let st = read_state(&dir)?;
                let Some(rs) = st.resume.clone() else {
                    return Err(Error::Checkpoint {
                        path: dir.join(STATE_FILE),
                        msg: "holds no optimizer state to resume from (written by an older \
                              version); start a new run.dir"
                            .into(),
                    });
                };
                Some((dir, st, rs))
            }
            None => {
                if !quiet {
                    // torchrun-style restarts pass --resume every time; the first start has
                    // nothing to continue.
                    eprintln!(
                        "no complete checkpoint in {}: starting a new run",
                        last_root.display()
                    );
                }
                None
            }
        }
    } else {
        for root in [&last_root, &best_root] {
            if let Some((step, p)) = newest_in(root)? {
                return Err(Error::Config(format!(
                    "run.dir {} already holds checkpoint step {step} ({}); pass --resume to \
                     continue it or set another run.dir",
                    run_dir.display(),
                    p.display()
                )));
            }
        }
        None
    };
    if main {
        std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
        let resolved = run_dir.join("config.toml");
        std::fs::write(&resolved, cfg.to_toml()).map_err(io(&resolved))?;
    }

    // Data and labels.
    let tokenizer_path = match (&cfg.model.tokenizer, &cfg.model.init_from) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.join(TOKENIZER_FILE),
        (None, None) => unreachable!("validated: a fresh model names its tokenizer"),
    };
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    let d = &cfg.data;
    let problem = d.problem_type;
    let qa_opts = QaOptions::of(d);
    // Question answering reads its own layout (crate::finetune_qa), and has no labels.
    let is_qa = problem == ProblemType::QuestionAnswering;
    // Reward modeling reads preference records (crate::finetune_reward).
    let is_rm = problem == ProblemType::RewardModeling;
    let read = |p: &Path| labelled::read_for_problem(p, &d.columns(), problem);
    let train_raw = match is_qa || is_rm {
        true => Vec::new(),
        false => read(&d.train)?,
    };
    if let Some(ex) = train_raw.iter().find(|e| e.label.is_none()) {
        return Err(Error::Config(format!(
            "{}: {}: training examples need a \"label\"",
            d.train.display(),
            lantern_data::records::place(&d.train, ex.line)
        )));
    }
    let labels = match (&d.labels, problem) {
        (_, ProblemType::QuestionAnswering) => Vec::new(),
        (Some(_), ProblemType::Regression) => {
            return Err(Error::Config(
                "data.labels names classes; regression (data.problem_type) has none".into(),
            ))
        }
        (Some(l), _) => l.clone(),
        (None, _) => match labelled::declared_label_names(&d.train, &d.columns(), problem)? {
            Some(names) => names,
            None => labelled::label_names(&train_raw, problem, &d.train)?,
        },
    };
    if !matches!(
        problem,
        ProblemType::Regression
            | ProblemType::QuestionAnswering
            | ProblemType::MultipleChoice
            | ProblemType::RewardModeling
    ) && labels.len() < 2
    {
        return Err(Error::Config(format!(
            "{}: classification needs at least two labels, found {labels:?}",
            d.train.display()
        )));
    }
    let (task_cfg, mut params, pad, fresh) =
        build_model(&cfg, &labels, &tokenizer, &tokenizer_path, &device, quiet)?;
    if let Some((dir, st, rs)) = &resumed {
        if st.config.data.problem_type != problem {
            return Err(Error::Checkpoint {
                path: dir.join(STATE_FILE),
                msg: format!(
                    "the run was fine-tuned as {}, the config now asks for {problem}",
                    st.config.data.problem_type
                ),
            });
        }
        // Another optimizer has other buffers: say so before reading them.
        let want = cfg.train.optim.kind.name();
        if rs.optimizer.kind != want {
            return Err(Error::Checkpoint {
                path: dir.join(STATE_FILE),
                msg: format!(
                    "the run was fine-tuned with optimizer {:?}, the config asks for {want:?} \
                     (train.optimizer); resume with the same optimizer or start a new run.dir",
                    rs.optimizer.kind
                ),
            });
        }
        if rs.labels != labels {
            return Err(Error::Checkpoint {
                path: dir.join(STATE_FILE),
                msg: format!(
                    "the run was fine-tuned with labels {:?}, the data now gives {labels:?}",
                    rs.labels
                ),
            });
        }
        lora::check_same_settings(&st.config.lora, &cfg.lora, &dir.join(STATE_FILE))?;
        // LoRA: the pretrained model as built above; the adapters and the head come below.
        if cfg.lora.is_none() {
            params = load_trained(
                &dir.join(checkpoint::MODEL_FILE),
                &task_cfg,
                problem,
                &device,
            )?;
        }
    }
    if world > 1 {
        // Every rank built the same weights (the same files, the same seeded head); rank 0's
        // are broadcast all the same, so that the ranks start identical by construction.
        for v in params.vars() {
            comm.broadcast(v.as_tensor(), 0)?;
        }
    }
    let tok = labelled::for_classification(&tokenizer, d.max_length, &tokenizer_path)?;
    // Question answering: the questions behind the validation and test windows, which their
    // evaluation turns answers back into text against.
    let (mut val_qa, mut test_qa) = (None, None);
    let rm_reader = match is_rm {
        true => {
            let tok = (&tokenizer, tokenizer_path.as_path());
            Some(RewardReader::for_model(tok, &task_cfg, d.max_length)?)
        }
        false => None,
    };
    let read_rm = |p: &Path| -> Result<Vec<Encoded>> {
        let reader = rm_reader.as_ref().expect("reward modeling has its reader");
        let (examples, note) = reader.read(p, &tokenizer)?;
        if let Some(n) = note {
            say(n);
        }
        Ok(examples)
    };
    let (train, val) = match &d.validation {
        _ if is_rm => {
            let train = read_rm(&d.train)?;
            match &d.validation {
                Some(v) => (train, read_rm(v)?),
                None => {
                    let (ti, vi) =
                        labelled::split_indices(train.len(), d.val_fraction, cfg.train.seed)?;
                    let pick = |idx: &[usize]| idx.iter().map(|&i| train[i].clone()).collect();
                    (pick(&ti), pick(&vi))
                }
            }
        }
        _ if is_qa => {
            let read = |p: &Path| {
                lantern_data::qa::read_qa_with(p, qa_opts.version_2_with_negative)
                    .map_err(Error::from)
            };
            let (train_qa, v) = match &d.validation {
                Some(v) => (
                    QaData::new(&tokenizer, read(&d.train)?, &qa_opts, &d.train, true)?,
                    QaData::load(&tokenizer, v, &qa_opts, true)?,
                ),
                None => QaData::split(
                    &tokenizer,
                    read(&d.train)?,
                    (d.val_fraction, cfg.train.seed),
                    &qa_opts,
                    &d.train,
                )?,
            };
            // The squad_v2 metric reports HasAns_* (NoAns_*) only when some questions have
            // (lack) answers: early stopping on a figure that will not exist fails now.
            let metric = cfg.early_stopping.metric.as_str();
            let missing = match metric.split_once('_') {
                Some(("HasAns", _)) => !v.examples.iter().any(|e| !e.answers.is_empty()),
                Some(("NoAns", _)) => !v.examples.iter().any(|e| e.unanswerable),
                _ => false,
            };
            if missing {
                let from = d.validation.as_ref().unwrap_or(&d.train);
                return Err(Error::Config(format!(
                    "early_stopping.metric {metric:?}: the {} validation questions (from {}) \
                     include no {} question, and the squad_v2 metric reports it only when \
                     they do",
                    v.examples.len(),
                    from.display(),
                    if metric.starts_with("HasAns") {
                        "answerable"
                    } else {
                        "unanswerable"
                    }
                )));
            }
            let encoded = (train_qa.encoded(), v.encoded());
            val_qa = Some(v);
            encoded
        }
        Some(v) => {
            let val_raw = read(v)?;
            (
                labelled::encode(&tok, &train_raw, (problem, &labels), &d.train)?,
                labelled::encode(&tok, &val_raw, (problem, &labels), v)?,
            )
        }
        None => {
            let (ti, vi) =
                labelled::split_indices(train_raw.len(), d.val_fraction, cfg.train.seed)?;
            let pick = |idx: &[usize]| -> Vec<RawExample> {
                idx.iter().map(|&i| train_raw[i].clone()).collect()
            };
            (
                labelled::encode(&tok, &pick(&ti), (problem, &labels), &d.train)?,
                labelled::encode(&tok, &pick(&vi), (problem, &labels), &d.train)?,
            )
        }
    };
    // Read now, so that a bad test file fails before training rather than after.
    let test = match &d.test {
        Some(p) if is_rm => Some(read_rm(p)?),
        Some(p) if is_qa => {
            let t = QaData::load(&tokenizer, p, &qa_opts, true)?;
            let encoded = t.encoded();
            test_qa = Some(t);
            Some(encoded)
        }
        Some(p) => {
            let raw = read(p)?;
            let ex = labelled::encode(&tok, &raw, (problem, &labels), p)?;
            if let Some(e) = ex.iter().find(|e| e.label.is_none()) {
                return Err(Error::Config(format!(
                    "{}: {}: test examples need a \"label\"",
                    p.display(),
                    lantern_data::records::place(p, e.line)
                )));
            }
            Some(ex)
        }
        None => None,
    };
    let (layers, width) = task_cfg.layers_and_width();
    let continuation = labelled::continuation_classes(&labels);
    let t = &cfg.train;
    // One step takes `batch_size` examples per micro-batch, `grad_accum` micro-batches and
    // `world` ranks (as torchrun with transformers' Trainer).
    let per_step = t.batch_size * t.grad_accum * world;
    if let Some((dir, _, rs)) = &resumed {
        // The shuffled order and the steps of an epoch depend on these: another value would
        // continue a different run.
        let what = if rs.train_examples != train.len() {
            Some(format!(
                "{} training examples, the data now has {}",
                rs.train_examples,
                train.len()
            ))
        } else if rs.examples_per_step != per_step {
            Some(format!(
                "{} examples per step, this run takes {per_step} (batch_size {} x grad_accum \
                 {} x {world} rank(s)); keep batch_size x grad_accum x ranks the same",
                rs.examples_per_step, t.batch_size, t.grad_accum
            ))
        } else if rs.group_by_length != t.group_by_length {
            Some(format!(
                "train.group_by_length = {}, the config now sets {}",
                rs.group_by_length, t.group_by_length
            ))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(Error::Checkpoint {
                path: dir.join(STATE_FILE),
                msg: format!("the run was fine-tuned with {what}"),
            });
        }
    }
    match &val_qa {
        Some(v) => say(format!(
            "fine-tuning {} layers x {} hidden on {device_name}, question answering: {} train \
             / {} validation windows ({} validation questions{})",
            layers,
            width,
            train.len(),
            val.len(),
            v.examples.len(),
            match qa_opts.version_2_with_negative {
                true => format!(
                    ", {} of them unanswerable",
                    v.examples.iter().filter(|e| e.unanswerable).count()
                ),
                false => String::new(),
            }
        )),
        None if is_rm => say(format!(
            "fine-tuning {} layers x {} hidden on {device_name}, reward model: {} train / {} \
             validation preferences{}",
            layers,
            width,
            train.len(),
            val.len(),
            match d.center_rewards_coefficient {
                Some(c) => format!(", rewards centred with coefficient {c}"),
                None => String::new(),
            }
        )),
        None if problem == ProblemType::MultipleChoice => say(format!(
            "fine-tuning {} layers x {} hidden on {device_name}, multiple choice of {}: {} \
             train / {} validation examples",
            layers,
            width,
            train.first().map_or(0, |e| e.choice_lens.len()),
            train.len(),
            val.len()
        )),
        None => say(format!(
            "fine-tuning {} layers x {} hidden on {device_name}, {} labels {:?}: {} train / {} \
             validation examples",
            layers,
            width,
            labels.len(),
            labels,
            train.len(),
            val.len()
        )),
    }

    // Optimisation.
    let steps_per_epoch = train.len().div_ceil(per_step) as u64;
    // transformers' `max_steps` takes the place of the epochs: they repeat until it, the
    // last one cut short.
    let (epochs, total_steps) = match t.max_steps {
        Some(m) => (m.div_ceil(steps_per_epoch) as usize, m),
        None => (t.epochs, steps_per_epoch * t.epochs as u64),
    };
    let schedule = Schedule {
        kind: t.schedule,
        lr: t.lr,
        min_lr: crate::schedule::finetune_end_lr(t.schedule),
        power: t.poly_power,
        cycles: t.num_cycles,
        timescale: t.timescale,
        // transformers: warmup_steps = ceil(warmup_ratio * total).
        warmup_steps: t
            .warmup_steps
            .unwrap_or((t.warmup_ratio * total_steps as f64).ceil() as u64),
        total_steps,
        decay_steps: 0,
    };
    // Mixed precision: the model reads a bf16/fp16 working copy; `params` stay the fp32
    // masters, which the checkpoints hold.
    let work = match t.precision {
        Precision::Fp32 => None,
        p => Some(params.to(&device, p.dtype())?),
    };
    // LoRA: the optimizer trains the adapters and the head; `params` hold the pretrained
    // weights (merged with the adapters only in what checkpoints write).
    if let (Some(from), Some(adapter)) = (
        &cfg.model.init_from,
        cfg.lora.as_ref().and_then(|l| l.adapter.as_ref()),
    ) {
        lora::check_not_merged(from, adapter)?;
    }
    let lora = match &cfg.lora {
        Some(spec) => Some(Lora::new(
            spec,
            lora::Base::Task(&task_cfg, head_of(problem)),
            (&params, work.as_ref()),
            &fresh,
            &mut Rng::derive(t.seed, LORA_STREAM),
        )?),
        None => None,
    };
    let params = lora::pretrained_store(lora.as_ref(), params);
    let work_params = work.as_ref().unwrap_or(&params);
    if let (Some(l), Some((dir, _, rs))) = (&lora, &resumed) {
        let state_file = dir.join(STATE_FILE);
        l.resume(
            dir,
            (&state_file, rs.lora_base),
            cfg.model.init_from.as_deref(),
        )?;
    }
    if let (Some(l), true) = (&lora, world > 1) {
        l.broadcast(&comm)?;
    }
    let trained = lora.as_ref().map_or(&params, |l| l.master());
    let opt_cfg = OptimizerConfig::from_keys(&t.optim);
    let mut opt = Optimizer::new(opt_cfg, trained)?;
    if let Some((dir, _, rs)) = &resumed {
        let p = dir.join(checkpoint::OPTIMIZER_FILE);
        let tensors = safetensors_io::load_float(&p, &device, DType::F32)?;
        opt.load_state(trained, tensors, &rs.optimizer, &p)?;
    }
    if let Some(l) = &lora {
        say(format!("{}, the task head in full", l.describe()));
    }
    let lora_view = lora.as_ref().map(Lora::view);
    // What the model reads: the working store, with LoRA's adapters when there are any.
    let model_store = lora_view.as_ref().unwrap_or(work_params);
    // torch.amp.GradScaler's defaults, as transformers' Trainer uses them with fp16=True.
    let mut scaler = (t.precision == Precision::Fp16).then(|| {
        resumed
            .as_ref()
            .and_then(|r| r.2.scaler.clone())
            .unwrap_or_else(|| LossScaler::new(65536.0, 2.0, 0.5, 2000))
    });
    say(format!(
        "{} | {opt_cfg} | batch {} x {} accumulated x {world} rank(s) = {per_step} examples per \
         step{} | {steps_per_epoch} steps per epoch",
        t.precision,
        t.batch_size,
        t.grad_accum,
        if t.group_by_length {
            ", grouped by length"
        } else {
            ""
        }
    ));
    // Reward models train without dropout, as TRL's (`disable_dropout`); exports keep the
    // configured rates.
    let run_cfg = match is_rm && d.disable_dropout.unwrap_or(true) {
        true => task_cfg.without_dropout(),
        false => task_cfg.clone(),
    };
    let loss_coef = loss_coef(&cfg);
    let model = TaskModel::new(&run_cfg, model_store, head_of(problem))?
        .with_neftune(cfg.train.neftune_noise_alpha.unwrap_or(0.0));
    // Evaluations read the same weights without recording a graph (nor NEFTune's noise).
    let eval_model = TaskModel::new(&run_cfg, &model_store.frozen(), head_of(problem))?;
    let mut stopper = EarlyStopping::new(cfg.higher_is_better(), cfg.early_stopping.patience)
        .with_threshold(cfg.early_stopping.threshold);
    let metric = cfg.early_stopping.metric.clone();
    let mut best: Option<BestCheckpoint> = None;
    let mut step = 0u64;
    if let Some((dir, st, rs)) = &resumed {
        step = st.step;
        stopper.evals_without_improvement = rs.evals_without_improvement;
        if let Some(best_step) = rs.best_step {
            let bad = |msg: String| Error::Checkpoint {
                path: dir.join(STATE_FILE),
                msg,
            };
            let report = EvalReport::from_json(&rs.best_eval)
                .ok_or_else(|| bad("best_eval is not an evaluation report".into()))?;
            let value = report.metric(&metric).ok_or_else(|| {
                bad(format!(
                    "the best evaluation has no {metric:?} (early_stopping.metric changed?)"
                ))
            })?;
            stopper.best = Some(value);
            best = Some(BestCheckpoint {
                step: best_step,
                metric: value,
                report,
                dir: best_root.join(checkpoint::dir_name(best_step)),
            });
        }
        say(format!(
            "resumed at step {step} of {total_steps} from {}",
            dir.display()
        ));
    }
    let resumed_from = resumed.as_ref().map(|r| r.1.step);
    let mut log = match main {
        true => Some(MetricsLog::open_run(
            &run_dir,
            resumed_from,
            cfg.run.tensorboard,
        )?),
        false => None,
    };
    let writer = CheckpointWriter::new(
        &cfg,
        &task_cfg,
        (&params, trained, lora.as_ref()),
        (&tokenizer, &tokenizer_path),
        &labels,
        train.len(),
        per_step,
    )?;
    // An early stop already decided (a resume of a finished run) leaves nothing to train.
    let mut stopped_early = stopper.exhausted() && step < total_steps;
    let (mut cut_short, mut preempted) = (false, false);
    let mut epochs_run = (step / steps_per_epoch.max(1)) as usize;
    let stop_requested = || opts.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
    let started = Instant::now();
    let mut run_steps = 0u64;

    // One evaluation: metrics, best/ (if better) and last/ checkpoints; returns whether to
    // stop. best/ is written first, so that last/ never names a best checkpoint that is not
    // there yet.
    let eval_and_save = |log: &mut Option<MetricsLog>,
                         (step, epoch): (u64, usize),
                         stopper: &mut EarlyStopping,
                         best: &mut Option<BestCheckpoint>,
                         opt: &Optimizer,
                         scaler: Option<&LossScaler>|
     -> Result<bool> {
        let r = evaluate_on(
            &comm,
            &eval_model,
            &val,
            (problem, &labels, loss_coef),
            (t.eval_batch_size, pad),
            &device,
            val_qa.as_ref().map(|v| (v, &qa_opts)),
        )?;
        // The name is validated, but the squad_v2 metric has no HasAns_* (NoAns_*) figure
        // without answerable (unanswerable) questions; the validation data was checked for
        // that before training, so this is only a guard.
        let value = r.metric(&metric).ok_or_else(|| {
            Error::Config(format!(
                "early_stopping.metric {metric:?} is not in the evaluation's report"
            ))
        })?;
        let (improved, stop) = stopper.observe(value);
        let mut rec = r.to_json(&labels);
        rec["kind"] = json!("eval");
        rec["step"] = json!(step);
        rec["epoch"] = json!(epoch);
        rec["improved"] = json!(improved);
        let Some(log) = log.as_mut() else {
            // Not rank 0: the same decision, nothing written.
            if improved {
                *best = Some(BestCheckpoint {
                    step,
                    metric: value,
                    report: r,
                    dir: best_root.join(checkpoint::dir_name(step)),
                });
            }
            return Ok(stop);
        };
        log.write(&rec)?;
        say(format!(
            "eval step {step} (epoch {epoch}){}\n{}",
            if improved { " *best*" } else { "" },
            r.pretty(&labels)
        ));
        let weights = writer.weights()?;
        if improved {
            let dir = writer.write(&best_root, (step, epoch), &weights, Some((&r, value)), None)?;
            *best = Some(BestCheckpoint {
                step,
                metric: value,
                report: r.clone(),
                dir,
            });
        }
        let rs = writer.resume_state(opt, scaler, stopper, best.as_ref());
        writer.write(
            &last_root,
            (step, epoch),
            &weights,
            Some((&r, value)),
            Some((opt, rs)),
        )?;
        Ok(stop)
    };

    let train_lengths: Vec<usize> = train.iter().map(|e| e.ids.len()).collect();
    let start_epoch = (step / steps_per_epoch) as usize + 1;
    let skip_steps = (step % steps_per_epoch) as usize;
    'epochs: for epoch in start_epoch..=epochs {
        if stopped_early {
            break;
        }
        epochs_run = epoch;
        let mut rng = Rng::derive(t.seed, SHUFFLE_STREAM + 1000 * epoch as u64);
        let order = match t.group_by_length {
            // transformers groups by the examples of one optimizer step on every rank.
            true => labelled::length_grouped(&train_lengths, per_step, &mut rng),
            false => labelled::permutation(train.len(), &mut rng),
        };
        let epoch_start = Instant::now();
        let (mut epoch_loss, mut epoch_steps) = (0f64, 0usize);
        let skip = if epoch == start_epoch { skip_steps } else { 0 };
        for (si, group) in order.chunks(per_step).enumerate().skip(skip) {
            let step_start = Instant::now();
            // This rank's micro-batches, each padded to its own longest example: micro-batch m
            // of rank r takes the `batch_size` examples from (m·W + r)·batch_size on, so that the
            // ranks' m-th micro-batches together are micro-batch m of one process with a batch
            // W times larger. A short last step leaves the later ranks fewer or none.
            let mut tensors = Vec::with_capacity(t.grad_accum);
            for m in 0..t.grad_accum {
                let from = (m * world + rank) * t.batch_size;
                let Some(chunk) = group.get(from..group.len().min(from + t.batch_size)) else {
                    continue;
                };
                if chunk.is_empty() {
                    continue;
                }
                let items: Vec<&Encoded> = chunk.iter().map(|&i| &train[i]).collect();
                let stream = (step * t.grad_accum as u64 + m as u64) * world as u64 + rank as u64;
                let mut batch = labelled::pad_batch(&items, pad);
                if d.label_all_tokens {
                    labelled::label_all_subtokens(&mut batch, &items, &continuation);
                }
                tensors.push((batch_tensors(&batch, problem, &device)?, stream));
            }
            let micro: Vec<ClsMicro<'_>> = tensors
                .iter()
                .map(|(b, stream)| ClsMicro {
                    input: BertInput {
                        ids: &b.ids,
                        token_type_ids: Some(&b.type_ids),
                        attention_mask: Some(&b.mask),
                    },
                    labels: b.labels.clone(),
                    weights: b.weights.clone(),
                    stream: *stream,
                })
                .collect();
            let lr = schedule.lr_at(step);
            let scale_before = scaler.as_ref().map(|sc| sc.scale);
            let out = classifier_step(
                &comm,
                ClsModel {
                    model: &model,
                    work: model_store,
                    master: trained,
                    lora: lora.as_ref(),
                },
                &mut opt,
                &micro,
                ClsStep {
                    lr,
                    grad_clip: t.grad_clip,
                    dropout_seed: t.seed ^ DROPOUT_STREAM,
                    step,
                    // Every rank sees the whole step's examples: the same count everywhere.
                    rows: group
                        .iter()
                        .map(|&i| train_rows_of(&train[i], problem, d.label_all_tokens))
                        .sum(),
                    problem,
                    loss_coef,
                    activation_checkpointing: t.activation_checkpointing,
                },
                scaler.as_mut(),
            )?;
            // The step's time (batches, forward, backward, all-reduce, update) and the tokens
            // it read on every rank, padding left out.
            let step_ms = step_start.elapsed().as_secs_f64() * 1e3;
            let tokens: usize = group.iter().map(|&i| train[i].ids.len()).sum();
            step += 1;
            epoch_loss += out.loss;
            epoch_steps += 1;
            let mut rec = json!({"kind": "train", "step": step, "epoch": epoch, "loss": out.loss, "lr": lr, "grad_norm": out.grad_norm, "tokens": tokens, "step_ms": step_ms});
            if let Some(sc) = scale_before {
                rec["loss_scale"] = json!(sc);
                rec["skipped"] = json!(out.skipped);
            }
            if let Some(log) = log.as_mut() {
                log.write(&rec)?;
            }
            run_steps += 1;
            if !quiet && (si + 1) % 20 == 0 {
                // The time left, at the pace of the steps this process ran (evaluations
                // included).
                let pace = started.elapsed().as_secs_f64() / run_steps as f64;
                println!(
                    "epoch {epoch} step {step}/{total_steps} loss {:.4} lr {lr:.2e} ({:.1} s, ~{} left)",
                    epoch_loss / epoch_steps as f64,
                    epoch_start.elapsed().as_secs_f64(),
                    crate::trainer::hms(pace * total_steps.saturating_sub(step) as f64)
                );
            }
            // An evaluation after every epoch, every `eval_every_steps` within one, and after
            // the last step (`max_steps` may end an epoch early).
            let last_step = step == total_steps;
            let last_of_epoch = si as u64 + 1 == steps_per_epoch || last_step;
            if last_of_epoch {
                say(format!(
                    "epoch {epoch}: mean train loss {:.4} in {:.1} s",
                    epoch_loss / epoch_steps as f64,
                    epoch_start.elapsed().as_secs_f64()
                ));
            }
            let evaluated =
                last_of_epoch || t.eval_every_steps.is_some_and(|n| step.is_multiple_of(n));
            if evaluated
                && eval_and_save(
                    &mut log,
                    (step, epoch),
                    &mut stopper,
                    &mut best,
                    &opt,
                    scaler.as_ref(),
                )?
            {
                stopped_early = step < total_steps;
                break 'epochs;
            }
            // A stop asked of any rank stops every rank after this same step, with last/
            // written at it (unless the evaluation just wrote it).
            let stop_now = step < total_steps && agree_on_stop(&comm, stop_requested())?;
            let stop_here = opts.stop_after.is_some_and(|n| step >= n) && step < total_steps;
            if stop_now || stop_here {
                if main && !evaluated {
                    let rs = writer.resume_state(&opt, scaler.as_ref(), &stopper, best.as_ref());
                    let weights = writer.weights()?;
                    writer.write(&last_root, (step, epoch), &weights, None, Some((&opt, rs)))?;
                }
                // No rank leaves before the checkpoint it would be restarted from is there.
                comm.barrier()?;
                say(format!(
                    "stopped after step {step} with a checkpoint in {}; continue with --resume",
                    last_root.display()
                ));
                (cut_short, preempted) = (true, stop_now);
                break 'epochs;
            }
            if last_step {
                break 'epochs;
            }
        }
    }
    let train_seconds = started.elapsed().as_secs_f64();
    if main {
        // Train and validation loss over the whole run (a resumed one included), as `train`.
        crate::plot::write_run_losses(
            &run_dir.join("metrics.jsonl"),
            &run_dir.join("loss.png"),
            ("eval", "eval_loss"),
        )?;
    }
    let mut exported = None;
    let mut test_report = None;
    if !cut_short {
        let b = best
            .as_ref()
            .expect("a run that ends has evaluated, and the first evaluation always improves");
        let out = run_dir.join("model");
        if main {
            export_folder(&b.dir, &out)?;
        }
        if stopped_early {
            say(format!(
                "early stopping: {metric} did not improve for {} evaluations",
                cfg.early_stopping.patience.unwrap_or(0)
            ));
        }
        say(format!(
            "best {metric} {:.4} at step {}: {} -> exported to {}",
            b.metric,
            b.step,
            b.dir.display(),
            out.display()
        ));
        exported = Some(out);
        if let (Some(test), Some(path), true) = (&test, &cfg.data.test, main) {
            // The best model, as exported, on rank 0 alone: the others may not see best/.
            let best_params = load_trained(
                &b.dir.join(checkpoint::MODEL_FILE),
                &task_cfg,
                problem,
                &device,
            )?;
            let best_model = TaskModel::new(&run_cfg, &best_params.frozen(), head_of(problem))?;
            let r = evaluate_on(
                &Communicator::single(),
                &best_model,
                test,
                (problem, &labels, loss_coef),
                (t.eval_batch_size, pad),
                &device,
                test_qa.as_ref().map(|v| (v, &qa_opts)),
            )?;
            let mut rec = r.to_json(&labels);
            rec["data"] = json!(path.display().to_string());
            rec["best_step"] = json!(b.step);
            let out = run_dir.join("test_metrics.json");
            let text = serde_json::to_string_pretty(&rec).expect("JSON serialises");
            std::fs::write(&out, text).map_err(io(&out))?;
            // No "step": a resume keeps only the records up to its step, so a resumed
            // finished run does not log the test twice.
            rec["kind"] = json!("test");
            if let Some(log) = log.as_mut() {
                log.write(&rec)?;
            }
            say(format!(
                "test ({}, best model of step {}):\n{}",
                path.display(),
                b.step,
                r.pretty(&labels)
            ));
            test_report = Some(r);
        }
    }
    Ok(FinetuneSummary {
        run_dir,
        steps: step,
        epochs_run,
        stopped_early,
        best,
        exported,
        labels,
        train_seconds,
        resumed_from,
        cut_short,
        preempted,
        test: test_report,
        rank,
        world_size: world,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_smoothing_is_torchs_in_training_and_in_evaluation() {
        // torch: F.cross_entropy(x, y, label_smoothing=0.1, reduction="sum") in float64 gives
        // 4.762963198700971 (4.7962965320343045 without smoothing).
        let rows = [[2.0f32, -1.0, 0.5], [0.0, 3.0, -2.0]];
        let x = Tensor::new(&rows, &Device::Cpu).unwrap();
        let y = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let single = ProblemType::SingleLabelClassification;
        let sum = |eps: f64| {
            summed_loss(&x, (&y, None), single, eps)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        assert!((sum(0.1) - 4.762963198700971).abs() < 1e-5, "{}", sum(0.1));
        assert!((sum(0.0) - 4.7962965320343045).abs() < 1e-5, "{}", sum(0.0));
        // The evaluation's mean loss follows the same definition.
        let logits: Vec<Vec<f32>> = rows.iter().map(|r| r.to_vec()).collect();
        let (a, b) = (Target::Class(2), Target::Class(0));
        let r = report_of(single, &logits, &[&a, &b], (3, 0.1)).unwrap();
        assert!(
            (r.loss() - 4.762963198700971 / 2.0).abs() < 1e-9,
            "{}",
            r.loss()
        );
        // Its gradient: autograd against central differences of the f64 definition.
        let v = candle_core::Var::from_tensor(&x).unwrap();
        let g = summed_loss(v.as_tensor(), (&y, None), single, 0.1)
            .unwrap()
            .backward()
            .unwrap();
        let grad = g.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let exact = |rows: &[[f64; 3]; 2]| -> f64 {
            rows.iter()
                .zip([2usize, 0])
                .map(|(r, y)| {
                    let lse = r.iter().map(|v| v.exp()).sum::<f64>().ln();
                    let mean = r.iter().map(|v| v - lse).sum::<f64>() / 3.0;
                    -(0.9 * (r[y] - lse) + 0.1 * mean)
                })
                .sum()
        };
        let base: [[f64; 3]; 2] = rows.map(|r| r.map(f64::from));
        for i in 0..2 {
            for j in 0..3 {
                let (mut up, mut down) = (base, base);
                up[i][j] += 1e-6;
                down[i][j] -= 1e-6;
                let fd = (exact(&up) - exact(&down)) / 2e-6;
                assert!(
                    (f64::from(grad[i][j]) - fd).abs() < 1e-5,
                    "({i},{j}): {} vs {fd}",
                    grad[i][j]
                );
            }
        }
    }

    /// Token classification's loss is the single-label one over the positions the weights
    /// mark (transformers' labels other than -100), label smoothing included.
    #[test]
    fn token_loss_counts_only_the_labelled_positions() {
        let rows = [[2.0f32, -1.0, 0.5], [9.0, -9.0, 4.0], [0.0, 3.0, -2.0]];
        let tokens = Tensor::new(&[rows], &Device::Cpu).unwrap(); // (1, 3, 3)
        let tags = Tensor::new(&[2u32, 1, 0], &Device::Cpu).unwrap();
        let w = Tensor::new(&[1f32, 0., 1.], &Device::Cpu).unwrap();
        let kept = Tensor::new(&[rows[0], rows[2]], &Device::Cpu).unwrap();
        let kept_y = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        for eps in [0.0, 0.1] {
            let tok = summed_loss(
                &tokens,
                (&tags, Some(&w)),
                ProblemType::TokenClassification,
                eps,
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
            let seq = summed_loss(
                &kept,
                (&kept_y, None),
                ProblemType::SingleLabelClassification,
                eps,
            )
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
            assert!((tok - seq).abs() < 1e-6, "eps {eps}: {tok} vs {seq}");
        }
    }
}

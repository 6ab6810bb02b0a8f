//! The training loop: one flat loop that reads top to bottom. Per optimizer step:
//! micro-batches (forward, loss normalised by the step's target tokens, backward, accumulate)
//! → integrity guard (first step of a process) → NaN guard (a non-finite loss or gradient skips
//! the update) → global norm and clipping → optimizer → metrics → periodic validation and
//! checkpoint → stop on a requested preemption (SIGTERM/SIGINT in the binary).
//!
//! The same loop pretrains GPT (causal LM) and BERT (masked LM); what differs — the model
//! config, initialisation, batches, loss and checkpoint tensors — is in [`crate::task`].
//!
//! Data parallel (docs/distributed.md): a run started by a launcher (`lantern launch`, torchrun,
//! `mpirun`, `srun`) joins its world; `train.batch_size` is then the per-rank micro-batch. Rank 0's
//! initial weights are broadcast, each rank reads its own samples of every global batch, the
//! gradients are summed once per optimizer step (after the last micro-batch), and everything
//! after that runs identically on every rank. Only rank 0 writes logs, metrics and checkpoints.
//! A world of one (no launcher) runs exactly the single-process loop.

use crate::checkpoint::{self, TrainerState};
use crate::config::{BestMetric, RunConfig, TokenLoss, TrainSection};
use crate::dpo::{DpoSet, Pairs};
use crate::early_stopping::EarlyStopping;
use crate::grads::StepGrads;
use crate::kto::KtoSet;
use crate::lm_choice::{self, ChoiceReport, ChoiceSet};
use crate::lora::{self, Lora};
use crate::metrics::MetricsLog;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::precision::{LossScaler, Precision};
use crate::samples::Sampler;
use crate::schedule::Schedule;
use crate::sft::SftSet;
use crate::task::{LossModel, ModelConfig, Scratch, Shards, Task};
use crate::world::{join_world, World};
use crate::{error::io, plot, Error, Result};
use candle_core::{DType, Device, Tensor};
use lantern_comm::{all_reduce_bucketed, Communicator, ReduceOp, DEFAULT_BUCKET_BYTES};
use lantern_data::shard::Shard;
use lantern_kernels::{Rng, RngState};
use lantern_models::bert::BertHead;
use lantern_models::decoder::DecoderConfig;
use lantern_models::hf_config::special_id_list;
use lantern_models::lowrank::LowRankSpec;
use lantern_models::task::TaskConfig;
use lantern_models::Packing;
use lantern_models::{safetensors_io, Mode, Params};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokenizers::Tokenizer;

/// Streams of the run seed: initial weights, dropout. Fixed labels keep them independent.
const INIT_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;
/// KTO's KL forward in training mode: its dropout masks' seed (`train.seed` xor this).
const KL_DROPOUT_STREAM: u64 = 0x6b6c_6d61_736b; // "klmask"
/// LoRA's A matrices.
const LORA_STREAM: u64 = 3;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the newest complete checkpoint of the run folder.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many optimizer steps even if `max_steps` is larger;
    /// the schedule still spans `max_steps`. How a job is cut short and continued later.
    pub stop_after: Option<u64>,
    /// No progress output at all (tests).
    pub quiet: bool,
    /// Test hook: poison one parameter's gradient with NaN at these (0-based) steps.
    pub poison_grad_at: Vec<u64>,
    /// Set (by a signal handler) to ask the loop to finish the current step, write a
    /// checkpoint and return with `preempted`.
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub last_train_loss: Option<f64>,
    pub first_val_loss: Option<f64>,
    pub last_val_loss: Option<f64>,
    pub checkpoint: Option<PathBuf>,
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation per device over the timed steps, when a peak is known
    /// ([`mfu_peak`]).
    pub mfu: Option<f64>,
    pub resumed_from: Option<u64>,
    /// The run stopped early on request ([`TrainOptions::stop`]) after writing `checkpoint`.
    pub preempted: bool,
    /// The run stopped because `early_stopping.metric` stopped improving.
    pub early_stopped: bool,
    /// The best value of `early_stopping.metric` (the validation loss by default) of the
    /// evaluations after training steps, and its step (its checkpoint is `checkpoints/best`
    /// with `checkpoint.save_best`).
    pub best_val: Option<(f64, u64)>,
    /// Which figure `best_val` is.
    pub best_metric: BestMetric,
    /// This process's rank and the world size (1 without a launcher); only rank 0 reports.
    pub rank: usize,
    pub world_size: usize,
}

/// One micro-batch on the device. ids: (B, T) u32; targets: (B·T) u32.
pub struct Batch {
    pub ids: Tensor,
    pub targets: Tensor,
    /// (B·T) f32: 1 where the loss is taken, 0 elsewhere (masked LM's chosen positions);
    /// `None`: every position (causal LM).
    pub weights: Option<Tensor>,
    /// Positions the loss is taken at: B·T, or the number of chosen tokens.
    pub n_targets: usize,
    /// Rows that hold several sequences (packed SFT data): their positions and attention.
    pub packing: Option<Packing>,
    /// How a causal LM's loss weighs each target (SFT's `data.loss_type`).
    pub loss: TokenLoss,
    /// DPO: the rows are preferences' chosen then rejected completions, and the loss DPO's.
    pub pairs: Option<Pairs>,
    /// KTO: the rows are examples' completions (then their KL rows), and the loss KTO's.
    pub unpaired: Option<crate::kto::Unpaired>,
}

pub fn to_batch(
    inputs: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
    device: &Device,
) -> Result<Batch> {
    Ok(Batch {
        ids: Tensor::from_slice(inputs, (b, t), device)?,
        targets: Tensor::from_slice(targets, b * t, device)?,
        weights: None,
        n_targets: b * t,
        packing: None,
        loss: TokenLoss::Nll,
        pairs: None,
        unpaired: None,
    })
}

/// What one optimizer step needs besides the optimizer.
pub struct StepInputs<'a> {
    pub model: &'a dyn LossModel,
    /// The variables the model reads (the working copy, bf16/fp16 in mixed precision).
    pub params: &'a Params,
    /// The fp32 master weights the optimizer updates; the same store as `params` in fp32.
    /// With LoRA, the adapters ([`Lora::master`]).
    pub master: &'a Params,
    /// LoRA: `params` is [`Lora::view`] (the model's store with the adapters' A and B), whose
    /// gradients become the masters' and whose working copies are refreshed after each update.
    pub lora: Option<&'a Lora>,
    /// This rank's micro-batches of the step: all `micro_batches` of them, or the first few
    /// (none on a rank past the examples) in an epoch's short last step.
    pub batches: &'a [Batch],
    /// The configured accumulation M: the dropout streams' stride.
    pub micro_batches: usize,
    pub lr: f64,
    pub grad_clip: f64,
    /// Dropout masks of micro-batch m of step s on rank r of W come from stream
    /// (dropout_seed, (s·M + m)·W + r): in a world of one, (dropout_seed, s·M + m).
    pub dropout_seed: u64,
    pub step: u64,
    pub check_integrity: bool,
    /// Test hook: poison the last parameter's gradient with NaN (an injected overflow).
    pub poison_grad: bool,
}

/// What made a step non-finite; the first offending tensor in parameter order.
#[derive(Debug, Clone, PartialEq)]
pub enum NonFinite {
    Loss,
    Gradient { param: String },
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonFinite::Loss => write!(f, "non-finite loss"),
            NonFinite::Gradient { param } => write!(f, "non-finite gradient of {param}"),
        }
    }
}

pub struct StepOutput {
    /// Mean loss over the step's target tokens.
    pub loss: f64,
    /// Global gradient norm before clipping (of unscaled gradients).
    pub grad_norm: f64,
    /// The update was skipped: weights, moments and the optimizer's step count are untouched.
    pub skipped: bool,
    /// Why, when the loss or a gradient was inf/NaN (then `skipped` is set).
    pub nonfinite: Option<NonFinite>,
}

/// The first parameter (in [`Params`] order) whose gradient holds an inf or NaN. A non-finite
/// global norm with all-finite values (squares overflowing f32) names the tensor whose sum of
/// squares overflowed. Only called once the norm is non-finite, so its cost does not matter.
fn first_nonfinite(params: &Params, grads: &StepGrads) -> Result<NonFinite> {
    let names = params.names();
    // 0·x is NaN exactly where x is inf or NaN, and 0 elsewhere.
    for (name, g) in names.iter().zip(&grads.grads) {
        if let Some(g) = g {
            if !(g * 0.0)?.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Ok(NonFinite::Gradient {
                    param: name.clone(),
                });
            }
        }
    }
    for (name, g) in names.iter().zip(&grads.grads) {
        if let Some(g) = g {
            if !g.sqr()?.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Ok(NonFinite::Gradient {
                    param: format!("{name} (its squared norm overflows f32)"),
                });
            }
        }
    }
    Ok(NonFinite::Gradient {
        param: "(the global norm)".into(),
    })
}

/// One optimizer step: forward/backward of each micro-batch with the loss normalised by the
/// target tokens of the whole step (so accumulation is exact), the integrity guard if asked,
/// global-norm clipping and the optimizer update. Trainer and benchmark both call this.
pub fn train_step(
    inp: &StepInputs<'_>,
    opt: &mut Optimizer,
    scaler: Option<&mut LossScaler>,
) -> Result<StepOutput> {
    train_step_on(&Communicator::single(), inp, opt, scaler)
}

/// [`train_step`] as one rank of a data-parallel world: `inp.batches` are this rank's
/// micro-batches. The loss is normalised by the target tokens of the whole global step (every
/// rank's), so the sum of the ranks' gradients is exactly the gradient of one process that
/// saw all the samples. That sum is taken once, after the last micro-batch, in fp32; from
/// there on (norm, NaN guard, loss scaler, clipping, optimizer) every rank computes the same
/// thing from the same numbers, so their decisions agree without further messages.
pub fn train_step_on(
    comm: &Communicator,
    inp: &StepInputs<'_>,
    opt: &mut Optimizer,
    scaler: Option<&mut LossScaler>,
) -> Result<StepOutput> {
    let (rank, world) = (comm.rank() as u64, comm.world_size() as u64);
    let mut tokens: usize = inp.batches.iter().map(|b| b.n_targets).sum();
    if world > 1 {
        // Masked LM chooses a different number of tokens on each rank: the step's count is
        // their sum (exact in f32 below 2^24 tokens a step).
        let mut n = [tokens as f32];
        comm.all_reduce_f32(&mut n, ReduceOp::Sum)?;
        tokens = n[0] as usize;
    }
    // Masked LM can (very rarely) choose no token in a whole step: its loss is then 0.
    let tokens = tokens.max(1);
    let m = inp.micro_batches.max(inp.batches.len()) as u64;
    let scale = scaler.as_ref().map_or(1.0, |s| s.scale);
    let mut grads = StepGrads::new(inp.params.len());
    let mut loss_sum = 0f64;
    for (micro, batch) in inp.batches.iter().enumerate() {
        let mut rng = Rng::derive(
            inp.dropout_seed,
            (inp.step * m + micro as u64) * world + rank,
        );
        loss_sum += inp.model.loss_backward(
            batch,
            Mode::Train(&mut rng),
            (tokens as f64, scale),
            inp.params,
            &mut grads,
        )?;
    }
    if scale != 1.0 {
        grads.scale(1.0 / scale)?;
    }
    if inp.poison_grad {
        // The last parameter, so that finding the first offending one is really a search.
        if let Some(g) = grads.grads.iter_mut().flatten().last() {
            *g = (g.zeros_like()? + f64::NAN)?;
        }
    }
    // From here on the gradients are those of what the optimizer trains.
    let trained = match inp.lora {
        Some(lora) => {
            grads = lora.master_grads(&grads)?;
            inp.master
        }
        None => inp.params,
    };
    if inp.check_integrity && !inp.batches.is_empty() {
        // Non-finite values are the NaN guard's business below; here only missing or zero
        // gradients (a parameter cut off from the loss) fail. In a world of several ranks
        // these are this rank's own gradients, checked before they are summed.
        grads.check_integrity_except(trained, true, Lora::is_a)?;
    }
    if world > 1 {
        if inp.batches.is_empty() {
            // A rank past the examples of an epoch's short last step: zeros in the sum.
            grads = StepGrads::zeros(trained)?;
        }
        loss_sum = reduce_step(comm, &mut grads, loss_sum)?;
    }
    let grad_norm = grads.global_norm()?;
    let nonfinite = if !loss_sum.is_finite() {
        Some(NonFinite::Loss)
    } else if !grad_norm.is_finite() {
        Some(first_nonfinite(trained, &grads)?)
    } else {
        None
    };
    if let Some(s) = scaler {
        s.update(nonfinite.is_some());
    }
    if nonfinite.is_some() {
        // Skipped: weights, moments and the optimizer's step count stay as they were.
        return Ok(StepOutput {
            loss: loss_sum,
            grad_norm,
            skipped: true,
            nonfinite,
        });
    }
    grads.clip(grad_norm, inp.grad_clip)?;
    match inp.lora {
        Some(lora) => {
            opt.step(inp.master, &grads.grads, inp.lr)?;
            lora.refresh()?;
        }
        // In mixed precision the working copy is refreshed from the updated master weights.
        None => opt.step_mixed(inp.master, &grads.grads, inp.lr, inp.params)?,
    }
    Ok(StepOutput {
        loss: loss_sum,
        grad_norm,
        skipped: false,
        nonfinite: None,
    })
}

/// Sums the step's loss and gradients over the ranks (in place); returns the global loss.
pub(crate) fn reduce_step(
    comm: &Communicator,
    grads: &mut StepGrads,
    loss_sum: f64,
) -> Result<f64> {
    // Reverse parameter order: the order backward finishes them, which an overlapped
    // reduction would follow (see lantern_comm::bucket).
    let present: Vec<usize> = (0..grads.grads.len())
        .rev()
        .filter(|&i| grads.grads[i].is_some())
        .collect();
    // The bucket plan follows from the gradients present: every rank must have the same ones,
    // or the collectives would pair up different tensors. One small all-reduce carries that
    // check and the loss (the sum of each rank's share of the global mean).
    let mut head = [loss_sum as f32, present.len() as f32];
    comm.all_reduce_f32(&mut head, ReduceOp::Sum)?;
    if head[1] != (present.len() * comm.world_size()) as f32 {
        return Err(Error::Comm(lantern_comm::Error::Buffer {
            op: "gradient all-reduce",
            msg: format!(
                "rank {} has gradients for {} of {} parameters, but the ranks together have {}: \
                 every rank must produce gradients for the same parameters",
                comm.rank(),
                present.len(),
                grads.grads.len(),
                head[1]
            ),
        }));
    }
    let local: Vec<Tensor> = present
        .iter()
        .map(|&i| grads.grads[i].clone().expect("present"))
        .collect();
    let summed = all_reduce_bucketed(comm, &local, ReduceOp::Sum, DEFAULT_BUCKET_BYTES)?;
    for (&i, g) in present.iter().zip(summed) {
        grads.grads[i] = Some(g);
    }
    Ok(head[0] as f64)
}

/// Whether a skipped step counts towards `train.max_consecutive_skips`. In fp16 an overflow of
/// the gradients at a loss scale above 1 is the scaler calibrating (it backs off and retries,
/// as `torch.amp.GradScaler` does), not a sign of divergence; at a scale of 1 or below the
/// unscaled gradients themselves are non-finite, and a non-finite loss never comes from the
/// scale. Without a scaler every non-finite step counts.
pub fn counts_as_guard_skip(nonfinite: &NonFinite, scale_before: Option<f64>) -> bool {
    match (nonfinite, scale_before) {
        (_, None) | (NonFinite::Loss, _) => true,
        (NonFinite::Gradient { .. }, Some(scale)) => scale <= 1.0,
    }
}

/// An evaluation: the mean loss per target, and the share of targets the model's most likely
/// token gets right (next-token models; TRL's `mean_token_accuracy`). DPO's: the mean loss per
/// preference and the share of preferences whose chosen reward beats the rejected one.
#[derive(Debug, Clone, Copy)]
struct Eval {
    loss: f64,
    accuracy: Option<f64>,
    preferences: bool,
    /// KTO's `kto` loss: the mean over the validation batches of their KL estimate (TRL's
    /// `eval_kl`).
    kl: Option<f64>,
    /// `data.eval_choices`: the zero-shot multiple-choice accuracies.
    choices: Option<ChoiceReport>,
}

impl Eval {
    /// The validation record's figures, added to `rec` (no perplexity for DPO's loss).
    fn record(&self, mut rec: serde_json::Value) -> serde_json::Value {
        rec["val_loss"] = json!(self.loss);
        if !self.preferences {
            rec["val_ppl"] = json!(self.loss.exp());
        }
        if let Some(a) = self.accuracy {
            rec["val_accuracy"] = json!(a);
        }
        if let Some(kl) = self.kl {
            rec["val_kl"] = json!(kl);
        }
        if let Some(c) = &self.choices {
            rec["choice_acc"] = json!(c.acc.value);
            rec["choice_acc_norm"] = json!(c.acc_norm.value);
            rec["choice_acc_per_token"] = json!(c.acc_per_token.value);
        }
        rec
    }

    /// The figure `early_stopping.metric` names, when this evaluation has it.
    fn value(&self, metric: BestMetric) -> Option<f64> {
        let c = self.choices.as_ref();
        match metric {
            BestMetric::ValLoss => Some(self.loss),
            BestMetric::ValAccuracy => self.accuracy,
            BestMetric::ChoiceAcc => c.map(|c| c.acc.value),
            BestMetric::ChoiceAccNorm => c.map(|c| c.acc_norm.value),
            BestMetric::ChoiceAccPerToken => c.map(|c| c.acc_per_token.value),
        }
    }

    fn line(&self) -> String {
        let what = match self.preferences {
            true => "reward accuracy",
            false => "token accuracy",
        };
        let acc = self
            .accuracy
            .map_or(String::new(), |a| format!(" | {what} {a:.3}"))
            + &self.kl.map_or(String::new(), |kl| format!(" | kl {kl:.4}"))
            + &self
                .choices
                .map_or(String::new(), |c| format!(" | choices: {}", c.line()));
        match self.preferences {
            true => format!("val loss {:.4}{acc}", self.loss),
            false => format!(
                "val loss {:.4} | ppl {:.1}{acc}",
                self.loss,
                self.loss.exp()
            ),
        }
    }
}

/// Mean validation loss per target (token, or chosen token for masked LM) over `n_batches`
/// (SFT: over every validation example, [`Task::eval_batches`])
/// fixed global batches of the validation shard, each of `b` windows per rank: rank r
/// evaluates windows i·(B·W) + r·B .. + B of batch i, the same windows one process with batch
/// W·B would, and the sums are added over the ranks.
fn evaluate(
    model: &dyn LossModel,
    task: &Task,
    (b, t): (usize, usize),
    n_batches: usize,
    device: &Device,
    comm: &Communicator,
) -> Result<Eval> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let mut scratch = Scratch::default();
    let (mut total, mut count, mut correct) = (0f64, 0usize, None::<usize>);
    // KTO: each global batch's KL estimate (the same on every rank that has the batch).
    let mut kl = Vec::new();
    for i in 0..task.eval_batches(n_batches, b, world) {
        let first = (i * b * world + rank * b) as u64;
        // SFT's last global batch may leave a rank no example.
        let mut batch = task.val_batch(first, (b, t), device, &mut scratch)?;
        if matches!(task, Task::Kto(_)) {
            // Every rank takes part, with a batch or without.
            crate::kto::kl_estimate(model, &mut [batch.as_mut()], comm, None)?;
        }
        let Some(batch) = batch else {
            continue;
        };
        kl.extend(batch.unpaired.as_ref().and_then(|u| u.z));
        let (loss, hits) = model.eval_sums(&batch)?;
        total += loss;
        count += batch.n_targets;
        if let Some(h) = hits {
            correct = Some(correct.unwrap_or(0) + h);
        }
    }
    let mut hits = correct.unwrap_or(0);
    if world > 1 {
        let mut sums = [total as f32, count as f32, hits as f32];
        comm.all_reduce_f32(&mut sums, ReduceOp::Sum)?;
        (total, count, hits) = (sums[0] as f64, sums[1] as usize, sums[2] as usize);
    }
    let n = count.max(1) as f64;
    Ok(Eval {
        loss: total / n,
        // Rank 0, which reports, always has a batch (SFT's first examples are its own).
        accuracy: correct.map(|_| hits as f64 / n),
        preferences: matches!(task, Task::Dpo(_) | Task::Kto(_)),
        // Rank 0, which reports, has every global batch's first examples.
        kl: (!kl.is_empty()).then(|| kl.iter().sum::<f64>() / kl.len() as f64),
        choices: None,
    })
}

/// `data.eval_choices` read and tokenized for the model; every example must be labelled.
fn read_eval_choices(
    (path, hellaswag): (&Path, lantern_data::choice::HellaSwagText),
    tok: &Tokenizer,
    model: &ModelConfig,
) -> Result<ChoiceSet> {
    let set = ChoiceSet::read(
        path,
        hellaswag,
        tok,
        (model.vocab_size(), model.max_positions()),
        None,
    )?;
    match set.items.iter().find(|i| i.label.is_none()) {
        Some(i) => Err(Error::Config(format!(
            "data.eval_choices: {}: line {} has no label (an evaluation needs the right choice \
             of every example)",
            path.display(),
            i.line
        ))),
        None => Ok(set),
    }
}

/// The multiple-choice accuracies of `set`: rank r scores every W-th example from the r-th,
/// `b / choices` examples a forward (at least one), and the counts are added over the ranks.
fn evaluate_choices(
    model: &dyn LossModel,
    set: &ChoiceSet,
    b: usize,
    device: &Device,
    comm: &Communicator,
) -> Result<lm_choice::Tally> {
    let per_forward = (b / set.choices.max(1)).max(1);
    let (rank, world) = (comm.rank(), comm.world_size());
    let (_, tally) = lm_choice::evaluate(set, model, (rank, world), per_forward, device)?;
    if world == 1 {
        return Ok(tally);
    }
    let mut sums = tally.to_f32();
    comm.all_reduce_f32(&mut sums, ReduceOp::Sum)?;
    Ok(lm_choice::Tally::from_f32(sums))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    log_every: u64,
    quiet: bool,
    /// The step the run started from and when, for the remaining-time estimate.
    start: (u64, std::time::Instant),
}

/// What the progress line shows of one optimizer step.
struct StepLine {
    loss: f64,
    lr: f64,
    grad_norm: f64,
    step_ms: f64,
    tok_s: f64,
    /// Model FLOPs utilisation per device, when a peak is known.
    mfu: Option<f64>,
}

/// `1h02m`, `3m05s` or `42s`.
pub(crate) fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl Progress {
    fn new(total: u64, start: u64, log_every: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new(total);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_position(start);
            pb
        });
        Self {
            bar,
            log_every: log_every.max(1),
            quiet,
            start: (start, std::time::Instant::now()),
        }
    }

    fn step(&self, step: u64, total: u64, l: &StepLine) {
        let mut msg = format!(
            "loss {:.4} | lr {:.2e} | norm {:.3} | {:.0} ms | {:.0} tok/s",
            l.loss, l.lr, l.grad_norm, l.step_ms, l.tok_s
        );
        if let Some(m) = l.mfu {
            msg += &format!(" | mfu {:.1}%", m * 100.0);
        }
        // The remaining steps at the average pace since the start (evaluations included).
        let (first, t0) = self.start;
        if step > first && step < total {
            let per_step = t0.elapsed().as_secs_f64() / (step - first) as f64;
            msg += &format!(" | eta {}", hms(per_step * (total - step) as f64));
        }
        match &self.bar {
            Some(pb) => {
                pb.set_position(step);
                pb.set_message(msg);
            }
            None if !self.quiet && (step.is_multiple_of(self.log_every) || step == total) => {
                eprintln!("step {step}/{total} | {msg}")
            }
            None => {}
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(pb) => pb.println(s),
            None if !self.quiet => eprintln!("{s}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish();
        }
    }
}

/// Runs (or continues) a training run as configured. See the module header for the loop.
pub fn train(mut cfg: RunConfig, opts: TrainOptions) -> Result<TrainSummary> {
    // `init_from` may name a run folder (its newest checkpoint, a fine-tuning run's exported
    // model); the resolved config records the folder actually read.
    if let Some(dir) = cfg.model.init_from.as_mut() {
        *dir = crate::finetune::resolve_checkpoint(dir)?;
    }
    // The world the launcher set up (a world of one without one), and this rank's device.
    let World {
        comm,
        device,
        device_name,
    } = join_world(&cfg.train.device)?;
    crate::device::set_tf32(&device, cfg.train.tf32);
    let (rank, world) = (comm.rank(), comm.world_size());
    // Rank 0 alone writes logs, metrics, plots and checkpoints; the others are quiet.
    let main = rank == 0;
    let quiet = opts.quiet || !main;
    // Pretraining reads prepared shards, whose meta.json gives the vocabulary; SFT reads the
    // model's own tokenizer.
    let meta = match cfg.data.shards() {
        Some(dir) => Some(lantern_data::prepare::read_meta(dir)?),
        None => None,
    };
    let tokenizer_path = match (cfg.data.shards(), &cfg.data.tokenizer, &cfg.model.init_from) {
        (Some(dir), _, _) => dir.join("tokenizer.json"),
        (None, Some(t), _) => t.clone(),
        (None, None, Some(dir)) => dir.join("tokenizer.json"),
        (None, None, None) => unreachable!("validated: SFT data names its tokenizer"),
    };
    let run_dir = cfg.run.dir.clone();
    let ckpt_root = run_dir.join("checkpoints");

    // Never silently train over an existing run: continuing it must be asked for.
    let existing = checkpoint::list_complete(&ckpt_root)?;
    let resume_from = if opts.resume {
        if main {
            for p in checkpoint::clean_incomplete(&ckpt_root)? {
                eprintln!("removed incomplete checkpoint {}", p.display());
            }
        }
        // Cleaning may put a checkpoint back in place: list only once it is done.
        comm.barrier()?;
        let newest = checkpoint::list_complete(&ckpt_root)?.pop();
        agree_on_checkpoint(&comm, newest.as_ref().map(|c| c.0), &ckpt_root)?;
        if newest.is_none() && !quiet {
            // torchrun-style restarts pass --resume every time; the first start has nothing.
            eprintln!(
                "no complete checkpoint in {}: starting a new run",
                ckpt_root.display()
            );
        }
        newest
    } else {
        if let Some((step, p)) = existing.last() {
            return Err(Error::Config(format!(
                "run.dir {} already holds checkpoint step {step} ({}); pass --resume to continue \
                 it or set another run.dir",
                run_dir.display(),
                p.display()
            )));
        }
        None
    };
    let state = match &resume_from {
        Some((_, dir)) => Some(checkpoint::read_state(dir)?),
        None => None,
    };
    if let (Some(st), Some((_, dir))) = (&state, &resume_from) {
        checkpoint::check_world_change(st, cfg.train.batch_size, cfg.train.grad_accum, world)
            .map_err(|msg| Error::Checkpoint {
                path: dir.join(checkpoint::STATE_FILE),
                msg,
            })?;
        lora::check_same_settings(
            &st.config.lora,
            &cfg.lora,
            &dir.join(checkpoint::STATE_FILE),
        )?;
        let want = cfg.train.optim.kind.name();
        if st.optimizer.kind != want {
            return Err(Error::Checkpoint {
                path: dir.clone(),
                msg: format!(
                    "checkpoint was trained with optimizer {:?}, the config asks for {want:?} \
                     (train.optimizer); resume with the same optimizer or start a new run.dir",
                    st.optimizer.kind
                ),
            });
        }
    }

    let tokenizer_bytes = std::fs::read(&tokenizer_path).map_err(io(&tokenizer_path))?;
    let data_vocab = match &meta {
        Some(m) => m.vocab_size as usize,
        None => lantern_data::tokenizer::vocab_size(&lantern_data::tokenizer::parse_tokenizer(
            &tokenizer_bytes,
            &tokenizer_path,
        )?),
    };
    let mut model_cfg = ModelConfig::resolve(&cfg, data_vocab)?;
    if let Some(st) = &state {
        if st.model != model_cfg {
            return Err(Error::Checkpoint {
                path: resume_from
                    .as_ref()
                    .map(|r| r.1.clone())
                    .unwrap_or_default(),
                msg: format!(
                    "checkpoint is of a different model: checkpoint {:?}, config asks for {:?}",
                    st.model, model_cfg
                ),
            });
        }
        model_cfg = st.model.clone();
    }
    let (b, accum) = (cfg.train.batch_size, cfg.train.grad_accum);
    // The tokenizer is copied into every checkpoint: check it loads and fits the model now,
    // not when someone samples from a checkpoint weeks later.
    let tokenizer = lantern_data::tokenizer::check_tokenizer_bytes(
        &tokenizer_bytes,
        &tokenizer_path,
        model_cfg.vocab_size(),
    )?;
    let eot_id = tokenizer.token_to_id(lantern_data::tokenizer::EOT);
    let choices = match &cfg.data.eval_choices {
        Some(p) => {
            let hellaswag = cfg.data.eval_choices_hellaswag.unwrap_or_default();
            Some(read_eval_choices((p, hellaswag), &tokenizer, &model_cfg)?)
        }
        None => None,
    };
    // The `init_from` folder's bos/eos ids, which its checkpoints keep (below).
    let mut special = cfg
        .model
        .init_from
        .as_ref()
        .map(|d| lantern_models::hf_config::special_ids(&d.join("config.json")))
        .unwrap_or_default();
    // TR-DPO's reference, kept to be moved toward the policy (`data.sync_ref_model`).
    let mut moving: Option<MovingReference> = None;
    // The data, read before any weights: a bad record fails at once.
    let (task, t) = match cfg.data.shards() {
        Some(dir) => {
            let t = cfg.train.seq_len.unwrap_or(model_cfg.max_positions());
            if t < model_cfg.min_seq_len() || t > model_cfg.max_positions() {
                return Err(Error::Config(format!(
                    "train.seq_len {t} must be in {}..={} (the model's position table)",
                    model_cfg.min_seq_len(),
                    model_cfg.max_positions()
                )));
            }
            let open = |f: &str| Shard::open_checked(&dir.join(f), model_cfg.vocab_size() as u32);
            let shards = Shards {
                train: open("train.bin")?,
                val: open("val.bin")?,
            };
            let task = Task::new(&model_cfg, &cfg, (&tokenizer, &tokenizer_path), shards)?;
            (task, t)
        }
        None => {
            // Its first end-of-sequence id (Llama 3 Instruct has a list), else ours.
            let eos_id = special_id_list(&special, "eos_token_id")
                .first()
                .copied()
                .or(eot_id);
            let context = (model_cfg.max_positions(), model_cfg.vocab_size());
            let per_step = b * accum * world;
            let train_path = cfg
                .data
                .train
                .clone()
                .expect("SFT or DPO data has data.train");
            // Preference records (chosen, rejected) make a DPO run, as in TRL; unpaired ones
            // (completion, label), or preferences with KTO's loss_type, a KTO run.
            let preference = lantern_data::dpo::is_preference_file(&train_path) == Some(true);
            let unpaired = lantern_data::dpo::is_unpaired_file(&train_path) == Some(true);
            let kto = unpaired || (preference && KtoSet::asked_for(&cfg));
            let (task, examples, t) = match preference || kto {
                true => {
                    let tok = (&tokenizer, tokenizer_path.as_path());
                    let (set, n, t) = match kto {
                        true => {
                            let s = KtoSet::load(&cfg, tok, eos_id, context, (b, per_step))?;
                            let (n, t) = (s.train.len(), s.max_length);
                            (Task::Kto(s), n, t)
                        }
                        false => {
                            let s = DpoSet::load(&cfg, tok, eos_id, context, per_step)?;
                            let (n, t) = (s.train.len(), s.max_length);
                            (Task::Dpo(s), n, t)
                        }
                    };
                    let reference = MovingReference::load(&cfg, &model_cfg, &resume_from, &device)?;
                    set.compute_reference(reference.model.as_ref(), b, &device)?;
                    if set.reference_sync().is_some() {
                        moving = Some(reference);
                    }
                    (set, n, t)
                }
                false => {
                    if let Some(k) = cfg.data.dpo_keys().first() {
                        return Err(Error::Config(format!(
                            "data.{k} is DPO's or KTO's; {} holds no preference records \
                             (chosen, rejected) nor unpaired ones (completion, label)",
                            train_path.display()
                        )));
                    }
                    let set = SftSet::load(
                        &cfg,
                        (&tokenizer, &tokenizer_path),
                        eos_id,
                        context,
                        per_step,
                    )?;
                    let (n, t) = (set.train.len(), set.max_length);
                    (Task::Sft(set), n, t)
                }
            };
            if let Some(e) = cfg.train.epochs {
                // TRL's num_train_epochs: each epoch's steps, its last one short when the
                // examples are not a multiple of the global batch; a fraction of an epoch's
                // steps rounded up.
                let per_epoch = examples.div_ceil(per_step.max(1)) as f64;
                cfg.train.max_steps = (e * per_epoch).ceil().max(1.0) as u64;
            }
            (task, t)
        }
    };

    // A BERT `init_from` without the MLM head gets a fresh one from the init stream.
    let mut init_rng = Rng::derive(cfg.train.seed, INIT_STREAM);
    // LoRA: the pretrained model every time (a resume loads the adapters below).
    let params: Params = match (&resume_from, &cfg.model.init_from) {
        (Some((_, dir)), _) if cfg.lora.is_none() => {
            model_cfg.load_params(&dir.join(checkpoint::MODEL_FILE), &mut init_rng, &device)?
        }
        (_, Some(hf_dir)) => {
            model_cfg.load_params(&hf_dir.join("model.safetensors"), &mut init_rng, &device)?
        }
        (_, None) => model_cfg.init_params(&mut init_rng, &device)?,
    };
    if world > 1 {
        // Ranks start from identical weights: rank 0's (its own init, `init_from` or the
        // checkpoint every rank read anyway).
        for v in params.vars() {
            comm.broadcast(v.as_tensor(), 0)?;
        }
    }
    // Mixed precision: the model reads a bf16/fp16 working copy; `params` stay the fp32 masters.
    let precision = cfg.train.precision;
    let work = match precision {
        Precision::Fp32 => None,
        p => Some(params.to(&device, p.dtype())?),
    };
    // LoRA: the optimizer trains the adapters; `params` hold the pretrained weights.
    let lora = match &cfg.lora {
        Some(spec) => {
            if let (Some(from), Some(adapter)) = (&cfg.model.init_from, &spec.adapter) {
                lora::check_not_merged(from, adapter)?;
            }
            // GPT-2 and Llama as peft's CAUSAL_LM; a BERT's masked LM with its MLM head
            // trained in full (peft's `modules_to_save`), as a task head.
            let (decoder, bert);
            let base = match &model_cfg {
                ModelConfig::Gpt(g) => {
                    decoder = DecoderConfig::Gpt(g.clone());
                    lora::Base::CausalLm(&decoder)
                }
                ModelConfig::Llama(c) => {
                    decoder = DecoderConfig::Llama(c.clone());
                    lora::Base::CausalLm(&decoder)
                }
                ModelConfig::Bert(c) => {
                    bert = TaskConfig::Bert(c.clone());
                    lora::Base::Task(&bert, BertHead::MaskedLm)
                }
            };
            Some(Lora::new(
                spec,
                base,
                (&params, work.as_ref()),
                &[],
                &mut Rng::derive(cfg.train.seed, LORA_STREAM),
            )?)
        }
        None => None,
    };
    let params = lora::pretrained_store(lora.as_ref(), params);
    if let Some(m) = &moving {
        m.check_matches(&params)?;
    }
    let work_params = work.as_ref().unwrap_or(&params);
    if let (Some(l), Some(st), Some((_, dir))) = (&lora, &state, &resume_from) {
        let state_file = dir.join(checkpoint::STATE_FILE);
        l.resume(
            dir,
            (&state_file, st.lora_base),
            cfg.model.init_from.as_deref(),
        )?;
    }
    if let (Some(l), true) = (&lora, world > 1) {
        l.broadcast(&comm)?;
    }
    let trained = lora.as_ref().map_or(&params, |l| l.master());
    // DPO and KTO train without dropout, the model's and LoRA's (TRL's `disable_dropout`,
    // default true); checkpoints keep the configured rates, as TRL's saved configs do.
    let no_dropout =
        matches!(task, Task::Dpo(_) | Task::Kto(_)) && cfg.data.disable_dropout.unwrap_or(true);
    let build_cfg = match no_dropout {
        true => model_cfg.without_dropout(),
        false => model_cfg.clone(),
    };
    let lora_view = lora.as_ref().map(Lora::view).map(|v| match v.low_rank() {
        Some(s) if no_dropout => v.with_low_rank(LowRankSpec { dropout: 0.0, ..s }),
        _ => v,
    });
    // What the model reads: the working store, with LoRA's adapters when there are any.
    let model_store = lora_view.as_ref().unwrap_or(work_params);
    let model = build_cfg.build(
        model_store,
        cfg.model.attention,
        cfg.train.activation_checkpointing,
        cfg.train.neftune_noise_alpha.unwrap_or(0.0),
    )?;
    // Evaluations read the same weights without recording a graph (and without NEFTune's
    // noise, which only a training forward adds).
    let eval_model = build_cfg.build(&model_store.frozen(), cfg.model.attention, false, 0.0)?;
    let mut scaler = (precision == Precision::Fp16).then(|| {
        state
            .as_ref()
            .and_then(|s| s.scaler.clone())
            .unwrap_or_else(|| {
                LossScaler::new(
                    cfg.train.loss_scale_init,
                    cfg.train.loss_scale_growth,
                    cfg.train.loss_scale_backoff,
                    cfg.train.loss_scale_interval,
                )
            })
    });
    let opt_cfg = OptimizerConfig::from_keys(&cfg.train.optim);
    let mut opt = Optimizer::new(opt_cfg, trained)?;
    let (mut step, mut samples_seen, mut tokens_seen, mut last_val) = (0u64, 0u64, 0u64, None);
    // The best value of the watched metric so far and evaluations since it improved
    // (checkpointed).
    let metric = cfg.early_stopping.metric;
    let mut stopper = EarlyStopping::new(metric.higher_is_better(), cfg.early_stopping.patience)
        .with_threshold(cfg.early_stopping.threshold);
    let mut best_step = None;
    // NaN guard: skipped steps in total and guard skips in a row (both saved in checkpoints).
    let (mut skipped_total, mut consecutive_skips) = (0u64, 0u64);
    if let (Some(st), Some((_, dir))) = (&state, &resume_from) {
        let p = dir.join(checkpoint::OPTIMIZER_FILE);
        let tensors = safetensors_io::load_float(&p, &device, DType::F32)?;
        opt.load_state(trained, tensors, &st.optimizer, &p)?;
        (step, samples_seen, tokens_seen, last_val) =
            (st.step, st.samples_seen, st.tokens_seen, st.last_val_loss);
        (skipped_total, consecutive_skips) = (st.skipped_steps, st.consecutive_skips);
        if st.config.early_stopping.metric != metric {
            return Err(Error::Checkpoint {
                path: dir.join(checkpoint::STATE_FILE),
                msg: format!(
                    "the run kept its best by early_stopping.metric {}, the config asks for {}: \
                     resume with the same metric or start a new run.dir",
                    st.config.early_stopping.metric.key(),
                    metric.key()
                ),
            });
        }
        stopper.best = st.best_val_loss;
        stopper.evals_without_improvement = st.evals_without_improvement as usize;
        best_step = st.best_step;
    }
    let schedule = Schedule {
        kind: cfg.train.schedule,
        lr: cfg.train.lr,
        min_lr: cfg.min_lr(),
        warmup_steps: cfg.train.warmup_steps,
        total_steps: cfg.train.max_steps,
        decay_steps: cfg.train.decay_steps.unwrap_or(cfg.train.max_steps / 10),
        power: cfg.train.poly_power,
        cycles: cfg.train.num_cycles,
        timescale: cfg.train.timescale,
    };

    let metrics_path = run_dir.join("metrics.jsonl");
    let mut log = if main {
        std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
        write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        Some(MetricsLog::open_run(
            &run_dir,
            resume_from.as_ref().map(|r| r.0),
            cfg.run.tensorboard,
        )?)
    } else {
        None
    };
    let mut log_write = |record: serde_json::Value| -> Result<()> {
        match log.as_mut() {
            Some(l) => l.write(&record),
            None => Ok(()),
        }
    };
    // transformers' settings for the tokenizer, the same in every checkpoint: the tokenizer's
    // folder's own or the `init_from` folder's when they have them, else built from the
    // tokenizer and the model.
    let mut tokenizer_config = lantern_data::tokenizer_config_bytes(
        &tokenizer,
        &model_cfg.model_tokens(eot_id),
        &crate::model_tokens::tokenizer_sources(&tokenizer_path, cfg.model.init_from.as_deref()),
    )?;
    // The special ids of the model's own config.json (a transformers folder's end-of-turn
    // list, say), not the tokenizer's end-of-text token; SFT's `data.eos_token` becomes the
    // end of sequence of the model it trains, in config.json and tokenizer_config.json alike
    // (as TRL's `eos_token`).
    // SFT with a template of its own: the model learnt that one, which its checkpoints
    // carry from now on (TRL saves the template it trained with).
    let trained_template = match &cfg.data.chat_template {
        Some(p) => Some(std::fs::read_to_string(p).map_err(io(p))?),
        None => None,
    };
    if let Some(e) = &cfg.data.eos_token {
        let id = tokenizer
            .token_to_id(e)
            .expect("checked when the SFT data was read");
        special.insert("eos_token_id".into(), json!(id));
    }
    if cfg.data.eos_token.is_some() || trained_template.is_some() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&tokenizer_config).expect("tokenizer_config_bytes is JSON");
        if let Some(e) = &cfg.data.eos_token {
            v["eos_token"] = json!(e);
        }
        if let Some(t) = trained_template {
            v["chat_template"] = json!(t);
        }
        tokenizer_config = serde_json::to_vec_pretty(&v).expect("a JSON value serialises");
    }
    let mut config_files = model_cfg.checkpoint_files(eot_id);
    if let Some((_, bytes)) = config_files.iter_mut().find(|(n, _)| *n == "config.json") {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("config.json is JSON");
        lantern_models::hf_config::keep_special_ids(&mut v, &special);
        *bytes = serde_json::to_vec_pretty(&v).expect("a JSON value serialises");
    }

    // `[sample]`: every rank checks the settings; rank 0 samples.
    let sampler = Sampler::new(
        &cfg.sample,
        &tokenizer,
        (
            special_id_list(&special, "bos_token_id").first().copied(),
            &special_id_list(&special, "eos_token_id"),
        ),
        cfg.train.seed,
    )?;
    let sample_model = match (&sampler, main) {
        (Some(_), true) => build_cfg.sampler_model(&model_store.frozen(), cfg.model.attention)?,
        _ => None,
    };
    // Rank 0's sample after `step`, as a metrics record and a progress line.
    let take_sample = |step: u64| -> Result<Option<(serde_json::Value, String)>> {
        let (Some(s), Some(m)) = (&sampler, &sample_model) else {
            return Ok(None);
        };
        let x = s.sample(m, &tokenizer, &device, step)?;
        Ok(Some((
            json!({"kind": "sample", "step": step, "tokens": x.tokens, "text": x.text}),
            format!("step {step} | sample ({} tokens): {:?}", x.tokens, x.text),
        )))
    };
    let end = cfg.train.max_steps.min(opts.stop_after.unwrap_or(u64::MAX));
    let progress = Progress::new(cfg.train.max_steps, step, cfg.train.log_every, quiet);
    // Sequences per optimizer step over all ranks (batch_size is per rank, as in torchrun).
    let global_batch = b * accum * world;
    progress.line(&format!(
        "{} | {} params | device {} | {} | {opt_cfg} | batch {b}x{accum}{}{} | {} steps{}",
        // A pretrained folder's model, not the preset it overrides.
        match &cfg.model.init_from {
            Some(d) => d.display().to_string(),
            None => cfg.model.preset.clone(),
        },
        model_cfg.num_params(),
        device_name,
        precision,
        match &task {
            Task::Sft(set) if set.packing.is_some() => format!(" packed rows of up to {t} tokens"),
            Task::Sft(_) => format!(" examples of up to {t} tokens"),
            Task::Dpo(_) => format!(" preferences (2 rows each) of up to {t} tokens"),
            Task::Kto(set) if set.loss.uses_kl() => {
                format!(" examples (and their KL rows) of up to {t} tokens")
            }
            Task::Kto(_) => format!(" examples of up to {t} tokens"),
            _ => format!("x{t} tokens"),
        },
        if world > 1 {
            format!(
                " per rank x {world} ranks = global batch {global_batch} sequences \
                 ({} tokens)",
                global_batch * t
            )
        } else {
            String::new()
        },
        cfg.train.max_steps,
        match &resume_from {
            Some((s, _)) => format!(" | resumed at step {s}"),
            None => String::new(),
        }
    ));

    let (description, notes) = match &task {
        Task::Sft(set) => (Some(set.describe()), set.notes.as_slice()),
        Task::Dpo(set) => (Some(set.describe()), set.notes.as_slice()),
        Task::Kto(set) => (Some(set.describe()), set.notes.as_slice()),
        _ => (None, &[][..]),
    };
    for line in description.iter().chain(notes) {
        progress.line(line);
    }
    if let Some(l) = &lora {
        progress.line(&l.describe());
    }
    let peak = mfu_peak(&cfg.train, &device)?;
    // Attention's share grows with the sequence: SFT's examples are as long as they are.
    let flops_len = match &task {
        Task::Sft(set) => set.mean_input_len(),
        Task::Dpo(set) => set.mean_input_len(),
        Task::Kto(set) => set.mean_input_len(),
        _ => t,
    };
    let flops_per_token = model_cfg.flops_per_token(flops_len);
    if let Some((_, source)) = &peak {
        progress.line(&format!(
            "mfu: {:.1} MFLOP per token ({}) against {source}",
            flops_per_token / 1e6,
            crate::bench::FLOPS_FORMULA
        ));
    }
    // Per device: the step's tokens are every rank's.
    let mfu_of = |tok_s: f64| {
        peak.as_ref()
            .map(|(p, _)| crate::bench::mfu(flops_per_token, tok_s / world as f64, *p))
    };

    let eval = |model: &dyn LossModel| {
        let mut e = evaluate(model, &task, (b, t), cfg.train.eval_batches, &device, &comm)?;
        if let Some(set) = &choices {
            e.choices = evaluate_choices(model, set, b, &device, &comm)?.report();
        }
        Ok::<_, Error>(e)
    };
    let mut first_val = None;
    if state.is_none() {
        let e = eval(&*eval_model)?;
        if e.value(metric).is_none() {
            return Err(Error::Config(format!(
                "early_stopping.metric {}: this run's evaluation does not report it (it reports \
                 {})",
                metric.key(),
                e.record(json!({}))
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            )));
        }
        log_write(e.record(json!({"kind": "val", "step": 0})))?;
        progress.line(&format!("step 0 | {}", e.line()));
        first_val = Some(e.loss);
        if let Some((rec, line)) = take_sample(0)? {
            log_write(rec)?;
            progress.line(&line);
        }
        last_val = Some(e.loss);
    }

    // LoRA: peft's adapter files in every checkpoint, beside the merged model.
    let adapter_weights = format!("{}/{}", lora::ADAPTER_DIR, lora::ADAPTER_WEIGHTS);
    let adapter_config = format!("{}/{}", lora::ADAPTER_DIR, lora::ADAPTER_CONFIG);
    let adapter_config_bytes = lora.as_ref().map_or(Vec::new(), |l| {
        serde_json::to_vec_pretty(&l.adapter_config(cfg.model.init_from.as_deref()))
            .expect("adapter config serialises")
    });
    let write_checkpoint = |step: u64,
                            samples_seen: u64,
                            tokens_seen: u64,
                            last_val: Option<f64>,
                            opt: &Optimizer,
                            scaler: Option<&LossScaler>,
                            (skipped_steps, consecutive_skips): (u64, u64),
                            best: BestVal,
                            as_best: bool|
     -> Result<PathBuf> {
        let st = TrainerState {
            format_version: checkpoint::STATE_VERSION,
            step,
            samples_seen,
            tokens_seen,
            rng: RngState {
                seed: cfg.train.seed,
                counter: step,
            },
            optimizer: opt.state(trained),
            model: model_cfg.clone(),
            config: cfg.clone(),
            last_val_loss: last_val,
            scaler: scaler.cloned(),
            skipped_steps,
            consecutive_skips,
            world_size: world as u64,
            global_batch: Some(global_batch as u64),
            best_val_loss: best.best.map(|b| b.0),
            best_step: best.best.map(|b| b.1),
            evals_without_improvement: best.stale,
            lora_base: lora.as_ref().map(|l| l.base_fingerprint()),
        };
        let mut files = vec![
            (
                checkpoint::MODEL_FILE,
                safetensors_io::serialize(&model_cfg.export_tensors(&match &lora {
                    Some(l) => l.merged()?,
                    None => params.clone(),
                })?)?,
            ),
            (
                checkpoint::OPTIMIZER_FILE,
                safetensors_io::serialize(&opt.state_tensors(trained))?,
            ),
            ("tokenizer.json", tokenizer_bytes.clone()),
            (
                lantern_data::TOKENIZER_CONFIG_FILE,
                tokenizer_config.clone(),
            ),
            (
                checkpoint::STATE_FILE,
                serde_json::to_vec_pretty(&st).expect("state serialises"),
            ),
        ];
        files.extend(config_files.iter().cloned());
        if let Some(m) = &moving {
            files.push((
                checkpoint::REFERENCE_FILE,
                safetensors_io::serialize(&m.cfg.export_tensors(&m.params)?)?,
            ));
        }
        if let Some(l) = &lora {
            files.push((
                &adapter_weights,
                safetensors_io::serialize(&l.adapter_tensors()?)?,
            ));
            files.push((&adapter_config, adapter_config_bytes.clone()));
        }
        if as_best {
            checkpoint::save_best(&ckpt_root, step, &files)
        } else {
            checkpoint::commit(&ckpt_root, step, &files, cfg.checkpoint.keep)
        }
    };
    // Rank 0 writes; every rank waits for it, so none runs ahead of the checkpoint it might
    // have to resume from. Others get the folder rank 0 is writing.
    let save = |step: u64,
                samples_seen: u64,
                tokens_seen: u64,
                last_val: Option<f64>,
                opt: &Optimizer,
                scaler: Option<&LossScaler>,
                skips: (u64, u64),
                best: BestVal,
                as_best: bool|
     -> Result<PathBuf> {
        let dir = if main {
            write_checkpoint(
                step,
                samples_seen,
                tokens_seen,
                last_val,
                opt,
                scaler,
                skips,
                best,
                as_best,
            )?
        } else if as_best {
            ckpt_root.join(checkpoint::BEST_DIR)
        } else {
            ckpt_root.join(checkpoint::dir_name(step))
        };
        comm.barrier()?;
        Ok(dir)
    };

    let mut scratch = Scratch::default();
    let mut last_ckpt = None;
    let mut last_loss = None;
    let mut checked = false;
    let mut preempted = false;
    // A run resumed after it stopped early has nothing left to do (unless its patience was
    // raised with --set).
    let best = BestVal::of(&stopper, best_step);
    let mut early_stopped = stopper.exhausted();
    if early_stopped {
        if let Some((b, at)) = best.best {
            progress.line(&early_stop_line(step, b, at, best.stale, &cfg));
        }
    }
    let stop_requested = || opts.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
    let (mut timed_tokens, mut timed_secs) = (0u64, 0f64);
    while step < end && !early_stopped {
        comm.set_step(step);
        let t0 = Instant::now();
        let scale_before = scaler.as_ref().map(|s| s.scale);
        let lr = schedule.lr_at(step);
        let samples = task.step_samples(samples_seen, global_batch);
        let mut batches = Vec::with_capacity(accum);
        for micro in 0..accum {
            // The step covers global samples samples_seen .. + B·M·W; micro-batch m of rank r
            // is B of them at m·(B·W) + r·B. The set is the same for any split of B·M·W into
            // per-rank batch, accumulation and world size, so one process with batch W·B
            // takes the same samples, and a resume with another world size continues the
            // same order. An epoch's short last step (examples) fills micro-batches in that
            // order: a rank's are then its first few, the last of them perhaps short.
            let at = micro * b * world + rank * b;
            let rows = samples.saturating_sub(at).min(b);
            if rows == 0 {
                break;
            }
            let first = samples_seen + at as u64;
            let batch =
                task.train_batch(cfg.train.seed, first, (rows, t), &device, &mut scratch)?;
            batches.push(batch);
        }
        if matches!(task, Task::Kto(_)) {
            // KTO's KL estimate of each micro-batch, over every rank, before the loss.
            // With dropout on, its KL forward runs in training mode (TRL's), each micro-batch's
            // masks from its own stream, as the loss's are, of another seed. Every rank has
            // a slot for each of the M micro-batches, empty past its examples.
            let mut slots: Vec<Option<&mut Batch>> = batches.iter_mut().map(Some).collect();
            slots.resize_with(accum, || None);
            let kl_masks = |m: usize| {
                let stream = (step * accum as u64 + m as u64) * world as u64 + rank as u64;
                Rng::derive(cfg.train.seed ^ KL_DROPOUT_STREAM, stream)
            };
            let dropout = (!no_dropout).then_some(&kl_masks as &dyn Fn(usize) -> Rng);
            crate::kto::kl_estimate(&*eval_model, &mut slots, &comm, dropout)?;
        }
        let out = train_step_on(
            &comm,
            &StepInputs {
                model: &*model,
                params: model_store,
                master: trained,
                lora: lora.as_ref(),
                batches: &batches,
                micro_batches: accum,
                lr,
                grad_clip: cfg.train.grad_clip,
                dropout_seed: cfg.train.seed ^ DROPOUT_STREAM,
                step,
                check_integrity: !checked,
                poison_grad: opts.poison_grad_at.contains(&step),
            },
            &mut opt,
            scaler.as_mut(),
        )?;
        checked = true;
        let (loss_sum, norm) = (out.loss, out.grad_norm);
        step += 1;
        let guard_skip = out
            .nonfinite
            .as_ref()
            .is_some_and(|n| counts_as_guard_skip(n, scale_before));
        if out.skipped {
            skipped_total += 1;
        }
        if guard_skip {
            consecutive_skips += 1;
        } else if !out.skipped {
            // An fp16 overflow the scaler handles neither extends nor ends a streak.
            consecutive_skips = 0;
        }
        // Every rank's tokens of the step (SFT: the examples' own lengths).
        let tokens_per_step = task.tokens(cfg.train.seed, samples_seen, samples, t, &mut scratch);
        samples_seen += samples as u64;
        tokens_seen += tokens_per_step;
        let secs = t0.elapsed().as_secs_f64();
        timed_tokens += tokens_per_step;
        timed_secs += secs;
        let tok_s = tokens_per_step as f64 / secs;
        let mfu = mfu_of(tok_s);
        last_loss = Some(loss_sum);
        let mut rec = json!({
            "kind": "train", "step": step, "loss": loss_sum, "lr": lr, "grad_norm": norm,
            "tokens_per_s": tok_s, "tokens_seen": tokens_seen, "step_ms": secs * 1e3,
            "mfu": mfu,
            "precision": precision, "skipped": out.skipped,
            "loss_scale": scaler.as_ref().map(|s| s.scale),
            "skipped_steps": skipped_total, "consecutive_skips": consecutive_skips,
            "skip_reason": out.nonfinite.as_ref().map(|n| n.to_string()),
            "world_size": world, "global_batch": global_batch,
        });
        // Examples' runs: transformers' fractional epoch.
        if let Some(e) = task.epoch_after(samples_seen, global_batch) {
            rec["epoch"] = json!(e);
        }
        log_write(rec)?;
        if let Some(what) = out.nonfinite.as_ref().filter(|_| main) {
            if guard_skip {
                // A warning, not progress: printed even with --quiet.
                eprintln!(
                    "warning: step {step}: {what}; update skipped ({consecutive_skips} in a row)"
                );
            } else {
                progress.line(&format!(
                    "step {step}: {what}, update skipped; loss scale now {}",
                    scaler.as_ref().map_or(0.0, |s| s.scale)
                ));
            }
        }
        let limit = cfg.train.max_consecutive_skips;
        if guard_skip && limit > 0 && consecutive_skips >= limit {
            // Skipped steps left weights and moments as they were: this is the last good
            // state, saved at the current data position so a resume moves past the bad batches.
            let dir = save(
                step,
                samples_seen,
                tokens_seen,
                last_val,
                &opt,
                scaler.as_ref(),
                (skipped_total, consecutive_skips),
                BestVal::of(&stopper, best_step),
                false,
            )?;
            progress.finish();
            return Err(Error::NonFinite {
                step,
                count: consecutive_skips,
                what: out
                    .nonfinite
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                checkpoint: dir,
            });
        }
        let line = StepLine {
            loss: loss_sum,
            lr,
            grad_norm: norm,
            step_ms: secs * 1e3,
            tok_s,
            mfu,
        };
        progress.step(step, cfg.train.max_steps, &line);
        // TR-DPO: after the update (TRL's `on_step_end`, before the step's evaluation).
        if let Some(m) = &moving {
            let sync = task
                .reference_sync()
                .expect("a moving reference comes with its settings");
            if sync.due(step) {
                m.mix(&params, sync.alpha)?;
                task.compute_reference(&*m.model, b, &device)?;
            }
        }

        let at_end = step == end;
        let eval_due = cfg.train.eval_every > 0 && step.is_multiple_of(cfg.train.eval_every);
        if eval_due || step == cfg.train.max_steps {
            let e = eval(&*eval_model)?;
            // Checked at the first evaluation: the figure is there.
            let (new_best, stop) = stopper.observe(e.value(metric).unwrap_or(f64::NAN));
            if new_best {
                best_step = Some(step);
            }
            let best = BestVal::of(&stopper, best_step);
            last_val = Some(e.loss);
            log_write(e.record(json!({
                "kind": "val", "step": step,
                format!("best_{}", metric.key()): best.best.map(|b| b.0),
                "best_step": best.best.map(|b| b.1),
                "evals_without_improvement": best.stale,
            })))?;
            progress.line(&format!(
                "step {step} | {}{}",
                e.line(),
                if new_best { " | best" } else { "" }
            ));
            if new_best && cfg.checkpoint.save_best {
                save(
                    step,
                    samples_seen,
                    tokens_seen,
                    last_val,
                    &opt,
                    scaler.as_ref(),
                    (skipped_total, consecutive_skips),
                    best,
                    true,
                )?;
            }
            early_stopped = stop;
        }
        if sampler.as_ref().is_some_and(|s| s.due(step, end)) {
            if let Some((rec, line)) = take_sample(step)? {
                log_write(rec)?;
                progress.line(&line);
            }
        }
        let ckpt_due = cfg.checkpoint.every > 0 && step.is_multiple_of(cfg.checkpoint.every);
        // A stop asked of any rank (SIGTERM reaches one rank, or all at slightly different
        // moments) stops every rank after this same step.
        let stop_now = !at_end && !early_stopped && agree_on_stop(&comm, stop_requested())?;
        if ckpt_due || at_end || stop_now || early_stopped {
            last_ckpt = Some(save(
                step,
                samples_seen,
                tokens_seen,
                last_val,
                &opt,
                scaler.as_ref(),
                (skipped_total, consecutive_skips),
                BestVal::of(&stopper, best_step),
                false,
            )?);
        }
        if early_stopped {
            let best = BestVal::of(&stopper, best_step);
            let (b, at) = best
                .best
                .expect("an evaluation without improvement follows a best");
            log_write(json!({
                "kind": "early_stop", "step": step, format!("best_{}", metric.key()): b,
                "best_step": at,
                "evals_without_improvement": best.stale,
            }))?;
            progress.line(&early_stop_line(step, b, at, best.stale, &cfg));
            break;
        }
        if stop_now {
            progress.line(&format!(
                "stop requested: stopped after step {step} with a checkpoint; continue with --resume"
            ));
            preempted = true;
            break;
        }
    }
    progress.finish();
    if main {
        plot::write_run_losses(
            &metrics_path,
            &run_dir.join("loss.png"),
            ("val", "val_loss"),
        )?;
    }
    Ok(TrainSummary {
        run_dir,
        steps: step,
        last_train_loss: last_loss,
        first_val_loss: first_val,
        last_val_loss: last_val,
        checkpoint: last_ckpt.or_else(|| resume_from.map(|r| r.1)),
        tokens_per_s: if timed_secs > 0.0 {
            timed_tokens as f64 / timed_secs
        } else {
            0.0
        },
        mfu: (timed_secs > 0.0)
            .then(|| mfu_of(timed_tokens as f64 / timed_secs))
            .flatten(),
        resumed_from: state.map(|s| s.step),
        preempted,
        early_stopped,
        best_val: stopper.best.zip(best_step),
        best_metric: metric,
        rank,
        world_size: world,
    })
}

/// What a checkpoint records of the early-stopping state: the lowest validation loss of the
/// evaluations after training steps with its step, and the evaluations in a row since it
/// improved (transformers' `EarlyStoppingCallback` on `eval_loss`).
#[derive(Debug, Clone, Copy)]
struct BestVal {
    /// (loss, step it was measured after)
    best: Option<(f64, u64)>,
    stale: u64,
}

impl BestVal {
    fn of(s: &EarlyStopping, best_step: Option<u64>) -> Self {
        Self {
            best: s.best.zip(best_step),
            stale: s.evals_without_improvement as u64,
        }
    }
}

/// TR-DPO's reference (`data.sync_ref_model`): its own weights, which the policy's pull
/// toward it every `ref_model_sync_steps` steps, and the model reading them.
struct MovingReference {
    params: Params,
    /// Built from a frozen view of `params`: it reads the moved weights.
    model: Box<dyn LossModel>,
    cfg: ModelConfig,
    /// The folder it was first read from, for messages.
    from: PathBuf,
}

impl MovingReference {
    /// The reference of a DPO or KTO run: `data.ref_model`, else the `init_from` weights as
    /// loaded; with `data.sync_ref_model` on a resumed run, the checkpoint's moved weights (a
    /// checkpoint of a run without it has the reference that never moved). Frozen.
    fn load(
        cfg: &RunConfig,
        model_cfg: &ModelConfig,
        resume_from: &Option<(u64, PathBuf)>,
        device: &Device,
    ) -> Result<Self> {
        let (from, ref_cfg) = match &cfg.data.ref_model {
            Some(dir) => (dir, reference_config(cfg, dir, model_cfg)?),
            None => (
                cfg.model
                    .init_from
                    .as_ref()
                    .expect("the preference sets check it"),
                model_cfg.clone(),
            ),
        };
        let weights = match (cfg.data.sync_ref_model == Some(true), resume_from) {
            (true, Some((_, dir))) if dir.join(checkpoint::REFERENCE_FILE).exists() => {
                dir.join(checkpoint::REFERENCE_FILE)
            }
            _ => from.join("model.safetensors"),
        };
        let params = ref_cfg.load_params(
            &weights,
            &mut Rng::derive(cfg.train.seed, INIT_STREAM),
            device,
        )?;
        // The reference is evaluated only: no NEFTune, as TRL's reference model has no hook.
        let model = ref_cfg.build(&params.frozen(), cfg.model.attention, false, 0.0)?;
        Ok(Self {
            params,
            model,
            cfg: ref_cfg,
            from: from.clone(),
        })
    }

    /// The reference must hold the policy's parameters, name for name and shape for shape
    /// (TRL zips the two models' parameters).
    fn check_matches(&self, policy: &Params) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Config(format!(
                "data.sync_ref_model: the reference {} cannot be moved toward the policy: {what}",
                self.from.display()
            )))
        };
        if self.params.len() != policy.len() {
            return bad(format!(
                "{} parameters, the policy has {}",
                self.params.len(),
                policy.len()
            ));
        }
        for (name, v) in policy.iter() {
            match self.params.var(name) {
                Ok(r) if r.shape() == v.shape() => {}
                Ok(r) => {
                    return bad(format!(
                        "{name} is {:?}, the policy's {:?}",
                        r.shape(),
                        v.shape()
                    ))
                }
                Err(_) => return bad(format!("it has no {name}")),
            }
        }
        Ok(())
    }

    /// reference ← α·policy + (1 − α)·reference, in f32 (the policy's master weights).
    fn mix(&self, policy: &Params, alpha: f64) -> Result<()> {
        for (name, r) in self.params.iter() {
            let p = policy.var(name)?.as_tensor();
            let moved = (r.as_tensor().affine(1.0 - alpha, 0.0)? + p.affine(alpha, 0.0)?)?;
            r.set(&moved)?;
        }
        Ok(())
    }
}

/// DPO's `data.ref_model` folder as a model: the run's model section read from that folder
/// (`config.json`: its architecture too, so a GPT-2 may score a Llama's preferences), which
/// must share the trained model's vocabulary (one tokenizer serves both).
fn reference_config(cfg: &RunConfig, dir: &Path, model: &ModelConfig) -> Result<ModelConfig> {
    let mut ref_cfg = cfg.clone();
    ref_cfg.model.init_from = Some(dir.to_path_buf());
    // Its vocabulary is checked against the model's below (not the tokenizer's, by name).
    let r = ModelConfig::resolve(&ref_cfg, 0)?;
    if r.vocab_size() != model.vocab_size() {
        return Err(Error::Config(format!(
            "data.ref_model {}: a vocabulary of {} tokens, the model's has {}",
            dir.display(),
            r.vocab_size(),
            model.vocab_size()
        )));
    }
    Ok(r)
}

fn early_stop_line(step: u64, best: f64, at: u64, stale: u64, cfg: &RunConfig) -> String {
    format!(
        "early stopping after step {step}: {stale} evaluations without the {} improving by \
         more than {} (best {best:.4} at step {at}{})",
        match cfg.early_stopping.metric {
            BestMetric::ValLoss => "validation loss",
            m => m.key(),
        },
        cfg.early_stopping.threshold,
        if cfg.checkpoint.save_best {
            ", checkpoints/best"
        } else {
            ""
        }
    )
}

/// The peak FLOP/s of one device that MFU is measured against, and where it comes from:
/// `train.peak_tflops` when given, else the data-sheet dense peak of a GPU known by name
/// ([`crate::bench::known_peak_flops`]) when the run is in bf16 or fp16 (fp32 runs on other
/// units: TF32 tensor cores or none), else `None` and no MFU is reported.
pub(crate) fn mfu_peak(t: &TrainSection, device: &Device) -> Result<Option<(f64, String)>> {
    if let Some(p) = t.peak_tflops {
        return Ok(Some((
            p * 1e12,
            format!("{p} TFLOP/s per device (train.peak_tflops)"),
        )));
    }
    if t.precision == Precision::Fp32 {
        return Ok(None);
    }
    let name = lantern_kernels::bench::gpu_name(device)?;
    Ok(name.and_then(|n| {
        crate::bench::known_peak_flops(&n).map(|p| {
            let source = format!("{} TFLOP/s, the {n}'s dense bf16/fp16 peak", p / 1e12);
            (p, source)
        })
    }))
}

/// Every rank must resume from the same checkpoint (they read it from a shared run.dir):
/// rank 0's choice is broadcast and each rank compares it with its own. A disagreement on any
/// rank fails every rank, so none is left waiting in a collective.
pub(crate) fn agree_on_checkpoint(
    comm: &Communicator,
    newest: Option<u64>,
    root: &Path,
) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    // f32 holds integers below 2^24 exactly: the step goes as two 24-bit halves.
    let encode = |s: Option<u64>| match s {
        None => [0.0, 0.0, 0.0],
        Some(s) => [1.0, (s >> 24) as f32, (s & 0xFF_FFFF) as f32],
    };
    let mine = encode(newest);
    let mut chosen = mine;
    comm.broadcast_f32(&mut chosen, 0)?;
    let mut differ = [(chosen != mine) as u8 as f32];
    comm.all_reduce_f32(&mut differ, ReduceOp::Sum)?;
    if differ[0] > 0.0 {
        let show = |s: Option<u64>| s.map_or("none".to_string(), |s| format!("step {s}"));
        return Err(Error::Checkpoint {
            path: root.to_path_buf(),
            msg: format!(
                "rank {} finds newest checkpoint {} here, but {} rank(s) find another one than \
                 rank 0; every rank must see the same run.dir (a shared filesystem)",
                comm.rank(),
                show(newest),
                differ[0]
            ),
        });
    }
    Ok(())
}

/// Whether any rank was asked to stop (one tiny all-reduce per step in a world of several).
pub(crate) fn agree_on_stop(comm: &Communicator, requested: bool) -> Result<bool> {
    if comm.world_size() == 1 {
        return Ok(requested);
    }
    let mut flag = [requested as u8 as f32];
    comm.all_reduce_f32(&mut flag, ReduceOp::Sum)?;
    Ok(flag[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lantern_models::gpt::{self, Gpt, GptConfig};

    #[test]
    fn remaining_time_reads_as_hours_minutes_seconds() {
        assert_eq!(hms(0.4), "0s");
        assert_eq!(hms(42.0), "42s");
        assert_eq!(hms(185.0), "3m05s");
        assert_eq!(hms(3725.0), "1h02m");
        assert_eq!(hms(-3.0), "0s");
    }

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 16,
            n_positions: 8,
            n_embd: 8,
            n_layer: 1,
            n_head: 2,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        }
    }

    /// TR-DPO's move is α·policy + (1 − α)·reference per parameter, seen by the reference's
    /// model; a reference of another shape is refused by name.
    #[test]
    fn a_moving_reference_mixes_toward_the_policy_and_must_match_it() {
        let dev = Device::Cpu;
        let cfg = ModelConfig::Gpt(tiny());
        let init = |seed| gpt::init_params(&tiny(), &mut Rng::new(seed), &dev, DType::F32);
        let (reference, policy) = (init(1).unwrap(), init(2).unwrap());
        let before: Vec<Vec<f32>> = reference
            .vars()
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let m = MovingReference {
            model: cfg
                .build(&reference.frozen(), Default::default(), false, 0.0)
                .unwrap(),
            params: reference,
            cfg,
            from: PathBuf::from("ref"),
        };
        m.check_matches(&policy).unwrap();
        let batch = to_batch(&[1, 2, 3, 4], &[2, 3, 4, 5], 1, 4, &dev).unwrap();
        let loss_before = m.model.eval_sums(&batch).unwrap().0;
        m.mix(&policy, 0.25).unwrap();
        for ((name, r), b) in m.params.iter().zip(&before) {
            let p: Vec<f32> = policy
                .get(name)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let r: Vec<f32> = r.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for ((r, p), b) in r.iter().zip(&p).zip(b) {
                assert!((r - (0.25 * p + 0.75 * b)).abs() <= 1e-6, "{name}");
            }
        }
        let loss_after = m.model.eval_sums(&batch).unwrap().0;
        assert_ne!(loss_before, loss_after, "the model reads the moved weights");
        let mut other = Params::new();
        for (name, v) in policy.iter() {
            let t = v.as_tensor();
            let t = match name == policy.names()[0] {
                true => t.narrow(0, 0, 1).unwrap(),
                false => t.clone(),
            };
            other.insert(name, t).unwrap();
        }
        let e = m.check_matches(&other).unwrap_err().to_string();
        assert!(
            e.contains("data.sync_ref_model")
                && e.contains(&policy.names()[0])
                && e.contains("ref"),
            "{e}"
        );
    }

    fn step(params: &Params, model: &Gpt) -> Result<StepOutput> {
        let ids: Vec<u32> = (0..16).map(|i| i % 16).collect();
        let tgt: Vec<u32> = (0..16).map(|i| (i + 1) % 16).collect();
        let batches = [to_batch(&ids, &tgt, 2, 8, &Device::Cpu)?];
        let mut opt = Optimizer::new(
            OptimizerConfig::AdamW(crate::optim::AdamWConfig::default()),
            params,
        )?;
        train_step(
            &StepInputs {
                model,
                params,
                master: params,
                batches: &batches,
                micro_batches: 1,
                lr: 1e-3,
                grad_clip: 1.0,
                dropout_seed: 0,
                step: 0,
                check_integrity: true,
                poison_grad: false,
                lora: None,
            },
            &mut opt,
            None,
        )
    }

    #[test]
    fn every_parameter_of_the_model_gets_a_gradient() {
        let params = gpt::init_params(&tiny(), &mut Rng::new(0), &Device::Cpu, DType::F32).unwrap();
        let model = Gpt::new(&tiny(), &params).unwrap();
        let out = step(&params, &model).unwrap();
        assert!(out.loss.is_finite() && out.grad_norm > 0.0);
    }

    #[test]
    fn integrity_guard_names_a_parameter_cut_off_from_the_loss() {
        let mut params =
            gpt::init_params(&tiny(), &mut Rng::new(0), &Device::Cpu, DType::F32).unwrap();
        // A parameter the forward never reads: no gradient can reach it.
        params
            .insert(
                "transformer.h.0.mlp.gate.weight",
                Tensor::ones((8, 8), DType::F32, &Device::Cpu).unwrap(),
            )
            .unwrap();
        let model = Gpt::new(&tiny(), &params).unwrap();
        let e = step(&params, &model)
            .err()
            .expect("the guard must fire")
            .to_string();
        assert!(
            e.contains("transformer.h.0.mlp.gate.weight") && e.contains("no gradient"),
            "{e}"
        );
    }

    #[test]
    fn the_first_nonfinite_gradient_is_named() {
        let params = gpt::init_params(&tiny(), &mut Rng::new(0), &Device::Cpu, DType::F32).unwrap();
        let mut grads = StepGrads::new(params.len());
        for (slot, v) in grads.grads.iter_mut().zip(params.vars()) {
            *slot = Some(v.as_tensor().ones_like().unwrap());
        }
        // One inf in the middle of the third parameter, one NaN in the fifth.
        let poison = |i: usize, x: f32| {
            let mut v = vec![1f32; params.vars()[i].elem_count()];
            let mid = v.len() / 2;
            v[mid] = x;
            Some(Tensor::from_vec(v, params.vars()[i].dims(), &Device::Cpu).unwrap())
        };
        grads.grads[2] = poison(2, f32::INFINITY);
        grads.grads[4] = poison(4, f32::NAN);
        let found = first_nonfinite(&params, &grads).unwrap();
        assert_eq!(
            found,
            NonFinite::Gradient {
                param: params.names()[2].clone()
            }
        );
    }

    #[test]
    fn fp16_overflows_count_only_at_a_scale_of_one_or_less() {
        let g = NonFinite::Gradient { param: "w".into() };
        assert!(counts_as_guard_skip(&g, None));
        assert!(!counts_as_guard_skip(&g, Some(65536.0)));
        assert!(counts_as_guard_skip(&g, Some(1.0)));
        assert!(counts_as_guard_skip(&NonFinite::Loss, Some(65536.0)));
    }
}

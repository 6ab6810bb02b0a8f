//! Kahneman-Tversky Optimization (Ethayarajh et al. 2024) in the training loop, as TRL's
//! `KTOTrainer`: `data.train` names a JSONL file of unpaired records (`prompt`, `completion`,
//! a boolean `label`: desirable or not), or of preference records with `data.loss_type =
//! "kto"` (each pair unpaired into a desirable and an undesirable example,
//! `lantern_data::dpo::read_unpaired`), and `lantern train` trains the `model.init_from` causal
//! LM against a reference, as DPO does.
//!
//! - A sample is one example; a micro-batch of B is B rows of prompt + completion, then (for
//!   the `kto` loss) B rows of prompt + another example's completion, the KL rows, each cut to
//!   `max_length` (keeping the start) and padded on the right. Each example's KL completion is
//!   fixed when the data are read, as TRL fixes it: within each run of `train.batch_size`
//!   examples in file order, the completion of the one before it (the first takes the last's);
//!   the examples are drawn in that order ([`KtoOrder`], TRL's sequential sampling), so a
//!   micro-batch is such a run.
//! - With `r = β·(π − ref)` per example and `z` the KL estimate of the micro-batch (the mean of
//!   `π_KL − ref_KL` over its KL rows, by a forward without gradient, averaged over the ranks of
//!   a data-parallel run as TRL gathers it, clamped at 0), the `kto` loss of a desirable
//!   example is `1 − σ(r − β·z)`, of an undesirable one `1 − σ(β·z − r)`; `apo_zero_unpaired`
//!   reads no KL (`1 − σ(r)` and `σ(r)`). Each is weighted by `data.desirable_weight` or
//!   `data.undesirable_weight`, and averaged over the step's examples.
//! - The reference's log-probabilities of every example and KL row are computed before
//!   training (again after each of TR-DPO's moves, `data.sync_ref_model`), as for DPO.
//! - Evaluations report the mean loss over every validation example (`val_loss`).

use crate::config::RunConfig;
use crate::dpo::{sigmoid, CompletionRows, RefSync, DEFAULT_BETA};
use crate::sft::{epoch_index, train_and_validation, Tokenization};
use crate::task::LossModel;
use crate::trainer::Batch;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use lantern_data::dpo::{read_unpaired, UnpairedData, UnpairedExample};
use lantern_models::Mode;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// KTO's losses (TRL's `KTOConfig.loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KtoKind {
    /// Eq. 7 of the KTO paper, with the KL estimate.
    Kto,
    /// The unpaired APO-zero loss (D'Oosterlinck et al. 2024): no KL.
    ApoZeroUnpaired,
}

impl KtoKind {
    pub const NAMES: [&'static str; 2] = ["kto", "apo_zero_unpaired"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "kto" => Some(Self::Kto),
            "apo_zero_unpaired" => Some(Self::ApoZeroUnpaired),
            _ => None,
        }
    }
}

/// The loss of a KTO run and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KtoLoss {
    pub kind: KtoKind,
    pub beta: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

impl KtoLoss {
    /// The loss `data` asks for: `loss_type` (one of [`KtoKind::NAMES`], default `kto`),
    /// `beta` (default 0.1), `desirable_weight` and `undesirable_weight` (default 1).
    pub fn of(d: &crate::config::DataSection) -> Result<Self> {
        let kind = match d.loss_type.as_ref().map(|l| l.names()) {
            None => KtoKind::Kto,
            Some(names) => match names[..] {
                [one] => KtoKind::from_name(one),
                _ => None,
            }
            .ok_or_else(|| {
                Error::Config(format!(
                    "data.loss_type {names:?}: KTO's examples train with one of {}",
                    KtoKind::NAMES.join(", ")
                ))
            })?,
        };
        let beta = d.beta.unwrap_or(DEFAULT_BETA);
        if !(beta > 0.0 && beta.is_finite()) {
            return Err(Error::Config(format!(
                "data.beta must be positive, got {beta}"
            )));
        }
        let weight = |k: &str, w: Option<f64>| match w.unwrap_or(1.0) {
            w if w > 0.0 && w.is_finite() => Ok(w),
            w => Err(Error::Config(format!("data.{k} must be positive, got {w}"))),
        };
        Ok(Self {
            kind,
            beta,
            desirable_weight: weight("desirable_weight", d.desirable_weight)?,
            undesirable_weight: weight("undesirable_weight", d.undesirable_weight)?,
        })
    }

    /// Whether the loss reads the KL estimate (and batches carry KL rows).
    pub fn uses_kl(&self) -> bool {
        self.kind == KtoKind::Kto
    }

    /// The summed weighted loss of B examples: `policy`, `reference` (B) the log-probabilities
    /// of their completions, `labels` (B) 1 for desirable and 0 for undesirable, `z` the KL
    /// estimate (`kto` only; [`kl_estimate`]).
    pub fn sum(
        &self,
        (policy, reference): (&Tensor, &Tensor),
        z: Option<f64>,
        labels: &Tensor,
    ) -> Result<Tensor> {
        let r = (policy - reference)?;
        let z = match (self.kind, z) {
            (KtoKind::Kto, Some(z)) => z,
            (KtoKind::Kto, None) => {
                return Err(Error::Config("a KTO batch without its KL estimate".into()))
            }
            (KtoKind::ApoZeroUnpaired, _) => 0.0,
        };
        // u = β·(r − z); desirable: 1 − σ(u) = σ(−u), undesirable: 1 − σ(−u) = σ(u).
        let u = ((r - z)? * self.beta)?;
        let (want, wu) = (labels, (labels.neg()? + 1.0)?);
        let losses = ((want * sigmoid(&u.neg()?)?)? + (&wu * sigmoid(&u)?)?)?;
        let weights = ((want * self.desirable_weight)? + (wu * self.undesirable_weight)?)?;
        Ok((losses * weights)?.sum_all()?)
    }

    /// The loss for the run's log.
    pub fn describe(&self) -> String {
        let name = KtoKind::NAMES[self.kind as usize];
        match (self.desirable_weight, self.undesirable_weight) {
            (d, u) if d == 1.0 && u == 1.0 => name.to_string(),
            (d, u) => format!("{name} (desirable ×{d}, undesirable ×{u})"),
        }
    }
}

/// What a KTO batch's loss reads besides the rows.
pub struct Unpaired {
    /// (B) f32: the reference's log-probabilities of the rows; `None` while the reference's own
    /// are being computed.
    pub reference: Option<Tensor>,
    /// (B) f32: 1 desirable, 0 undesirable.
    pub labels: Tensor,
    pub loss: Arc<KtoLoss>,
    /// `kto`: the same examples' KL rows (prompt + another example's completion), with their
    /// reference's log-probabilities, which [`kl_estimate`] reads.
    pub kl_rows: Option<Box<Batch>>,
    /// `kto`: the micro-batch's KL estimate, set by [`kl_estimate`] before the loss.
    pub z: Option<f64>,
}

/// The KL estimate of each of `batches` (a rank's micro-batches; `None` where this rank has
/// none): the mean over a micro-batch's KL rows of `π − ref` by `model` (no gradient), averaged
/// over the ranks that have the micro-batch (TRL's `gather_for_metrics(kl).mean()`), clamped
/// at 0; stored in each batch's [`Unpaired::z`]. Every rank calls it with as many slots.
/// `dropout`, in training with dropout on (`data.disable_dropout = false`), gives slot k's
/// dropout masks: TRL's KL forward runs in the model's training mode, only without gradient;
/// `None` (evaluations, or no dropout) runs it in evaluation mode.
pub fn kl_estimate(
    model: &dyn LossModel,
    batches: &mut [Option<&mut Batch>],
    comm: &lantern_comm::Communicator,
    dropout: Option<&dyn Fn(usize) -> lantern_kernels::Rng>,
) -> Result<()> {
    // Per slot: this rank's mean and whether it has one, summed over the ranks.
    let mut sums = vec![0f32; 2 * batches.len()];
    for (k, b) in batches.iter().enumerate() {
        let Some(rows) = b
            .as_ref()
            .and_then(|b| b.unpaired.as_ref()?.kl_rows.as_deref())
        else {
            continue;
        };
        let reference = rows
            .unpaired
            .as_ref()
            .and_then(|u| u.reference.as_ref())
            .ok_or_else(|| Error::Config("KL rows without the reference's".into()))?;
        let mut rng = dropout.map(|d| d(k));
        let mode = match rng.as_mut() {
            Some(r) => Mode::Train(r),
            None => Mode::Eval,
        };
        let policy = model.row_logps(rows, mode)?;
        sums[2 * k] = (policy - reference)?.mean_all()?.to_scalar::<f32>()?;
        sums[2 * k + 1] = 1.0;
    }
    if comm.world_size() > 1 {
        comm.all_reduce_f32(&mut sums, lantern_comm::ReduceOp::Sum)?;
    }
    for (k, b) in batches.iter_mut().enumerate() {
        if let Some(u) = b.as_mut().and_then(|b| b.unpaired.as_mut()) {
            if u.kl_rows.is_some() {
                let mean = sums[2 * k] / sums[2 * k + 1].max(1.0);
                u.z = Some(f64::from(mean.max(0.0)));
            }
        }
    }
    Ok(())
}

/// The examples of a KTO run.
pub struct KtoSet {
    pub train: Vec<UnpairedExample>,
    pub val: Vec<UnpairedExample>,
    /// For each training and validation example, the example whose completion its KL row
    /// reads.
    kl: [Vec<usize>; 2],
    /// The reference's log-probabilities (completion, KL row) of each training and validation
    /// example, filled by [`KtoSet::compute_reference`].
    refs: RefCell<[Vec<[f32; 2]>; 2]>,
    pub pad: u32,
    pub max_length: usize,
    pub loss: Arc<KtoLoss>,
    pub conversational: bool,
    /// Whether the records were pairs, unpaired.
    pub paired: bool,
    /// The order of the training examples (`data.train_sampling_strategy`).
    pub order: KtoOrder,
    /// TR-DPO's reference moves (`data.sync_ref_model`).
    pub sync: Option<RefSync>,
    /// What reading the files said, for the run's log.
    pub notes: Vec<String>,
}

/// The order KTO draws its training examples in (TRL's `train_sampling_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KtoOrder {
    /// File order, every epoch: global sample i is example i mod N, so each rank's
    /// micro-batch is a run of consecutive examples, the run its KL rows were paired in (TRL's
    /// `SequentialSampler`; an epoch's last step is short, as TRL's last batch is, so the
    /// runs align whatever N).
    Sequential,
    /// A seeded permutation each epoch (SFT's).
    Random,
    /// transformers' length-grouped order over this many examples per optimizer step.
    GroupByLength(usize),
}

impl KtoOrder {
    /// `data.train_sampling_strategy`, or `group_by_length` from `train.group_by_length`;
    /// `sequential` by default and for any loss that reads KL rows (TRL refuses the others
    /// there, as shuffled batches break the rows' pairing).
    fn of(cfg: &RunConfig, loss: &KtoLoss, per_step: usize) -> Result<Self> {
        use crate::config::SamplingStrategy as S;
        let strategy = match (cfg.data.train_sampling_strategy, cfg.train.group_by_length) {
            (None, grouped) => match grouped {
                true => S::GroupByLength,
                false => S::Sequential,
            },
            (Some(S::GroupByLength), _) => S::GroupByLength,
            (Some(s), true) => {
                return Err(Error::Config(format!(
                    "train.group_by_length orders KTO's examples by length, \
                     data.train_sampling_strategy = {s:?} otherwise: set one"
                )))
            }
            (Some(s), false) => s,
        };
        if loss.uses_kl() && strategy != S::Sequential {
            return Err(Error::Config(format!(
                "KTO's loss \"kto\" estimates the KL term from rows paired within runs of \
                 train.batch_size examples in file order, which {} would break: it needs \
                 data.train_sampling_strategy = \"sequential\" (TRL's rule; \
                 apo_zero_unpaired reads no KL)",
                match strategy {
                    S::GroupByLength if cfg.data.train_sampling_strategy.is_none() => {
                        "train.group_by_length"
                    }
                    S::GroupByLength => "group_by_length",
                    _ => "random",
                },
            )));
        }
        Ok(match strategy {
            S::Sequential => Self::Sequential,
            S::Random => Self::Random,
            S::GroupByLength => Self::GroupByLength(per_step),
        })
    }
}

/// Within each run of `b` indices of `0..n`, the one before (the first takes the run's last):
/// TRL's `[completions[-1]] + completions[:-1]` over batches of `per_device_train_batch_size`.
pub fn rotated_within(n: usize, b: usize) -> Vec<usize> {
    let b = b.max(1);
    (0..n)
        .map(|i| {
            let start = i - i % b;
            match i == start {
                true => (start + b).min(n) - 1,
                false => i - 1,
            }
        })
        .collect()
}

/// The keys of DPO's losses (and SFT's) that KTO has no use for.
fn dpo_only(cfg: &RunConfig) -> Option<&'static str> {
    let d = &cfg.data;
    [
        ("loss_weights", d.loss_weights.is_some()),
        ("label_smoothing", d.label_smoothing.is_some()),
        ("discopop_tau", d.discopop_tau.is_some()),
        ("f_divergence_type", d.f_divergence_type.is_some()),
        (
            "f_alpha_divergence_coef",
            d.f_alpha_divergence_coef.is_some(),
        ),
        ("ld_alpha", d.ld_alpha.is_some()),
        ("use_weighting", d.use_weighting.is_some()),
        ("truncation_mode", d.truncation_mode.is_some()),
    ]
    .into_iter()
    .find_map(|(k, set)| set.then_some(k))
    .or_else(|| crate::dpo::sft_only(cfg))
}

impl KtoSet {
    /// Whether a run reads its preference records as KTO's: `data.loss_type` names one of
    /// KTO's losses.
    pub fn asked_for(cfg: &RunConfig) -> bool {
        cfg.data
            .loss_type
            .as_ref()
            .is_some_and(|l| l.names().iter().any(|n| KtoKind::from_name(n).is_some()))
    }

    /// Reads `data.train` (and `data.validation`, or holds `data.val_fraction` out) with the
    /// run's tokenizer, as [`crate::dpo::DpoSet::load`] does; `b` is the per-rank batch size,
    /// the runs KL completions rotate within.
    pub fn load(
        cfg: &RunConfig,
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        eos_id: Option<u32>,
        (context, vocab): (usize, usize),
        (b, per_step): (usize, usize),
    ) -> Result<Self> {
        let d = &cfg.data;
        let train_path = d.train.as_ref().expect("KTO data has data.train");
        if let Some(k) = dpo_only(cfg) {
            return Err(Error::Config(format!(
                "data.{k} is not a setting of KTO ({} trains with {})",
                train_path.display(),
                KtoKind::NAMES.join(" or ")
            )));
        }
        if cfg.model.init_from.is_none() {
            return Err(Error::Config(
                "KTO trains a pretrained model against itself: set model.init_from".into(),
            ));
        }
        let loss = Arc::new(KtoLoss::of(d)?);
        let tk = Tokenization::of(cfg, (tokenizer, tokenizer_path), eos_id, context)?;
        // KTO has no truncation_mode (refused above): rows keep their start.
        let opts = tk.preference_options(vocab);
        let mut notes = Vec::new();
        let mut read = |p: &PathBuf| -> Result<UnpairedData> {
            let data = read_unpaired(p, tokenizer, &opts)?;
            if data.dropped > 0 {
                notes.push(format!(
                    "{}: {} example(s) dropped, their prompt filling max_length {}",
                    p.display(),
                    data.dropped,
                    tk.max_length
                ));
            }
            Ok(data)
        };
        let first = read(train_path)?;
        let (conversational, paired) = (first.conversational, first.paired);
        let (train, val) = train_and_validation(
            cfg,
            (train_path, first),
            read,
            |d: &UnpairedData| match (d.conversational, d.paired) {
                (true, true) => "conversational preference",
                (false, true) => "text preference",
                (true, false) => "conversational unpaired",
                (false, false) => "text unpaired",
            },
            |d| d.examples,
        )?;
        let kl = [rotated_within(train.len(), b), rotated_within(val.len(), b)];
        let order = KtoOrder::of(cfg, &loss, per_step)?;
        Ok(Self {
            kl,
            refs: Default::default(),
            sync: RefSync::of(cfg)?,
            train,
            val,
            pad: tk.pad(tokenizer),
            max_length: tk.max_length,
            loss,
            conversational,
            paired,
            order,
            notes,
        })
    }

    /// The example whose completion the KL row of example `i` reads (of the validation
    /// examples with `val`).
    pub fn kl_source(&self, val: bool, i: usize) -> usize {
        self.kl[usize::from(val)][i]
    }

    fn split(&self, split: usize) -> &[UnpairedExample] {
        match split {
            0 => &self.train,
            _ => &self.val,
        }
    }

    /// The reference's log-probabilities of every example's completion and KL row, by `model`,
    /// `b` examples at a time.
    pub fn compute_reference(
        &self,
        model: &dyn LossModel,
        b: usize,
        device: &Device,
    ) -> Result<()> {
        let b = b.max(1);
        let of = |split: usize| -> Result<Vec<[f32; 2]>> {
            let n = self.split(split).len();
            let mut out = Vec::with_capacity(n);
            for start in (0..n).step_by(b) {
                let idx: Vec<usize> = (start..(start + b).min(n)).collect();
                let logps = |kl: bool| -> Result<Vec<f32>> {
                    let batch = self.rows(split, &idx, (kl, false), device)?;
                    Ok(model.row_logps(&batch, Mode::Eval)?.to_vec1::<f32>()?)
                };
                let own = logps(false)?;
                let kl = match self.loss.uses_kl() {
                    true => logps(true)?,
                    false => vec![0.0; idx.len()],
                };
                out.extend(own.into_iter().zip(kl).map(|(a, b)| [a, b]));
            }
            Ok(out)
        };
        *self.refs.borrow_mut() = [of(0)?, of(1)?];
        Ok(())
    }

    /// The training example of global sample `i`: file order every epoch, or SFT's per-epoch
    /// orders ([`KtoOrder`]).
    pub fn train_index(&self, seed: u64, i: u64, cache: &mut Option<(u64, Vec<usize>)>) -> usize {
        let lengths = || {
            self.train
                .iter()
                .map(|e| e.prompt.len() + e.completion.len())
                .collect()
        };
        let group = match self.order {
            KtoOrder::Sequential => return (i % self.train.len() as u64) as usize,
            KtoOrder::Random => None,
            KtoOrder::GroupByLength(per_step) => Some(per_step),
        };
        epoch_index(self.train.len(), (group, lengths), seed, i, cache)
    }

    /// Training examples `idx` as one batch, with their reference log-probabilities.
    pub fn train_batch(&self, idx: &[usize], device: &Device) -> Result<Batch> {
        self.batch(0, idx, device)
    }

    /// Validation examples `from .. from + b` (in file order) as one batch; `None` past the
    /// last.
    pub fn val_batch(&self, from: usize, b: usize, device: &Device) -> Result<Option<Batch>> {
        let from = from.min(self.val.len());
        let to = (from + b).min(self.val.len());
        if from == to {
            return Ok(None);
        }
        let idx: Vec<usize> = (from..to).collect();
        Ok(Some(self.batch(1, &idx, device)?))
    }

    /// Examples `idx` of a split as a batch of their completions, with (for `kto`) their KL
    /// rows beside.
    fn batch(&self, split: usize, idx: &[usize], device: &Device) -> Result<Batch> {
        let mut batch = self.rows(split, idx, (false, true), device)?;
        if self.loss.uses_kl() {
            let kl = self.rows(split, idx, (true, true), device)?;
            if let Some(u) = batch.unpaired.as_mut() {
                u.kl_rows = Some(Box::new(kl));
            }
        }
        Ok(batch)
    }

    /// The tokens of one example's rows, as read: each row's all but its last.
    pub fn tokens_of(&self, i: usize) -> u64 {
        let row = |e: &UnpairedExample, c: &UnpairedExample| {
            ((e.prompt.len() + c.completion.len()).min(self.max_length) - 1) as u64
        };
        let e = &self.train[i];
        row(e, e)
            + match self.loss.uses_kl() {
                true => row(e, &self.train[self.kl[0][i]]),
                false => 0,
            }
    }

    /// The mean length of the rows' inputs, rounded: the sequence length their FLOPs per
    /// token are counted at.
    pub fn mean_input_len(&self) -> usize {
        let rows = if self.loss.uses_kl() { 2 } else { 1 };
        let n = (rows * self.train.len()).max(1);
        let total: u64 = (0..self.train.len()).map(|i| self.tokens_of(i)).sum();
        (total as f64 / n as f64).round().max(1.0) as usize
    }

    /// Examples `idx` of a split as B rows of prompt + completion, or with `kl` of prompt + the
    /// KL completion, each cut to `max_length` and padded on the right; with `refs`, the
    /// reference's log-probabilities of those rows.
    fn rows(
        &self,
        split: usize,
        idx: &[usize],
        (kl, refs): (bool, bool),
        device: &Device,
    ) -> Result<Batch> {
        let examples = self.split(split);
        let seqs: Vec<(Vec<u32>, usize)> = idx
            .iter()
            .map(|&i| {
                let e = &examples[i];
                let c = match kl {
                    true => &examples[self.kl[split][i]],
                    false => e,
                };
                let mut s: Vec<u32> = e.prompt.iter().chain(&c.completion).copied().collect();
                s.truncate(self.max_length);
                (s, e.prompt.len())
            })
            .collect();
        let rows = CompletionRows::of(&seqs, self.pad);
        let n = seqs.len();
        let labels: Vec<f32> = idx
            .iter()
            .map(|&i| if examples[i].label { 1.0 } else { 0.0 })
            .collect();
        let reference = match refs {
            true => {
                let table = self.refs.borrow();
                let v: Vec<f32> = idx
                    .iter()
                    .map(|&i| {
                        table[split]
                            .get(i)
                            .expect("the reference's log-probabilities are computed first")
                            [usize::from(kl)]
                    })
                    .collect();
                Some(Tensor::from_vec(v, idx.len(), device)?)
            }
            false => None,
        };
        Ok(Batch {
            ids: Tensor::from_slice(&rows.inputs, (n, rows.t), device)?,
            targets: Tensor::from_slice(&rows.targets, n * rows.t, device)?,
            weights: Some(Tensor::from_slice(&rows.weights, n * rows.t, device)?),
            // The loss is a mean over examples.
            n_targets: idx.len(),
            packing: None,
            loss: Default::default(),
            pairs: None,
            unpaired: Some(Unpaired {
                reference,
                labels: Tensor::from_vec(labels, idx.len(), device)?,
                loss: self.loss.clone(),
                kl_rows: None,
                z: None,
            }),
        })
    }

    /// One line on the data for the run's log.
    pub fn describe(&self) -> String {
        let desirable = self.train.iter().filter(|e| e.label).count();
        format!(
            "kto: {} {} records, {} train ({desirable} desirable) / {} validation examples, \
             max_length {}, beta {}, loss {}",
            if self.conversational {
                "conversational"
            } else {
                "text"
            },
            if self.paired {
                "preference"
            } else {
                "unpaired"
            },
            self.train.len(),
            self.val.len(),
            self.max_length,
            self.loss.beta,
            self.loss.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lantern_kernels::Rng;

    /// TRL's rotation: within each batch-sized run, the completion before (the first takes the
    /// run's last); a run of one reads its own.
    #[test]
    fn kl_completions_rotate_within_batches() {
        assert_eq!(rotated_within(5, 5), [4, 0, 1, 2, 3]);
        assert_eq!(rotated_within(5, 2), [1, 0, 3, 2, 4]);
        assert_eq!(rotated_within(3, 1), [0, 1, 2]);
        assert_eq!(rotated_within(0, 4), Vec::<usize>::new());
    }

    /// TRL's `train_sampling_strategy`: sequential by default, and the only order the `kto`
    /// loss takes; `random` and `group_by_length` (either key) for `apo_zero_unpaired`.
    #[test]
    fn orders_follow_trls_rules() {
        let cfg = |sets: &[&str]| {
            let text = "[model]\ninit_from = \"m\"\n[data]\ntrain = \"t.jsonl\"\n";
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            RunConfig::parse(text, "k.toml", &sets).unwrap()
        };
        let order = |sets: &[&str]| {
            let c = cfg(sets);
            KtoOrder::of(&c, &KtoLoss::of(&c.data).unwrap(), 12)
        };
        let apo = "data.loss_type=\"apo_zero_unpaired\"";
        assert_eq!(order(&[]).unwrap(), KtoOrder::Sequential);
        assert_eq!(order(&[apo]).unwrap(), KtoOrder::Sequential);
        let random = "data.train_sampling_strategy=\"random\"";
        assert_eq!(order(&[apo, random]).unwrap(), KtoOrder::Random);
        let grouped = "data.train_sampling_strategy=\"group_by_length\"";
        for g in [grouped, "train.group_by_length=true"] {
            assert_eq!(order(&[apo, g]).unwrap(), KtoOrder::GroupByLength(12));
        }
        for (sets, says) in [
            (vec![random], "which random would break"),
            (
                vec!["train.group_by_length=true"],
                "which train.group_by_length would break",
            ),
            (vec![grouped], "which group_by_length would break"),
            (vec![apo, random, "train.group_by_length=true"], "set one"),
        ] {
            let e = order(&sets).unwrap_err().to_string();
            assert!(e.contains(says), "{sets:?}: {e}");
        }
        let e = RunConfig::parse(
            "[model]\ninit_from = \"m\"\n[data]\ntrain = \"t.jsonl\"\n",
            "k.toml",
            &["data.train_sampling_strategy=\"shuffled\"".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.train_sampling_strategy"), "{e}");
    }

    /// KTO's KL estimate by a forward in training mode (dropout on, each slot's masks from its
    /// own generator) or in evaluation mode: another estimate with masks, the same one for the
    /// same masks.
    #[test]
    fn the_kl_forward_trains_with_dropout_when_asked() {
        use lantern_models::gpt::{self, Gpt, GptConfig};
        let cfg = GptConfig {
            vocab_size: 40,
            n_positions: 16,
            n_embd: 16,
            n_layer: 2,
            n_head: 2,
            dropout: 0.3,
            layer_norm_epsilon: 1e-5,
        };
        let d = &Device::Cpu;
        let params = gpt::init_params(&cfg, &mut Rng::new(3), d, candle_core::DType::F32).unwrap();
        let model = Gpt::new(&cfg, &params).unwrap();
        let example = |i: u32| UnpairedExample {
            prompt: vec![1 + i, 2, 3],
            completion: vec![10 + i, 11 + i, 12],
            label: i.is_multiple_of(2),
            line: i as usize + 1,
        };
        let train: Vec<_> = (0..4).map(example).collect();
        let set = KtoSet {
            kl: [rotated_within(4, 4), Vec::new()],
            refs: RefCell::new([Vec::new(), Vec::new()]),
            train,
            val: Vec::new(),
            pad: 0,
            max_length: 16,
            loss: Arc::new(loss(KtoKind::Kto, 1.0, 1.0)),
            conversational: false,
            paired: false,
            order: KtoOrder::Sequential,
            sync: None,
            notes: Vec::new(),
        };
        set.compute_reference(&model, 4, d).unwrap();
        // A reference far below the policy, so that the estimate is not clamped at 0.
        for r in set.refs.borrow_mut()[0].iter_mut() {
            r[1] -= 50.0;
        }
        let comm = lantern_comm::Communicator::single();
        let z = |dropout: Option<&dyn Fn(usize) -> Rng>| {
            let mut batch = set.train_batch(&[0, 1, 2, 3], d).unwrap();
            kl_estimate(&model, &mut [Some(&mut batch)], &comm, dropout).unwrap();
            batch.unpaired.unwrap().z.unwrap()
        };
        let eval = z(None);
        assert!(
            (eval - 50.0).abs() < 1e-3,
            "policy = reference but for the shift: {eval}"
        );
        let masks = |seed: u64| move |k: usize| Rng::derive(seed, k as u64);
        let (a, b) = (masks(7), masks(8));
        let trained = z(Some(&a));
        assert!((trained - eval).abs() > 1e-3, "{trained} vs {eval}");
        assert_eq!(trained, z(Some(&a)), "the same masks, the same estimate");
        assert_ne!(trained, z(Some(&b)));
    }

    fn loss(kind: KtoKind, wd: f64, wu: f64) -> KtoLoss {
        KtoLoss {
            kind,
            beta: 0.5,
            desirable_weight: wd,
            undesirable_weight: wu,
        }
    }

    /// The losses against their formulas, in f64.
    #[test]
    fn losses_are_trls_formulas() {
        let d = &Device::Cpu;
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), d).unwrap();
        let (p, r) = (t(&[-3.0, -5.0, -2.0]), t(&[-4.0, -4.5, -2.5]));
        let (pk, rk) = (t(&[-6.0, -7.0, -5.0]), t(&[-6.5, -7.2, -5.6]));
        let labels = t(&[1.0, 0.0, 1.0]);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        // z = mean(0.5, 0.2, 0.6) = 0.4333…; r = (1, −0.5, 0.5).
        let z = (0.5 + 0.2 + 0.6) / 3.0;
        let z_of = |a: &Tensor, b: &Tensor| {
            let m = (a - b)
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            Some(f64::from(m.max(0.0)))
        };
        let kto = loss(KtoKind::Kto, 1.0, 1.5)
            .sum((&p, &r), z_of(&pk, &rk), &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = (1.0 - sig(0.5 * (1.0 - z)))
            + 1.5 * (1.0 - sig(0.5 * (z + 0.5)))
            + (1.0 - sig(0.5 * (0.5 - z)));
        assert!((kto - want).abs() < 1e-6, "{kto} vs {want}");
        // A negative KL estimate is clamped at 0.
        let neg = loss(KtoKind::Kto, 1.0, 1.0)
            .sum((&p, &r), z_of(&rk, &pk), &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want0 = (1.0 - sig(0.5)) + (1.0 - sig(0.25)) + (1.0 - sig(0.25));
        assert!((neg - want0).abs() < 1e-6, "{neg} vs {want0}");
        let apo = loss(KtoKind::ApoZeroUnpaired, 1.0, 1.0)
            .sum((&p, &r), None, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = (1.0 - sig(0.5)) + sig(-0.25) + (1.0 - sig(0.25));
        assert!((apo - want).abs() < 1e-6, "{apo} vs {want}");
        assert!(loss(KtoKind::Kto, 1.0, 1.0)
            .sum((&p, &r), None, &labels)
            .is_err());
    }
}

//! Direct Preference Optimization (Rafailov et al. 2023) in the training loop, as TRL's
//! `DPOTrainer` with its default sigmoid loss: `data.train` names a JSONL file of preference
//! records (`lantern_data::dpo`: `prompt`, `chosen`, `rejected`), and `lantern train` trains
//! the `model.init_from` causal LM to prefer the chosen completions, against itself as it was
//! loaded (the reference, frozen).
//!
//! - A sample is one preference; a micro-batch of B preferences is 2B rows, prompt + chosen
//!   for each, then prompt + rejected for each (TRL's collator), each cut to `max_length`
//!   (keeping the start) and padded on the right; the targets weigh 1 where they are
//!   completion tokens.
//! - Each row's log-probability is the sum over its completion's tokens. The reference's are
//!   computed once, before training, by the `init_from` weights (TRL's
//!   `precompute_ref_log_probs`; its default, a frozen copy run on every batch, gives the
//!   same numbers): a resume computes them again from the same weights, and LoRA's reference
//!   is the pretrained model the adapters start from, as peft's disabled adapters give.
//! - With `d = β·((π_c − ref_c) − (π_r − ref_r))` per preference, the loss is
//!   `−log σ(d)`, averaged over the step's preferences on every rank; evaluations report its
//!   mean over every validation preference (`val_loss`) and the share with `d > 0` (TRL's
//!   `rewards/accuracies`, as `val_accuracy`).
//! - The order is SFT's: a seeded shuffle per epoch, a pure function of (seed, sample).

use crate::config::FDivergence;
use crate::config::RunConfig;
use crate::sft::{epoch_index, train_and_validation, Tokenization};
use crate::task::LossModel;
use crate::trainer::Batch;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use lantern_data::dpo::{read_preferences, PreferenceData, PreferenceExample};
use lantern_data::sft::Truncation;
use lantern_models::Mode;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// TRL's `beta` default.
pub const DEFAULT_BETA: f64 = 0.1;
/// TRL's `discopop_tau` default.
pub const DEFAULT_DISCOPOP_TAU: f64 = 0.05;
/// TRL's `f_alpha_divergence_coef` default.
pub const DEFAULT_F_ALPHA: f64 = 0.5;

/// The preferences of a DPO batch: how far from the reference the loss reads them.
#[derive(Debug, Clone)]
pub struct Pairs {
    /// (2B) f32: the reference's log-probabilities of the rows, chosen then rejected; `None`
    /// while the reference's own are being computed.
    pub reference: Option<Tensor>,
    /// (2B) f32: each row's completion tokens (at least 1), which `ipo` and `sigmoid_norm`
    /// divide by.
    pub lengths: Tensor,
    /// (2B·T) f32, LD-DPO: each target's weight in its row's log-probability (1, or α past
    /// the shorter completion); `None`: the completion mask alone.
    pub ld: Option<Tensor>,
    pub loss: Arc<PreferenceLoss>,
}

/// What the preference losses read of B preferences, (B) f32 each.
pub struct Logps {
    /// The policy's log-probabilities of the chosen and rejected completions.
    pub chosen: Tensor,
    pub rejected: Tensor,
    /// The reference's.
    pub ref_chosen: Tensor,
    pub ref_rejected: Tensor,
    /// The completions' token counts (at least 1), for `ipo` and `sigmoid_norm`.
    pub lengths: Option<(Tensor, Tensor)>,
    /// The `sft` loss: the mean negative log-likelihood of the chosen completions' tokens (a
    /// scalar).
    pub chosen_nll: Option<Tensor>,
    /// WPO: each preference's weight (B), constant.
    pub weights: Option<Tensor>,
}

/// One of TRL 1.16's DPO losses, by its `loss_type` name. Each is a function of a
/// preference's log-ratios `c = log π(chosen) − log π_ref(chosen)` and `r` (the rejected
/// one's), with `d = c − r`, β and ε (`label_smoothing`):
/// - `sigmoid` (DPO): `−log σ(βd)`;
/// - `hinge` (SLiC): `max(0, 1 − βd)`;
/// - `ipo`: `(c/|c| − r/|r| − 1/(2β))²`, |·| the completion's tokens;
/// - `exo_pair`: `σ(βd)(log σ(βd) − log(1−ε)) + σ(−βd)(log σ(−βd) − log ε)`;
/// - `nca_pair`: `−log σ(βc) − ½ log σ(−βc) − ½ log σ(−βr)`;
/// - `robust`: `(−(1−ε) log σ(βd) + ε log σ(−βd)) / (1 − 2ε)`;
/// - `bco_pair`: `−log σ(βc) − log σ(−βr)`;
/// - `sppo_hard`: `(c − 1/(2β))² + (r + 1/(2β))²`;
/// - `apo_zero`: `1 − σ(βc) + σ(βr)`; `apo_down`: `σ(βc) + 1 − σ(βd)`;
/// - `discopop`: `−log σ(βd)·(1 − m) + e^(−βd)·m`, `m = σ(βd/τ)`;
/// - `sigmoid_norm`: `−log σ(β(c/|c| − r/|r|))`;
/// - `aot`: `−(1−ε) log σ(βδ) − ε log σ(−βδ)`, δ the batch's sorted policy log-ratios
///   `π(chosen) − π(rejected)` minus its sorted reference ones; `aot_unpaired`: the same with
///   δ its sorted `c` minus its sorted `r` (both sort within the micro-batch, as TRL does
///   within the device's batch);
/// - `sft` (with `sigmoid`: RPO): the mean negative log-likelihood of the batch's chosen
///   completion tokens, the same for every preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpoLoss {
    Sigmoid,
    Hinge,
    Ipo,
    ExoPair,
    NcaPair,
    Robust,
    BcoPair,
    SppoHard,
    ApoZero,
    ApoDown,
    Discopop,
    SigmoidNorm,
    Aot,
    AotUnpaired,
    Sft,
}

impl DpoLoss {
    const ALL: [Self; 15] = [
        Self::Sigmoid,
        Self::Hinge,
        Self::Ipo,
        Self::ExoPair,
        Self::NcaPair,
        Self::Robust,
        Self::BcoPair,
        Self::SppoHard,
        Self::ApoZero,
        Self::ApoDown,
        Self::Discopop,
        Self::SigmoidNorm,
        Self::Aot,
        Self::AotUnpaired,
        Self::Sft,
    ];
    /// TRL's names, in [`DpoLoss::ALL`]'s order.
    pub const NAMES: [&'static str; 15] = [
        "sigmoid",
        "hinge",
        "ipo",
        "exo_pair",
        "nca_pair",
        "robust",
        "bco_pair",
        "sppo_hard",
        "apo_zero",
        "apo_down",
        "discopop",
        "sigmoid_norm",
        "aot",
        "aot_unpaired",
        "sft",
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|l| *l == self).unwrap_or(0)]
    }

    /// Whether the loss reads the completions' lengths.
    fn per_token(self) -> bool {
        matches!(self, Self::Ipo | Self::SigmoidNorm)
    }

    /// Whether the loss reads the log-ratios' scores (and so generalizes to f-divergences,
    /// TRL's list).
    fn scored(self) -> bool {
        matches!(
            self,
            Self::Sigmoid
                | Self::SigmoidNorm
                | Self::Hinge
                | Self::Ipo
                | Self::ExoPair
                | Self::Robust
                | Self::Discopop
                | Self::Sft
        )
    }
}

/// A run's preference loss: `data.loss_type`'s losses with their `loss_weights`, summed, and
/// the constants they read.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceLoss {
    pub terms: Vec<(DpoLoss, f64)>,
    pub beta: f64,
    pub label_smoothing: f64,
    pub discopop_tau: f64,
    /// How the log-ratios are scored before the losses that take a score read them.
    pub f_divergence: FDivergence,
    /// α of [`FDivergence::AlphaDivergence`].
    pub f_alpha: f64,
    /// WPO (Zhou et al. 2024): every loss of a preference weighted by
    /// `w_c·w_r`, w a completion's `exp(mean over its tokens of log p(t) − log Σ_v p_v²)`
    /// under the policy, without gradient.
    pub use_weighting: bool,
}

/// ln(1 + e^z) without overflow: below 30 as written, z beyond; the gradient σ(z) everywhere.
/// (Not relu(z) + ln(1 + e^−|z|): candle's relu and abs have a gradient of 1 at 0, where every
/// margin starts.)
pub(crate) fn softplus(z: &Tensor) -> candle_core::Result<Tensor> {
    (z.clamp(-1e30, 30.0)?.exp()? + 1.0)?.log()? + (z - 30.0)?.relu()?
}

/// log σ(x) = −softplus(−x).
fn log_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    softplus(&x.neg()?)?.neg()
}

pub(crate) fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    log_sigmoid(x)?.exp()
}

/// x (B) in ascending order, the gradient going back to each element's place.
fn sorted(x: &Tensor) -> candle_core::Result<Tensor> {
    x.index_select(&x.arg_sort_last_dim(true)?, 0)
}

impl PreferenceLoss {
    /// The loss `data` asks for: `loss_type` (default `sigmoid`), `loss_weights`, `beta`,
    /// `label_smoothing`, `discopop_tau`, checked as TRL checks them.
    pub fn of(d: &crate::config::DataSection) -> Result<Self> {
        let bad = |m: String| Err(Error::Config(m));
        let names = d.loss_type.as_ref().map_or(vec!["sigmoid"], |l| l.names());
        let mut losses = Vec::with_capacity(names.len());
        for n in &names {
            match DpoLoss::from_name(n) {
                Some(l) => losses.push(l),
                None => {
                    return bad(format!(
                        "data.loss_type `{n}` is not a DPO loss (preference records): one of {}",
                        DpoLoss::NAMES.join(", ")
                    ))
                }
            }
        }
        if losses.is_empty() {
            return bad("data.loss_type is an empty list".into());
        }
        let weights = d.loss_weights.clone().unwrap_or(vec![1.0; losses.len()]);
        if weights.len() != losses.len() {
            return bad(format!(
                "data.loss_weights has {} weights for the {} losses of data.loss_type",
                weights.len(),
                losses.len()
            ));
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
            return bad(format!("data.loss_weights must be finite, got {w}"));
        }
        let beta = d.beta.unwrap_or(DEFAULT_BETA);
        if !(beta > 0.0 && beta.is_finite()) {
            return bad(format!("data.beta must be positive, got {beta}"));
        }
        let eps = d.label_smoothing.unwrap_or(0.0);
        if !(0.0..0.5).contains(&eps) {
            return bad(format!(
                "data.label_smoothing must be in [0, 0.5), got {eps}"
            ));
        }
        if losses.contains(&DpoLoss::ExoPair) && eps == 0.0 {
            return bad(
                "the exo_pair loss needs data.label_smoothing > 0 (the EXO paper recommends \
                 1e-3)"
                    .into(),
            );
        }
        let tau = d.discopop_tau.unwrap_or(DEFAULT_DISCOPOP_TAU);
        if !(tau > 0.0 && tau.is_finite()) {
            return bad(format!("data.discopop_tau must be positive, got {tau}"));
        }
        let f_divergence = d.f_divergence_type.unwrap_or_default();
        if let Some(l) = losses
            .iter()
            .find(|l| f_divergence != FDivergence::ReverseKl && !l.scored())
        {
            return bad(format!(
                "data.f_divergence_type {f_divergence:?} takes the losses sigmoid, \
                 sigmoid_norm, hinge, ipo, exo_pair, robust, discopop; not {}",
                l.name()
            ));
        }
        if d.f_alpha_divergence_coef.is_some() && f_divergence != FDivergence::AlphaDivergence {
            return bad(
                "data.f_alpha_divergence_coef is α of f_divergence_type = \"alpha_divergence\""
                    .into(),
            );
        }
        let use_weighting = d.use_weighting.unwrap_or(false);
        if let Some(l) = losses
            .iter()
            .find(|l| use_weighting && matches!(l, DpoLoss::Aot | DpoLoss::AotUnpaired))
        {
            return bad(format!(
                "data.use_weighting (WPO) weighs each preference; {} sorts them apart (TRL has \
                 no WPO for it either)",
                l.name()
            ));
        }
        let f_alpha = d.f_alpha_divergence_coef.unwrap_or(DEFAULT_F_ALPHA);
        if !f_alpha.is_finite() {
            return bad(format!(
                "data.f_alpha_divergence_coef must be finite, got {f_alpha}"
            ));
        }
        let reads = |l: DpoLoss| match l {
            DpoLoss::Robust | DpoLoss::ExoPair | DpoLoss::Aot | DpoLoss::AotUnpaired => {
                "label_smoothing"
            }
            DpoLoss::Discopop => "discopop_tau",
            _ => "",
        };
        for (key, set) in [
            ("label_smoothing", d.label_smoothing.is_some()),
            ("discopop_tau", d.discopop_tau.is_some()),
        ] {
            if set && !losses.iter().any(|&l| reads(l) == key) {
                return bad(format!(
                    "data.{key} is read by none of the losses {names:?} of data.loss_type"
                ));
            }
        }
        Ok(Self {
            terms: losses.into_iter().zip(weights).collect(),
            beta,
            label_smoothing: eps,
            discopop_tau: tau,
            f_divergence,
            f_alpha,
            use_weighting,
        })
    }

    /// The score of log-ratios u under the f-divergence (f′(e^u); `u` for the reverse KL).
    fn score(&self, u: &Tensor) -> Result<Tensor> {
        let a = self.f_alpha;
        Ok(match self.f_divergence {
            FDivergence::ReverseKl => u.clone(),
            FDivergence::ForwardKl => u.neg()?.exp()?.affine(-1.0, 1.0)?,
            FDivergence::JsDivergence => (log_sigmoid(u)? + std::f64::consts::LN_2)?,
            // TRL's limit case falls back to the reverse KL.
            FDivergence::AlphaDivergence if (a - 1.0).abs() < 1e-6 => u.clone(),
            FDivergence::AlphaDivergence => {
                // The exponent clamped as TRL does (f32: at 80), so e^t stays finite.
                let t = u.affine(a - 1.0, 0.0)?.clamp(-1e30f32, 80f32)?;
                (t.exp()? - 1.0)?.affine(1.0 / (a - 1.0), 0.0)?
            }
        })
    }

    /// Whether a term reads the completions' lengths.
    pub fn per_token(&self) -> bool {
        self.terms.iter().any(|(l, _)| l.per_token())
    }

    /// Whether a term reads the chosen completions' mean negative log-likelihood.
    pub fn reads_nll(&self) -> bool {
        self.terms.iter().any(|(l, _)| *l == DpoLoss::Sft)
    }

    /// The loss summed over B preferences.
    pub fn sum(&self, x: &Logps) -> Result<Tensor> {
        let (beta, eps) = (self.beta, self.label_smoothing);
        let chosen = &(&x.chosen - &x.ref_chosen)?;
        let rejected = &(&x.rejected - &x.ref_rejected)?;
        let lengths = x.lengths.as_ref().map(|(c, r)| (c, r));
        // AOT's loss of the margins δ.
        let aot = |delta: Tensor| -> Result<Tensor> {
            let bd = delta.affine(beta, 0.0)?;
            let a = log_sigmoid(&bd)?.affine(-(1.0 - eps), 0.0)?;
            let b = log_sigmoid(&bd.neg()?)?.affine(-eps, 0.0)?;
            Ok((a + b)?)
        };
        // The losses that take scores read (cs, rs); the others the log-ratios themselves.
        let (cs, rs) = (self.score(chosen)?, self.score(rejected)?);
        let bd = (&cs - &rs)?.affine(beta, 0.0)?;
        let (bc, br) = (chosen.affine(beta, 0.0)?, rejected.affine(beta, 0.0)?);
        let per_token = || -> Result<Tensor> {
            let (lc, lr) = lengths.ok_or_else(|| {
                Error::Config("ipo and sigmoid_norm read the completions' lengths".into())
            })?;
            Ok(((&cs / lc)? - (&rs / lr)?)?)
        };
        let mut total: Option<Tensor> = None;
        for &(loss, w) in &self.terms {
            let term = match loss {
                DpoLoss::Sigmoid => softplus(&bd.neg()?)?,
                DpoLoss::Hinge => bd.affine(-1.0, 1.0)?.relu()?,
                DpoLoss::Ipo => (per_token()? - 1.0 / (2.0 * beta))?.sqr()?,
                DpoLoss::ExoPair => {
                    let (lqw, lql) = (log_sigmoid(&bd)?, log_sigmoid(&bd.neg()?)?);
                    let a = (lqw.exp()? * (lqw - (-eps).ln_1p())?)?;
                    let b = (lql.exp()? * (lql - eps.ln())?)?;
                    (a + b)?
                }
                DpoLoss::NcaPair => {
                    let a = log_sigmoid(&bc)?.neg()?;
                    let b = log_sigmoid(&bc.neg()?)?.affine(-0.5, 0.0)?;
                    let c = log_sigmoid(&br.neg()?)?.affine(-0.5, 0.0)?;
                    ((a + b)? + c)?
                }
                DpoLoss::Robust => {
                    let clean = log_sigmoid(&bd)?.affine(-(1.0 - eps), 0.0)?;
                    let flipped = log_sigmoid(&bd.neg()?)?.affine(-eps, 0.0)?;
                    (clean - flipped)?.affine(1.0 / (1.0 - 2.0 * eps), 0.0)?
                }
                DpoLoss::BcoPair => (log_sigmoid(&bc)?.neg()? - log_sigmoid(&br.neg()?)?)?,
                DpoLoss::SppoHard => {
                    let h = 0.5 / beta;
                    ((chosen - h)?.sqr()? + (rejected + h)?.sqr()?)?
                }
                DpoLoss::ApoZero => (sigmoid(&bc)?.affine(-1.0, 1.0)? + sigmoid(&br)?)?,
                DpoLoss::ApoDown => {
                    let bd = (&bc - &br)?;
                    (sigmoid(&bc)? + sigmoid(&bd)?.affine(-1.0, 1.0)?)?
                }
                DpoLoss::Discopop => {
                    let m = sigmoid(&bd.affine(1.0 / self.discopop_tau, 0.0)?)?;
                    let logistic = softplus(&bd.neg()?)?;
                    let exp = bd.neg()?.exp()?;
                    ((logistic * m.affine(-1.0, 1.0)?)? + (exp * m)?)?
                }
                DpoLoss::SigmoidNorm => softplus(&per_token()?.affine(-beta, 0.0)?)?,
                DpoLoss::Aot => {
                    let policy = (&x.chosen - &x.rejected)?;
                    let reference = (&x.ref_chosen - &x.ref_rejected)?;
                    aot((sorted(&policy)? - sorted(&reference)?)?)?
                }
                DpoLoss::AotUnpaired => aot((sorted(chosen)? - sorted(rejected)?)?)?,
                DpoLoss::Sft => {
                    let nll = x.chosen_nll.as_ref().ok_or_else(|| {
                        Error::Config("the sft loss reads the chosen completions' NLL".into())
                    })?;
                    nll.broadcast_as(chosen.shape())?.contiguous()?
                }
            };
            let term = match &x.weights {
                Some(pw) => (term * pw)?,
                None => term,
            };
            let term = term.sum_all()?.affine(w, 0.0)?;
            total = Some(match total {
                Some(t) => (t + term)?,
                None => term,
            });
        }
        total.ok_or_else(|| Error::Config("no DPO loss".into()))
    }

    /// The losses for the run's log: `sigmoid`, or `robust (ε 0.1) + 0.5·hinge`.
    pub fn describe(&self) -> String {
        self.terms
            .iter()
            .map(|&(l, w)| {
                let w = match w == 1.0 {
                    true => String::new(),
                    false => format!("{w}·"),
                };
                let extra = match l {
                    DpoLoss::Robust | DpoLoss::ExoPair => {
                        format!(" (label_smoothing {})", self.label_smoothing)
                    }
                    DpoLoss::Discopop => format!(" (tau {})", self.discopop_tau),
                    _ => String::new(),
                };
                format!("{w}{}{extra}", l.name())
            })
            .collect::<Vec<_>>()
            .join(" + ")
            + if self.use_weighting {
                ", WPO-weighted"
            } else {
                ""
            }
    }
}

/// The examples of a DPO run.
pub struct DpoSet {
    pub train: Vec<PreferenceExample>,
    pub val: Vec<PreferenceExample>,
    /// The reference's log-probabilities (chosen, rejected) of each training and validation
    /// example, filled by [`DpoSet::compute_reference`] (again after each of TR-DPO's syncs,
    /// hence the cell: evaluations read the set meanwhile).
    refs: RefCell<[Vec<[f32; 2]>; 2]>,
    /// TR-DPO (`data.sync_ref_model`): the reference moves toward the policy every so many
    /// steps.
    pub sync: Option<RefSync>,
    pub pad: u32,
    pub max_length: usize,
    /// Which end of a prompt + completion longer than `max_length` is kept.
    pub truncation: Truncation,
    pub loss: Arc<PreferenceLoss>,
    /// LD-DPO's weight of the completion tokens past the shorter completion's count.
    pub ld_alpha: Option<f64>,
    pub conversational: bool,
    /// `train.group_by_length`: the preferences per optimizer step (every rank's).
    pub group: Option<usize>,
    /// What reading the files said, for the run's log.
    pub notes: Vec<String>,
}

/// TR-DPO (Gorbatovski et al. 2024; TRL's `sync_ref_model`): after every `steps` optimizer
/// steps the reference becomes `alpha`·policy + (1 − `alpha`)·reference, parameter by
/// parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefSync {
    pub alpha: f64,
    pub steps: u64,
}

/// TRL's `ref_model_mixup_alpha` default.
pub const DEFAULT_MIXUP_ALPHA: f64 = 0.6;
/// TRL's `ref_model_sync_steps` default.
pub const DEFAULT_SYNC_STEPS: u64 = 512;

impl RefSync {
    /// `data.sync_ref_model` and its settings; `None` when it is off. The settings alone, an
    /// α outside [0, 1], a period of 0 and LoRA (whose reference is the base under the
    /// adapters, no model of its own to move; TRL refuses it too) are errors.
    pub fn of(cfg: &RunConfig) -> Result<Option<Self>> {
        let d = &cfg.data;
        if !d.sync_ref_model.unwrap_or(false) {
            let set = [
                ("ref_model_mixup_alpha", d.ref_model_mixup_alpha.is_some()),
                ("ref_model_sync_steps", d.ref_model_sync_steps.is_some()),
            ];
            return match set.iter().find(|(_, s)| *s) {
                Some((k, _)) => Err(Error::Config(format!(
                    "data.{k} is read only with data.sync_ref_model = true"
                ))),
                None => Ok(None),
            };
        }
        let alpha = d.ref_model_mixup_alpha.unwrap_or(DEFAULT_MIXUP_ALPHA);
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::Config(format!(
                "data.ref_model_mixup_alpha must be in [0, 1], got {alpha}"
            )));
        }
        let steps = d.ref_model_sync_steps.unwrap_or(DEFAULT_SYNC_STEPS);
        if steps == 0 {
            return Err(Error::Config(
                "data.ref_model_sync_steps must be at least 1".into(),
            ));
        }
        if cfg.lora.is_some() {
            return Err(Error::Config(
                "data.sync_ref_model with [lora]: the reference is the base model under the \
                 adapters, with no weights of its own to move toward the policy; train without \
                 LoRA or leave sync_ref_model out"
                    .into(),
            ));
        }
        Ok(Some(Self { alpha, steps }))
    }

    /// Whether the reference moves after optimizer step `step` (counted from 1).
    pub fn due(&self, step: u64) -> bool {
        step.is_multiple_of(self.steps)
    }
}

/// Rows of prompt + completion sequences padded on the right to the longest: a row reads all
/// its tokens but the last and predicts all but the first, weighing its completion's tokens
/// (target i is token i + 1, so a row's completion targets start at position prompt − 1).
pub(crate) struct CompletionRows {
    /// The rows' input length: the longest sequence's, less one.
    pub t: usize,
    /// (R·T) each.
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    /// Each row's completion targets.
    pub counts: Vec<usize>,
}

impl CompletionRows {
    /// `seqs`: each row's tokens (at least one) and how many of them are the prompt's.
    pub fn of(seqs: &[(Vec<u32>, usize)], pad: u32) -> Self {
        let t = seqs.iter().map(|(s, _)| s.len() - 1).max().unwrap_or(0);
        let n = seqs.len();
        let mut rows = Self {
            t,
            inputs: vec![pad; n * t],
            targets: vec![pad; n * t],
            weights: vec![0f32; n * t],
            counts: Vec::with_capacity(n),
        };
        for (r, (s, prompt)) in seqs.iter().enumerate() {
            let (len, from) = (s.len() - 1, prompt.saturating_sub(1));
            let at = r * t;
            rows.inputs[at..at + len].copy_from_slice(&s[..len]);
            rows.targets[at..at + len].copy_from_slice(&s[1..]);
            rows.weights[at + from.min(len)..at + len].fill(1.0);
            rows.counts.push(len.saturating_sub(from));
        }
        rows
    }
}

/// SFT's keys that DPO (and KTO) have no use for.
pub(crate) fn sft_only(cfg: &RunConfig) -> Option<&'static str> {
    let d = &cfg.data;
    [
        ("text_field", d.text_field.is_some()),
        ("completion_only_loss", d.completion_only_loss.is_some()),
        ("assistant_only_loss", d.assistant_only_loss.is_some()),
        ("packing", d.packing.is_some()),
        ("packing_strategy", d.packing_strategy.is_some()),
    ]
    .into_iter()
    .find_map(|(k, set)| set.then_some(k))
}

impl DpoSet {
    /// Reads `data.train` (and `data.validation`, or holds `data.val_fraction` out) with the
    /// run's tokenizer, as [`crate::sft::SftSet::load`] does.
    pub fn load(
        cfg: &RunConfig,
        (tokenizer, tokenizer_path): (&Tokenizer, &Path),
        eos_id: Option<u32>,
        (context, vocab): (usize, usize),
        per_step: usize,
    ) -> Result<Self> {
        let d = &cfg.data;
        let train_path = d.train.as_ref().expect("DPO data has data.train");
        if let Some(k) = sft_only(cfg) {
            return Err(Error::Config(format!(
                "data.{k} is a setting of SFT records; {} holds preference records (DPO)",
                train_path.display()
            )));
        }
        if cfg.model.init_from.is_none() {
            return Err(Error::Config(
                "DPO trains a pretrained model against itself: set model.init_from".into(),
            ));
        }
        for (k, set) in [
            ("desirable_weight", d.desirable_weight.is_some()),
            ("undesirable_weight", d.undesirable_weight.is_some()),
            (
                "train_sampling_strategy",
                d.train_sampling_strategy.is_some(),
            ),
        ] {
            if set {
                return Err(Error::Config(format!(
                    "data.{k} is KTO's: set data.loss_type = \"kto\" to train {} as KTO",
                    train_path.display()
                )));
            }
        }
        let loss = Arc::new(PreferenceLoss::of(d)?);
        if let Some(a) = d.ld_alpha.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(Error::Config(format!(
                "data.ld_alpha must be in [0, 1], got {a}"
            )));
        }
        let tk = Tokenization::of(cfg, (tokenizer, tokenizer_path), eos_id, context)?;
        let opts = tk.preference_options(vocab);
        let mut notes = Vec::new();
        let mut read = |p: &PathBuf| -> Result<PreferenceData> {
            let data = read_preferences(p, tokenizer, &opts)?;
            if data.dropped > 0 {
                notes.push(format!(
                    "{}: {} record(s) dropped, their prompt filling max_length {}",
                    p.display(),
                    data.dropped,
                    tk.max_length
                ));
            }
            Ok(data)
        };
        let train = read(train_path)?;
        let conversational = train.conversational;
        let (train, val) = train_and_validation(
            cfg,
            (train_path, train),
            read,
            |d: &PreferenceData| match d.conversational {
                true => "conversational preference",
                false => "text preference",
            },
            |d| d.examples,
        )?;
        Ok(Self {
            refs: Default::default(),
            sync: RefSync::of(cfg)?,
            train,
            val,
            pad: tk.pad(tokenizer),
            max_length: tk.max_length,
            truncation: tk.truncation,
            loss,
            ld_alpha: d.ld_alpha,
            conversational,
            group: cfg.train.group_by_length.then_some(per_step),
            notes,
        })
    }

    /// The reference's log-probabilities of every example, by `model` (the `init_from`
    /// weights, frozen, or TR-DPO's moved reference), `b` preferences at a time.
    pub fn compute_reference(
        &self,
        model: &dyn LossModel,
        b: usize,
        device: &Device,
    ) -> Result<()> {
        let b = b.max(1);
        let of = |examples: &[PreferenceExample]| -> Result<Vec<[f32; 2]>> {
            let mut out = Vec::with_capacity(examples.len());
            for chunk in examples.chunks(b) {
                let rows: Vec<&PreferenceExample> = chunk.iter().collect();
                let batch = self.rows(&rows, None, device)?;
                let logps = model.row_logps(&batch, Mode::Eval)?.to_vec1::<f32>()?;
                let n = chunk.len();
                out.extend((0..n).map(|i| [logps[i], logps[n + i]]));
            }
            Ok(out)
        };
        *self.refs.borrow_mut() = [of(&self.train)?, of(&self.val)?];
        Ok(())
    }

    /// The training example of global sample `i` (SFT's per-epoch order).
    pub fn train_index(&self, seed: u64, i: u64, cache: &mut Option<(u64, Vec<usize>)>) -> usize {
        let lengths = || {
            self.train
                .iter()
                .map(|e| e.prompt.len() + e.chosen.len().max(e.rejected.len()))
                .collect()
        };
        epoch_index(self.train.len(), (self.group, lengths), seed, i, cache)
    }

    /// Training examples `idx` as one batch, with their reference log-probabilities.
    pub fn train_batch(&self, idx: &[usize], device: &Device) -> Result<Batch> {
        let rows: Vec<&PreferenceExample> = idx.iter().map(|&i| &self.train[i]).collect();
        let refs: Vec<[f32; 2]> = idx.iter().map(|&i| self.reference(0, i)).collect();
        self.rows(&rows, Some(&refs), device)
    }

    /// Validation examples `from .. from + b` (in file order) as one batch; `None` past the
    /// last.
    pub fn val_batch(&self, from: usize, b: usize, device: &Device) -> Result<Option<Batch>> {
        let from = from.min(self.val.len());
        let to = (from + b).min(self.val.len());
        if from == to {
            return Ok(None);
        }
        let rows: Vec<&PreferenceExample> = self.val[from..to].iter().collect();
        let refs: Vec<[f32; 2]> = (from..to).map(|i| self.reference(1, i)).collect();
        Ok(Some(self.rows(&rows, Some(&refs), device)?))
    }

    /// Example `i`'s reference log-probabilities, of the training (`split` 0) or validation
    /// (1) examples.
    fn reference(&self, split: usize, i: usize) -> [f32; 2] {
        // Filled before the first batch; an empty table is a bug of the caller.
        *self.refs.borrow()[split]
            .get(i)
            .expect("the reference's log-probabilities are computed first")
    }

    /// The tokens of one preference's two rows, as read: each row's all but its last.
    pub fn tokens_of(&self, e: &PreferenceExample) -> u64 {
        let row = |c: &[u32]| ((e.prompt.len() + c.len()).min(self.max_length) - 1) as u64;
        row(&e.chosen) + row(&e.rejected)
    }

    /// The mean length of the rows' inputs, rounded: the sequence length their FLOPs per
    /// token are counted at.
    pub fn mean_input_len(&self) -> usize {
        let n = 2 * self.train.len().max(1);
        let total: u64 = self.train.iter().map(|e| self.tokens_of(e)).sum();
        (total as f64 / n as f64).round().max(1.0) as usize
    }

    /// B preferences as 2B rows (chosen then rejected), each prompt + completion cut to
    /// `max_length` (its start or its end kept) and padded on the right to the longest; a row
    /// reads all its tokens but the last and predicts all but the first, the loss weighing
    /// completion tokens only.
    fn rows(
        &self,
        rows: &[&PreferenceExample],
        refs: Option<&[[f32; 2]]>,
        device: &Device,
    ) -> Result<Batch> {
        let seqs: Vec<(Vec<u32>, usize)> = [false, true]
            .iter()
            .flat_map(|&rejected| {
                rows.iter().map(move |e| {
                    let c = if rejected { &e.rejected } else { &e.chosen };
                    let s: Vec<u32> = e.prompt.iter().chain(c).copied().collect();
                    let keep = self.truncation.kept(s.len(), self.max_length);
                    // The prompt's tokens left at the start of the kept ones.
                    let prompt = e.prompt.len().saturating_sub(keep.start);
                    (s[keep].to_vec(), prompt)
                })
            })
            .collect();
        let CompletionRows {
            t,
            inputs,
            targets,
            weights,
            counts,
        } = CompletionRows::of(&seqs, self.pad);
        let n = seqs.len();
        let b = rows.len();
        let mut ld = vec![0f32; if self.ld_alpha.is_some() { n * t } else { 0 }];
        if let Some(a) = self.ld_alpha {
            for (r, (s, prompt)) in seqs.iter().enumerate() {
                // LD-DPO: past the shorter of the preference's two completions, weight α.
                let (len, from) = (s.len() - 1, prompt.saturating_sub(1));
                let shared = counts[r % b].min(counts[r % b + b]);
                let at = r * t;
                for (k, w) in ld[at..at + len].iter_mut().skip(from).enumerate() {
                    *w = if k < shared { 1.0 } else { a as f32 };
                }
            }
        }
        let lengths: Vec<f32> = counts.iter().map(|&c| c.max(1) as f32).collect();
        let reference = match refs {
            Some(refs) => {
                let v: Vec<f32> = refs
                    .iter()
                    .map(|r| r[0])
                    .chain(refs.iter().map(|r| r[1]))
                    .collect();
                Some(Tensor::from_vec(v, n, device)?)
            }
            None => None,
        };
        Ok(Batch {
            ids: Tensor::from_slice(&inputs, (n, t), device)?,
            targets: Tensor::from_slice(&targets, n * t, device)?,
            weights: Some(Tensor::from_slice(&weights, n * t, device)?),
            // The loss is a mean over preferences.
            n_targets: rows.len(),
            packing: None,
            loss: Default::default(),
            pairs: Some(Pairs {
                reference,
                lengths: Tensor::from_vec(lengths, n, device)?,
                ld: match self.ld_alpha {
                    Some(_) => Some(Tensor::from_vec(ld, n * t, device)?),
                    None => None,
                },
                loss: self.loss.clone(),
            }),
            unpaired: None,
        })
    }

    /// One line on the data for the run's log.
    pub fn describe(&self) -> String {
        format!(
            "dpo: {} preference records, {} train / {} validation examples, max_length {}, \
             beta {}, loss {}{}",
            if self.conversational {
                "conversational"
            } else {
                "text"
            },
            self.train.len(),
            self.val.len(),
            self.max_length,
            self.loss.beta,
            self.loss.describe(),
            self.ld_alpha
                .map_or(String::new(), |a| format!(", ld_alpha {a}"))
        ) + match self.truncation {
            Truncation::KeepStart => "",
            Truncation::KeepEnd => ", keeping the end of long rows",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(examples: Vec<PreferenceExample>, max_length: usize) -> DpoSet {
        DpoSet {
            train: examples,
            val: Vec::new(),
            refs: Default::default(),
            sync: None,
            pad: 0,
            max_length,
            truncation: Truncation::KeepStart,
            loss: Arc::new(PreferenceLoss {
                terms: vec![(DpoLoss::Sigmoid, 1.0)],
                beta: 0.1,
                label_smoothing: 0.0,
                discopop_tau: DEFAULT_DISCOPOP_TAU,
                f_divergence: FDivergence::ReverseKl,
                f_alpha: DEFAULT_F_ALPHA,
                use_weighting: false,
            }),
            ld_alpha: None,
            conversational: false,
            group: None,
            notes: Vec::new(),
        }
    }

    fn ex(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PreferenceExample {
        PreferenceExample {
            prompt: prompt.to_vec(),
            chosen: chosen.to_vec(),
            rejected: rejected.to_vec(),
            line: 1,
        }
    }

    /// TRL's collator: chosen rows, then rejected ones, cut to max_length and padded; the
    /// targets weigh 1 on completion tokens.
    #[test]
    fn rows_are_chosen_then_rejected_with_completion_targets() {
        let s = set(
            vec![
                ex(&[1, 2, 3], &[4, 5], &[6]),
                ex(&[7, 8], &[9], &[10, 11, 12]),
            ],
            4,
        );
        let refs = [[-1.0, -2.0], [-3.0, -4.0]];
        let rows: Vec<&PreferenceExample> = s.train.iter().collect();
        let b = s.rows(&rows, Some(&refs), &Device::Cpu).unwrap();
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            [[1, 2, 3], [7, 8, 0], [1, 2, 3], [7, 8, 10]]
        );
        assert_eq!(
            b.targets.to_vec1::<u32>().unwrap(),
            [2, 3, 4, 8, 9, 0, 2, 3, 6, 8, 10, 11]
        );
        assert_eq!(
            b.weights.unwrap().to_vec1::<f32>().unwrap(),
            [0., 0., 1., 0., 1., 0., 0., 0., 1., 0., 1., 1.]
        );
        assert_eq!(b.n_targets, 2);
        let p = b.pairs.unwrap();
        assert_eq!(
            p.reference.unwrap().to_vec1::<f32>().unwrap(),
            [-1.0, -3.0, -2.0, -4.0]
        );
    }

    /// `keep_end`: each row's last max_length tokens, the completion mask cut with them (a
    /// prompt cut away entirely leaves the first kept token untargeted, as every row's first).
    #[test]
    fn keep_end_cuts_each_rows_start() {
        let mut s = set(
            vec![
                ex(&[1, 2, 3], &[4, 5], &[6]),
                ex(&[7], &[8, 9, 10, 11, 12], &[13]),
            ],
            4,
        );
        s.truncation = Truncation::KeepEnd;
        let refs = [[0.0; 2]; 2];
        let rows: Vec<&PreferenceExample> = s.train.iter().collect();
        let b = s.rows(&rows, Some(&refs), &Device::Cpu).unwrap();
        // Rows [2 3 4 5], [9 10 11 12], [1 2 3 6], [7 13]: inputs all but the last.
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            [[2, 3, 4], [9, 10, 11], [1, 2, 3], [7, 0, 0]]
        );
        assert_eq!(
            b.targets.to_vec1::<u32>().unwrap(),
            [3, 4, 5, 10, 11, 12, 2, 3, 6, 13, 0, 0]
        );
        assert_eq!(
            b.weights.unwrap().to_vec1::<f32>().unwrap(),
            [0., 1., 1., 1., 1., 1., 0., 0., 1., 1., 0., 0.]
        );
        // Completion tokens in the loss: 2, 3 (its first is no target), 1, 1.
        assert_eq!(
            b.pairs.unwrap().lengths.to_vec1::<f32>().unwrap(),
            [2., 3., 1., 1.]
        );
        assert_eq!(s.tokens_of(&s.train[1]), 3 + 1);
    }

    fn loss_of(keys: &[&str]) -> Result<PreferenceLoss> {
        let mut text = String::from("[model]\ninit_from = \"m\"\n[data]\ntrain = \"t.jsonl\"\n");
        for k in keys {
            text += k;
            text += "\n";
        }
        let cfg = crate::config::RunConfig::parse(&text, "t.toml", &[])?;
        PreferenceLoss::of(&cfg.data)
    }

    #[test]
    fn loss_settings_as_trl_takes_them() {
        let l = loss_of(&[]).unwrap();
        assert_eq!(l.terms, [(DpoLoss::Sigmoid, 1.0)]);
        assert_eq!(
            (l.beta, l.label_smoothing, l.discopop_tau),
            (0.1, 0.0, 0.05)
        );
        let l = loss_of(&[
            "loss_type = [\"robust\", \"hinge\"]",
            "loss_weights = [1.0, 0.5]",
            "label_smoothing = 0.1",
        ])
        .unwrap();
        assert_eq!(l.terms, [(DpoLoss::Robust, 1.0), (DpoLoss::Hinge, 0.5)]);
        assert_eq!(l.describe(), "robust (label_smoothing 0.1) + 0.5·hinge");
        assert!(!l.per_token());
        assert!(loss_of(&["loss_type = \"ipo\""]).unwrap().per_token());
        let l = loss_of(&[
            "f_divergence_type = \"alpha_divergence\"",
            "f_alpha_divergence_coef = 0.3",
        ])
        .unwrap();
        assert_eq!(
            (l.f_divergence, l.f_alpha),
            (FDivergence::AlphaDivergence, 0.3)
        );
        for (keys, why) in [
            (&["loss_type = \"nll\""][..], "not a DPO loss"),
            (&["loss_type = []"], "empty list"),
            (
                &["loss_type = [\"ipo\", \"hinge\"]", "loss_weights = [1.0]"],
                "1 weights for the 2 losses",
            ),
            (
                &["loss_type = \"exo_pair\""],
                "needs data.label_smoothing > 0",
            ),
            (&["label_smoothing = 0.1"], "read by none of the losses"),
            (
                &["loss_type = \"robust\"", "label_smoothing = 0.5"],
                "[0, 0.5)",
            ),
            (&["discopop_tau = 0.1"], "read by none"),
            (
                &["loss_type = \"discopop\"", "discopop_tau = 0"],
                "must be positive",
            ),
            (&["beta = 0"], "data.beta must be positive"),
            (
                &[
                    "loss_type = \"nca_pair\"",
                    "f_divergence_type = \"js_divergence\"",
                ],
                "not nca_pair",
            ),
            (
                &["f_alpha_divergence_coef = 0.3"],
                "is α of f_divergence_type",
            ),
            (
                &["loss_type = \"aot\"", "use_weighting = true"],
                "aot sorts them apart",
            ),
        ] {
            let e = loss_of(keys).unwrap_err().to_string();
            assert!(e.contains(why), "{keys:?}: {e}");
        }
    }

    /// Each loss at a margin of 0 (c = r = 0, where training starts) against its formula by
    /// hand, and its gradient in c against a central difference.
    #[test]
    fn each_loss_at_its_formula() {
        let (beta, eps, tau) = (0.1f64, 0.1f64, 0.05f64);
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let ls = |x: f64| s(x).ln();
        // (loss, value at c, r with lengths 4 and 2)
        let f = |l: DpoLoss, c: f64, r: f64| -> f64 {
            let d = c - r;
            let bd = beta * d;
            match l {
                DpoLoss::Sigmoid => -ls(bd),
                DpoLoss::Hinge => (1.0 - bd).max(0.0),
                DpoLoss::Ipo => (c / 4.0 - r / 2.0 - 1.0 / (2.0 * beta)).powi(2),
                DpoLoss::ExoPair => {
                    s(bd) * (ls(bd) - (1.0 - eps).ln()) + s(-bd) * (ls(-bd) - eps.ln())
                }
                DpoLoss::NcaPair => -ls(beta * c) - 0.5 * ls(-beta * c) - 0.5 * ls(-beta * r),
                DpoLoss::Robust => (-(1.0 - eps) * ls(bd) + eps * ls(-bd)) / (1.0 - 2.0 * eps),
                DpoLoss::BcoPair => -ls(beta * c) - ls(-beta * r),
                DpoLoss::SppoHard => (c - 0.5 / beta).powi(2) + (r + 0.5 / beta).powi(2),
                DpoLoss::ApoZero => 1.0 - s(beta * c) + s(beta * r),
                DpoLoss::ApoDown => s(beta * c) + 1.0 - s(bd),
                DpoLoss::Discopop => {
                    let m = s(bd / tau);
                    -ls(bd) * (1.0 - m) + (-bd).exp() * m
                }
                DpoLoss::SigmoidNorm => -ls(beta * (c / 4.0 - r / 2.0)),
                // One preference: sorting leaves it as it is.
                DpoLoss::Aot | DpoLoss::AotUnpaired => -(1.0 - eps) * ls(bd) - eps * ls(-bd),
                DpoLoss::Sft => 0.25,
            }
        };
        let dev = Device::Cpu;
        let t = |v: f64| Tensor::new(&[v as f32], &dev).unwrap();
        let (lc, lr) = (t(4.0), t(2.0));
        for l in DpoLoss::ALL {
            let loss = PreferenceLoss {
                terms: vec![(l, 1.0)],
                beta,
                label_smoothing: eps,
                discopop_tau: tau,
                f_divergence: FDivergence::ReverseKl,
                f_alpha: DEFAULT_F_ALPHA,
                use_weighting: false,
            };
            for (c, r) in [(0.0, 0.0), (1.5, -2.0), (-3.0, 0.5)] {
                let cv = candle_core::Var::new(&[c as f32], &dev).unwrap();
                let x = Logps {
                    chosen: cv.as_tensor().clone(),
                    rejected: t(r),
                    ref_chosen: t(0.0),
                    ref_rejected: t(0.0),
                    lengths: Some((lc.clone(), lr.clone())),
                    chosen_nll: Some(Tensor::new(0.25f32, &dev).unwrap()),
                    weights: None,
                };
                let got = loss.sum(&x).unwrap();
                let g = got.backward().unwrap();
                let got = got.to_scalar::<f32>().unwrap() as f64;
                let want = f(l, c, r);
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{}: {got} vs {want} at ({c}, {r})",
                    l.name()
                );
                let h = 1e-4;
                let fd = (f(l, c + h, r) - f(l, c - h, r)) / (2.0 * h);
                // sft reads no log-ratio: no gradient reaches c.
                let dg = g
                    .get(cv.as_tensor())
                    .map_or(0.0, |d| d.to_vec1::<f32>().unwrap()[0] as f64);
                assert!(
                    (dg - fd).abs() <= 1e-3 * fd.abs().max(1.0),
                    "{}: d/dc {dg} vs {fd} at ({c}, {r})",
                    l.name()
                );
            }
        }
    }
}

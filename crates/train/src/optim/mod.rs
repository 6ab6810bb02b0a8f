//! Optimizers with the exact updates of their `torch.optim` namesakes (foreach=False,
//! maximize=False), checked step by step against torch in `tests/tests/optim_parity.rs`:
//! AdamW, SGD (momentum, dampening, Nesterov), AdaGrad and RMSprop.
//!
//! Rules they share:
//! - State is fp32 whatever the parameter dtype (mixed precision updates fp32 masters).
//! - Weight decay applies to the decay group only: matrices and embeddings (rank ≥ 2), never
//!   biases or LayerNorm gains (nanoGPT's and HF Trainer's grouping), see [`decays`].
//! - A parameter whose gradient is `None` is skipped: its value, its buffers and its own step
//!   count stay as they were. torch keeps a step count per parameter (`state["step"]`), and so
//!   do we ([`StepCounts`]); it drives AdamW's bias correction and AdaGrad's `lr_decay`.
//! - State is saved as named fp32 tensors `<param>.<buffer>` (torch's buffer names) plus the
//!   step counts in the checkpoint's [`OptimizerState`]; loading checks every name and shape.

mod adagrad;
mod adamw;
mod fused;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use rmsprop::{Rmsprop, RmspropConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::checkpoint::OptimizerState;
use crate::config::{AdamWDefaults, OptimizerKeys, OptimizerKind};
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use fused::{fma, fma_s};
use lantern_models::Params;
use std::collections::BTreeMap;
use std::path::Path;

/// Whether a parameter belongs to the weight-decay group.
pub fn decays(shape_rank: usize) -> bool {
    shape_rank >= 2
}

/// The hyper-parameters of one optimizer (the learning rate comes with each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    AdamW(AdamWConfig),
    Sgd(SgdConfig),
    Adagrad(AdagradConfig),
    Rmsprop(RmspropConfig),
}

impl OptimizerConfig {
    /// The optimizer `train.optimizer` names, with its keys (pretraining's or fine-tuning's).
    pub fn from_keys<D: AdamWDefaults>(k: &OptimizerKeys<D>) -> Self {
        match k.kind {
            OptimizerKind::AdamW => Self::AdamW(AdamWConfig {
                beta1: k.beta1,
                beta2: k.beta2,
                eps: k.eps,
                weight_decay: k.weight_decay,
            }),
            OptimizerKind::Sgd => Self::Sgd(SgdConfig {
                momentum: k.momentum,
                dampening: k.dampening,
                nesterov: k.nesterov,
                weight_decay: k.weight_decay,
            }),
            OptimizerKind::Adagrad => Self::Adagrad(AdagradConfig {
                lr_decay: k.lr_decay,
                weight_decay: k.weight_decay,
                initial_accumulator_value: k.initial_accumulator_value,
                eps: k.eps,
            }),
            OptimizerKind::Rmsprop => Self::Rmsprop(RmspropConfig {
                alpha: k.alpha,
                eps: k.eps,
                weight_decay: k.weight_decay,
                momentum: k.momentum,
                centered: k.centered,
            }),
        }
    }
}

/// What a run's header prints: the optimizer and the keys it reads, in torch's repr style with
/// our key names, e.g. `sgd(momentum=0.9, dampening=0.0, nesterov=false, weight_decay=0.0)`.
impl std::fmt::Display for OptimizerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AdamW(c) => write!(
                f,
                "adamw(beta1={:?}, beta2={:?}, eps={:?}, weight_decay={:?})",
                c.beta1, c.beta2, c.eps, c.weight_decay
            ),
            Self::Sgd(c) => write!(
                f,
                "sgd(momentum={:?}, dampening={:?}, nesterov={}, weight_decay={:?})",
                c.momentum, c.dampening, c.nesterov, c.weight_decay
            ),
            Self::Adagrad(c) => write!(
                f,
                "adagrad(lr_decay={:?}, initial_accumulator_value={:?}, eps={:?}, \
                 weight_decay={:?})",
                c.lr_decay, c.initial_accumulator_value, c.eps, c.weight_decay
            ),
            Self::Rmsprop(c) => write!(
                f,
                "rmsprop(alpha={:?}, eps={:?}, momentum={:?}, centered={}, weight_decay={:?})",
                c.alpha, c.eps, c.momentum, c.centered, c.weight_decay
            ),
        }
    }
}

/// A static choice of optimizer: one `match` per call, no registry.
pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
    Adagrad(Adagrad),
    Rmsprop(Rmsprop),
}

impl Optimizer {
    pub fn new(cfg: OptimizerConfig, params: &Params) -> Result<Self> {
        Ok(match cfg {
            OptimizerConfig::AdamW(c) => Self::AdamW(AdamW::new(c, params)?),
            OptimizerConfig::Sgd(c) => Self::Sgd(Sgd::new(c, params)?),
            OptimizerConfig::Adagrad(c) => Self::Adagrad(Adagrad::new(c, params)?),
            OptimizerConfig::Rmsprop(c) => Self::Rmsprop(Rmsprop::new(c, params)?),
        })
    }

    /// The name saved in checkpoints, the same as the `train.optimizer` value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AdamW(_) => OptimizerKind::AdamW.name(),
            Self::Sgd(_) => OptimizerKind::Sgd.name(),
            Self::Adagrad(_) => OptimizerKind::Adagrad.name(),
            Self::Rmsprop(_) => OptimizerKind::Rmsprop.name(),
        }
    }

    /// Calls of [`Self::step`] so far.
    pub fn step_count(&self) -> u64 {
        self.counts().total
    }

    /// One update with learning rate `lr`. `grads[i]` belongs to `params.vars()[i]`.
    pub fn step(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != params.len() {
            return Err(Error::Config(format!(
                "optimizer step got {} gradients for {} parameters",
                grads.len(),
                params.len()
            )));
        }
        match self {
            Self::AdamW(o) => o.step(params, grads, lr),
            Self::Sgd(o) => o.step(params, grads, lr),
            Self::Adagrad(o) => o.step(params, grads, lr),
            Self::Rmsprop(o) => o.step(params, grads, lr),
        }
    }

    /// [`Optimizer::step`] in mixed precision: updates the fp32 `master` weights, then brings
    /// the working copy `work` (the same parameters in bf16/fp16) up to date. AdamW (CUDA and
    /// CPU, f32 masters) writes it in its fused update; everything else is a rounding cast.
    /// In fp32 the model reads the masters themselves (`work` is `master`): a plain step.
    pub fn step_mixed(
        &mut self,
        master: &Params,
        grads: &[Option<Tensor>],
        lr: f64,
        work: &Params,
    ) -> Result<()> {
        if std::ptr::eq(master, work) {
            return self.step(master, grads, lr);
        }
        let written = match self {
            Self::AdamW(o) if grads.len() == master.len() => {
                o.step_with_work(master, grads, lr, Some(work))?
            }
            _ => {
                self.step(master, grads, lr)?;
                vec![false; master.len()]
            }
        };
        for ((w, m), done) in work.vars().iter().zip(master.vars()).zip(written) {
            if !done {
                w.set(&m.as_tensor().to_dtype(w.dtype())?)?;
            }
        }
        Ok(())
    }

    /// The buffers, keyed `<param>.<buffer>` (e.g. `transformer.wte.weight.exp_avg`).
    pub fn state_tensors(&self, params: &Params) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (suffix, bufs) in self.buffers() {
            for (name, t) in params.names().iter().zip(bufs) {
                out.insert(format!("{name}.{suffix}"), t.clone());
            }
        }
        out
    }

    /// What goes into the checkpoint's `trainer_state.json` besides the tensors.
    pub fn state(&self, params: &Params) -> OptimizerState {
        let c = self.counts();
        OptimizerState {
            kind: self.kind().to_string(),
            step: c.total,
            param_steps: params
                .names()
                .iter()
                .zip(&c.per_param)
                .filter(|(_, &s)| s != c.total)
                .map(|(n, &s)| (n.clone(), s))
                .collect(),
        }
    }

    /// Restores what [`Self::state_tensors`] and [`Self::state`] saved. Every buffer this
    /// optimizer (with its current hyper-parameters) needs must be there with the parameter's
    /// shape, and nothing else; on any error the optimizer is left unchanged. `path` names the
    /// checkpoint file in errors.
    pub fn load_state(
        &mut self,
        params: &Params,
        mut tensors: BTreeMap<String, Tensor>,
        state: &OptimizerState,
        path: &Path,
    ) -> Result<()> {
        if state.kind != self.kind() {
            return Err(checkpoint_err(
                path,
                format!(
                    "optimizer state is for {:?}, this optimizer is {:?}",
                    state.kind,
                    self.kind()
                ),
            ));
        }
        let counts = StepCounts::from_state(state, params, path)?;
        let mut loaded = Vec::new();
        for (suffix, _) in self.buffers() {
            loaded.push(take_buffers(params, &mut tensors, suffix, path)?);
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(checkpoint_err(
                path,
                format!(
                    "unexpected optimizer tensor {extra} (is it from another optimizer or other \
                     hyper-parameters?)"
                ),
            ));
        }
        *self.counts_mut() = counts;
        for (slot, bufs) in self.buffers_mut().into_iter().zip(loaded) {
            *slot = bufs;
        }
        Ok(())
    }

    /// (buffer name, one fp32 tensor per parameter), in a fixed order.
    fn buffers(&self) -> Vec<(&'static str, &[Tensor])> {
        match self {
            Self::AdamW(o) => o.buffers(),
            Self::Sgd(o) => o.buffers(),
            Self::Adagrad(o) => o.buffers(),
            Self::Rmsprop(o) => o.buffers(),
        }
    }

    fn buffers_mut(&mut self) -> Vec<&mut Vec<Tensor>> {
        match self {
            Self::AdamW(o) => o.buffers_mut(),
            Self::Sgd(o) => o.buffers_mut(),
            Self::Adagrad(o) => o.buffers_mut(),
            Self::Rmsprop(o) => o.buffers_mut(),
        }
    }

    fn counts(&self) -> &StepCounts {
        match self {
            Self::AdamW(o) => &o.counts,
            Self::Sgd(o) => &o.counts,
            Self::Adagrad(o) => &o.counts,
            Self::Rmsprop(o) => &o.counts,
        }
    }

    fn counts_mut(&mut self) -> &mut StepCounts {
        match self {
            Self::AdamW(o) => &mut o.counts,
            Self::Sgd(o) => &mut o.counts,
            Self::Adagrad(o) => &mut o.counts,
            Self::Rmsprop(o) => &mut o.counts,
        }
    }
}

/// Step counts: `total` calls of `step`, and per parameter the updates it received (torch's
/// per-parameter `state["step"]`). They differ only for a parameter that had no gradient at
/// some step; the checkpoint stores just those.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCounts {
    pub total: u64,
    pub per_param: Vec<u64>,
}

impl StepCounts {
    fn new(n: usize) -> Self {
        Self {
            total: 0,
            per_param: vec![0; n],
        }
    }

    fn from_state(state: &OptimizerState, params: &Params, path: &Path) -> Result<Self> {
        let mut per_param = vec![state.step; params.len()];
        for (name, &s) in &state.param_steps {
            let i = params
                .names()
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| {
                    checkpoint_err(path, format!("step count for unknown parameter {name}"))
                })?;
            if s > state.step {
                return Err(checkpoint_err(
                    path,
                    format!(
                        "parameter {name} has {s} optimizer steps, more than the {} in total",
                        state.step
                    ),
                ));
            }
            per_param[i] = s;
        }
        Ok(Self {
            total: state.step,
            per_param,
        })
    }
}

fn checkpoint_err(path: &Path, msg: String) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    }
}

/// Removes `<param>.<suffix>` for every parameter from `tensors`, checking each shape.
fn take_buffers(
    params: &Params,
    tensors: &mut BTreeMap<String, Tensor>,
    suffix: &str,
    path: &Path,
) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(params.len());
    for (name, var) in params.iter() {
        let key = format!("{name}.{suffix}");
        let t = tensors
            .remove(&key)
            .ok_or_else(|| checkpoint_err(path, format!("missing optimizer tensor {key}")))?;
        if t.dims() != var.dims() {
            return Err(checkpoint_err(
                path,
                format!(
                    "optimizer tensor {key} has shape {:?}, parameter has {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        out.push(t.to_device(var.device())?.to_dtype(DType::F32)?);
    }
    Ok(out)
}

/// One fp32 buffer per parameter, filled with `value`.
fn filled(params: &Params, value: f64) -> Result<Vec<Tensor>> {
    params
        .vars()
        .iter()
        .map(|v| {
            let z = v.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
            Ok(if value == 0.0 { z } else { (z + value)? })
        })
        .collect()
}

/// The decay-group flag of every parameter.
fn decay_flags(params: &Params) -> Vec<bool> {
    params.vars().iter().map(|v| decays(v.rank())).collect()
}

/// `t / s` as a true division: candle's `t / s` multiplies by the rounded reciprocal, which
/// differs from torch's division in the last bit.
fn div_s(t: &Tensor, s: f64) -> Result<Tensor> {
    let s = Tensor::new(s as f32, t.device())?;
    Ok(t.broadcast_div(&s)?)
}

/// torch's `lerp(start, end, w)` for a scalar weight (f32 arithmetic), with its two branches:
/// `start + w·(end − start)` for |w| < 0.5, else `end − (end − start)·(1 − w)`, each fused
/// (see [`fused`]).
fn lerp(start: &Tensor, end: &Tensor, w: f64) -> Result<Tensor> {
    let w = w as f32;
    let diff = (end - start)?;
    if w.abs() < 0.5 {
        fma_s(&diff, w as f64, start)
    } else {
        fma_s(&diff, -((1.0 - w) as f64), end)
    }
}

/// torch's L2 weight decay folded into the gradient, `g.add(p, alpha=wd)` (SGD, AdaGrad,
/// RMSprop), for decay-group parameters.
fn l2(g: Tensor, p: &Tensor, wd: f64, decay: bool) -> Result<Tensor> {
    if decay && wd != 0.0 {
        fma_s(p, wd, &g)
    } else {
        Ok(g)
    }
}

//! AdamW (Loshchilov & Hutter 2019) with the exact update of `torch.optim.AdamW`
//! (foreach=False, amsgrad=False), fp32 moments and state that can be saved and restored:
//!   p ← p · (1 − lr·wd)                      (decoupled decay, decay group only)
//!   m ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²
//!   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//! Weight decay applies to matrices and embeddings only (rank ≥ 2), never to biases or
//! LayerNorm gains (nanoGPT's and HF Trainer's grouping).

use crate::{Error, Result};
use candle_core::{DType, Tensor};
use lantern_models::Params;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// nanoGPT's GPT-2 settings: β = (0.9, 0.95), ε = 1e-8, weight decay 0.1.
impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

pub struct AdamW {
    cfg: AdamWConfig,
    step: u64,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    decay: Vec<bool>,
}

/// Whether a parameter belongs to the weight-decay group.
pub fn decays(shape_rank: usize) -> bool {
    shape_rank >= 2
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, params: &Params) -> Result<Self> {
        let zeros = |v: &candle_core::Var| v.as_tensor().zeros_like()?.to_dtype(DType::F32);
        Ok(Self {
            cfg,
            step: 0,
            exp_avg: params
                .vars()
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            exp_avg_sq: params
                .vars()
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            decay: params.vars().iter().map(|v| decays(v.rank())).collect(),
        })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`. `grads[i]` belongs to `params.vars()[i]`; a missing
    /// gradient leaves that parameter and its moments untouched (as torch does).
    pub fn step(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay: wd,
        } = self.cfg;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        for (i, var) in params.vars().iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let g = g.detach().to_dtype(DType::F32)?;
            let mut p = var.as_tensor().detach().to_dtype(DType::F32)?;
            if self.decay[i] && wd != 0.0 {
                p = (p * (1.0 - lr * wd))?;
            }
            let m = ((&self.exp_avg[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.exp_avg_sq[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + eps)?;
            let p = (p - (m.div(&denom)? * (lr / bc1))?)?;
            var.set(&p.to_dtype(var.dtype())?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        Ok(())
    }

    /// Moments keyed `<param>.exp_avg` / `<param>.exp_avg_sq`; the step count lives in the
    /// trainer state.
    pub fn state_tensors(&self, params: &Params) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, name) in params.names().iter().enumerate() {
            out.insert(format!("{name}.exp_avg"), self.exp_avg[i].clone());
            out.insert(format!("{name}.exp_avg_sq"), self.exp_avg_sq[i].clone());
        }
        out
    }

    /// Restores moments saved by [`Self::state_tensors`], checking every name and shape.
    pub fn load_state(
        &mut self,
        params: &Params,
        mut tensors: BTreeMap<String, Tensor>,
        step: u64,
        path: &Path,
    ) -> Result<()> {
        let err = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        for (i, (name, var)) in params.iter().enumerate() {
            for (suffix, slot) in [
                ("exp_avg", &mut self.exp_avg[i]),
                ("exp_avg_sq", &mut self.exp_avg_sq[i]),
            ] {
                let key = format!("{name}.{suffix}");
                let t = tensors
                    .remove(&key)
                    .ok_or_else(|| err(format!("missing optimizer tensor {key}")))?;
                if t.dims() != var.dims() {
                    return Err(err(format!(
                        "optimizer tensor {key} has shape {:?}, parameter has {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                *slot = t.to_device(var.device())?.to_dtype(DType::F32)?;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(err(format!("unexpected optimizer tensor {extra}")));
        }
        self.step = step;
        Ok(())
    }
}

//! AdaGrad (Duchi et al. 2011) with the update of `torch.optim.Adagrad` (foreach=False,
//! maximize=False), per parameter with its own step count t:
//!   g ← g + wd·p                              (L2 decay, decay group only)
//!   clr = lr / (1 + (t − 1)·lr_decay)
//!   s ← s + g·g                               (s starts at initial_accumulator_value)
//!   p ← p − clr · g / (√s + ε)

use super::{decay_flags, filled, fma, l2, StepCounts};
use crate::Result;
use candle_core::{DType, Tensor};
use lantern_models::Params;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    pub lr_decay: f64,
    pub weight_decay: f64,
    pub initial_accumulator_value: f64,
    pub eps: f64,
}

pub struct Adagrad {
    cfg: AdagradConfig,
    pub(super) counts: StepCounts,
    sum: Vec<Tensor>,
    decay: Vec<bool>,
}

impl Adagrad {
    pub fn new(cfg: AdagradConfig, params: &Params) -> Result<Self> {
        Ok(Self {
            cfg,
            counts: StepCounts::new(params.len()),
            sum: filled(params, cfg.initial_accumulator_value)?,
            decay: decay_flags(params),
        })
    }

    pub fn step(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let AdagradConfig {
            lr_decay,
            weight_decay,
            eps,
            ..
        } = self.cfg;
        self.counts.total += 1;
        for (i, var) in params.vars().iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            self.counts.per_param[i] += 1;
            let t = self.counts.per_param[i];
            let p = var.as_tensor().detach().to_dtype(DType::F32)?;
            let g = l2(
                g.detach().to_dtype(DType::F32)?,
                &p,
                weight_decay,
                self.decay[i],
            )?;
            let clr = lr / (1.0 + (t - 1) as f64 * lr_decay);
            // sum.addcmul_(g, g) ; p.addcdiv_(g, √sum + ε, value=−clr), which is not fused
            let sum = fma(&g, &g, &self.sum[i])?;
            let std = (sum.sqrt()? + eps)?;
            let p = (p - ((g * clr)? / std)?)?;
            var.set(&p.to_dtype(var.dtype())?)?;
            self.sum[i] = sum;
        }
        Ok(())
    }

    pub(super) fn buffers(&self) -> Vec<(&'static str, &[Tensor])> {
        vec![("sum", &self.sum)]
    }

    pub(super) fn buffers_mut(&mut self) -> Vec<&mut Vec<Tensor>> {
        vec![&mut self.sum]
    }
}

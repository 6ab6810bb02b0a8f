//! SGD with the update of `torch.optim.SGD` (foreach=False, maximize=False):
//!   g ← g + wd·p                              (L2 decay, decay group only)
//!   b ← g at a parameter's first update, then b ← μ·b + (1 − τ)·g   (μ > 0 only)
//!   g ← g + μ·b (Nesterov) or g ← b
//!   p ← p − lr·g
//! The first momentum buffer is the raw gradient, without dampening, as in torch.

use super::{decay_flags, filled, fma_s, l2, StepCounts};
use crate::Result;
use candle_core::{DType, Tensor};
use lantern_models::Params;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

pub struct Sgd {
    cfg: SgdConfig,
    pub(super) counts: StepCounts,
    /// Empty without momentum (torch keeps no buffer then either). A buffer holds zeros until
    /// its parameter's first update, which `counts.per_param[i] == 0` tells.
    momentum_buffer: Vec<Tensor>,
    decay: Vec<bool>,
}

impl Sgd {
    pub fn new(cfg: SgdConfig, params: &Params) -> Result<Self> {
        Ok(Self {
            cfg,
            counts: StepCounts::new(params.len()),
            momentum_buffer: if cfg.momentum != 0.0 {
                filled(params, 0.0)?
            } else {
                Vec::new()
            },
            decay: decay_flags(params),
        })
    }

    pub fn step(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let SgdConfig {
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } = self.cfg;
        self.counts.total += 1;
        for (i, var) in params.vars().iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let first = self.counts.per_param[i] == 0;
            self.counts.per_param[i] += 1;
            let p = var.as_tensor().detach().to_dtype(DType::F32)?;
            let mut g = l2(
                g.detach().to_dtype(DType::F32)?,
                &p,
                weight_decay,
                self.decay[i],
            )?;
            if momentum != 0.0 {
                let buf = if first {
                    g.clone()
                } else {
                    // buf.mul_(μ).add_(g, alpha=1 − τ)
                    fma_s(&g, 1.0 - dampening, &(&self.momentum_buffer[i] * momentum)?)?
                };
                g = if nesterov {
                    fma_s(&buf, momentum, &g)?
                } else {
                    buf.clone()
                };
                self.momentum_buffer[i] = buf;
            }
            let p = fma_s(&g, -lr, &p)?;
            var.set(&p.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    pub(super) fn buffers(&self) -> Vec<(&'static str, &[Tensor])> {
        if self.cfg.momentum != 0.0 {
            vec![("momentum_buffer", &self.momentum_buffer)]
        } else {
            Vec::new()
        }
    }

    pub(super) fn buffers_mut(&mut self) -> Vec<&mut Vec<Tensor>> {
        if self.cfg.momentum != 0.0 {
            vec![&mut self.momentum_buffer]
        } else {
            Vec::new()
        }
    }
}

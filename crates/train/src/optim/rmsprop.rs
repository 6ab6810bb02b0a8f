//! RMSprop (Hinton's lecture 6e; Graves 2013 for the centered form) with the update of
//! `torch.optim.RMSprop` (foreach=False, maximize=False):
//!   g ← g + wd·p                              (L2 decay, decay group only)
//!   s ← α·s + (1 − α)·g·g
//!   centered: a ← lerp(a, g, 1 − α) ;  d = √(s − a·a) + ε      else d = √s + ε
//!   momentum μ > 0: b ← μ·b + g/d ;  p ← p − lr·b               else p ← p − lr·g/d

use super::{decay_flags, filled, fma, fma_s, l2, lerp, StepCounts};
use crate::Result;
use candle_core::{DType, Tensor};
use lantern_models::Params;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropConfig {
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
}

pub struct Rmsprop {
    cfg: RmspropConfig,
    pub(super) counts: StepCounts,
    square_avg: Vec<Tensor>,
    /// Empty unless centered.
    grad_avg: Vec<Tensor>,
    /// Empty unless momentum > 0.
    momentum_buffer: Vec<Tensor>,
    decay: Vec<bool>,
}

impl Rmsprop {
    pub fn new(cfg: RmspropConfig, params: &Params) -> Result<Self> {
        let maybe = |on: bool| {
            if on {
                filled(params, 0.0)
            } else {
                Ok(Vec::new())
            }
        };
        Ok(Self {
            cfg,
            counts: StepCounts::new(params.len()),
            square_avg: filled(params, 0.0)?,
            grad_avg: maybe(cfg.centered)?,
            momentum_buffer: maybe(cfg.momentum > 0.0)?,
            decay: decay_flags(params),
        })
    }

    pub fn step(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let RmspropConfig {
            alpha,
            eps,
            weight_decay,
            momentum,
            centered,
        } = self.cfg;
        self.counts.total += 1;
        for (i, var) in params.vars().iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            self.counts.per_param[i] += 1;
            let p = var.as_tensor().detach().to_dtype(DType::F32)?;
            let g = l2(
                g.detach().to_dtype(DType::F32)?,
                &p,
                weight_decay,
                self.decay[i],
            )?;
            // square_avg.mul_(α).addcmul_(g, g, value=1 − α)
            let sq = fma(&(&g * (1.0 - alpha))?, &g, &(&self.square_avg[i] * alpha)?)?;
            let avg = if centered {
                // grad_avg.lerp_(g, 1 − α) ; square_avg.addcmul(ga, ga, value=−1).sqrt_()
                let ga = lerp(&self.grad_avg[i], &g, 1.0 - alpha)?;
                let avg = fma(&ga.neg()?, &ga, &sq)?.sqrt()?;
                self.grad_avg[i] = ga;
                avg
            } else {
                sq.sqrt()?
            };
            let avg = (avg + eps)?;
            let p = if momentum > 0.0 {
                // buf.mul_(μ).addcdiv_(g, avg) (not fused) ; p.add_(buf, alpha=−lr)
                let buf = ((&self.momentum_buffer[i] * momentum)? + (&g / &avg)?)?;
                let p = fma_s(&buf, -lr, &p)?;
                self.momentum_buffer[i] = buf;
                p
            } else {
                (p - ((g * lr)? / avg)?)?
            };
            var.set(&p.to_dtype(var.dtype())?)?;
            self.square_avg[i] = sq;
        }
        Ok(())
    }

    pub(super) fn buffers(&self) -> Vec<(&'static str, &[Tensor])> {
        let mut out = vec![("square_avg", self.square_avg.as_slice())];
        if self.cfg.centered {
            out.push(("grad_avg", &self.grad_avg));
        }
        if self.cfg.momentum > 0.0 {
            out.push(("momentum_buffer", &self.momentum_buffer));
        }
        out
    }

    pub(super) fn buffers_mut(&mut self) -> Vec<&mut Vec<Tensor>> {
        let mut out = vec![&mut self.square_avg];
        if self.cfg.centered {
            out.push(&mut self.grad_avg);
        }
        if self.cfg.momentum > 0.0 {
            out.push(&mut self.momentum_buffer);
        }
        out
    }
}

//! Gradients of one optimizer step: accumulation across micro-batches, the gradient-integrity
//! guard, the global norm and clipping.

use crate::{Error, Result};
use candle_core::{backprop::GradStore, DType, Tensor};
use lantern_models::Params;

/// One gradient per parameter, in [`Params`] order, in f32.
pub struct StepGrads {
    pub grads: Vec<Option<Tensor>>,
}

impl StepGrads {
    pub fn new(n: usize) -> Self {
        Self {
            grads: vec![None; n],
        }
    }

    /// Adds the variables' gradients of one backward pass. Only variables are taken: the store
    /// also holds gradients of activations and inputs.
    pub fn accumulate(&mut self, params: &Params, store: &GradStore) -> Result<()> {
        for (slot, var) in self.grads.iter_mut().zip(params.vars()) {
            if let Some(g) = store.get(var.as_tensor()) {
                // candle records ops while computing gradients: without `detach` each gradient
                // would keep the whole forward graph alive, and the optimizer moments built from
                // it would chain every step's graph together.
                let g = g.detach().to_dtype(DType::F32)?;
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// Fails, naming the first parameter whose gradient is missing, all zero or non-finite.
    /// Run after the first backward of a run: a parameter cut off from the loss, or an op
    /// that silently drops gradients (candle's fused norms), shows up here and not weeks later.
    /// With `allow_nonfinite` (fp16 with loss scaling), inf/NaN are left to the scaler, which
    /// skips such steps.
    pub fn check_integrity(&self, params: &Params, allow_nonfinite: bool) -> Result<()> {
        for (name, g) in params.names().iter().zip(&self.grads) {
            let problem = match g {
                None => Some("has no gradient".to_string()),
                Some(g) => {
                    let abs_sum = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                    if !abs_sum.is_finite() && !allow_nonfinite {
                        Some("has a non-finite gradient".to_string())
                    } else if abs_sum == 0.0 {
                        Some("has an all-zero gradient".to_string())
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                return Err(Error::GradIntegrity {
                    name: name.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor` (unscaling after a scaled loss).
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.grads.iter_mut().flatten() {
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// Test hook: turns the first gradient into NaNs, as an overflow would.
    pub fn poison_first(&mut self) -> Result<()> {
        if let Some(g) = self.grads.iter_mut().flatten().next() {
            *g = (g.zeros_like()? + f64::NAN)?;
        }
        Ok(())
    }

    /// Global L2 norm over all gradients (f64 accumulation of per-tensor f32 sums of squares).
    pub fn global_norm(&self) -> Result<f64> {
        let mut total = 0f64;
        for g in self.grads.iter().flatten() {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(total.sqrt())
    }

    /// Scales gradients so their global norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`: coefficient max_norm / (norm + 1e-6), only when below 1).
    pub fn clip(&mut self, norm: f64, max_norm: f64) -> Result<()> {
        if max_norm <= 0.0 {
            return Ok(());
        }
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in self.grads.iter_mut().flatten() {
                *g = (&*g * coef)?;
            }
        }
        Ok(())
    }
}

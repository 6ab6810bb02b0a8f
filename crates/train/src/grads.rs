//! Gradients of one optimizer step: accumulation across micro-batches, the gradient-integrity
//! guard, the global norm and clipping.
//!
//! Unscaling, the norm and clipping go through lantern-kernels' multi-tensor functions: on a
//! GPU one launch reads every gradient for the norm and one launch scales all of them in place;
//! on the CPU they compute exactly what the per-tensor candle ops computed before.

use crate::{Error, Result};
use candle_core::{backprop::GradStore, DType, Tensor};
use lantern_models::Params;

/// The backward pass of `loss` times fp16's loss `scale` (1: none, and no extra op).
pub fn scaled_backward(loss: &Tensor, scale: f64) -> Result<GradStore> {
    Ok(match scale != 1.0 {
        true => (loss * scale)?.backward()?,
        false => loss.backward()?,
    })
}

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

    /// A zero gradient for every variable of `params`: the share of a data-parallel rank that
    /// had no examples in the step, so that its all-reduce pairs up with the other ranks'.
    pub fn zeros(params: &Params) -> Result<Self> {
        let grads = params
            .vars()
            .iter()
            .map(|v| Ok(Some(v.as_tensor().zeros_like()?.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        Ok(Self { grads })
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
        self.check_integrity_except(params, allow_nonfinite, |_| false)
    }

    /// [`StepGrads::check_integrity`] of the parameters `skip` does not name: LoRA's A
    /// matrices, whose first gradient is zero by construction (B starts at zero).
    pub fn check_integrity_except(
        &self,
        params: &Params,
        allow_nonfinite: bool,
        skip: impl Fn(&str) -> bool,
    ) -> Result<()> {
        self.check_integrity_where(params, allow_nonfinite, skip, |_| false)
    }

    /// [`StepGrads::check_integrity_except`], where the parameters `zero_ok` names may have an
    /// all-zero gradient (they must still have one, finite): a reward model's biases that add
    /// the same amount to every reward, which its loss, a function of reward differences, does
    /// not see.
    pub fn check_integrity_where(
        &self,
        params: &Params,
        allow_nonfinite: bool,
        skip: impl Fn(&str) -> bool,
        zero_ok: impl Fn(&str) -> bool,
    ) -> Result<()> {
        for (name, g) in params.names().iter().zip(&self.grads) {
            if skip(name) {
                continue;
            }
            let problem = match g {
                None => Some("has no gradient".to_string()),
                Some(g) => {
                    let abs_sum = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                    if !abs_sum.is_finite() && !allow_nonfinite {
                        Some("has a non-finite gradient".to_string())
                    } else if abs_sum == 0.0 && !zero_ok(name) {
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

    /// The gradients present, in parameter order.
    fn present(&self) -> Vec<&Tensor> {
        self.grads.iter().flatten().collect()
    }

    /// Multiplies every gradient by `factor` (unscaling after a scaled loss), in place. Each
    /// gradient is its own allocation (candle's backward and `accumulate` create fresh ones).
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        Ok(lantern_kernels::scale_grads(&self.present(), factor)?)
    }

    /// Test hook: turns the first gradient into NaNs, as an overflow would.
    pub fn poison_first(&mut self) -> Result<()> {
        if let Some(g) = self.grads.iter_mut().flatten().next() {
            *g = (g.zeros_like()? + f64::NAN)?;
        }
        Ok(())
    }

    /// Global L2 norm over all gradients (f64 accumulation of per-tensor f32 sums of squares).
    /// Not finite when some gradient holds inf/NaN: the fp16 scaler's overflow check.
    pub fn global_norm(&self) -> Result<f64> {
        Ok(lantern_kernels::grad_norm(&self.present(), 1.0)?)
    }

    /// Scales gradients so their global norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`: coefficient max_norm / (norm + 1e-6), only when below 1), in place.
    pub fn clip(&mut self, norm: f64, max_norm: f64) -> Result<()> {
        let coef = lantern_kernels::grad_norm::clip_coef(norm, max_norm);
        if coef < 1.0 {
            lantern_kernels::scale_grads(&self.present(), coef)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use lantern_kernels::Rng;

    fn grads(seed: u64) -> StepGrads {
        let mut rng = Rng::new(seed);
        let mut t = |shape: &[usize]| {
            let n = shape.iter().product();
            Some(Tensor::from_vec(rng.normal_vec(n, 3.0), shape, &Device::Cpu).unwrap())
        };
        StepGrads {
            grads: vec![t(&[4, 5]), None, t(&[7]), t(&[2, 3, 3])],
        }
    }

    fn bits(g: &StepGrads) -> Vec<u32> {
        g.grads
            .iter()
            .flatten()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }

    /// The guard names a missing, all-zero or non-finite gradient; `zero_ok` lets an all-zero
    /// one through and nothing else.
    #[test]
    fn the_guard_tolerates_zeros_only_where_asked() {
        let dev = Device::Cpu;
        let mut params = Params::new();
        for name in ["w", "head.bias"] {
            params
                .insert(name, Tensor::zeros(3, DType::F32, &dev).unwrap())
                .unwrap();
        }
        let ones = Tensor::ones(3, DType::F32, &dev).unwrap();
        let zeros = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let g = |w: Option<&Tensor>, b: Option<&Tensor>| StepGrads {
            grads: vec![w.cloned(), b.cloned()],
        };
        let bias = |n: &str| n.ends_with(".bias");
        let zero = g(Some(&ones), Some(&zeros));
        let e = zero
            .check_integrity(&params, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("head.bias") && e.contains("all-zero"), "{e}");
        zero.check_integrity_where(&params, false, |_| false, bias)
            .unwrap();
        let missing = g(Some(&ones), None);
        let e = missing
            .check_integrity_where(&params, false, |_| false, bias)
            .unwrap_err()
            .to_string();
        assert!(e.contains("head.bias") && e.contains("no gradient"), "{e}");
        let nan = g(Some(&ones), Some(&(zeros.clone() + f64::NAN).unwrap()));
        assert!(nan
            .check_integrity_where(&params, false, |_| false, bias)
            .is_err());
        let e = g(Some(&zeros), Some(&ones))
            .check_integrity_where(&params, false, |_| false, bias)
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter w has an all-zero gradient"), "{e}");
    }

    /// Unscale, norm and clip give bit for bit what the per-tensor candle ops gave.
    #[test]
    fn fused_path_equals_the_per_tensor_ops() {
        let mut g = grads(5);
        let want: Vec<Tensor> = g
            .grads
            .iter()
            .flatten()
            .map(|t| (t * 0.25).unwrap())
            .collect();
        g.scale(0.25).unwrap();
        let want_norm = want
            .iter()
            .map(|t| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum::<f64>()
            .sqrt();
        let norm = g.global_norm().unwrap();
        assert_eq!(norm.to_bits(), want_norm.to_bits());
        let coef = 1.0 / (norm + 1e-6);
        let want: Vec<u32> = want
            .iter()
            .flat_map(|t| {
                (t * coef)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .map(f32::to_bits)
            .collect();
        g.clip(norm, 1.0).unwrap();
        assert_eq!(bits(&g), want);
        // Under the threshold, or with clipping off, nothing changes.
        let before = bits(&g);
        g.clip(g.global_norm().unwrap(), 10.0).unwrap();
        g.clip(1e9, 0.0).unwrap();
        assert_eq!(bits(&g), before);
    }
}

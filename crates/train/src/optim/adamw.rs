//! AdamW (Loshchilov & Hutter 2019) with the update of `torch.optim.AdamW` (foreach=False,
//! amsgrad=False), per parameter with its own step count t:
//!   p ← p · (1 − lr·wd)                      (decoupled decay, decay group only)
//!   m ← lerp(m, g, 1 − β1) ;  v ← β2·v + (1 − β2)·g·g
//!   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)

use super::{decay_flags, div_s, filled, fma, lerp, StepCounts};
use crate::Result;
use candle_core::{DType, Tensor};
use lantern_models::Params;

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
    pub(super) counts: StepCounts,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    decay: Vec<bool>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, params: &Params) -> Result<Self> {
        Ok(Self {
            cfg,
            counts: StepCounts::new(params.len()),
            exp_avg: filled(params, 0.0)?,
            exp_avg_sq: filled(params, 0.0)?,
            decay: decay_flags(params),
        })
    }

    pub fn step(&mut self, params: &Params, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step_with_work(params, grads, lr, None).map(|_| ())
    }

    /// [`AdamW::step`] that, on CUDA and the CPU, also writes the low-precision working copy `work` (the
    /// same parameters in bf16/fp16) in the fused kernel's single pass. Returns, per
    /// parameter, whether its working copy was written; the caller refreshes the others.
    pub fn step_with_work(
        &mut self,
        params: &Params,
        grads: &[Option<Tensor>],
        lr: f64,
        work: Option<&Params>,
    ) -> Result<Vec<bool>> {
        let mut written = vec![false; params.len()];
        self.counts.total += 1;
        for (i, var) in params.vars().iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            self.counts.per_param[i] += 1;
            let g = g.detach().to_dtype(DType::F32)?;
            let fused_device = var.device().is_cuda() || var.device().is_cpu();
            if fused_device && var.dtype() == DType::F32 && var.is_contiguous() {
                // One fused kernel, in place, with the same roundings as `update` (bit for bit:
                // `the_fused_kernel_matches_the_composite_update_bit_for_bit`): one pass over
                // the four buffers instead of ten tensor ops and their temporaries.
                let w = work
                    .map(|w| w.vars()[i].as_tensor())
                    .filter(|w| matches!(w.dtype(), DType::BF16 | DType::F16) && w.is_contiguous());
                lantern_kernels::adamw_update(
                    var.as_tensor(),
                    &g,
                    &self.exp_avg[i],
                    &self.exp_avg_sq[i],
                    w,
                    &self.hyper(lr, self.counts.per_param[i], self.decay[i]),
                )?;
                written[i] = w.is_some();
                continue;
            }
            let p = var.as_tensor().detach().to_dtype(DType::F32)?;
            let (p, m, v) = update(
                &self.cfg,
                UpdateInputs {
                    p,
                    g,
                    m: &self.exp_avg[i],
                    v: &self.exp_avg_sq[i],
                    lr,
                    step: self.counts.per_param[i],
                    decay: self.decay[i],
                },
            )?;
            var.set(&p.to_dtype(var.dtype())?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        Ok(written)
    }

    /// The fused kernel's hyper-parameters for one parameter (weight decay 0 outside the
    /// decay group).
    fn hyper(&self, lr: f64, step: u64, decay: bool) -> lantern_kernels::AdamWHyper {
        lantern_kernels::AdamWHyper {
            lr,
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.eps,
            weight_decay: if decay { self.cfg.weight_decay } else { 0.0 },
            step,
        }
    }

    pub(super) fn buffers(&self) -> Vec<(&'static str, &[Tensor])> {
        vec![("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
    }

    pub(super) fn buffers_mut(&mut self) -> Vec<&mut Vec<Tensor>> {
        vec![&mut self.exp_avg, &mut self.exp_avg_sq]
    }
}

/// One parameter's inputs: fp32 value and gradient, its moments, and its own step count
/// (already incremented for this update).
struct UpdateInputs<'a> {
    p: Tensor,
    g: Tensor,
    m: &'a Tensor,
    v: &'a Tensor,
    lr: f64,
    step: u64,
    decay: bool,
}

/// The whole update of one parameter, kept in one place so that a fused kernel can replace it.
/// Returns the new (p, m, v), all fp32 and shaped like the parameter. The operation order
/// follows torch's `_single_tensor_adam` so that fp32 results agree to rounding.
fn update(cfg: &AdamWConfig, x: UpdateInputs<'_>) -> Result<(Tensor, Tensor, Tensor)> {
    let AdamWConfig {
        beta1: b1,
        beta2: b2,
        eps,
        weight_decay: wd,
    } = *cfg;
    let UpdateInputs {
        mut p,
        g,
        m,
        v,
        lr,
        step,
        decay,
    } = x;
    if decay && wd != 0.0 {
        p = (p * (1.0 - lr * wd))?;
    }
    // exp_avg.lerp_(g, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(g, g, value=1 − β2)
    let m = lerp(m, &g, 1.0 - b1)?;
    let v = fma(&(&g * (1.0 - b2))?, &g, &(v * b2)?)?;
    let bc1 = 1.0 - b1.powf(step as f64);
    let bc2_sqrt = (1.0 - b2.powf(step as f64)).sqrt();
    // denom = (√v / √bc2) + ε ; p.addcdiv_(m, denom, value=−lr/bc1), which is not fused
    let denom = (div_s(&v.sqrt()?, bc2_sqrt)? + eps)?;
    let p = (p - ((&m * (lr / bc1))? / &denom)?)?;
    Ok((p, m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use lantern_kernels::Rng;

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn randn(rng: &mut Rng, n: usize, std: f32) -> Tensor {
        Tensor::from_vec(rng.normal_vec(n, std as f64), n, &Device::Cpu).unwrap()
    }

    /// The fused kernel that runs on CUDA (here its CPU reference) must give the same bits as
    /// the composite update that matches torch: the GPU then inherits the torch parity.
    #[test]
    fn the_fused_kernel_matches_the_composite_update_bit_for_bit() {
        let mut rng = Rng::new(7);
        for (cfg, decay) in [
            (AdamWConfig::default(), true),
            (AdamWConfig::default(), false),
            // β1 < 0.5 takes torch's other lerp branch.
            (
                AdamWConfig {
                    beta1: 0.3,
                    beta2: 0.999,
                    eps: 1e-6,
                    weight_decay: 0.01,
                },
                true,
            ),
        ] {
            let n = 1031;
            let p0 = randn(&mut rng, n, 1.0);
            let (fp, fm, fv) = (
                p0.copy().unwrap(),
                p0.zeros_like().unwrap(),
                p0.zeros_like().unwrap(),
            );
            let (mut cp, mut cm, mut cv) = (p0, fm.copy().unwrap(), fv.copy().unwrap());
            let opt = AdamW {
                cfg,
                counts: StepCounts::new(1),
                exp_avg: vec![],
                exp_avg_sq: vec![],
                decay: vec![decay],
            };
            for step in 1..=12u64 {
                let lr = 1e-3 * step as f64;
                let g = randn(&mut rng, n, 0.1);
                lantern_kernels::adamw_update(&fp, &g, &fm, &fv, None, &opt.hyper(lr, step, decay))
                    .unwrap();
                (cp, cm, cv) = update(
                    &cfg,
                    UpdateInputs {
                        p: cp,
                        g,
                        m: &cm,
                        v: &cv,
                        lr,
                        step,
                        decay,
                    },
                )
                .unwrap();
                for (a, b, what) in [(&fp, &cp, "p"), (&fm, &cm, "m"), (&fv, &cv, "v")] {
                    let first = bits(a).iter().zip(bits(b)).position(|(x, y)| *x != y);
                    assert_eq!(
                        first, None,
                        "{what} at step {step} ({cfg:?}, decay {decay})"
                    );
                }
            }
        }
    }
}

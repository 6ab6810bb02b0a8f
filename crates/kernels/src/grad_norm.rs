//! The global gradient norm over many tensors, with unscaling (fp16 loss scaling), the
//! inf/NaN check and clipping, as `torch.nn.utils.clip_grad_norm_` after `GradScaler.unscale_`:
//!   norm = sqrt(sum over tensors of sum((u·g)²)),  found_inf = norm is not finite,
//!   coef = min(1, max_norm / (norm + 1e-6)),      g ← g · u · coef   (in place)
//! On the CPU each tensor's sum of squares is candle's f32 `sum_all`, added over tensors in
//! f64 (the trainer's numbers so far). On CUDA one launch reads every tensor once for the norm
//! (`kernels/grad_norm.cu`) and one launch scales all of them.

use candle_core::{CpuStorage, DType, Error, InplaceOp1, Layout, Result, Tensor};

/// The outcome of [`clip_grad_norm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipOutcome {
    /// Global norm of the unscaled gradients, before clipping.
    pub norm: f64,
    /// The norm is inf or NaN: some gradient overflowed. Gradients were left untouched.
    pub found_inf: bool,
    /// The factor gradients were multiplied by after unscaling (1 when not clipped).
    pub coef: f64,
}

fn check(grads: &[&Tensor], op: &str) -> Result<()> {
    let Some(first) = grads.first() else {
        return Ok(());
    };
    for (i, g) in grads.iter().enumerate() {
        if g.dtype() != DType::F32 || !g.is_contiguous() {
            return Err(Error::msg(format!(
                "{op}: gradient {i} must be contiguous f32, got {:?} (contiguous: {})",
                g.dtype(),
                g.is_contiguous()
            )));
        }
        if !g.device().same_device(first.device()) {
            return Err(Error::msg(format!(
                "{op}: gradient {i} is on {:?}, gradient 0 on {:?}",
                g.device(),
                first.device()
            )));
        }
    }
    Ok(())
}

/// Global L2 norm of `unscale · g` over all `grads` (f32, contiguous, one device).
pub fn grad_norm(grads: &[&Tensor], unscale: f64) -> Result<f64> {
    check(grads, "grad_norm")?;
    #[cfg(feature = "cuda")]
    if grads.first().is_some_and(|g| g.device().is_cuda()) {
        return crate::cuda::grad_norm::norm(grads, unscale);
    }
    let mut total = 0f64;
    for g in grads {
        let sq = if unscale == 1.0 {
            g.sqr()?
        } else {
            (*g * unscale)?.sqr()?
        };
        total += sq.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Multiplies every gradient by `factor`, in place. The gradients must be distinct
/// allocations (a shared one would be scaled twice): that is checked.
pub fn scale_grads(grads: &[&Tensor], factor: f64) -> Result<()> {
    check(grads, "scale_grads")?;
    if factor == 1.0 || grads.is_empty() {
        return Ok(());
    }
    #[cfg(feature = "cuda")]
    if grads[0].device().is_cuda() {
        return crate::cuda::grad_norm::scale(grads, factor);
    }
    check_distinct_cpu(grads)?;
    for g in grads {
        g.inplace_op1(&Scale(factor as f32))?;
    }
    Ok(())
}

/// Unscales by `unscale`, measures the global norm, and clips to `max_norm` (0 = no clipping)
/// in one multiply per element. Non-finite norm: nothing is changed and `found_inf` is set,
/// so the caller can skip the step.
pub fn clip_grad_norm(grads: &[&Tensor], max_norm: f64, unscale: f64) -> Result<ClipOutcome> {
    let norm = grad_norm(grads, unscale)?;
    if !norm.is_finite() {
        return Ok(ClipOutcome {
            norm,
            found_inf: true,
            coef: 1.0,
        });
    }
    let coef = clip_coef(norm, max_norm);
    scale_grads(grads, unscale * coef)?;
    Ok(ClipOutcome {
        norm,
        found_inf: false,
        coef,
    })
}

/// torch's `clip_grad_norm_` coefficient: `max_norm / (norm + 1e-6)` when that is below 1.
pub fn clip_coef(norm: f64, max_norm: f64) -> f64 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Fails if two CPU gradients share memory.
fn check_distinct_cpu(grads: &[&Tensor]) -> Result<()> {
    let mut ranges = Vec::with_capacity(grads.len());
    for g in grads {
        let (s, l) = g.storage_and_layout();
        if let candle_core::Storage::Cpu(CpuStorage::F32(v)) = &*s {
            let base = v.as_ptr() as usize;
            ranges.push((
                base + 4 * l.start_offset(),
                base + 4 * (l.start_offset() + g.elem_count()),
            ));
        }
    }
    overlapping(&mut ranges)
}

/// Error if any two of the half-open address ranges overlap.
pub(crate) fn overlapping(ranges: &mut [(usize, usize)]) -> Result<()> {
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 && w[1].0 < w[1].1 {
            return Err(Error::msg(
                "in-place update: two of the tensors share memory".to_string(),
            ));
        }
    }
    Ok(())
}

/// g ← g · factor as candle's affine computes it (`x * mul + 0`).
struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "lantern-scale-grads"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| Error::msg("lantern-scale-grads: gradient must be contiguous"))?;
        match s {
            CpuStorage::F32(v) => {
                for x in &mut v[a..b] {
                    *x = *x * self.0 + 0.0;
                }
                Ok(())
            }
            _ => Err(Error::msg("lantern-scale-grads: gradient must be f32")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::randn;
    use crate::Rng;
    use candle_core::Device;

    fn grads(rng: &mut Rng) -> Vec<Tensor> {
        [&[5][..], &[3, 7], &[2, 2, 33], &[1]]
            .iter()
            .map(|s| randn(rng, s, 2.0, DType::F32))
            .collect()
    }

    fn f64s(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn norm_matches_f64_and_the_per_tensor_composite() {
        let mut rng = Rng::new(71);
        let gs = grads(&mut rng);
        let refs: Vec<&Tensor> = gs.iter().collect();
        for unscale in [1.0, 1.0 / 1024.0] {
            let n = grad_norm(&refs, unscale).unwrap();
            let exact: f64 = gs
                .iter()
                .flat_map(f64s)
                .map(|x| (x * unscale).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((n - exact).abs() <= 1e-6 * exact, "{n} vs {exact}");
            // The trainer's previous formula, op for op: bit-identical.
            let composite: f64 = gs
                .iter()
                .map(|g| {
                    (g * unscale)
                        .unwrap()
                        .sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap() as f64
                })
                .sum::<f64>()
                .sqrt();
            if unscale == 1.0 {
                assert_eq!(n.to_bits(), composite.to_bits());
            }
        }
    }

    #[test]
    fn clipping_scales_to_max_norm_and_keeps_direction() {
        let mut rng = Rng::new(72);
        let gs = grads(&mut rng);
        let before: Vec<Vec<f64>> = gs.iter().map(f64s).collect();
        let refs: Vec<&Tensor> = gs.iter().collect();
        let out = clip_grad_norm(&refs, 1.0, 0.5).unwrap();
        assert!(!out.found_inf && out.coef < 1.0);
        let after = grad_norm(&refs, 1.0).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "clipped norm {after}");
        for (g, b) in gs.iter().zip(&before) {
            for (x, y) in f64s(g).iter().zip(b) {
                let want = y * 0.5 * out.coef;
                assert!(
                    (x - want).abs() <= 1e-6 * want.abs().max(1e-30),
                    "{x} vs {want}"
                );
            }
        }
        // Below the threshold nothing but the unscale happens.
        let gs = grads(&mut rng);
        let refs: Vec<&Tensor> = gs.iter().collect();
        let b0 = f64s(&gs[1]);
        let out = clip_grad_norm(&refs, 1e9, 1.0).unwrap();
        assert_eq!(out.coef, 1.0);
        assert_eq!(f64s(&gs[1]), b0);
    }

    /// The norm as a function of the gradients has derivative g / norm: central finite
    /// differences of `grad_norm` in f64 inputs (converted to f32) agree with it.
    #[test]
    fn finite_differences_of_the_norm() {
        let mut rng = Rng::new(73);
        let gs = grads(&mut rng);
        let refs: Vec<&Tensor> = gs.iter().collect();
        let n = grad_norm(&refs, 1.0).unwrap();
        let h = 1e-2;
        for (ti, g) in gs.iter().enumerate() {
            let v = f64s(g);
            for k in [0, v.len() / 2, v.len() - 1] {
                let at = |d: f64| {
                    let mut w = v.clone();
                    w[k] += d;
                    let t = Tensor::from_vec(w, g.shape(), &Device::Cpu)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap();
                    let mut all: Vec<&Tensor> = refs.clone();
                    all[ti] = &t;
                    grad_norm(&all, 1.0).unwrap()
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                let analytic = v[k] / n;
                assert!(
                    (numeric - analytic).abs() < 1e-4,
                    "tensor {ti} elem {k}: {numeric} vs {analytic}"
                );
            }
        }
    }

    #[test]
    fn overflow_is_reported_and_nothing_changes() {
        let mut rng = Rng::new(74);
        let mut gs = grads(&mut rng);
        gs[2] = (gs[2].zeros_like().unwrap() + f64::INFINITY).unwrap();
        let b = f64s(&gs[0]);
        let refs: Vec<&Tensor> = gs.iter().collect();
        let out = clip_grad_norm(&refs, 1.0, 1.0 / 65536.0).unwrap();
        assert!(out.found_inf);
        assert_eq!(f64s(&gs[0]), b);
        gs[2] = (gs[2].zeros_like().unwrap() + f64::NAN).unwrap();
        let refs: Vec<&Tensor> = gs.iter().collect();
        assert!(clip_grad_norm(&refs, 1.0, 1.0).unwrap().found_inf);
    }

    #[test]
    fn shared_or_bad_gradients_are_errors() {
        let g = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
        let e = scale_grads(&[&g, &g.clone()], 0.5).unwrap_err().to_string();
        assert!(e.contains("share memory"), "{e}");
        let b = Tensor::ones(4, DType::BF16, &Device::Cpu).unwrap();
        assert!(grad_norm(&[&g, &b], 1.0)
            .unwrap_err()
            .to_string()
            .contains("f32"));
    }
}

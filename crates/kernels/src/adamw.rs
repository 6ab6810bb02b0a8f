//! Fused AdamW step over fp32 master weights and moments, in place, optionally writing the
//! bf16/fp16 working copy of the weights in the same pass.
//!
//! The update is `torch.optim.AdamW`'s (foreach=False, amsgrad=False) with the trainer's
//! operation order and roundings (`lantern_train::optim::adamw`, which matches torch to 1e-6
//! relative), so this CPU path reproduces it bit for bit (a test there checks it):
//!   p ← p · (1 − lr·wd)                      (skipped when wd = 0: the no-decay group)
//!   m ← lerp(m, g, 1 − β1)                   (torch's two-branch lerp, fused multiply-add)
//!   v ← fma((1 − β2)·g, g, β2·v)             (torch's addcmul: one rounding)
//!   p ← p − (m·(lr / (1 − β1ᵗ))) / (√v / √(1 − β2ᵗ) + ε)
//!   work ← p rounded to the working dtype
//! Scalar multiplies are candle's `affine` (`x * mul + 0` with `mul` rounded to f32), the
//! division by √(1 − β2ᵗ) a true division. On the CPU this runs as in-place passes (m, v,
//! p, work), each split over the thread pool and compiled with hardware FMA where the CPU has
//! it; on CUDA as one kernel (`kernels/adamw.cu`) that reads g, m, v, p once
//! and writes m, v, p and work once.

use crate::cpu;
use candle_core::{
    backend::BackendStorage, CpuStorage, DType, Error, InplaceOp2, InplaceOp3, Layout, Result,
    Tensor,
};

/// Hyper-parameters of one AdamW step. `step` is the 1-based count of updates including this
/// one (bias correction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 0 for parameters outside the decay group.
    pub weight_decay: f64,
    pub step: u64,
}

/// The scalars of one step, each rounded to f32 exactly as the trainer's ops round them: the
/// `AdamWArgs` the CUDA kernel takes (public for the kernel emulator's tests).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Scalars {
    pub decay_mul: f32,
    /// lerp weight w = 1 − β1, and −(1 − w) for torch's upper branch (|w| ≥ 0.5).
    pub lerp_w: f32,
    pub lerp_neg_rest: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
    pub step_size: f32,
    pub decay: i32,
    pub lerp_hi: i32,
}

impl AdamWHyper {
    #[doc(hidden)]
    pub fn scalars(&self) -> Result<Scalars> {
        if self.step == 0 || self.step > i32::MAX as u64 {
            return Err(Error::msg(format!(
                "adamw_update: step must be in 1..=2^31-1, got {}",
                self.step
            )));
        }
        // powf, as the trainer's optimizer computes the bias corrections.
        let t = self.step as f64;
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        let w = (1.0 - self.beta1) as f32;
        Ok(Scalars {
            decay_mul: (1.0 - self.lr * self.weight_decay) as f32,
            lerp_w: w,
            lerp_neg_rest: -(1.0 - w),
            b2: self.beta2 as f32,
            one_minus_b2: (1.0 - self.beta2) as f32,
            bc2_sqrt: bc2_sqrt as f32,
            eps: self.eps as f32,
            step_size: (self.lr / bc1) as f32,
            decay: (self.weight_decay != 0.0) as i32,
            lerp_hi: (w.abs() >= 0.5) as i32,
        })
    }
}

/// The three element updates; the CUDA kernel does the same with `__fmaf_rn` and correctly
/// rounded division and square root.
#[inline(always)]
fn new_m(m: f32, g: f32, s: &Scalars) -> f32 {
    let diff = g - m;
    if s.lerp_hi != 0 {
        diff.mul_add(s.lerp_neg_rest, g)
    } else {
        diff.mul_add(s.lerp_w, m)
    }
}

#[inline(always)]
fn new_v(v: f32, g: f32, s: &Scalars) -> f32 {
    affine(g, s.one_minus_b2).mul_add(g, affine(v, s.b2))
}

/// From the new m and v.
#[inline(always)]
fn new_p(p: f32, m: f32, v: f32, s: &Scalars) -> f32 {
    let q = if s.decay != 0 {
        affine(p, s.decay_mul)
    } else {
        p
    };
    q - affine(m, s.step_size) / (v.sqrt() / s.bc2_sqrt + s.eps)
}

/// candle's `affine(mul, 0)` on f32: `x * mul + 0` (the `+ 0` turns -0 into +0, as there).
#[inline(always)]
pub(crate) fn affine(x: f32, mul: f32) -> f32 {
    x * mul + 0.0
}

/// Updates `master`, `m` and `v` (f32, same shape, contiguous, distinct) in place from `grad`
/// (converted to f32 if needed) and, when given, writes `master` rounded to `work`'s dtype
/// (bf16 or f16) into `work`. All on one device; CUDA tensors run the fused kernel.
pub fn adamw_update(
    master: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    work: Option<&Tensor>,
    hyper: &AdamWHyper,
) -> Result<()> {
    let s = hyper.scalars()?;
    let shape = master.shape();
    for (what, t) in [("grad", grad), ("m", m), ("v", v)]
        .into_iter()
        .chain(work.map(|w| ("work", w)))
    {
        if t.shape() != shape {
            return Err(Error::msg(format!(
                "adamw_update: {what} has shape {:?}, master has {shape:?}",
                t.shape()
            )));
        }
        if !t.device().same_device(master.device()) {
            return Err(Error::msg(format!(
                "adamw_update: {what} is on {:?}, master on {:?}",
                t.device(),
                master.device()
            )));
        }
    }
    for (what, t) in [("master", master), ("m", m), ("v", v)] {
        if t.dtype() != DType::F32 || !t.is_contiguous() {
            return Err(Error::msg(format!(
                "adamw_update: {what} must be contiguous f32, got {:?} (contiguous: {})",
                t.dtype(),
                t.is_contiguous()
            )));
        }
    }
    if let Some(w) = work {
        if !matches!(w.dtype(), DType::BF16 | DType::F16) || !w.is_contiguous() {
            return Err(Error::msg(format!(
                "adamw_update: the working copy must be contiguous bf16 or f16, got {:?}",
                w.dtype()
            )));
        }
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    #[cfg(feature = "cuda")]
    if master.device().is_cuda() {
        return crate::cuda::adamw::update(master, &grad, m, v, work, &s);
    }
    if !master.device().is_cpu() {
        return Err(Error::msg(format!(
            "adamw_update: no implementation for {:?}",
            master.device()
        )));
    }
    m.inplace_op2(&grad, &Moment { s, second: false })?;
    v.inplace_op2(&grad, &Moment { s, second: true })?;
    master.inplace_op3(m, v, &Param(s))?;
    if let Some(w) = work {
        w.inplace_op2(master, &CastFrom)?;
    }
    Ok(())
}

/// Elements per parallel piece of the CPU passes.
const PIECE: usize = 1 << 14;

/// `f(offset, piece)` over `out` cut into pieces of [`PIECE`] elements, in parallel. Every
/// element is updated on its own, so the result does not depend on the split.
#[inline(always)]
fn in_pieces(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Send + Sync) {
    cpu::for_row_blocks(out, PIECE, PIECE, |first, piece| f(first * PIECE, piece));
}

cpu::simd_kernel! {
/// The first moment m (or with `second` the second, v) from the gradient, in place, in
/// pieces. Compiled for AVX2 and FMA where the CPU has them (the same bits, at vector speed:
/// without FMA every `mul_add` is a library call).
fn moment_pass(m: &mut [f32], g: &[f32], s: &Scalars, second: bool) {
    if second {
        in_pieces(m, |off, m| {
            for (v, &g) in m.iter_mut().zip(&g[off..]) {
                *v = new_v(*v, g, s);
            }
        });
    } else {
        in_pieces(m, |off, m| {
            for (m, &g) in m.iter_mut().zip(&g[off..]) {
                *m = new_m(*m, g, s);
            }
        });
    }
}
}

cpu::simd_kernel! {
/// p from the new m and v, in place, in pieces (compiled as [`moment_pass`]).
fn param_pass(p: &mut [f32], m: &[f32], v: &[f32], s: &Scalars) {
    in_pieces(p, |off, p| {
        for ((p, &m), &v) in p.iter_mut().zip(&m[off..]).zip(&v[off..]) {
            *p = new_p(*p, m, v, s);
        }
    });
}
}

/// The contiguous f32 slice of a CPU storage.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    crate::cpu::slice::<f32>(s, l, op, "input")
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::msg(format!("{op}: the updated tensor must be contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        other => Err(Error::msg(format!(
            "{op}: expected f32, got {:?}",
            other.dtype()
        ))),
    }
}

/// The first (m) or second (v) moment from the gradient, in place.
struct Moment {
    s: Scalars,
    second: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "lantern-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        s_g: &CpuStorage,
        l_g: &Layout,
    ) -> Result<()> {
        let g = f32_slice(s_g, l_g, self.name())?;
        let m = f32_slice_mut(s, l, self.name())?;
        moment_pass(m, g, &self.s, self.second);
        Ok(())
    }
}

/// p from the new m and v, in place.
struct Param(Scalars);

impl InplaceOp3 for Param {
    fn name(&self) -> &'static str {
        "lantern-adamw-param"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        s_m: &CpuStorage,
        l_m: &Layout,
        s_v: &CpuStorage,
        l_v: &Layout,
    ) -> Result<()> {
        let op = self.name();
        let (m, v) = (f32_slice(s_m, l_m, op)?, f32_slice(s_v, l_v, op)?);
        let p = f32_slice_mut(s, l, op)?;
        param_pass(p, m, v, &self.0);
        Ok(())
    }
}

/// work ← master, rounded to work's dtype (as `Tensor::to_dtype`), in place.
struct CastFrom;

impl InplaceOp2 for CastFrom {
    fn name(&self) -> &'static str {
        "lantern-adamw-cast"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        s_p: &CpuStorage,
        l_p: &Layout,
    ) -> Result<()> {
        let op = self.name();
        let p = f32_slice(s_p, l_p, op)?;
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| Error::msg(format!("{op}: work must be contiguous")))?;
        match s {
            CpuStorage::BF16(w) => w[a..b]
                .iter_mut()
                .zip(p)
                .for_each(|(w, &p)| *w = half::bf16::from_f32(p)),
            CpuStorage::F16(w) => w[a..b]
                .iter_mut()
                .zip(p)
                .for_each(|(w, &p)| *w = half::f16::from_f32(p)),
            other => {
                return Err(Error::msg(format!(
                    "{op}: work must be bf16 or f16, got {:?}",
                    other.dtype()
                )))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::randn;
    use crate::Rng;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    fn hyper(step: u64, wd: f64) -> AdamWHyper {
        AdamWHyper {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: wd,
            step,
        }
    }

    #[test]
    fn the_working_copy_is_the_updated_master_rounded() {
        let mut rng = Rng::new(61);
        for (shape, wd) in [
            (&[7][..], 0.0),
            (&[13, 9][..], 0.1),
            (&[3, 4, 65][..], 0.01),
        ] {
            let p = randn(&mut rng, shape, 1.0, DType::F32);
            let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
            let work = p.to_dtype(DType::BF16).unwrap();
            let work16 = p.to_dtype(DType::F16).unwrap();
            let (rp, rm, rv) = (p.copy().unwrap(), m.copy().unwrap(), v.copy().unwrap());
            for step in 1..=5 {
                // Gradients with zeros and tiny values too (the sign of zero must match).
                let g = (randn(&mut rng, shape, 0.1, DType::F32)
                    * randn(&mut rng, shape, 1.0, DType::F32)
                        .gt(0.0)
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap())
                .unwrap();
                let h = hyper(step, wd);
                adamw_update(&p, &g, &m, &v, Some(&work), &h).unwrap();
                let w16 = work16.clone();
                // The same step on copies, once more with an f16 working copy.
                let (p2, m2, v2) = (rp.copy().unwrap(), rm.copy().unwrap(), rv.copy().unwrap());
                adamw_update(&p2, &g, &m2, &v2, Some(&w16), &h).unwrap();
                // The reference: the same update without a working copy.
                adamw_update(&rp, &g, &rm, &rv, None, &h).unwrap();
                for (a, b, what) in [
                    (&p, &rp, "p"),
                    (&m, &rm, "m"),
                    (&v, &rv, "v"),
                    (&p2, &rp, "p f16 run"),
                ] {
                    assert_eq!(
                        bits(a),
                        bits(b),
                        "{what} differs at step {step}, shape {shape:?}"
                    );
                }
                let want: Vec<u16> = rp
                    .to_dtype(DType::BF16)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::bf16>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                let got: Vec<u16> = work
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::bf16>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                assert_eq!(got, want, "bf16 working copy");
                let want16 = rp
                    .to_dtype(DType::F16)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<half::f16>()
                    .unwrap();
                assert_eq!(
                    w16.flatten_all().unwrap().to_vec1::<half::f16>().unwrap(),
                    want16,
                    "f16 working copy"
                );
            }
        }
    }

    /// The passes compiled for AVX2 and FMA give the bits of the baseline code, whose `mul_add`
    /// is a library call: one rounding either way.
    #[test]
    fn the_avx2_passes_give_the_baseline_bits() {
        let mut rng = Rng::new(63);
        let shape = [3 * PIECE + 5];
        let p = randn(&mut rng, &shape, 1.0, DType::F32);
        let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
        let (bp, bm, bv) = (p.copy().unwrap(), m.copy().unwrap(), v.copy().unwrap());
        for step in 1..=3 {
            let g = randn(&mut rng, &shape, 0.1, DType::F32);
            let h = hyper(step, 0.1);
            adamw_update(&p, &g, &m, &v, None, &h).unwrap();
            crate::cpu::baseline_only(|| adamw_update(&bp, &g, &bm, &bv, None, &h)).unwrap();
            for (a, b, what) in [(&p, &bp, "p"), (&m, &bm, "m"), (&v, &bv, "v")] {
                assert_eq!(bits(a), bits(b), "{what} differs at step {step}");
            }
        }
    }

    /// The update against the textbook formula evaluated in f64 (no derivative to check by
    /// finite differences here: this is the f64 reference instead).
    #[test]
    fn agrees_with_an_f64_evaluation() {
        let mut rng = Rng::new(62);
        let n = 257;
        let p = randn(&mut rng, &[n], 1.0, DType::F32);
        let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
        let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        let (mut p64, mut m64, mut v64) = (to64(&p), vec![0f64; n], vec![0f64; n]);
        for step in 1..=20 {
            let g = randn(&mut rng, &[n], 0.5, DType::F32);
            let h = hyper(step, 0.1);
            adamw_update(&p, &g, &m, &v, None, &h).unwrap();
            let g64 = to64(&g);
            let (bc1, bc2) = (
                1.0 - h.beta1.powi(step as i32),
                1.0 - h.beta2.powi(step as i32),
            );
            for i in 0..n {
                p64[i] *= 1.0 - h.lr * h.weight_decay;
                m64[i] = h.beta1 * m64[i] + (1.0 - h.beta1) * g64[i];
                v64[i] = h.beta2 * v64[i] + (1.0 - h.beta2) * g64[i] * g64[i];
                p64[i] -= h.lr / bc1 * m64[i] / ((v64[i] / bc2).sqrt() + h.eps);
            }
        }
        let got = to64(&p);
        let worst = got
            .iter()
            .zip(&p64)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        // 20 steps of lr 3e-3: the f32 state drifts from f64 by rounding only.
        assert!(worst < 2e-6, "max |f32 - f64| = {worst:e}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let z = |s: &[usize], d| Tensor::zeros(s, d, &Device::Cpu).unwrap();
        let (p, g) = (z(&[4], DType::F32), z(&[4], DType::F32));
        let h = hyper(1, 0.0);
        let e = adamw_update(
            &p,
            &z(&[5], DType::F32),
            &z(&[4], DType::F32),
            &z(&[4], DType::F32),
            None,
            &h,
        );
        assert!(e.unwrap_err().to_string().contains("shape"));
        let e = adamw_update(
            &z(&[4], DType::BF16),
            &g,
            &z(&[4], DType::F32),
            &z(&[4], DType::F32),
            None,
            &h,
        );
        assert!(e.unwrap_err().to_string().contains("f32"));
        let e = adamw_update(
            &p,
            &g,
            &z(&[4], DType::F32),
            &z(&[4], DType::F32),
            Some(&z(&[4], DType::F32)),
            &h,
        );
        assert!(e.unwrap_err().to_string().contains("bf16 or f16"));
        let e = adamw_update(
            &p,
            &g,
            &z(&[4], DType::F32),
            &z(&[4], DType::F32),
            None,
            &hyper(0, 0.0),
        );
        assert!(e.unwrap_err().to_string().contains("step"));
    }
}

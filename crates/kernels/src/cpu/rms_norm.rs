//! RMSNorm over the last dimension (Zhang & Sennrich 2019), Llama's norm:
//! `y = x * r * w` with `r = 1 / sqrt(mean(x^2) + eps)`; no centring and no bias.
//!
//! As for LayerNorm, backward recomputes each row's r from x instead of saving it (a custom op
//! has a single output, and the recomputation is one pass over a row that is in cache anyway).
//! With `xhat = x * r` and `g = dy * w`:
//!   dx = r * (g - xhat * mean(g * xhat))
//!   dw = sum over rows of dy * xhat.
//! (From dr/dx_j = -r^3 x_j / C: the `mean(g)` term of LayerNorm's dx is absent because nothing
//! is subtracted.)

use super::{
    float_dtype, for_row_blocks, row_blocks_with_sums, simd_kernel, slice, sum8, with_float, Real,
};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor, D};

/// Forward: (x (.., C), weight (C)) -> y (.., C).
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm {
    pub eps: f64,
}

/// Backward: (x (.., C), weight (C), dy (.., C)) -> (N + 1, C) holding dx's N rows, then dw.
#[derive(Debug, Clone, Copy)]
pub struct RmsNormBwd {
    pub eps: f64,
}

/// x's row length C, checked against the weight (C) and, when given, dy (x's shape).
fn row_len(op: &str, l_x: &Layout, l_w: &Layout, l_dy: Option<&Layout>) -> Result<usize> {
    let c = l_x.shape().dims().last().copied().unwrap_or(0);
    if c == 0 || l_w.shape().dims() != [c] {
        return Err(Error::msg(format!(
            "{op}: x is {:?}, the weight must be ({c}) and is {:?}",
            l_x.shape(),
            l_w.shape()
        )));
    }
    if let Some(l_dy) = l_dy {
        if l_dy.shape() != l_x.shape() {
            return Err(Error::msg(format!(
                "{op}: dy is {:?}, x is {:?}",
                l_dy.shape(),
                l_x.shape()
            )));
        }
    }
    Ok(c)
}

/// `1 / sqrt(mean(x^2) + eps)` of one row. The CUDA kernel computes the same expression with
/// its own summation order.
#[inline(always)]
fn row_rstd<T: Real>(x: &[T], eps: T) -> T {
    let ms = sum8(x.len(), |i| x[i] * x[i]) / T::from_f64(x.len() as f64);
    T::ONE / (ms + eps).sqrt()
}

simd_kernel! {
fn fwd<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let eps = T::from_f64(eps);
    let mut y = vec![T::ZERO; x.len()];
    for_row_blocks(&mut y, c, c, |row0, out| {
        for (r, yr) in out.chunks_exact_mut(c).enumerate() {
            let xr = &x[(row0 + r) * c..][..c];
            let rstd = row_rstd(xr, eps);
            for j in 0..c {
                yr[j] = xr[j] * rstd * w[j];
            }
        }
    });
    y
}
}

simd_kernel! {
fn bwd<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let n_rows = x.len() / c;
    let eps = T::from_f64(eps);
    let mut out = vec![T::ZERO; x.len() + c];
    let (dx, dw) = out.split_at_mut(x.len());
    // Per block of SUM_BLOCK_ROWS rows a dw partial, added in block order: deterministic.
    let sums = row_blocks_with_sums(n_rows, dx, c, c, x.len(), |rows, dxb, pw| {
        let mut xhat = vec![T::ZERO; c];
        let n = T::from_f64(c as f64);
        for (r, dxr) in rows.zip(dxb.chunks_exact_mut(c)) {
            let (xr, dyr) = (&x[r * c..][..c], &dy[r * c..][..c]);
            let rstd = row_rstd(xr, eps);
            for j in 0..c {
                xhat[j] = xr[j] * rstd;
            }
            let mgx = sum8(c, |j| dyr[j] * w[j] * xhat[j]) / n;
            for j in 0..c {
                dxr[j] = rstd * (dyr[j] * w[j] - xhat[j] * mgx);
                pw[j] += dyr[j] * xhat[j];
            }
        }
    });
    dw.copy_from_slice(&sums);
    out
}
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "lantern-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        row_len(op, l_x, l_w, None)?;
        let y = with_float!(float_dtype(s_x, op)?, T => {
            T::to_cpu_storage_owned(fwd::<T>(
                slice(s_x, l_x, op, "x")?,
                slice(s_w, l_w, op, "weight")?,
                self.eps,
            ))
        });
        Ok((y, l_x.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_w: &CudaStorage,
        l_w: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let c = row_len(self.name(), l_x, l_w, None)?;
        crate::cuda::rms_norm::fwd(self.eps, (s_x, l_x), (s_w, l_w), c)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let c = x.dim(D::Minus1)?;
        let n = x.elem_count() / c;
        let g = x.apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let dx = g.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = g.narrow(0, n, 1)?.reshape(c)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "lantern-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let c = row_len(op, l_x, l_w, Some(l_dy))?;
        let n = l_x.shape().elem_count() / c;
        let g = with_float!(float_dtype(s_x, op)?, T => {
            T::to_cpu_storage_owned(bwd::<T>(
                slice(s_x, l_x, op, "x")?,
                slice(s_w, l_w, op, "weight")?,
                slice(s_dy, l_dy, op, "dy")?,
                self.eps,
            ))
        });
        Ok((g, Shape::from((n + 1, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_w: &CudaStorage,
        l_w: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let c = row_len(self.name(), l_x, l_w, Some(l_dy))?;
        crate::cuda::rms_norm::bwd(self.eps, (s_x, l_x), (s_w, l_w), (s_dy, l_dy), c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Device, Tensor};

    fn inputs(rng: &mut Rng, shape: &[usize], dtype: DType) -> Vec<Tensor> {
        let c = *shape.last().unwrap();
        vec![
            randn(rng, shape, 1.5, dtype),
            // Gains around 1 as after init, and some far from it.
            (randn(rng, &[c], 0.5, dtype) + 1.0).unwrap(),
        ]
    }

    fn fused(v: &[Tensor], eps: f64) -> candle_core::Result<Tensor> {
        ops::rms_norm(&v[0], &v[1], eps)
    }

    fn composite(v: &[Tensor], eps: f64) -> candle_core::Result<Tensor> {
        reference::rms_norm(&v[0], &v[1], eps)
    }

    /// Row lengths inside one 8-lane sum and across the 64-element blocks of `sum8`, Llama
    /// widths, and more rows than one parallel task and one 32-row dw partial.
    const SHAPES: [&[usize]; 8] = [
        &[2, 3, 8],
        &[4, 3],
        &[3, 33],
        &[7, 3, 129],
        &[300, 64],
        &[40, 768],
        &[1, 1, 1000],
        &[1, 5],
    ];

    #[test]
    fn matches_reference_forward_and_backward_f32() {
        let mut rng = Rng::new(21);
        for shape in SHAPES {
            for eps in [1e-5, 1e-6] {
                let xs = inputs(&mut rng, shape, DType::F32);
                compare_with_reference(
                    &mut rng,
                    &xs,
                    &[true, true],
                    |v| fused(v, eps),
                    |v| composite(v, eps),
                    1e-5,
                );
            }
        }
    }

    /// In f64 both sides stay in f64, so they agree to rounding, also at C = 1 (where dx is
    /// `r * g * eps / (x^2 + eps)`: a difference of two nearly equal terms, which f32 cannot
    /// resolve on either side).
    #[test]
    fn matches_reference_forward_and_backward_f64() {
        let mut rng = Rng::new(22);
        for shape in SHAPES.iter().copied().chain([&[5, 1][..], &[1, 1]]) {
            let xs = inputs(&mut rng, shape, DType::F64);
            compare_with_reference(
                &mut rng,
                &xs,
                &[true, true],
                |v| fused(v, 1e-6),
                |v| composite(v, 1e-6),
                1e-9,
            );
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(23);
        // At C = 1, dx = r * g * eps / (x^2 + eps): a large eps makes it large enough for
        // central differences to resolve (with 1e-5 it is below their rounding error).
        for (shape, eps) in [
            (&[3, 5][..], 1e-5),
            (&[2, 2, 9], 1e-5),
            (&[2, 33], 1e-6),
            (&[4, 1], 0.5),
        ] {
            let xs = inputs(&mut rng, shape, DType::F64);
            grad_check(&mut rng, &xs, &[true, true], |v| fused(v, eps));
        }
    }

    /// Twice, on 1 and 3 threads, and with the baseline code instead of the AVX2/FMA code:
    /// the same bits (dw's row sum included), over more rows than one parallel task.
    #[test]
    fn bit_identical_across_runs_thread_counts_and_simd() {
        let mut rng = Rng::new(24);
        for shape in [&[1000, 96][..], &[37, 33]] {
            let xs = inputs(&mut rng, shape, DType::F32);
            assert_deterministic(&mut rng, &xs, |v| fused(v, 1e-5));
        }
    }

    #[test]
    fn normalises_rows_to_unit_rms() {
        let mut rng = Rng::new(25);
        let x = randn(&mut rng, &[6, 40], 3.0, DType::F32);
        let ones = Tensor::ones(40, DType::F32, &Device::Cpu).unwrap();
        let y = ops::rms_norm(&x, &ones, 0.0).unwrap();
        let ms = y.sqr().unwrap().mean_keepdim(1).unwrap();
        let want = Tensor::ones((6, 1), DType::F32, &Device::Cpu).unwrap();
        assert_close(&ms, &want, 1e-6, "mean of y^2");
    }

    #[test]
    fn strided_input_and_bf16() {
        let mut rng = Rng::new(26);
        let xs = inputs(&mut rng, &[6, 10], DType::F32);
        let xt = xs[0].t().unwrap().contiguous().unwrap().t().unwrap();
        assert!(!xt.is_contiguous());
        let a = ops::rms_norm(&xt, &xs[1], 1e-5).unwrap();
        let b = reference::rms_norm(&xs[0], &xs[1], 1e-5).unwrap();
        assert_close(&a, &b, 1e-5, "strided");
        let xb = xs[0].to_dtype(DType::BF16).unwrap();
        let wb = xs[1].to_dtype(DType::BF16).unwrap();
        let a = ops::rms_norm(&xb, &wb, 1e-5).unwrap();
        assert_eq!(a.dtype(), DType::BF16);
        let b = reference::rms_norm(&xb, &wb, 1e-5).unwrap();
        assert_close(&a, &b, 1e-2, "bf16");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut rng = Rng::new(27);
        let x = randn(&mut rng, &[3, 4], 1.0, DType::F32);
        let w = randn(&mut rng, &[5], 1.0, DType::F32);
        let e = ops::rms_norm(&x, &w, 1e-5).unwrap_err();
        assert!(e.to_string().contains("weight must be (4)"), "{e}");
    }
}

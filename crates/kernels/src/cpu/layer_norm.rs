//! LayerNorm over the last dimension (Ba, Kiros, Hinton 2016), as `torch.nn.LayerNorm`:
//! `y = (x - mean) * rstd * w + b` with `rstd = 1 / sqrt(var + eps)` and the biased variance.
//!
//! Backward recomputes each row's mean and rstd from x instead of saving them: a custom op has a
//! single output, the recomputation is one pass over a row that is in cache anyway, and nothing
//! extra stays alive between forward and backward. With `xhat = (x - mean) * rstd` and
//! `g = dy * w`:
//!   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//!   dw = sum over rows of dy * xhat,   db = sum over rows of dy.

use super::{
    float_dtype, for_row_blocks, row_blocks_with_sums, simd_kernel, slice, sum8, with_float, Real,
};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp3, Error, Layout, Result, Shape, Tensor, D};

/// Forward: (x (.., C), weight (C), bias (C)) -> y (.., C).
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm {
    pub eps: f64,
}

/// Backward: (x (.., C), weight (C), dy (.., C)) -> (N + 2, C) holding dx's N rows, then dw, db.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormBwd {
    pub eps: f64,
}

fn check_params(op: &str, c: usize, l_w: &Layout, l_b: &Layout) -> Result<()> {
    if c == 0 || l_w.shape().dims() != [c] || l_b.shape().dims() != [c] {
        return Err(Error::msg(format!(
            "{op}: x's last dimension is {c}, weight is {:?} and bias/dy is {:?}",
            l_w.shape(),
            l_b.shape()
        )));
    }
    Ok(())
}

/// Mean and rstd of one row, two-pass (the centred variance, as the reference computes it).
#[inline(always)]
fn row_stats<T: Real>(x: &[T], eps: T) -> (T, T) {
    let n = T::from_f64(x.len() as f64);
    let mean = sum8(x.len(), |i| x[i]) / n;
    let var = sum8(x.len(), |i| {
        let d = x[i] - mean;
        d * d
    }) / n;
    (mean, T::ONE / (var + eps).sqrt())
}

simd_kernel! {
fn fwd<T: Real>(x: &[T], w: &[T], b: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let eps = T::from_f64(eps);
    let mut y = vec![T::ZERO; x.len()];
    for_row_blocks(&mut y, c, c, |row0, out| {
        for (r, yr) in out.chunks_exact_mut(c).enumerate() {
            let xr = &x[(row0 + r) * c..][..c];
            let (mean, rstd) = row_stats(xr, eps);
            for j in 0..c {
                yr[j] = (xr[j] - mean) * rstd * w[j] + b[j];
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
    let mut out = vec![T::ZERO; x.len() + 2 * c];
    let (dx, dwb) = out.split_at_mut(x.len());
    // Per block of rows: the dw partial, then the db partial.
    let sums = row_blocks_with_sums(n_rows, dx, c, 2 * c, x.len(), |rows, dxb, part| {
        let (pw, pb) = part.split_at_mut(c);
        let mut xhat = vec![T::ZERO; c];
        for (r, dxr) in rows.zip(dxb.chunks_exact_mut(c)) {
            let (xr, dyr) = (&x[r * c..][..c], &dy[r * c..][..c]);
            let (mean, rstd) = row_stats(xr, eps);
            for j in 0..c {
                xhat[j] = (xr[j] - mean) * rstd;
            }
            let inv_c = T::ONE / T::from_f64(c as f64);
            let mg = sum8(c, |j| dyr[j] * w[j]) * inv_c;
            let mgx = sum8(c, |j| dyr[j] * w[j] * xhat[j]) * inv_c;
            for j in 0..c {
                dxr[j] = rstd * (dyr[j] * w[j] - mg - xhat[j] * mgx);
                pw[j] += dyr[j] * xhat[j];
                pb[j] += dyr[j];
            }
        }
    });
    dwb.copy_from_slice(&sums);
    out
}
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "lantern-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
        s_b: &CpuStorage,
        l_b: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let c = l_x.shape().dims().last().copied().unwrap_or(0);
        check_params(op, c, l_w, l_b)?;
        let y = with_float!(float_dtype(s_x, op)?, T => {
            T::to_cpu_storage_owned(fwd::<T>(
                slice(s_x, l_x, op, "x")?,
                slice(s_w, l_w, op, "weight")?,
                slice(s_b, l_b, op, "bias")?,
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
        s_b: &CudaStorage,
        l_b: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let c = l_x.shape().dims().last().copied().unwrap_or(0);
        check_params(self.name(), c, l_w, l_b)?;
        crate::cuda::layer_norm::fwd(self.eps, (s_x, l_x), (s_w, l_w), (s_b, l_b), c)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = x.dim(D::Minus1)?;
        let n = x.elem_count() / c;
        let g = x.apply_op3_no_bwd(w, &dy.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let dx = g.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = g.narrow(0, n, 1)?.reshape(c)?;
        let db = g.narrow(0, n + 1, 1)?.reshape(c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "lantern-layer-norm-bwd"
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
        let c = l_x.shape().dims().last().copied().unwrap_or(0);
        if l_dy.shape() != l_x.shape() {
            return Err(Error::msg(format!(
                "{op}: dy is {:?}, x is {:?}",
                l_dy.shape(),
                l_x.shape()
            )));
        }
        check_params(op, c, l_w, l_w)?;
        let n = l_x.shape().elem_count() / c;
        let g = with_float!(float_dtype(s_x, op)?, T => {
            T::to_cpu_storage_owned(bwd::<T>(
                slice(s_x, l_x, op, "x")?,
                slice(s_w, l_w, op, "weight")?,
                slice(s_dy, l_dy, op, "dy")?,
                self.eps,
            ))
        });
        Ok((g, Shape::from((n + 2, c))))
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
        let op = self.name();
        let c = l_x.shape().dims().last().copied().unwrap_or(0);
        if l_dy.shape() != l_x.shape() {
            return Err(Error::msg(format!(
                "{op}: dy is {:?}, x is {:?}",
                l_dy.shape(),
                l_x.shape()
            )));
        }
        check_params(op, c, l_w, l_w)?;
        crate::cuda::layer_norm::bwd(self.eps, (s_x, l_x), (s_w, l_w), (s_dy, l_dy), c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Tensor};

    fn inputs(rng: &mut Rng, shape: &[usize], dtype: DType) -> Vec<Tensor> {
        let c = *shape.last().unwrap();
        vec![
            randn(rng, shape, 1.5, dtype),
            // Weights around 1 as after init, and some far from it.
            (randn(rng, &[c], 0.5, dtype) + 1.0).unwrap(),
            randn(rng, &[c], 0.5, dtype),
        ]
    }

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(11);
        for shape in [
            &[2, 3, 8][..],
            &[4, 13],
            &[5, 1],
            &[7, 3, 129],
            &[300, 64],
            &[1, 1, 1000],
        ] {
            for eps in [1e-5, 1e-12] {
                let xs = inputs(&mut rng, shape, DType::F32);
                compare_with_reference(
                    &mut rng,
                    &xs,
                    &[true, true, true],
                    |v| ops::layer_norm(&v[0], &v[1], &v[2], eps),
                    |v| reference::layer_norm(&v[0], &v[1], &v[2], eps),
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(12);
        for shape in [&[3, 5][..], &[2, 2, 9], &[4, 1]] {
            let xs = inputs(&mut rng, shape, DType::F64);
            grad_check(&mut rng, &xs, &[true, true, true], |v| {
                ops::layer_norm(&v[0], &v[1], &v[2], 1e-5)
            });
        }
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(13);
        let xs = inputs(&mut rng, &[1000, 96], DType::F32);
        assert_deterministic(&mut rng, &xs, |v| {
            ops::layer_norm(&v[0], &v[1], &v[2], 1e-5)
        });
    }

    #[test]
    fn strided_input_and_bf16() {
        let mut rng = Rng::new(14);
        let xs = inputs(&mut rng, &[6, 10], DType::F32);
        let xt = xs[0].t().unwrap().contiguous().unwrap().t().unwrap();
        assert!(!xt.is_contiguous());
        let a = ops::layer_norm(&xt, &xs[1], &xs[2], 1e-5).unwrap();
        let b = reference::layer_norm(&xs[0], &xs[1], &xs[2], 1e-5).unwrap();
        assert_close(&a, &b, 1e-5, "strided");
        let xb = xs[0].to_dtype(DType::BF16).unwrap();
        let a = ops::layer_norm(&xb, &xs[1], &xs[2], 1e-5).unwrap();
        assert_eq!(a.dtype(), DType::BF16);
        let b = reference::layer_norm(&xb, &xs[1], &xs[2], 1e-5).unwrap();
        assert_close(&a, &b, 1e-2, "bf16");
    }
}

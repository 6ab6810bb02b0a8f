//! A bias added over the rows of x, with an optional GELU fused in: `y = act(x + b)` for x
//! (.., n) and b (n). Every linear layer's bias goes through it, and GPT-2's c_fc + GELU (BERT's
//! intermediate + GELU) is one pass instead of two.
//!
//! Backward, with `z = x + b`: `dz = dy * act'(z)` (dy itself without an activation) and
//! `db = sum over rows of dz`. The row sum runs in the compute dtype (f32 for bf16 storage) in
//! a fixed order. candle's `broadcast_add` backward sums in the storage dtype instead (bf16 or
//! f16: 16384 rows of a GPT-2 batch summed in 8 or 11 bits of mantissa, and past f16's range
//! under loss scaling), and on CUDA its reduction reads the column of each block with a stride
//! of n elements.

use super::gelu::{with_act, Act, Gelu};
use super::{
    float_dtype, for_row_blocks, row_blocks_with_sums, simd_kernel, slice, with_float, Real,
};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor, D,
};

/// Forward: (x (.., n), b (n)) -> act(x + b) (.., n); `None` is the plain bias add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiasAct(pub Option<Gelu>);

/// Backward with a GELU: (x (.., n), b (n), dy (.., n)) -> (rows + 1, n): dz's rows, then db.
#[derive(Debug, Clone, Copy)]
pub struct BiasGeluBwd(pub Gelu);

/// Backward of the plain bias add: dy (.., n) -> db (n), the sum over rows.
#[derive(Debug, Clone, Copy)]
pub struct BiasGrad;

/// The row length n, checked against the bias (and `dy`, when given).
pub(crate) fn row_len(
    op: &str,
    l_x: &Layout,
    l_b: &Layout,
    l_dy: Option<&Layout>,
) -> Result<usize> {
    let n = l_x.shape().dims().last().copied().unwrap_or(0);
    if n == 0 || l_b.shape().dims() != [n] {
        return Err(Error::msg(format!(
            "{op}: x is {:?}, the bias must be ({n}) and is {:?}",
            l_x.shape(),
            l_b.shape()
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
    Ok(n)
}

/// The row length n of dy for [`BiasGrad`], checked to be positive.
fn grad_row_len(op: &str, l: &Layout) -> Result<usize> {
    match l.shape().dims().last().copied().unwrap_or(0) {
        0 => Err(Error::msg(format!("{op}: dy is {:?}", l.shape()))),
        n => Ok(n),
    }
}

simd_kernel! {
fn fwd<T: Real, A: Act>(x: &[T], b: &[T]) -> Vec<T> {
    let n = b.len();
    let mut y = vec![T::ZERO; x.len()];
    for_row_blocks(&mut y, n, n, |row0, out| {
        for (r, yr) in out.chunks_exact_mut(n).enumerate() {
            let xr = &x[(row0 + r) * n..][..n];
            for j in 0..n {
                yr[j] = A::f(xr[j] + b[j]);
            }
        }
    });
    y
}
}

simd_kernel! {
/// (rows + 1, n): dz = dy * gelu'(x + b), then db = its sum over rows.
fn bwd_gelu<T: Real, A: Act>(x: &[T], b: &[T], dy: &[T]) -> Vec<T> {
    let n = b.len();
    let rows = x.len() / n;
    let mut out = vec![T::ZERO; x.len() + n];
    let (dz, db) = out.split_at_mut(x.len());
    let sums = row_blocks_with_sums(rows, dz, n, n, 2 * x.len(), |rows, dzb, part| {
        for (r, dzr) in rows.zip(dzb.chunks_exact_mut(n)) {
            let (xr, dyr) = (&x[r * n..][..n], &dy[r * n..][..n]);
            for j in 0..n {
                let v = dyr[j] * A::df(xr[j] + b[j]);
                dzr[j] = v;
                part[j] += v;
            }
        }
    });
    db.copy_from_slice(&sums);
    out
}
}

simd_kernel! {
/// db = sum over the rows of dy (n per row).
fn bias_grad<T: Real>(dy: &[T], n: usize) -> Vec<T> {
    let rows = dy.len() / n;
    row_blocks_with_sums(rows, &mut [], 0, n, dy.len(), |rows, _, part| {
        for r in rows {
            for (p, &v) in part.iter_mut().zip(&dy[r * n..][..n]) {
                *p += v;
            }
        }
    })
}
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        match self.0 {
            None => "lantern-bias-add",
            Some(Gelu::Tanh) => "lantern-bias-gelu-tanh",
            Some(Gelu::Erf) => "lantern-bias-gelu-erf",
        }
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_b: &CpuStorage,
        l_b: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        row_len(op, l_x, l_b, None)?;
        let y = with_float!(float_dtype(s_x, op)?, T => {
            let (x, b) = (slice(s_x, l_x, op, "x")?, slice(s_b, l_b, op, "bias")?);
            T::to_cpu_storage_owned(with_act!(self.0, A => fwd::<T, A>(x, b)))
        });
        Ok((y, l_x.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_b: &CudaStorage,
        l_b: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = row_len(self.name(), l_x, l_b, None)?;
        crate::cuda::bias_act::fwd(self.0, (s_x, l_x), (s_b, l_b), n)
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(D::Minus1)?;
        let dy = dy.contiguous()?;
        match self.0 {
            // dx is dy itself: no copy.
            None => {
                let db = dy.apply_op1_no_bwd(&BiasGrad)?;
                Ok((Some(dy), Some(db)))
            }
            Some(g) => {
                let rows = x.elem_count() / n;
                let out = x.apply_op3_no_bwd(b, &dy, &BiasGeluBwd(g))?;
                let dx = out.narrow(0, 0, rows)?.reshape(x.shape())?;
                let db = out.narrow(0, rows, 1)?.reshape(n)?;
                Ok((Some(dx), Some(db)))
            }
        }
    }
}

impl CustomOp3 for BiasGeluBwd {
    fn name(&self) -> &'static str {
        "lantern-bias-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_b: &CpuStorage,
        l_b: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let n = row_len(op, l_x, l_b, Some(l_dy))?;
        let out = with_float!(float_dtype(s_x, op)?, T => {
            let (x, b) = (slice(s_x, l_x, op, "x")?, slice(s_b, l_b, op, "bias")?);
            let dy = slice(s_dy, l_dy, op, "dy")?;
            T::to_cpu_storage_owned(with_act!(Some(self.0), A => bwd_gelu::<T, A>(x, b, dy)))
        });
        Ok((out, Shape::from((l_x.shape().elem_count() / n + 1, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_b: &CudaStorage,
        l_b: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = row_len(self.name(), l_x, l_b, Some(l_dy))?;
        crate::cuda::bias_act::bwd(Some((self.0, ((s_x, l_x), (s_b, l_b)))), (s_dy, l_dy), n)
    }
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "lantern-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let n = grad_row_len(op, l)?;
        let db = with_float!(float_dtype(s, op)?, T => {
            T::to_cpu_storage_owned(bias_grad::<T>(slice(s, l, op, "dy")?, n))
        });
        Ok((db, Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = grad_row_len(self.name(), l)?;
        crate::cuda::bias_act::bwd(None, (s, l), n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Tensor};

    type F = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
    const OPS: [(F, F); 3] = [
        (ops::bias_add, reference::bias_add),
        (ops::bias_gelu_tanh, reference::bias_gelu_tanh),
        (ops::bias_gelu_erf, reference::bias_gelu_erf),
    ];
    const SHAPES: [&[usize]; 5] = [&[1], &[3, 7], &[2, 5, 129], &[70, 33], &[4, 1000]];

    fn inputs(rng: &mut Rng, shape: &[usize], dtype: DType) -> Vec<Tensor> {
        let n = *shape.last().unwrap();
        vec![randn(rng, shape, 2.0, dtype), randn(rng, &[n], 0.5, dtype)]
    }

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(31);
        for (op, reference) in OPS {
            for shape in SHAPES {
                let xs = inputs(&mut rng, shape, DType::F32);
                // candle's GELU backward rounds its constants to six digits, hence 1e-5.
                compare_with_reference(
                    &mut rng,
                    &xs,
                    &[true, true],
                    |v| op(&v[0], &v[1]),
                    |v| reference(&v[0], &v[1]),
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(32);
        for (op, _) in OPS {
            for shape in [&[3, 5][..], &[2, 2, 9]] {
                let xs = inputs(&mut rng, shape, DType::F64);
                grad_check(&mut rng, &xs, &[true, true], |v| op(&v[0], &v[1]));
            }
        }
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(33);
        let xs = inputs(&mut rng, &[1000, 96], DType::F32);
        for (op, _) in OPS {
            assert_deterministic(&mut rng, &xs, |v| op(&v[0], &v[1]));
        }
    }

    /// bf16 storage: the bias gradient of 4096 rows is summed in f32 and rounded once, where
    /// candle's broadcast_add backward sums in bf16.
    #[test]
    fn bf16_bias_gradient_is_summed_in_f32() {
        let rows = 4096;
        let x = Tensor::zeros((rows, 3), DType::BF16, &candle_core::Device::Cpu).unwrap();
        let b = candle_core::Var::zeros(3, DType::BF16, &candle_core::Device::Cpu).unwrap();
        // Upstream gradient 1 + 2^-7 everywhere: representable in bf16; summed exactly it is
        // 4096 + 32 = 4128, which bf16 holds (4128 = 129 * 32).
        let r = Tensor::full(1.0f32 + 1.0 / 128.0, (rows, 3), &candle_core::Device::Cpu).unwrap();
        let y = ops::bias_add(&x, b.as_tensor()).unwrap();
        let loss = (y.to_dtype(DType::F32).unwrap() * r)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        let db: Vec<f32> = g
            .get(b.as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(db, vec![4128.0; 3]);
    }

    #[test]
    fn strided_input_and_bf16() {
        let mut rng = Rng::new(34);
        let xs = inputs(&mut rng, &[6, 10], DType::F32);
        let xt = xs[0].t().unwrap().contiguous().unwrap().t().unwrap();
        assert!(!xt.is_contiguous());
        for (op, reference) in OPS {
            let a = op(&xt, &xs[1]).unwrap();
            assert_close(&a, &reference(&xs[0], &xs[1]).unwrap(), 1e-6, "strided");
            let xb = xs[0].to_dtype(DType::BF16).unwrap();
            let bb = xs[1].to_dtype(DType::BF16).unwrap();
            let a = op(&xb, &bb).unwrap();
            assert_eq!(a.dtype(), DType::BF16);
            assert_close(&a, &reference(&xb, &bb).unwrap(), 1e-2, "bf16");
        }
    }

    #[test]
    fn wrong_bias_shape_is_an_error() {
        let mut rng = Rng::new(35);
        let x = randn(&mut rng, &[4, 6], 1.0, DType::F32);
        let b = randn(&mut rng, &[5], 1.0, DType::F32);
        let e = ops::bias_add(&x, &b).unwrap_err().to_string();
        assert!(e.contains("bias must be (6)"), "{e}");
    }
}

//! Summed, optionally weighted token cross-entropy:
//!   L = sum_i w_i * (logsumexp(x_i) - x_i[t_i])
//!   dL/dx_i = g * w_i * (softmax(x_i) - onehot(t_i)),   dL/dw_i = g * (logsumexp(x_i) - x_i[t_i])
//! with `g` the upstream gradient of the scalar. The forward keeps each row's logsumexp (N
//! values, in the op, which the autograd graph holds until backward); backward then forms each
//! probability once, `exp(x - lse)`, in the same pass that writes the gradient, so the (N, V)
//! probabilities are never stored and no row is exponentiated twice.
//!
//! Rows with weight 0 (padding, unmasked MLM positions) are skipped in both directions: their
//! loss and gradient are 0 whatever the logits hold. Every target is still checked against V.
//! Per-row losses are summed in f64 in row order (deterministic, and exact enough for N in the
//! millions).
//!
//! With `per_row` the op returns the N terms `w_i * (logsumexp(x_i) - x_i[t_i])` instead of
//! their sum, and backward takes a gradient per row, `g_i`: it runs as the summed op's backward
//! with weights `g_i * w_i` and an upstream gradient of 1 (DPO's per-sequence log-probabilities,
//! DFT's target probabilities).

use super::{float_dtype, for_row_blocks, row_max, simd_kernel, slice, sum8, with_float, Real};
use candle_core::backend::BackendStorage;
use candle_core::WithDType;
#[cfg(feature = "cuda")]
use candle_core::{cuda::cudarc::driver::CudaSlice, CudaStorage};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Error, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// Per-row logsumexp saved by the forward (NaN for rows it skipped).
#[derive(Debug)]
pub enum SavedLse {
    /// CPU forward: exact in f64 for f32 and f64 logits.
    Host(Vec<f64>),
    /// CUDA forward: f32 on the device, read by the CUDA backward.
    #[cfg(feature = "cuda")]
    Device(CudaSlice<f32>),
}

impl SavedLse {
    fn host(&self) -> Option<&[f64]> {
        match self {
            SavedLse::Host(v) => Some(v),
            #[cfg(feature = "cuda")]
            SavedLse::Device(_) => None,
        }
    }

    #[cfg(feature = "cuda")]
    fn device(&self) -> Option<&CudaSlice<f32>> {
        match self {
            SavedLse::Device(d) => Some(d),
            SavedLse::Host(_) => None,
        }
    }
}

type Saved = Arc<SavedLse>;

/// Forward. `CustomOp2` on (logits (N, V), targets (N)), `CustomOp3` with weights (N) too.
/// Returns a scalar, or with `per_row` the (N) weighted per-row losses.
#[derive(Debug, Default)]
pub struct CrossEntropySum {
    /// Whether backward returns a gradient for the weights. Usually they are data (0/1 masks)
    /// and this is false, which spares backward a logsumexp over rows of weight 0.
    pub weight_grad: bool,
    /// Each row's term rather than their sum.
    pub per_row: bool,
    lse: Mutex<Option<Saved>>,
}

impl CrossEntropySum {
    pub fn new(weight_grad: bool) -> Self {
        Self {
            weight_grad,
            per_row: false,
            lse: Mutex::new(None),
        }
    }

    /// The op returning each row's weighted loss, (N).
    pub fn rows(weight_grad: bool) -> Self {
        Self {
            per_row: true,
            ..Self::new(weight_grad)
        }
    }

    fn out_shape(&self, n: usize) -> Shape {
        match self.per_row {
            true => Shape::from(n),
            false => Shape::from(()),
        }
    }

    /// The forward's result from each row's loss: the rows, or their sum in f64 in row order.
    fn output<T: Real + WithDType>(&self, rows: Vec<f64>) -> CpuStorage {
        match self.per_row {
            true => T::to_cpu_storage_owned(rows.into_iter().map(T::from_f64).collect()),
            false => T::to_cpu_storage_owned(vec![T::from_f64(rows.iter().sum())]),
        }
    }

    /// Backward: dlogits and, with `weight_grad`, dweights from `g`, the upstream gradient (a
    /// scalar, or (N) with `per_row`).
    fn backward(
        &self,
        x: &Tensor,
        t: &Tensor,
        w: Option<&Tensor>,
        g: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let n = x.dim(0)?;
        let lse = self.saved();
        if !self.per_row {
            let g = g.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let bwd = CrossEntropySumBwd {
                g,
                weight_grad: self.weight_grad && w.is_some(),
                lse,
            };
            let Some(w) = w else {
                let dx = x.apply_op2_no_bwd(t, &bwd)?;
                return Ok((dx.reshape(x.shape())?, None));
            };
            let out = x.apply_op3_no_bwd(t, w, &bwd)?;
            let dx = out.narrow(0, 0, x.elem_count())?.reshape(x.shape())?;
            let dw = match self.weight_grad {
                true => Some(out.narrow(0, x.elem_count(), n)?),
                false => None,
            };
            return Ok((dx, dw));
        }
        // d(w_i * l_i)/dx_i * g_i is the summed op's row gradient with weight g_i * w_i;
        // d/dw_i is g_i * l_i, the summed op's dweights (l_i) times g_i.
        let g = g.contiguous()?;
        let gw = match w {
            Some(w) => (w.to_dtype(g.dtype())? * &g)?,
            None => g.clone(),
        };
        let weight_grad = self.weight_grad && w.is_some();
        let bwd = CrossEntropySumBwd {
            g: 1.0,
            weight_grad,
            lse,
        };
        // The kernels read weights in the logits' dtype on the CPU, in f32 on CUDA.
        let wt = match x.device().is_cpu() {
            true => x.dtype(),
            false => DType::F32,
        };
        let out = x.apply_op3_no_bwd(t, &gw.to_dtype(wt)?, &bwd)?;
        let dx = out.narrow(0, 0, x.elem_count())?.reshape(x.shape())?;
        let dw = match weight_grad {
            true => Some((out.narrow(0, x.elem_count(), n)?.to_dtype(g.dtype())? * g)?),
            false => None,
        };
        Ok((dx, dw))
    }

    fn save(&self, lse: SavedLse) {
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(lse));
    }

    fn saved(&self) -> Option<Saved> {
        self.lse.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Backward, `g` being the upstream gradient of the loss. Same inputs as the forward; returns
/// (N * V) dlogits followed, when `weight_grad`, by (N) dweights, flat. Rows whose logsumexp is
/// not in `lse` recompute it.
#[derive(Debug, Clone)]
pub struct CrossEntropySumBwd {
    pub g: f64,
    pub weight_grad: bool,
    pub lse: Option<Saved>,
}

fn dims(op: &str, l_x: &Layout, l_t: &Layout, l_w: Option<&Layout>) -> Result<(usize, usize)> {
    let bad = || {
        Error::msg(format!(
            "{op}: expected logits (N, V), targets (N), weights (N); got {:?}, {:?}, {:?}",
            l_x.shape(),
            l_t.shape(),
            l_w.map(|l| l.shape())
        ))
    };
    let &[n, v] = l_x.shape().dims() else {
        return Err(bad());
    };
    if l_t.shape().dims() != [n] || l_w.is_some_and(|l| l.shape().dims() != [n]) || v == 0 {
        return Err(bad());
    }
    Ok((n, v))
}

/// Targets as indices, each checked to be below `v`.
fn targets(op: &str, s: &CpuStorage, l: &Layout, v: usize) -> Result<Vec<usize>> {
    let t: Vec<u64> = match s.dtype() {
        DType::U32 => slice::<u32>(s, l, op, "targets")?
            .iter()
            .map(|&t| t as u64)
            .collect(),
        DType::U8 => slice::<u8>(s, l, op, "targets")?
            .iter()
            .map(|&t| t as u64)
            .collect(),
        DType::I64 => slice::<i64>(s, l, op, "targets")?
            .iter()
            .map(|&t| u64::try_from(t).unwrap_or(u64::MAX))
            .collect(),
        d => {
            return Err(Error::msg(format!(
                "{op}: targets must be u32, u8 or i64, got {d:?}"
            )))
        }
    };
    t.iter()
        .enumerate()
        .map(|(i, &t)| match usize::try_from(t) {
            Ok(t) if t < v => Ok(t),
            _ => Err(Error::msg(format!(
                "{op}: target {} at row {i} is out of range for {v} classes",
                t as i64
            ))),
        })
        .collect()
}

/// max and logsumexp of a row.
#[inline(always)]
fn lse<T: Real>(x: &[T]) -> (T, T) {
    let m = row_max(x);
    (m, m + sum8(x.len(), |j| (x[j] - m).exp()).ln())
}

simd_kernel! {
/// Each row's weighted loss and logsumexp (0 and NaN where the weight is 0 and the row was
/// skipped).
fn fwd<T: Real>(x: &[T], t: &[usize], w: Option<&[T]>, v: usize) -> (Vec<f64>, Vec<f64>) {
    // (loss, lse) per row.
    let mut rows = vec![[0f64, f64::NAN]; t.len()];
    for_row_blocks(&mut rows, 1, v, |row0, out| {
        for (r, row) in out.iter_mut().enumerate() {
            let i = row0 + r;
            let wi = w.map_or(T::ONE, |w| w[i]);
            if wi == T::ZERO {
                continue;
            }
            let xr = &x[i * v..][..v];
            let l = lse(xr).1;
            *row = [(wi * (l - xr[t[i]])).to_f64(), l.to_f64()];
        }
    });
    rows.into_iter().map(|[l, s]| (l, s)).unzip()
}
}

simd_kernel! {
/// Returns dlogits (N * V) followed, when `weight_grad`, by dweights (N).
fn bwd<T: Real>(
    x: &[T],
    t: &[usize],
    w: Option<&[T]>,
    v: usize,
    bw: &CrossEntropySumBwd,
) -> Vec<T> {
    let n = t.len();
    let g = T::from_f64(bw.g);
    let saved = bw
        .lse
        .as_deref()
        .and_then(SavedLse::host)
        .filter(|s| s.len() == n);
    let row_lse = |i: usize| match saved.map(|s| s[i]) {
        Some(l) if !l.is_nan() => T::from_f64(l),
        _ => lse(&x[i * v..][..v]).1,
    };
    let mut out = vec![T::ZERO; n * v + if bw.weight_grad { n } else { 0 }];
    let (dx, dw) = out.split_at_mut(n * v);
    for_row_blocks(dx, v, v, |row0, block| {
        for (r, dr) in block.chunks_exact_mut(v).enumerate() {
            let i = row0 + r;
            let wi = w.map_or(T::ONE, |w| w[i]);
            if wi == T::ZERO {
                continue;
            }
            let xr = &x[i * v..][..v];
            let l = row_lse(i);
            let gw = g * wi;
            for j in 0..v {
                dr[j] = gw * (xr[j] - l).exp();
            }
            dr[t[i]] -= gw;
        }
    });
    // Every row's loss, weighted or not: d/dw_i does not vanish where w_i = 0.
    for_row_blocks(dw, 1, v, |row0, block| {
        for (r, d) in block.iter_mut().enumerate() {
            let i = row0 + r;
            *d = g * (row_lse(i) - x[i * v + t[i]]);
        }
    });
    out
}
}

impl CustomOp2 for CrossEntropySum {
    fn name(&self) -> &'static str {
        "lantern-cross-entropy-sum"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_t: &CpuStorage,
        l_t: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp2::name(self);
        let (_, v) = dims(op, l_x, l_t, None)?;
        let t = targets(op, s_t, l_t, v)?;
        let loss = with_float!(float_dtype(s_x, op)?, T => {
            let (rows, lse) = fwd::<T>(slice(s_x, l_x, op, "logits")?, &t, None, v);
            self.save(SavedLse::Host(lse));
            self.output::<T>(rows)
        });
        Ok((loss, self.out_shape(t.len())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_t: &CudaStorage,
        l_t: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, v) = dims(CustomOp2::name(self), l_x, l_t, None)?;
        let (loss, lse) =
            crate::cuda::cross_entropy::fwd((s_x, l_x), (s_t, l_t), None, self.per_row, n, v)?;
        self.save(SavedLse::Device(lse));
        Ok((loss, self.out_shape(n)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _loss: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, _) = self.backward(x, t, None, g)?;
        Ok((Some(dx), None))
    }
}

impl CustomOp3 for CrossEntropySum {
    fn name(&self) -> &'static str {
        "lantern-weighted-cross-entropy-sum"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_t: &CpuStorage,
        l_t: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp3::name(self);
        let (_, v) = dims(op, l_x, l_t, Some(l_w))?;
        let t = targets(op, s_t, l_t, v)?;
        let loss = with_float!(float_dtype(s_x, op)?, T => {
            let w = slice::<T>(s_w, l_w, op, "weights")?;
            let (rows, lse) = fwd::<T>(slice(s_x, l_x, op, "logits")?, &t, Some(w), v);
            self.save(SavedLse::Host(lse));
            self.output::<T>(rows)
        });
        Ok((loss, self.out_shape(t.len())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_t: &CudaStorage,
        l_t: &Layout,
        s_w: &CudaStorage,
        l_w: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, v) = dims(CustomOp3::name(self), l_x, l_t, Some(l_w))?;
        let (loss, lse) = crate::cuda::cross_entropy::fwd(
            (s_x, l_x),
            (s_t, l_t),
            Some((s_w, l_w)),
            self.per_row,
            n,
            v,
        )?;
        self.save(SavedLse::Device(lse));
        Ok((loss, self.out_shape(n)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        w: &Tensor,
        _loss: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.backward(x, t, Some(w), g)?;
        Ok((Some(dx), None, dw))
    }
}

impl CustomOp2 for CrossEntropySumBwd {
    fn name(&self) -> &'static str {
        "lantern-cross-entropy-sum-bwd"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_t: &CpuStorage,
        l_t: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp2::name(self);
        let (n, v) = dims(op, l_x, l_t, None)?;
        let t = targets(op, s_t, l_t, v)?;
        let dx = with_float!(float_dtype(s_x, op)?, T => {
            T::to_cpu_storage_owned(bwd::<T>(slice(s_x, l_x, op, "logits")?, &t, None, v, self))
        });
        Ok((dx, Shape::from(n * v)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_t: &CudaStorage,
        l_t: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, v) = dims(CustomOp2::name(self), l_x, l_t, None)?;
        let lse = self.lse.as_deref().and_then(SavedLse::device);
        crate::cuda::cross_entropy::bwd((s_x, l_x), (s_t, l_t), None, lse, self.g, false, n, v)
    }
}

impl CustomOp3 for CrossEntropySumBwd {
    fn name(&self) -> &'static str {
        "lantern-weighted-cross-entropy-sum-bwd"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_t: &CpuStorage,
        l_t: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp3::name(self);
        let (n, v) = dims(op, l_x, l_t, Some(l_w))?;
        let t = targets(op, s_t, l_t, v)?;
        let out = with_float!(float_dtype(s_x, op)?, T => {
            let w = slice::<T>(s_w, l_w, op, "weights")?;
            T::to_cpu_storage_owned(bwd::<T>(slice(s_x, l_x, op, "logits")?, &t, Some(w), v, self))
        });
        Ok((
            out,
            Shape::from(n * v + if self.weight_grad { n } else { 0 }),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_t: &CudaStorage,
        l_t: &Layout,
        s_w: &CudaStorage,
        l_w: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, v) = dims(CustomOp3::name(self), l_x, l_t, Some(l_w))?;
        let lse = self.lse.as_deref().and_then(SavedLse::device);
        crate::cuda::cross_entropy::bwd(
            (s_x, l_x),
            (s_t, l_t),
            Some((s_w, l_w)),
            lse,
            self.g,
            self.weight_grad,
            n,
            v,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Device, Tensor};

    /// (logits, targets, weights) with `kind` 0: no weights, 1: 0/1 weights, 2: fractional.
    fn inputs(rng: &mut Rng, n: usize, v: usize, kind: u32, dtype: DType) -> Vec<Tensor> {
        let x = randn(rng, &[n, v], 3.0, dtype);
        let t: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let t = Tensor::from_vec(t, n, &Device::Cpu).unwrap();
        let w: Vec<f64> = (0..n)
            .map(|i| match kind {
                1 => (i % 3 != 1) as u32 as f64,
                _ => rng.next_f64() * 2.0 - 0.5,
            })
            .collect();
        let w = Tensor::from_vec(w, n, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        if kind == 0 {
            vec![x, t]
        } else {
            vec![x, t, w]
        }
    }

    fn op(v: &[Tensor]) -> candle_core::Result<Tensor> {
        ops::cross_entropy_sum(&v[0], &v[1], v.get(2))
    }

    fn reference(v: &[Tensor]) -> candle_core::Result<Tensor> {
        reference::cross_entropy_sum(&v[0], &v[1], v.get(2))
    }

    fn op_rows(v: &[Tensor]) -> candle_core::Result<Tensor> {
        ops::cross_entropy_rows(&v[0], &v[1], v.get(2))
    }

    fn reference_rows(v: &[Tensor]) -> candle_core::Result<Tensor> {
        reference::cross_entropy_rows(&v[0], &v[1], v.get(2))
    }

    type Op = fn(&[Tensor]) -> candle_core::Result<Tensor>;

    /// The summed op and the per-row one, each with its reference.
    const OPS: [(Op, Op); 2] = [(op, reference), (op_rows, reference_rows)];

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(41);
        for (op, reference) in OPS {
            for (n, v) in [(1, 1), (5, 7), (4, 1), (33, 129), (64, 1000)] {
                for kind in 0..3 {
                    let xs = inputs(&mut rng, n, v, kind, DType::F32);
                    let track = [true, false, true];
                    compare_with_reference(&mut rng, &xs, &track[..xs.len()], op, reference, 1e-5);
                    // Weights as data (no gradient asked) take the other backward path.
                    compare_with_reference(
                        &mut rng,
                        &xs,
                        &[true, false, false][..xs.len()],
                        op,
                        reference,
                        1e-5,
                    );
                }
            }
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(42);
        for (op, _) in OPS {
            for kind in 0..3 {
                let xs = inputs(&mut rng, 4, 6, kind, DType::F64);
                grad_check(&mut rng, &xs, &[true, false, true][..xs.len()], op);
            }
        }
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(43);
        for (op, _) in OPS {
            for kind in 0..3 {
                let xs = inputs(&mut rng, 300, 500, kind, DType::F32);
                assert_deterministic(&mut rng, &xs, op);
            }
        }
    }

    #[test]
    fn rows_are_the_terms_of_the_sum() {
        let mut rng = Rng::new(46);
        for kind in 0..3 {
            let xs = inputs(&mut rng, 40, 77, kind, DType::F64);
            let rows = op_rows(&xs).unwrap();
            assert_eq!(rows.dims(), [40]);
            let sum = op(&xs).unwrap().to_scalar::<f64>().unwrap();
            let total: f64 = rows.to_vec1::<f64>().unwrap().iter().sum();
            assert!((sum - total).abs() <= 1e-12 * sum.abs(), "{sum} vs {total}");
            if kind == 1 {
                // Weight-0 rows are 0, not just small.
                let r = rows.to_vec1::<f64>().unwrap();
                assert!(r.iter().skip(1).step_by(3).all(|&x| x == 0.0));
            }
        }
    }

    #[test]
    fn saved_and_recomputed_logsumexp_agree_bitwise() {
        let mut rng = Rng::new(45);
        let xs = inputs(&mut rng, 50, 300, 2, DType::F32);
        let r = Tensor::new(1.3f32, &Device::Cpu).unwrap();
        let (_, g) = run(&xs, &[true, false, true], &r, &op);
        let bwd = super::CrossEntropySumBwd {
            g: 1.3f32 as f64,
            weight_grad: true,
            lse: None,
        };
        let out: Vec<f32> = xs[0]
            .apply_op3_no_bwd(&xs[1], &xs[2], &bwd)
            .unwrap()
            .to_vec1()
            .unwrap();
        let saved: Vec<f32> = [&g[0], &g[2]]
            .iter()
            .flat_map(|t| {
                t.as_ref()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        assert!(out
            .iter()
            .zip(&saved)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(out.len(), saved.len());
    }

    #[test]
    fn target_out_of_range_is_an_error() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
        let bad = [
            Tensor::new(&[0u32, 3], &Device::Cpu).unwrap(),
            Tensor::new(&[u32::MAX, 0], &Device::Cpu).unwrap(),
            Tensor::new(&[-1i64, 0], &Device::Cpu).unwrap(),
        ];
        for t in &bad {
            for w in [None, Some(&w)] {
                let e = ops::cross_entropy_sum(&x, t, w).unwrap_err().to_string();
                assert!(e.contains("out of range"), "{e}");
                let e = ops::cross_entropy_rows(&x, t, w).unwrap_err().to_string();
                assert!(e.contains("out of range"), "{e}");
            }
        }
    }

    #[test]
    fn bf16_logits_and_strided_input() {
        let mut rng = Rng::new(44);
        let xs = inputs(&mut rng, 6, 10, 1, DType::F32);
        let xt = xs[0].t().unwrap().contiguous().unwrap().t().unwrap();
        let a = ops::cross_entropy_sum(&xt, &xs[1], Some(&xs[2])).unwrap();
        let b = reference(&xs).unwrap();
        assert_close(&a, &b, 1e-6, "strided");
        let xb = xs[0].to_dtype(DType::BF16).unwrap();
        let a = ops::cross_entropy_sum(&xb, &xs[1], None).unwrap();
        let b = reference::cross_entropy_sum(&xb, &xs[1], None).unwrap();
        assert_eq!(a.dtype(), DType::F32);
        assert_close(&a, &b, 1e-6, "bf16");
    }
}

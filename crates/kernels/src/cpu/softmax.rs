//! Scaled, masked softmax over the last dimension: `y = softmax(s * scale + mask)`.
//!
//! The mask is additive (0 or -inf) and may be any tensor broadcast to the scores' shape: it is
//! read through its strides (a (T, T) causal mask broadcast to (B, H, T, T) has stride 0 on B and
//! H), so it is never materialised, and it gets no gradient. A row whose every entry is masked
//! gives zeros (and a zero gradient), not NaN: such rows occur for padding queries.
//!
//! Backward from the output alone: `ds = scale * y * (dy - sum(dy * y))`.

use super::{float_dtype, for_row_blocks, row_max, simd_kernel, slice, sum8, with_float, Real};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Error, Layout, Result, Shape, Tensor};

/// Forward. As `CustomOp1` on the scores (no mask) or `CustomOp2` on (scores, mask).
#[derive(Debug, Clone, Copy)]
pub struct MaskedSoftmax {
    pub scale: f64,
}

/// Backward: (y, dy) -> ds.
#[derive(Debug, Clone, Copy)]
pub struct MaskedSoftmaxBwd {
    pub scale: f64,
}

/// Where each row of a strided (possibly broadcast) mask starts, and its step along a row.
struct MaskRows<'a, T> {
    data: &'a [T],
    start: usize,
    dims: &'a [usize],
    strides: &'a [usize],
}

impl<T: Copy> MaskRows<'_, T> {
    /// Offset of the first element of row `r` (rows are all dimensions but the last, row-major).
    fn row_offset(&self, mut r: usize) -> usize {
        let mut off = self.start;
        let nd = self.dims.len();
        for d in (0..nd - 1).rev() {
            off += (r % self.dims[d]) * self.strides[d];
            r /= self.dims[d];
        }
        off
    }
}

simd_kernel! {
fn fwd<T: Real>(s: &[T], c: usize, scale: f64, mask: Option<&MaskRows<'_, T>>) -> Vec<T> {
    let scale = T::from_f64(scale);
    let mut y = vec![T::ZERO; s.len()];
    for_row_blocks(&mut y, c, c, |row0, out| {
        for (r, yr) in out.chunks_exact_mut(c).enumerate() {
            let row = row0 + r;
            let sr = &s[row * c..][..c];
            match mask {
                Some(m) => {
                    let (off, step) = (m.row_offset(row), m.strides[m.dims.len() - 1]);
                    for j in 0..c {
                        yr[j] = sr[j] * scale + m.data[off + j * step];
                    }
                }
                None => {
                    for j in 0..c {
                        yr[j] = sr[j] * scale;
                    }
                }
            }
            let max = row_max(yr);
            if max == T::NEG_INFINITY {
                yr.fill(T::ZERO);
                continue;
            }
            for v in yr.iter_mut() {
                *v = (*v - max).exp();
            }
            let inv = T::ONE / sum8(c, |j| yr[j]);
            for v in yr.iter_mut() {
                *v *= inv;
            }
        }
    });
    y
}
}

simd_kernel! {
fn bwd<T: Real>(y: &[T], dy: &[T], c: usize, scale: f64) -> Vec<T> {
    let scale = T::from_f64(scale);
    let mut ds = vec![T::ZERO; y.len()];
    for_row_blocks(&mut ds, c, c, |row0, out| {
        for (r, dr) in out.chunks_exact_mut(c).enumerate() {
            let off = (row0 + r) * c;
            let (yr, gr) = (&y[off..][..c], &dy[off..][..c]);
            let dot = sum8(c, |j| yr[j] * gr[j]);
            for j in 0..c {
                dr[j] = scale * yr[j] * (gr[j] - dot);
            }
        }
    });
    ds
}
}

fn last_dim(op: &str, l: &Layout) -> Result<usize> {
    match l.shape().dims().last() {
        Some(&c) if c > 0 => Ok(c),
        _ => Err(Error::msg(format!(
            "{op}: scores {:?} need a non-empty last dimension",
            l.shape()
        ))),
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "lantern-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp1::name(self);
        let c = last_dim(op, l)?;
        let y = with_float!(float_dtype(s, op)?, T => {
            T::to_cpu_storage_owned(fwd::<T>(slice(s, l, op, "scores")?, c, self.scale, None))
        });
        Ok((y, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let c = last_dim(CustomOp1::name(self), l)?;
        crate::cuda::softmax::fwd(self.scale, (s, l), None, c)
    }

    fn bwd(&self, _s: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let bwd = MaskedSoftmaxBwd { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &bwd)?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "lantern-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        s_m: &CpuStorage,
        l_m: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp2::name(self);
        let c = last_dim(op, l)?;
        if l_m.shape() != l.shape() {
            return Err(Error::msg(format!(
                "{op}: the mask must be broadcast to the scores' shape {:?}, got {:?}",
                l.shape(),
                l_m.shape()
            )));
        }
        let y = with_float!(float_dtype(s, op)?, T => {
            let mask = MaskRows {
                data: s_m.as_slice::<T>()?,
                start: l_m.start_offset(),
                dims: l_m.dims(),
                strides: l_m.stride(),
            };
            T::to_cpu_storage_owned(fwd::<T>(slice(s, l, op, "scores")?, c, self.scale, Some(&mask)))
        });
        Ok((y, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &CudaStorage,
        l: &Layout,
        s_m: &CudaStorage,
        l_m: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let op = CustomOp2::name(self);
        let c = last_dim(op, l)?;
        if l_m.shape() != l.shape() {
            return Err(Error::msg(format!(
                "{op}: the mask must be broadcast to the scores' shape {:?}, got {:?}",
                l.shape(),
                l_m.shape()
            )));
        }
        crate::cuda::softmax::fwd(self.scale, (s, l), Some((s_m, l_m)), c)
    }

    fn bwd(
        &self,
        _s: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let bwd = MaskedSoftmaxBwd { scale: self.scale };
        Ok((Some(y.apply_op2_no_bwd(&dy.contiguous()?, &bwd)?), None))
    }
}

impl CustomOp2 for MaskedSoftmaxBwd {
    fn name(&self) -> &'static str {
        "lantern-masked-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s_y: &CpuStorage,
        l_y: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let c = last_dim(op, l_y)?;
        if l_y.shape() != l_dy.shape() {
            return Err(Error::msg(format!(
                "{op}: y is {:?}, dy is {:?}",
                l_y.shape(),
                l_dy.shape()
            )));
        }
        let ds = with_float!(float_dtype(s_y, op)?, T => {
            T::to_cpu_storage_owned(bwd::<T>(
                slice(s_y, l_y, op, "y")?,
                slice(s_dy, l_dy, op, "dy")?,
                c,
                self.scale,
            ))
        });
        Ok((ds, l_y.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_y: &CudaStorage,
        l_y: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let op = self.name();
        let c = last_dim(op, l_y)?;
        if l_y.shape() != l_dy.shape() {
            return Err(Error::msg(format!(
                "{op}: y is {:?}, dy is {:?}",
                l_y.shape(),
                l_dy.shape()
            )));
        }
        crate::cuda::softmax::bwd(self.scale, (s_y, l_y), (s_dy, l_dy), c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{causal_mask, ops, reference, Rng};
    use candle_core::{DType, Device, Tensor};

    /// (B, 1, 1, Tk) padding mask: the last `pad[b]` keys of sequence b are -inf.
    fn padding_mask(b: usize, tk: usize, pad: &[usize], dtype: DType) -> Tensor {
        let v: Vec<f32> = (0..b)
            .flat_map(|i| {
                (0..tk).map(move |j| {
                    if j + pad[i] >= tk {
                        f32::NEG_INFINITY
                    } else {
                        0.
                    }
                })
            })
            .collect();
        Tensor::from_vec(v, (b, 1, 1, tk), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn cases(rng: &mut Rng, dtype: DType) -> Vec<(Tensor, f64, Option<Tensor>)> {
        let mut out = vec![];
        for (b, h, tq, tk) in [(1, 1, 1, 1), (2, 3, 5, 5), (2, 2, 9, 9), (1, 2, 17, 130)] {
            let s = randn(rng, &[b, h, tq, tk], 2.0, dtype);
            out.push((s.clone(), 0.7, None));
            if tq == tk {
                let m = causal_mask(tq, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                out.push((s.clone(), 0.35, Some(m)));
            }
            // Some keys padded, but never all of a row (the reference gives NaN there).
            let pad: Vec<usize> = (0..b).map(|i| (i * 3) % tk.max(1)).collect();
            out.push((s, 1.3, Some(padding_mask(b, tk, &pad, dtype))));
        }
        out
    }

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(31);
        for (s, scale, mask) in cases(&mut rng, DType::F32) {
            compare_with_reference(
                &mut rng,
                &[s],
                &[true],
                |v| ops::masked_softmax(&v[0], scale, mask.as_ref()),
                |v| reference::masked_softmax(&v[0], scale, mask.as_ref()),
                1e-5,
            );
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(32);
        for (s, scale, mask) in cases(&mut rng, DType::F64).into_iter().take(6) {
            grad_check(&mut rng, &[s], &[true], |v| {
                ops::masked_softmax(&v[0], scale, mask.as_ref())
            });
        }
    }

    #[test]
    fn fully_masked_rows_give_zeros() {
        let mut rng = Rng::new(33);
        // Sequence 1 is all padding: its rows are fully masked.
        let mask = padding_mask(2, 6, &[2, 6], DType::F32);
        let s = randn(&mut rng, &[2, 2, 3, 6], 1.0, DType::F32);
        let r = randn(&mut rng, &[2, 2, 3, 6], 1.0, DType::F32);
        let (y, g) = run(std::slice::from_ref(&s), &[true], &r, &|v| {
            ops::masked_softmax(&v[0], 0.5, Some(&mask))
        });
        let g = g[0].clone().unwrap();
        for t in [&y, &g] {
            let dead: Vec<f32> = t.get(1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert!(dead.iter().all(|&v| v == 0.0), "{dead:?}");
        }
        // The live sequence is unaffected.
        let (y_ref, g_ref) = run(&[s.get(0).unwrap()], &[true], &r.get(0).unwrap(), &|v| {
            reference::masked_softmax(&v[0], 0.5, Some(&mask.get(0).unwrap()))
        });
        assert_close(&y.get(0).unwrap(), &y_ref, 1e-6, "live forward");
        assert_close(
            &g.get(0).unwrap(),
            g_ref[0].as_ref().unwrap(),
            1e-5,
            "live grad",
        );
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(34);
        let s = randn(&mut rng, &[3, 4, 64, 64], 2.0, DType::F32);
        let mask = causal_mask(64, &Device::Cpu).unwrap();
        assert_deterministic(&mut rng, &[s], |v| {
            ops::masked_softmax(&v[0], 0.125, Some(&mask))
        });
    }

    #[test]
    fn strided_scores_and_bf16() {
        let mut rng = Rng::new(35);
        let s = randn(&mut rng, &[2, 3, 7, 7], 1.0, DType::F32);
        let st = s
            .transpose(2, 3)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(2, 3)
            .unwrap();
        assert!(!st.is_contiguous());
        let mask = causal_mask(7, &Device::Cpu).unwrap();
        let a = ops::masked_softmax(&st, 0.4, Some(&mask)).unwrap();
        let b = reference::masked_softmax(&s, 0.4, Some(&mask)).unwrap();
        assert_close(&a, &b, 1e-6, "strided");
        let sb = s.to_dtype(DType::BF16).unwrap();
        let a = ops::masked_softmax(&sb, 0.4, Some(&mask)).unwrap();
        assert_eq!(a.dtype(), DType::BF16);
        let b = reference::masked_softmax(&sb, 0.4, Some(&mask)).unwrap();
        assert_close(&a, &b, 1e-2, "bf16");
    }
}

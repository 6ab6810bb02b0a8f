//! Fused causal self-attention (FlashAttention, Dao et al. 2022; FlashAttention-2, Dao 2023):
//! `y = softmax(scale * q k^T + causal mask) v` per head, read straight from the (B, T, 3C)
//! output of c_attn and written in the (B, T, C) layout c_proj reads, so the (B, H, T, T)
//! score matrix and the q/k/v/y transposes of the composite version never exist.
//!
//! Layout: q = columns [0, C) of qkv, k = [C, 2C), v = [2C, 3C); head h owns columns
//! h*hd..(h+1)*hd of each, and of y. Key j is visible to query i when j <= i, so every row has
//! at least one key and no row is fully masked.
//!
//! The forward also produces the per-row logsumexp `lse[b, h, i] = m_i + ln(sum_j exp(s_ij - m_i))`
//! of the scaled scores `s_ij = scale * q_i . k_j`. The backward needs it to rebuild the
//! probabilities without a second softmax pass; it is kept in the forward op (filled by
//! `cpu_fwd`/`cuda_fwd`, read by `bwd`) rather than recomputed, because recomputing it costs a
//! third of the forward's FLOPs again on every backward. A custom op has one output, hence the
//! shared slot. Backward (the standard flash-attention formulas), with `P_ij = exp(s_ij - lse_i)`:
//!   D_i = dO_i . O_i,   dV_j = sum_i P_ij dO_i,   dP_ij = dO_i . V_j,
//!   dS_ij = P_ij (dP_ij - D_i),   dQ_i = scale sum_j dS_ij K_j,   dK_j = scale sum_i dS_ij Q_i.
//!
//! On the CPU each output row (b, t) is computed on its own (dQ over the keys j <= t, dK and dV
//! over the queries i >= t), every sum in a fixed order: bit-identical for any thread count.
//! `lse` is kept in the compute dtype (f64 for gradient checks; the CUDA kernels keep f32).
//!
//! Packed rows (several sequences one after the other in a row, `lantern_models::Packing`):
//! with `positions` (B, T) u32, each token's position within its own sequence, query i sees
//! the keys `i - positions[i] ..= i` only, its own sequence's. Positions restart at 0 with each
//! sequence and count up by one; a position past i is read as i (the row's start). Attention
//! never crosses a sequence boundary, as flash attention's variable-length kernels
//! (`cu_seqlens`) and transformers' packed `position_ids` have it.

use super::{
    float_dtype, row_max, rows_per_task, simd_kernel, slice, sum8, with_float, Real, PAR_MIN_ELEMS,
};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The logsumexp a forward produced, (B, H, T), where that forward ran.
#[derive(Debug)]
pub(crate) enum Lse {
    Cpu(CpuStorage),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda::cudarc::driver::CudaSlice<f32>),
}

/// Packed rows' positions (B·T) u32, kept by the forward for the backward, where it ran.
#[derive(Debug)]
pub(crate) enum Positions {
    Cpu(Vec<u32>),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda::cudarc::driver::CudaSlice<u32>),
}

/// What the forward keeps for the backward.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) lse: Lse,
    /// Packed rows only.
    pub(crate) positions: Option<Positions>,
}

/// Forward: qkv (B, T, 3C) -> y (B, T, C); `CustomOp1`, or `CustomOp2` with packed rows'
/// positions (B, T) u32.
#[derive(Debug, Clone)]
pub struct CausalAttention {
    pub n_head: usize,
    pub scale: f64,
    /// Filled by the forward, read by the backward. The Arc is cloned, not taken, so that a
    /// second backward over the same graph still works; it is freed with the graph.
    saved: Arc<Mutex<Option<Arc<Saved>>>>,
}

impl CausalAttention {
    pub fn new(n_head: usize, scale: f64) -> Self {
        Self {
            n_head,
            scale,
            saved: Arc::new(Mutex::new(None)),
        }
    }

    fn store(&self, lse: Lse, positions: Option<Positions>) -> Result<()> {
        *self
            .saved
            .lock()
            .map_err(|_| Error::msg("lantern-causal-attention: lse lock poisoned"))? =
            Some(Arc::new(Saved { lse, positions }));
        Ok(())
    }

    fn backward(&self, qkv: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| Error::msg("lantern-causal-attention: lse lock poisoned"))?
            .clone()
            .ok_or_else(|| Error::msg("lantern-causal-attention: backward before forward"))?;
        let op = CausalAttentionBwd {
            n_head: self.n_head,
            scale: self.scale,
            saved,
        };
        qkv.apply_op3_no_bwd(&y.contiguous()?, &dy.contiguous()?, &op)
    }
}

/// Backward: (qkv (B, T, 3C), y (B, T, C), dy (B, T, C)) -> dqkv (B, T, 3C).
#[derive(Debug, Clone)]
pub struct CausalAttentionBwd {
    pub n_head: usize,
    pub scale: f64,
    pub(crate) saved: Arc<Saved>,
}

/// Checks packed rows' positions to be (B, T) u32 for the sizes `d`.
fn check_positions(op: &str, l: &Layout, d: Dims) -> Result<()> {
    if l.shape().dims() != [d.b, d.t] {
        return Err(Error::msg(format!(
            "{op}: positions {:?} for qkv of (B, T) = ({}, {})",
            l.shape(),
            d.b,
            d.t
        )));
    }
    Ok(())
}

/// The first key query i of a row sees: its sequence's start, `i - positions[i]` (0 without
/// positions; a position past i reads as i).
#[inline(always)]
fn first_key(positions: Option<&[u32]>, row: usize, i: usize) -> usize {
    positions.map_or(0, |p| i - (p[row] as usize).min(i))
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub hd: usize,
}

impl Dims {
    /// Checks qkv's shape (B, T, 3C) against `n_head`.
    pub fn of(op: &str, qkv: &Shape, n_head: usize) -> Result<Self> {
        let bad = |why: &str| {
            Error::msg(format!(
                "{op}: qkv {qkv:?} with {n_head} heads: {why} (expected (B, T, 3C), C a multiple of the heads)"
            ))
        };
        let &[b, t, c3] = qkv.dims() else {
            return Err(bad("not of rank 3"));
        };
        if n_head == 0 || c3 == 0 || c3 % 3 != 0 || (c3 / 3) % n_head != 0 {
            return Err(bad("bad last dimension"));
        }
        Ok(Self {
            b,
            t,
            h: n_head,
            hd: c3 / 3 / n_head,
        })
    }

    pub fn c(&self) -> usize {
        self.h * self.hd
    }

    fn check(&self, op: &str, what: &str, l: &Layout, last: usize) -> Result<()> {
        if l.shape().dims() != [self.b, self.t, last] {
            return Err(Error::msg(format!(
                "{op}: {what} is {:?}, expected {:?}",
                l.shape(),
                (self.b, self.t, last)
            )));
        }
        Ok(())
    }
}

/// Runs `f(first_row, rows_a, rows_b)` over `a` and `b` cut into blocks of whole rows of
/// `len_a` and `len_b` elements, in parallel when there is enough work (`row_work` elements
/// read per row). Every row must be computed on its own, so the split does not change a bit.
fn for_row_pairs<A: Send, B: Send>(
    a: &mut [A],
    len_a: usize,
    b: &mut [B],
    len_b: usize,
    row_work: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Send + Sync,
) {
    let n_rows = a.len() / len_a.max(1);
    if n_rows == 0 || len_b == 0 {
        return;
    }
    let rows = rows_per_task(row_work);
    if n_rows * row_work <= PAR_MIN_ELEMS {
        f(0, a, b);
    } else {
        a.par_chunks_mut(rows * len_a)
            .zip(b.par_chunks_mut(rows * len_b))
            .enumerate()
            .for_each(|(i, (ca, cb))| f(i * rows, ca, cb));
    }
}

simd_kernel! {
/// Forward on contiguous slices: qkv (B, T, 3C) -> (y (B, T, C), lse (B, H, T)); packed rows
/// with `positions` (B·T). The plain CPU version, also the oracle of the CUDA kernels'
/// emulator test.
#[doc(hidden)]
pub fn attention_fwd_ref<T: Real>(
    qkv: &[T],
    d: Dims,
    scale: f64,
    positions: Option<&[u32]>,
) -> (Vec<T>, Vec<T>) {
    let Dims { b, t, h, hd } = d;
    let (c, c3) = (d.c(), 3 * d.c());
    assert_eq!(qkv.len(), b * t * c3, "qkv length");
    assert!(positions.is_none_or(|p| p.len() == b * t), "positions length");
    let scale = T::from_f64(scale);
    let mut y = vec![T::ZERO; b * t * c];
    let mut lse_bth = vec![T::ZERO; b * t * h]; // (B, T, H): one row per (b, t) like y
    for_row_pairs(&mut y, c, &mut lse_bth, h, t * c, |row0, ys, ls| {
        let mut p = vec![T::ZERO; t];
        let mut acc = vec![T::ZERO; hd];
        for (r, (yr, lr)) in ys
            .chunks_exact_mut(c)
            .zip(ls.chunks_exact_mut(h))
            .enumerate()
        {
            let (bi, i) = ((row0 + r) / t, (row0 + r) % t);
            let base = bi * t * c3; // row 0 of sequence bi
            let lo = first_key(positions, row0 + r, i);
            for hh in 0..h {
                let q = &qkv[(bi * t + i) * c3 + hh * hd..][..hd];
                let k = |j: usize| &qkv[base + j * c3 + c + hh * hd..][..hd];
                let v = |j: usize| &qkv[base + j * c3 + 2 * c + hh * hd..][..hd];
                let s = &mut p[lo..=i]; // s[j - lo] for the keys j = lo..=i
                for (j, sj) in s.iter_mut().enumerate() {
                    let kj = k(lo + j);
                    *sj = sum8(hd, |x| q[x] * kj[x]) * scale;
                }
                let m = row_max(s);
                for sj in s.iter_mut() {
                    *sj = (*sj - m).exp();
                }
                let l = sum8(s.len(), |j| s[j]);
                acc.fill(T::ZERO);
                for (j, &pj) in s.iter().enumerate() {
                    for (a, &vx) in acc.iter_mut().zip(v(lo + j)) {
                        *a += pj * vx;
                    }
                }
                let inv = T::ONE / l;
                for (o, &a) in yr[hh * hd..][..hd].iter_mut().zip(&acc) {
                    *o = a * inv;
                }
                lr[hh] = m + l.ln();
            }
        }
    });
    let mut lse = vec![T::ZERO; b * h * t];
    for bi in 0..b {
        for i in 0..t {
            for hh in 0..h {
                lse[(bi * h + hh) * t + i] = lse_bth[(bi * t + i) * h + hh];
            }
        }
    }
    (y, lse)
}
}

simd_kernel! {
/// Backward on contiguous slices: (qkv (B, T, 3C), y, dy (B, T, C), lse (B, H, T)) ->
/// dqkv (B, T, 3C); packed rows with `positions` (B·T). The plain CPU version, also the oracle
/// of the emulator test.
#[doc(hidden)]
pub fn attention_bwd_ref<T: Real>(
    qkv: &[T],
    y: &[T],
    dy: &[T],
    lse: &[T],
    d: Dims,
    scale: f64,
    positions: Option<&[u32]>,
) -> Vec<T> {
    let Dims { b, t, h, hd } = d;
    let (c, c3) = (d.c(), 3 * d.c());
    assert_eq!(qkv.len(), b * t * c3, "qkv length");
    assert!(positions.is_none_or(|p| p.len() == b * t), "positions length");
    assert_eq!(y.len(), b * t * c, "y length");
    assert_eq!(dy.len(), b * t * c, "dy length");
    assert_eq!(lse.len(), b * h * t, "lse length");
    let scale = T::from_f64(scale);
    // D (B, H, T) = rowsum(dO * O) per head.
    let mut dd = vec![T::ZERO; b * h * t];
    for (idx, dv) in dd.iter_mut().enumerate() {
        let (bi, hh, i) = (idx / (h * t), (idx / t) % h, idx % t);
        let off = (bi * t + i) * c + hh * hd;
        *dv = sum8(hd, |x| dy[off + x] * y[off + x]);
    }
    let mut dqkv = vec![T::ZERO; b * t * c3];
    let mut unused = vec![(); b * t];
    // Row (b, t) costs ~ T keys or queries times 4 vectors of C.
    for_row_pairs(&mut dqkv, c3, &mut unused, 1, 2 * t * c, |row0, out, _| {
        let mut acc_a = vec![T::ZERO; hd];
        let mut acc_b = vec![T::ZERO; hd];
        for (r, g) in out.chunks_exact_mut(c3).enumerate() {
            let (bi, tt) = ((row0 + r) / t, (row0 + r) % t);
            let row = |i: usize| (bi * t + i) * c3;
            let lo = |i: usize| first_key(positions, bi * t + i, i);
            for hh in 0..h {
                let stat = |i: usize| (bi * h + hh) * t + i; // index into lse and D
                let q = |i: usize| &qkv[row(i) + hh * hd..][..hd];
                let k = |j: usize| &qkv[row(j) + c + hh * hd..][..hd];
                let v = |j: usize| &qkv[row(j) + 2 * c + hh * hd..][..hd];
                let o_grad = |i: usize| &dy[(bi * t + i) * c + hh * hd..][..hd];
                // dS_ij for query i, key j.
                let ds_p = |i: usize, j: usize| {
                    let (qi, kj, gi, vj) = (q(i), k(j), o_grad(i), v(j));
                    let p = (sum8(hd, |x| qi[x] * kj[x]) * scale - lse[stat(i)]).exp();
                    let dp = sum8(hd, |x| gi[x] * vj[x]);
                    (p * (dp - dd[stat(i)]), p)
                };
                // dQ_t = scale * sum_{lo(t) <= j <= t} dS_tj K_j
                acc_a.fill(T::ZERO);
                for j in lo(tt)..=tt {
                    let (ds, _) = ds_p(tt, j);
                    for (a, &kx) in acc_a.iter_mut().zip(k(j)) {
                        *a += ds * kx;
                    }
                }
                for (o, &a) in g[hh * hd..][..hd].iter_mut().zip(&acc_a) {
                    *o = scale * a;
                }
                // dK_t = scale * sum_{i >= t} dS_it Q_i,  dV_t = sum_{i >= t} P_it dO_i, over
                // the queries i that see key t (lo(i) <= t).
                acc_a.fill(T::ZERO);
                acc_b.fill(T::ZERO);
                for i in (tt..t).filter(|&i| lo(i) <= tt) {
                    let (ds, p) = ds_p(i, tt);
                    for ((a, bb), (&qx, &gx)) in acc_a
                        .iter_mut()
                        .zip(acc_b.iter_mut())
                        .zip(q(i).iter().zip(o_grad(i)))
                    {
                        *a += ds * qx;
                        *bb += p * gx;
                    }
                }
                for (o, &a) in g[c + hh * hd..][..hd].iter_mut().zip(&acc_a) {
                    *o = scale * a;
                }
                g[2 * c + hh * hd..][..hd].copy_from_slice(&acc_b);
            }
        }
    });
    dqkv
}
}

impl CausalAttention {
    /// The CPU forward: y (B, T, C) and lse (B, H, T).
    fn cpu_forward(
        &self,
        op: &str,
        (s, l): (&CpuStorage, &Layout),
        d: Dims,
        positions: Option<&[u32]>,
    ) -> Result<(CpuStorage, CpuStorage)> {
        Ok(with_float!(float_dtype(s, op)?, T => {
            let (y, lse) = attention_fwd_ref::<T>(slice(s, l, op, "qkv")?, d, self.scale, positions);
            (T::to_cpu_storage_owned(y), T::to_cpu_storage_owned(lse))
        }))
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "lantern-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp1::name(self);
        let d = Dims::of(op, l.shape(), self.n_head)?;
        let (y, lse) = self.cpu_forward(op, (s, l), d, None)?;
        self.store(Lse::Cpu(lse), None)?;
        Ok((y, Shape::from((d.b, d.t, d.c()))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let d = Dims::of(CustomOp1::name(self), l.shape(), self.n_head)?;
        let (y, lse) = crate::cuda::attention::fwd(self.scale, (s, l), None, d)?;
        self.store(Lse::Cuda(lse), None)?;
        Ok((y, Shape::from((d.b, d.t, d.c()))))
    }

    fn bwd(&self, qkv: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.backward(qkv, y, dy)?))
    }
}

/// Packed rows: (qkv (B, T, 3C), positions (B, T) u32) -> y (B, T, C).
impl CustomOp2 for CausalAttention {
    fn name(&self) -> &'static str {
        "lantern-packed-causal-attention"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        s_p: &CpuStorage,
        l_p: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = CustomOp2::name(self);
        let d = Dims::of(op, l.shape(), self.n_head)?;
        check_positions(op, l_p, d)?;
        let positions = slice::<u32>(s_p, l_p, op, "positions")?.to_vec();
        let (y, lse) = self.cpu_forward(op, (s, l), d, Some(&positions))?;
        self.store(Lse::Cpu(lse), Some(Positions::Cpu(positions)))?;
        Ok((y, Shape::from((d.b, d.t, d.c()))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &CudaStorage,
        l: &Layout,
        s_p: &CudaStorage,
        l_p: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let op = CustomOp2::name(self);
        let d = Dims::of(op, l.shape(), self.n_head)?;
        check_positions(op, l_p, d)?;
        // The backward's copy (B·T numbers), as the CPU keeps its own.
        let positions = crate::cuda::attention::positions((s_p, l_p))?;
        let (y, lse) = crate::cuda::attention::fwd(self.scale, (s, l), Some(&positions), d)?;
        self.store(Lse::Cuda(lse), Some(Positions::Cuda(positions)))?;
        Ok((y, Shape::from((d.b, d.t, d.c()))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _positions: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.backward(qkv, y, dy)?), None))
    }
}

impl CausalAttentionBwd {
    /// The sizes from qkv, with y and dy checked against them (both devices' backward).
    fn dims(&self, l_qkv: &Layout, l_y: &Layout, l_dy: &Layout) -> Result<Dims> {
        let op = self.name();
        let d = Dims::of(op, l_qkv.shape(), self.n_head)?;
        d.check(op, "y", l_y, d.c())?;
        d.check(op, "dy", l_dy, d.c())?;
        Ok(d)
    }
}

impl CustomOp3 for CausalAttentionBwd {
    fn name(&self) -> &'static str {
        "lantern-causal-attention-bwd"
    }

    fn cpu_fwd(
        &self,
        s_qkv: &CpuStorage,
        l_qkv: &Layout,
        s_y: &CpuStorage,
        l_y: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let d = self.dims(l_qkv, l_y, l_dy)?;
        let elsewhere = || Error::msg(format!("{op}: the forward ran on another device"));
        // Without `cuda` the CPU is the only place a forward can have run.
        #[allow(irrefutable_let_patterns)]
        let Lse::Cpu(lse) = &self.saved.lse
        else {
            return Err(elsewhere());
        };
        let positions = match &self.saved.positions {
            None => None,
            Some(Positions::Cpu(p)) => Some(&p[..]),
            #[cfg(feature = "cuda")]
            Some(Positions::Cuda(_)) => return Err(elsewhere()),
        };
        let g = with_float!(float_dtype(s_qkv, op)?, T => {
            let lse = lse.as_slice::<T>()?;
            if lse.len() != d.b * d.h * d.t {
                return Err(Error::msg(format!("{op}: lse has {} elements, not B*H*T", lse.len())));
            }
            T::to_cpu_storage_owned(attention_bwd_ref::<T>(
                slice(s_qkv, l_qkv, op, "qkv")?,
                slice(s_y, l_y, op, "y")?,
                slice(s_dy, l_dy, op, "dy")?,
                lse,
                d,
                self.scale,
                positions,
            ))
        });
        Ok((g, l_qkv.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_qkv: &CudaStorage,
        l_qkv: &Layout,
        s_y: &CudaStorage,
        l_y: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let op = self.name();
        let d = self.dims(l_qkv, l_y, l_dy)?;
        let elsewhere = || Error::msg(format!("{op}: the forward ran on another device"));
        let Lse::Cuda(lse) = &self.saved.lse else {
            return Err(elsewhere());
        };
        let positions = match &self.saved.positions {
            None => None,
            Some(Positions::Cuda(p)) => Some(p),
            Some(Positions::Cpu(_)) => return Err(elsewhere()),
        };
        crate::cuda::attention::bwd(
            self.scale,
            (s_qkv, l_qkv),
            (s_y, l_y),
            (s_dy, l_dy),
            (lse, positions),
            d,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::{ops, reference, Rng};
    use candle_core::DType;

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(41);
        for (b, t, h, hd) in [
            (1, 1, 1, 8),
            (2, 7, 3, 8),
            (2, 67, 2, 16),
            (1, 130, 2, 64),
            (3, 33, 4, 16),
        ] {
            let qkv = randn(&mut rng, &[b, t, 3 * h * hd], 1.0, DType::F32);
            let scale = 1.0 / (hd as f64).sqrt();
            compare_with_reference(
                &mut rng,
                &[qkv],
                &[true],
                |v| ops::causal_attention(&v[0], h, scale),
                |v| reference::causal_attention(&v[0], h, scale),
                2e-5,
            );
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(42);
        for (b, t, h, hd) in [(1, 1, 1, 2), (2, 5, 2, 3)] {
            let qkv = randn(&mut rng, &[b, t, 3 * h * hd], 1.0, DType::F64);
            grad_check(&mut rng, &[qkv], &[true], |v| {
                ops::causal_attention(&v[0], h, 0.7)
            });
        }
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(43);
        let qkv = randn(&mut rng, &[2, 70, 3 * 4 * 16], 1.0, DType::F32);
        assert_deterministic(&mut rng, &[qkv], |v| ops::causal_attention(&v[0], 4, 0.25));
    }

    #[test]
    fn bf16_and_strided_input() {
        let mut rng = Rng::new(44);
        let qkv = randn(&mut rng, &[2, 9, 3 * 2 * 8], 1.0, DType::F32);
        // A transposed-back copy: same values, non-contiguous strides.
        let st = qkv
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        assert!(!st.is_contiguous());
        let a = ops::causal_attention(&st, 2, 0.3).unwrap();
        let b = reference::causal_attention(&qkv, 2, 0.3).unwrap();
        assert_close(&a, &b, 1e-5, "strided");
        let qb = qkv.to_dtype(DType::BF16).unwrap();
        compare_with_reference(
            &mut rng,
            &[qb],
            &[true],
            |v| ops::causal_attention(&v[0], 2, 0.3),
            |v| reference::causal_attention(&v[0], 2, 0.3),
            2e-2,
        );
        assert_eq!(
            ops::causal_attention(&qkv.to_dtype(DType::BF16).unwrap(), 2, 0.3)
                .unwrap()
                .dtype(),
            DType::BF16
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros((2, 3, 10), DType::F32, &candle_core::Device::Cpu).unwrap();
        let e = ops::causal_attention(&x, 2, 1.0).unwrap_err().to_string();
        assert!(e.contains("qkv"), "{e}");
        let x = Tensor::zeros((2, 3, 12), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(ops::causal_attention(&x, 3, 1.0).is_err());
        assert!(ops::causal_attention(&x, 0, 1.0).is_err());
    }

    /// Positions (B, T) of rows packed with sequences of `lengths[b]`.
    fn positions(lengths: &[&[usize]], t: usize) -> Tensor {
        let p = ops::packed_positions(lengths, t);
        Tensor::from_vec(p, (lengths.len(), t), &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn packed_rows_match_reference_forward_and_backward() {
        let mut rng = Rng::new(46);
        for (lengths, h, hd) in [
            (&[&[1usize][..]][..], 1, 8),
            (&[&[3, 4], &[7]], 3, 8),
            (&[&[20, 1, 30], &[5, 5, 5, 5]], 2, 16),
            (&[&[64, 66]], 2, 64),
        ] {
            let t = lengths
                .iter()
                .map(|r| r.iter().sum::<usize>())
                .max()
                .unwrap();
            let b = lengths.len();
            let pos = positions(lengths, t);
            let qkv = randn(&mut rng, &[b, t, 3 * h * hd], 1.0, DType::F32);
            let scale = 1.0 / (hd as f64).sqrt();
            compare_with_reference(
                &mut rng,
                &[qkv, pos],
                &[true, false],
                |v| ops::packed_causal_attention(&v[0], h, scale, &v[1]),
                |v| reference::packed_causal_attention(&v[0], h, scale, &v[1]),
                2e-5,
            );
        }
    }

    #[test]
    fn packed_finite_differences_f64() {
        let mut rng = Rng::new(47);
        let pos = positions(&[&[2, 3], &[1, 1, 3]], 6);
        let qkv = randn(&mut rng, &[2, 6, 3 * 2 * 3], 1.0, DType::F64);
        grad_check(&mut rng, &[qkv, pos], &[true, false], |v| {
            ops::packed_causal_attention(&v[0], 2, 0.7, &v[1])
        });
    }

    #[test]
    fn packed_sequences_attend_as_if_alone() {
        // Each sequence of a packed row gives what it gives alone, and so does its gradient.
        let mut rng = Rng::new(48);
        let (h, hd, lengths) = (2, 8, [5usize, 9, 2]);
        let t: usize = lengths.iter().sum();
        let qkv = randn(&mut rng, &[1, t, 3 * h * hd], 1.0, DType::F32);
        let pos = positions(&[&lengths], t);
        let dy = randn(&mut rng, &[1, t, h * hd], 1.0, DType::F32);
        let var = candle_core::Var::from_tensor(&qkv).unwrap();
        let y = ops::packed_causal_attention(var.as_tensor(), h, 0.3, &pos).unwrap();
        let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap().clone();
        let mut start = 0;
        for n in lengths {
            let part = |x: &Tensor| x.narrow(1, start, n).unwrap().contiguous().unwrap();
            let v1 = candle_core::Var::from_tensor(&part(&qkv)).unwrap();
            let y1 = ops::causal_attention(v1.as_tensor(), h, 0.3).unwrap();
            let g1 = (&y1 * part(&dy))
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_close(&part(&y), &y1, 1e-6, "y");
            assert_close(&part(&g), g1.get(v1.as_tensor()).unwrap(), 1e-6, "dqkv");
            start += n;
        }
    }

    #[test]
    fn packed_bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(49);
        let pos = positions(&[&[30, 40], &[3, 60]], 70);
        let qkv = randn(&mut rng, &[2, 70, 3 * 4 * 16], 1.0, DType::F32);
        assert_deterministic(&mut rng, &[qkv, pos], |v| {
            ops::packed_causal_attention(&v[0], 4, 0.25, &v[1])
        });
    }

    #[test]
    fn packed_positions_of_the_wrong_shape_are_errors() {
        let x = Tensor::zeros((2, 3, 12), DType::F32, &candle_core::Device::Cpu).unwrap();
        let p = Tensor::zeros((2, 4), DType::U32, &candle_core::Device::Cpu).unwrap();
        let e = ops::packed_causal_attention(&x, 2, 1.0, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("positions"), "{e}");
    }

    #[test]
    fn causal_row_zero_copies_v0() {
        // Query 0 sees only key 0: y row 0 is v row 0 whatever q and k are.
        let mut rng = Rng::new(45);
        let qkv = randn(&mut rng, &[1, 4, 3 * 4], 1.0, DType::F32);
        let y = ops::causal_attention(&qkv, 1, 0.5).unwrap();
        let y0: Vec<f32> = y.get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
        let v0: Vec<f32> = qkv
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .narrow(0, 8, 4)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y0, v0);
    }
}

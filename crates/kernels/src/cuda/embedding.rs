//! Embedding launches (`kernels/embedding.cu`). Shapes are checked by the custom ops in
//! `cpu::embedding` first; ids are u32 (the public wrapper converts them).
//!
//! Both directions copy the ids to the host (N × 4 bytes) and so wait for the work queued
//! before them: the forward to check every id against the table and name a bad one, the
//! backward to group the positions by id ([`Buckets`]). The cross-entropy that follows the
//! forward waits the same way for its target check.

use super::{expect_dtype, func, int, launched, view, with_kernel_float, KernelFloat, Module};
use crate::cpu::embedding::{check_ids, Buckets, EmbeddingBwd};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{DType, Error, Layout, Result, Shape};

const OP: &str = "lantern-embedding (cuda)";
/// Most position blocks of the forward's grid: each block then loops over positions.
const FWD_ROW_BLOCKS: usize = 8192;

/// (n, c) rows of the (v, c) table at the n ids.
pub(crate) fn fwd(
    (s_t, l_t): (&CudaStorage, &Layout),
    (s_ids, l_ids): (&CudaStorage, &Layout),
    v: usize,
    c: usize,
    n: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_t.device().clone();
    expect_dtype(s_ids, DType::U32, OP, "ids")?;
    let ids = view::<u32>(s_ids, l_ids, OP, "ids")?;
    check_ids(&dev.clone_dtoh(&ids)?, v)?;
    with_kernel_float!(s_t.dtype(), OP, T => {
        let table = view::<T>(s_t, l_t, OP, "table")?;
        let mut y = super::alloc_out::<T>(&dev, n * c)?;
        if n > 0 && c > 0 {
            let f = func(&dev, Module::Embedding, &format!("embedding_fwd_{}", T::SUFFIX))?;
            let (ni, ci, vi) = (int(OP, n)?, int(OP, c)?, int(OP, v)?);
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&table).arg(&ids).arg(&mut y).arg(&ni).arg(&ci).arg(&vi);
            let cfg = LaunchConfig {
                grid_dim: (c.div_ceil(256) as u32, n.min(FWD_ROW_BLOCKS) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: table holds v * c elements, ids n (each < v, checked above), y n * c;
            // thread col < c of position block j writes y[p * c + col] for p = j, j + grid.y,
            // ... < n and reads table[ids[p] * c + col].
            launched(unsafe { a.launch(cfg) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), Shape::from((n, c))))
    })
}

/// d table (vocab, c) from ids (n) and dy (n, c) (shapes checked by the op).
pub(crate) fn bwd(
    op: &EmbeddingBwd,
    (s_ids, l_ids): (&CudaStorage, &Layout),
    (s_dy, l_dy): (&CudaStorage, &Layout),
    c: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_dy.device().clone();
    expect_dtype(s_ids, DType::U32, OP, "ids")?;
    let ids = view::<u32>(s_ids, l_ids, OP, "ids")?;
    let b = Buckets::new(&dev.clone_dtoh(&ids)?, op.vocab, op.padding_idx)?;
    // The grid's y dimension holds the column blocks.
    if c.div_ceil(256) > 65535 {
        return Err(Error::msg(format!("{OP}: rows of {c} are too long")));
    }
    with_kernel_float!(s_dy.dtype(), OP, T => {
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        // Zeros: the rows of ids that are not in the batch stay so.
        let mut dt = dev.alloc_zeros::<T>(op.vocab * c)?;
        // Rows of width 0 have nothing to add (and a grid of height 0 is no launch).
        if !b.ids.is_empty() && c > 0 {
            let (d_ids, d_starts, d_pos) = (
                dev.clone_htod(&b.ids[..])?,
                dev.clone_htod(&b.starts[..])?,
                dev.clone_htod(&b.positions[..])?,
            );
            let f = func(&dev, Module::Embedding, &format!("embedding_bwd_{}", T::SUFFIX))?;
            let ci = int(OP, c)?;
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&d_ids).arg(&d_starts).arg(&d_pos).arg(&dy).arg(&mut dt).arg(&ci);
            let cfg = LaunchConfig {
                grid_dim: (b.ids.len() as u32, c.div_ceil(256) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: block (k, j) reads starts[k], starts[k + 1] (buckets + 1 entries),
            // positions in between (< n, by construction), dy rows at those positions (n * c)
            // and writes row ids[k] (< vocab) of dt (vocab * c), columns j * 256 + tid < c.
            launched(unsafe { a.launch(cfg) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(dt, dev.clone()), Shape::from((op.vocab, c))))
    })
}

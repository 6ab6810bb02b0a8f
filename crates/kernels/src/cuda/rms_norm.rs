//! RMSNorm launches (`kernels/rms_norm.cu`). Shapes are checked by the custom ops in
//! `cpu::rms_norm` before these run.

use super::{
    alloc_out, alloc_scratch, func, int, launched, rows_cfg, view, with_kernel_float, KernelFloat,
    Module,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{Layout, Result, Shape};

const OP: &str = "lantern-rms-norm (cuda)";
/// Rows per chunk of the weight gradient's partial sums (as LayerNorm's).
const ROWS_PER_CHUNK: usize = 256;

/// y (.., C) from x (.., C) and weight (C), both of x's dtype.
pub(crate) fn fwd(
    eps: f64,
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_w, l_w): (&CudaStorage, &Layout),
    c: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_x.device().clone();
    let n = l_x.shape().elem_count();
    let rows = n / c;
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, "x")?;
        let w = view::<T>(s_w, l_w, OP, "weight")?;
        let mut y = alloc_out::<T>(&dev, n)?;
        if rows > 0 {
            let f = func(&dev, Module::RmsNorm, &format!("rms_norm_fwd_{}", T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let (ci, epsf) = (int(OP, c)?, eps as f32);
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&w).arg(&mut y).arg(&ci).arg(&epsf);
            // SAFETY: x and y hold rows * c elements, w holds c (checked by the op), and the
            // kernel reads and writes only inside those bounds: one block per row.
            launched(unsafe { a.launch(rows_cfg(rows)?) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l_x.shape().clone()))
    })
}

/// (N + 1, C) holding dx's N rows, then dw; from x (N.., C), weight (C), dy like x.
pub(crate) fn bwd(
    eps: f64,
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_w, l_w): (&CudaStorage, &Layout),
    (s_dy, l_dy): (&CudaStorage, &Layout),
    c: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_x.device().clone();
    let stream = dev.cuda_stream();
    let n = l_x.shape().elem_count();
    let rows = n / c;
    let chunks = rows.div_ceil(ROWS_PER_CHUNK).max(1);
    // The chunks are the grid's y dimension, limited to 65535 (16.7M rows).
    if chunks > 65535 {
        return Err(candle_core::Error::msg(format!(
            "{OP}: {rows} rows is more than the backward supports ({})",
            65535 * ROWS_PER_CHUNK
        )));
    }
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, "x")?;
        let w = view::<T>(s_w, l_w, OP, "weight")?;
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        let mut out = alloc_out::<T>(&dev, n + c)?;
        let mut rstd = alloc_scratch(&dev, rows)?;
        let mut partial = alloc_scratch(&dev, chunks * c)?;
        let (ci, epsf, rowsi, rpc, chunksi) = (
            int(OP, c)?,
            eps as f32,
            int(OP, rows)?,
            int(OP, ROWS_PER_CHUNK)?,
            int(OP, chunks)?,
        );
        let sfx = T::SUFFIX;
        if rows > 0 {
            let mut dx = out.slice_mut(0..n);
            let f = func(&dev, Module::RmsNorm, &format!("rms_norm_bwd_dx_{sfx}"))?;
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&w).arg(&dy).arg(&mut dx).arg(&mut rstd).arg(&ci).arg(&epsf);
            // SAFETY: x, dy and dx hold rows * c elements, w holds c, rstd rows; one block
            // per row writes its row of dx and its rstd.
            launched(unsafe { a.launch(rows_cfg(rows)?) })?;
        }
        let f = func(&dev, Module::RmsNorm, &format!("rms_norm_bwd_dw_partial_{sfx}"))?;
        let mut a = stream.launch_builder(&f);
        a.arg(&x).arg(&dy).arg(&rstd).arg(&mut partial).arg(&rowsi).arg(&ci).arg(&rpc);
        let cfg = LaunchConfig {
            grid_dim: (c.div_ceil(32) as u32, chunks as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: each block reads rows [chunk * rpc, min(rows, ..)) of x and dy (rows * c
        // elements) and the rstd those rows wrote above, and writes 32 entries of partial
        // (chunks * c); columns >= c are skipped. With no rows, every partial is written 0.
        launched(unsafe { a.launch(cfg) })?;
        let mut dw = out.slice_mut(n..n + c);
        let f = func(&dev, Module::RmsNorm, &format!("rms_norm_bwd_dw_final_{sfx}"))?;
        let mut a = stream.launch_builder(&f);
        a.arg(&partial).arg(&mut dw).arg(&ci).arg(&chunksi);
        let cfg = LaunchConfig {
            grid_dim: (c.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: thread `col < c` reads partial[k * c + col] for k < chunks and writes
        // dw[col] (c elements).
        launched(unsafe { a.launch(cfg) })?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((rows + 1, c)),
        ))
    })
}

//! Bias (+ GELU) launches (`kernels/bias_act.cu`). Shapes are checked by the custom ops in
//! `cpu::bias_act` before these run.

use super::{
    alloc_out, alloc_scratch, func, int, launched, view, with_kernel_float, KernelFloat, Module,
};
use crate::cpu::gelu::Gelu;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{Error, Layout, Result, Shape};

const OP: &str = "lantern-bias-act (cuda)";
/// Rows per chunk of the bias gradient's partial sums.
const ROWS_PER_CHUNK: usize = 256;
/// Most row blocks of the forward's grid: each block then loops over rows, by this stride.
const FWD_ROW_BLOCKS: usize = 8192;

fn act_name(act: Option<Gelu>) -> &'static str {
    match act {
        None => "add",
        Some(Gelu::Tanh) => "gelu_tanh",
        Some(Gelu::Erf) => "gelu_erf",
    }
}

/// y = act(x + b), x (rows, n) and b (n) of x's dtype.
pub(crate) fn fwd(
    act: Option<Gelu>,
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_b, l_b): (&CudaStorage, &Layout),
    n: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_x.device().clone();
    let total = l_x.shape().elem_count();
    let rows = total / n;
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, "x")?;
        let b = view::<T>(s_b, l_b, OP, "bias")?;
        let mut y = alloc_out::<T>(&dev, total)?;
        if rows > 0 {
            let name = format!("bias_{}_fwd_{}", act_name(act), T::SUFFIX);
            let f = func(&dev, Module::BiasAct, &name)?;
            let stream = dev.cuda_stream();
            let (rowsi, ni) = (int(OP, rows)?, int(OP, n)?);
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&b).arg(&mut y).arg(&rowsi).arg(&ni);
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(256) as u32, rows.min(FWD_ROW_BLOCKS) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: x and y hold rows * n elements and b holds n (checked by the op); thread
            // (col < n) of row block j touches element r * n + col for rows r = j, j + grid.y,
            // ... < rows, and b[col].
            launched(unsafe { a.launch(cfg) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l_x.shape().clone()))
    })
}

/// The forward's inputs x (rows, n) and b (n), which the backward with an activation reads.
pub(crate) type Inputs<'a> = ((&'a CudaStorage, &'a Layout), (&'a CudaStorage, &'a Layout));

/// With an activation: (rows + 1, n) holding dz's rows, then db, from the forward's x and b and
/// dy like x. Without one (`gelu` None): db (n) from dy alone.
pub(crate) fn bwd(
    gelu: Option<(Gelu, Inputs<'_>)>,
    (s_dy, l_dy): (&CudaStorage, &Layout),
    n: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_dy.device().clone();
    let stream = dev.cuda_stream();
    let total = l_dy.shape().elem_count();
    let rows = total / n;
    let chunks = rows.div_ceil(ROWS_PER_CHUNK).max(1);
    // The chunks are the grid's y dimension, limited to 65535 (16.7M rows).
    if chunks > 65535 {
        return Err(Error::msg(format!(
            "{OP}: {rows} rows is more than the backward supports ({})",
            65535 * ROWS_PER_CHUNK
        )));
    }
    let act = gelu.map(|(g, _)| g);
    with_kernel_float!(s_dy.dtype(), OP, T => {
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        let out_len = if act.is_some() { total + n } else { n };
        let mut out = alloc_out::<T>(&dev, out_len)?;
        let mut partial = alloc_scratch(&dev, chunks * n)?;
        let (rowsi, ni, rpc, chunksi) =
            (int(OP, rows)?, int(OP, n)?, int(OP, ROWS_PER_CHUNK)?, int(OP, chunks)?);
        let name = format!("bias_{}_bwd_partial_{}", act_name(act), T::SUFFIX);
        let f = func(&dev, Module::BiasAct, &name)?;
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(32) as u32, chunks as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        match gelu {
            Some((_, ((s_x, l_x), (s_b, l_b)))) => {
                let x = view::<T>(s_x, l_x, OP, "x")?;
                let b = view::<T>(s_b, l_b, OP, "bias")?;
                let mut dz = out.slice_mut(0..total);
                let mut a = stream.launch_builder(&f);
                a.arg(&x).arg(&b).arg(&dy).arg(&mut dz).arg(&mut partial);
                a.arg(&rowsi).arg(&ni).arg(&rpc);
                // SAFETY: x, dy and dz hold rows * n elements, b holds n; each block reads and
                // writes rows [chunk * rpc, min(rows, ..)) of its 32 columns (< n) and writes
                // partial[chunk * n + col] (chunks * n).
                launched(unsafe { a.launch(cfg) })?;
            }
            None => {
                // Without an activation the kernel reads neither x nor b and writes no dz:
                // those three pointers are null.
                let null: u64 = 0;
                let mut a = stream.launch_builder(&f);
                a.arg(&null).arg(&null).arg(&dy).arg(&null).arg(&mut partial);
                a.arg(&rowsi).arg(&ni).arg(&rpc);
                // SAFETY: dy holds rows * n elements; each block reads rows [chunk * rpc,
                // min(rows, ..)) of its 32 columns (< n) and writes partial[chunk * n + col].
                launched(unsafe { a.launch(cfg) })?;
            }
        }
        let mut db = out.slice_mut(out_len - n..out_len);
        let f = func(&dev, Module::BiasAct, &format!("bias_bwd_final_{}", T::SUFFIX))?;
        let mut a = stream.launch_builder(&f);
        a.arg(&partial).arg(&mut db).arg(&ni).arg(&chunksi);
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: thread col < n reads partial[k * n + col] for k < chunks (written above;
        // with rows = 0 the one chunk writes zeros) and writes db[col].
        launched(unsafe { a.launch(cfg) })?;
        let shape = match act {
            Some(_) => Shape::from((rows + 1, n)),
            None => Shape::from(n),
        };
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    })
}

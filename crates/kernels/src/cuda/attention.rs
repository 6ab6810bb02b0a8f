//! Fused causal attention launches (`kernels/attention.cu`). Shapes are checked by the custom
//! ops in `cpu::attention` first. Every kernel but D runs on grid (ceil(T / 64), H, B) with
//! 128 threads (the kernel's `attn::THREADS`); D runs one warp per (b, t, h).

use super::{
    alloc_out, alloc_scratch, expect_dtype, func, int, launched, view, with_kernel_float,
    KernelFloat, Module,
};
use crate::cpu::attention::Dims;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{DType, Error, Layout, Result, Shape};

const OP: &str = "lantern-causal-attention (cuda)";
/// Rows of a block's tile and its threads, as `attn::ROWS` and `attn::THREADS`.
const TILE_ROWS: usize = 64;
const THREADS: u32 = 128;

/// The tile grid, after checking the head dim has kernels and the grid fits.
fn tile_cfg(d: Dims) -> Result<LaunchConfig> {
    if !crate::ops::CUDA_ATTENTION_HEAD_DIMS.contains(&d.hd) {
        return Err(Error::msg(format!(
            "{OP}: no kernel for head dim {} (have {:?})",
            d.hd,
            crate::ops::CUDA_ATTENTION_HEAD_DIMS
        )));
    }
    let (tiles, h, b) = (d.t.div_ceil(TILE_ROWS), d.h, d.b);
    if tiles >= i32::MAX as usize || h > 65_535 || b > 65_535 {
        return Err(Error::msg(format!(
            "{OP}: grid ({tiles}, {h}, {b}) is too large for one launch"
        )));
    }
    Ok(LaunchConfig {
        grid_dim: (tiles as u32, h as u32, b as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// A copy of packed rows' positions (B, T) u32 (checked by the op), which the forward's op
/// keeps for the backward.
pub(crate) fn positions((s, l): (&CudaStorage, &Layout)) -> Result<CudaSlice<u32>> {
    expect_dtype(s, DType::U32, OP, "positions")?;
    let p = view::<u32>(s, l, OP, "positions")?;
    s.device().cuda_stream().clone_dtod(&p).map_err(Error::wrap)
}

/// y (B, T, C) and lse (B, H, T) f32 from qkv (B, T, 3C); packed rows with `positions`.
pub(crate) fn fwd(
    scale: f64,
    (s, l): (&CudaStorage, &Layout),
    positions: Option<&CudaSlice<u32>>,
    d: Dims,
) -> Result<(CudaStorage, CudaSlice<f32>)> {
    let dev = s.device().clone();
    let null = 0u64;
    let n_y = d.b * d.t * d.c();
    let mut lse = alloc_scratch(&dev, d.b * d.h * d.t)?;
    with_kernel_float!(s.dtype(), OP, T => {
        let qkv = view::<T>(s, l, OP, "qkv")?;
        let mut y = alloc_out::<T>(&dev, n_y)?;
        if n_y > 0 {
            let cfg = tile_cfg(d)?;
            let f = func(&dev, Module::Attention, &format!("attention_fwd_{}_hd{}", T::SUFFIX, d.hd))?;
            let (ti, hi, scalef) = (int(OP, d.t)?, int(OP, d.h)?, scale as f32);
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&qkv);
            match positions {
                Some(p) => a.arg(p),
                None => a.arg(&null),
            };
            a.arg(&mut y).arg(&mut lse).arg(&ti).arg(&hi).arg(&scalef);
            // SAFETY: qkv holds B*T*3C elements, y B*T*C, lse B*H*T and positions (when not
            // null) B*T (d was checked against qkv's layout, the positions against d, by the
            // op); each block reads rows < T of sequence blockIdx.z and head blockIdx.y and
            // writes only its own query rows < T of y and lse.
            launched(unsafe { a.launch(cfg) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), lse))
    })
}

/// dqkv (B, T, 3C) from qkv (B, T, 3C), y and dy (B, T, C), and the forward's lse and
/// packed rows' positions.
pub(crate) fn bwd(
    scale: f64,
    (s_qkv, l_qkv): (&CudaStorage, &Layout),
    (s_y, l_y): (&CudaStorage, &Layout),
    (s_dy, l_dy): (&CudaStorage, &Layout),
    (lse, positions): (&CudaSlice<f32>, Option<&CudaSlice<u32>>),
    d: Dims,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_qkv.device().clone();
    let stats = d.b * d.h * d.t;
    if lse.len() < stats {
        return Err(Error::msg(format!(
            "{OP}: lse has {} elements, the shape needs {stats}",
            lse.len()
        )));
    }
    if let Some(p) = positions.filter(|p| p.len() != d.b * d.t) {
        return Err(Error::msg(format!(
            "{OP}: {} positions for (B, T) = ({}, {})",
            p.len(),
            d.b,
            d.t
        )));
    }
    let null = 0u64;
    let n = d.b * d.t * 3 * d.c();
    with_kernel_float!(s_qkv.dtype(), OP, T => {
        let qkv = view::<T>(s_qkv, l_qkv, OP, "qkv")?;
        let y = view::<T>(s_y, l_y, OP, "y")?;
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        let mut g = alloc_out::<T>(&dev, n)?;
        if n > 0 {
            let cfg = tile_cfg(d)?;
            let stream = dev.cuda_stream();
            let (ti, hi, hdi, scalef) = (int(OP, d.t)?, int(OP, d.h)?, int(OP, d.hd)?, scale as f32);
            let mut dd = alloc_scratch(&dev, stats)?;
            // D: one warp per (b, t, h), 8 warps a block.
            let rows = stats as i64;
            let blocks = u32::try_from(stats.div_ceil(8))
                .map_err(|_| Error::msg(format!("{OP}: {stats} rows is too many for one launch")))?;
            let f = func(&dev, Module::Attention, &format!("attention_bwd_d_{}", T::SUFFIX))?;
            let mut a = stream.launch_builder(&f);
            a.arg(&y).arg(&dy).arg(&mut dd).arg(&ti).arg(&hi).arg(&hdi).arg(&rows);
            let d_cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: y and dy hold B*T*C elements and dd B*H*T; warp w < rows reads row w / H's
            // head w % H (hd elements) and writes dd once; warps past rows return.
            launched(unsafe { a.launch(d_cfg) })?;
            for kernel in ["dkdv", "dq"] {
                let name = format!("attention_bwd_{kernel}_{}_hd{}", T::SUFFIX, d.hd);
                let f = func(&dev, Module::Attention, &name)?;
                let mut a = stream.launch_builder(&f);
                a.arg(&qkv);
                match positions {
                    Some(p) => a.arg(p),
                    None => a.arg(&null),
                };
                a.arg(&dy).arg(lse).arg(&dd).arg(&mut g).arg(&ti).arg(&hi).arg(&scalef);
                // SAFETY: qkv and g hold B*T*3C elements, dy B*T*C, lse and dd B*H*T, the
                // positions (when not null) B*T (lengths checked above). dkdv writes columns
                // [C, 3C) of its key rows < T, dq columns [0, C) of its query rows < T:
                // together every element of g, each once.
                launched(unsafe { a.launch(cfg) })?;
            }
        }
        Ok((CudaStorage::wrap_cuda_slice(g, dev.clone()), l_qkv.shape().clone()))
    })
}

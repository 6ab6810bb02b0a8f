//! RoPE launches (`kernels/rope.cu`). Shapes are checked by the custom ops in `cpu::rope`
//! before these run.

use super::{alloc_out, func, int, launched, view, with_kernel_float, KernelFloat, Module};
use crate::cpu::rope::RopeDims;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{Layout, Result, Shape};

const OP: &str = "lantern-rope (cuda)";
/// Rows per block: one warp each (block (32, ROWS_PER_BLOCK)).
const ROWS_PER_BLOCK: usize = 8;

/// y (B, T, H, D) from x (B, T, H, D) and the tables cos, sin (T, D), all of x's dtype; the
/// backward formulas (dx from dy) when `backward`.
pub(crate) fn rotate(
    backward: bool,
    dims: RopeDims,
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_cos, l_cos): (&CudaStorage, &Layout),
    (s_sin, l_sin): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = s_x.device().clone();
    let n = l_x.shape().elem_count();
    let rows = n / dims.head_dim;
    let what = if backward { "dy" } else { "x" };
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, what)?;
        let cos = view::<T>(s_cos, l_cos, OP, "cos")?;
        let sin = view::<T>(s_sin, l_sin, OP, "sin")?;
        let mut y = alloc_out::<T>(&dev, n)?;
        if rows > 0 {
            let dir = if backward { "bwd" } else { "fwd" };
            let f = func(&dev, Module::Rope, &format!("rope_{dir}_{}", T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let (rowsi, halfi, headsi, seqi) = (
                int(OP, rows)?,
                int(OP, dims.head_dim / 2)?,
                int(OP, dims.heads)?,
                int(OP, dims.seq)?,
            );
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&cos).arg(&sin).arg(&mut y);
            a.arg(&rowsi).arg(&halfi).arg(&headsi).arg(&seqi);
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
                block_dim: (32, ROWS_PER_BLOCK as u32, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: x and y hold rows * D elements, cos and sin seq * D (checked by the op);
            // warp `row < rows` reads and writes only row `row` of x and y, and row
            // (row / H) % T < T of the tables.
            launched(unsafe { a.launch(cfg) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l_x.shape().clone()))
    })
}

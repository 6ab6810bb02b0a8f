//! GELU launches (`kernels/gelu.cu`).

use super::{
    alloc_out, elementwise_cfg, func, launched, view, with_kernel_float, KernelFloat, Module,
};
use crate::cpu::gelu::Gelu;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::PushKernelArg;
use candle_core::cuda::CudaStorage;
use candle_core::{Layout, Result, Shape};

const OP: &str = "lantern-gelu (cuda)";

fn kind_name(kind: Gelu) -> &'static str {
    match kind {
        Gelu::Tanh => "gelu_tanh",
        Gelu::Erf => "gelu_erf",
    }
}

/// y = gelu(x), elementwise.
pub(crate) fn fwd(kind: Gelu, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = s.device().clone();
    let n = l.shape().elem_count();
    with_kernel_float!(s.dtype(), OP, T => {
        let x = view::<T>(s, l, OP, "x")?;
        let mut y = alloc_out::<T>(&dev, n)?;
        if n > 0 {
            let f = func(&dev, Module::Gelu, &format!("{}_fwd_{}", kind_name(kind), T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&mut y).arg(&n);
            // SAFETY: x and y hold n elements; the grid-stride loop stays below n.
            launched(unsafe { a.launch(elementwise_cfg(n)) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l.shape().clone()))
    })
}

/// dx = dy * gelu'(x), elementwise; x and dy have the same shape (checked by the op).
pub(crate) fn bwd(
    kind: Gelu,
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_dy, l_dy): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = s_x.device().clone();
    let n = l_x.shape().elem_count();
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, "x")?;
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        let mut dx = alloc_out::<T>(&dev, n)?;
        if n > 0 {
            let f = func(&dev, Module::Gelu, &format!("{}_bwd_{}", kind_name(kind), T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&dy).arg(&mut dx).arg(&n);
            // SAFETY: x, dy and dx hold n elements; the grid-stride loop stays below n.
            launched(unsafe { a.launch(elementwise_cfg(n)) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(dx, dev.clone()), l_x.shape().clone()))
    })
}

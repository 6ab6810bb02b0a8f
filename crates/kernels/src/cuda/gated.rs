//! Gated activation launches (`kernels/gated.cu`).

use super::{
    alloc_out, elementwise_cfg, func, launched, view, with_kernel_float, KernelFloat, Module,
};
use crate::cpu::gated::Gate;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::PushKernelArg;
use candle_core::cuda::CudaStorage;
use candle_core::{Layout, Result, Shape};

const OP: &str = "lantern-gated (cuda)";

fn gate_name(gate: Gate) -> &'static str {
    match gate {
        Gate::Silu => "gated_silu",
        Gate::GeluTanh => "gated_gelu_tanh",
        Gate::GeluErf => "gated_gelu_erf",
    }
}

/// y = act(g) · u, elementwise; g and u have one shape (checked by the op).
pub(crate) fn fwd(
    gate: Gate,
    (s_g, l_g): (&CudaStorage, &Layout),
    (s_u, l_u): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = s_g.device().clone();
    let n = l_g.shape().elem_count();
    with_kernel_float!(s_g.dtype(), OP, T => {
        let g = view::<T>(s_g, l_g, OP, "gate")?;
        let u = view::<T>(s_u, l_u, OP, "up")?;
        let mut y = alloc_out::<T>(&dev, n)?;
        if n > 0 {
            let f = func(&dev, Module::Gated, &format!("{}_fwd_{}", gate_name(gate), T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&g).arg(&u).arg(&mut y).arg(&n);
            // SAFETY: g, u and y hold n elements; the grid-stride loop stays below n.
            launched(unsafe { a.launch(elementwise_cfg(n)) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l_g.shape().clone()))
    })
}

/// [dg, du] (2n values) from g, u and dy of one shape (checked by the op, which gives the
/// result its (2, ..) shape).
pub(crate) fn bwd(
    gate: Gate,
    (s_g, l_g): (&CudaStorage, &Layout),
    (s_u, l_u): (&CudaStorage, &Layout),
    (s_dy, l_dy): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = s_g.device().clone();
    let n = l_g.shape().elem_count();
    with_kernel_float!(s_g.dtype(), OP, T => {
        let g = view::<T>(s_g, l_g, OP, "gate")?;
        let u = view::<T>(s_u, l_u, OP, "up")?;
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        let mut out = alloc_out::<T>(&dev, 2 * n)?;
        if n > 0 {
            let f = func(&dev, Module::Gated, &format!("{}_bwd_{}", gate_name(gate), T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&g).arg(&u).arg(&dy).arg(&mut out).arg(&n);
            // SAFETY: g, u and dy hold n elements and out 2n; the grid-stride loop writes
            // out[i] and out[n + i] for i below n only.
            launched(unsafe { a.launch(elementwise_cfg(n)) })?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    })
}

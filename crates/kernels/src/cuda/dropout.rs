//! Dropout launches (`kernels/dropout.cu`).

use super::{
    alloc_out, elementwise_cfg, func, launched, view, with_kernel_float, KernelFloat, Module,
};
use crate::cpu::dropout::Dropout;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::PushKernelArg;
use candle_core::cuda::CudaStorage;
use candle_core::{Layout, Result, Shape};

const OP: &str = "lantern-dropout (cuda)";

/// y = x · mask, the mask drawn in the kernel from `op`'s seed and counter.
pub(crate) fn fwd(op: &Dropout, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = s.device().clone();
    let n = l.shape().elem_count();
    with_kernel_float!(s.dtype(), OP, T => {
        let x = view::<T>(s, l, OP, "x")?;
        let mut y = alloc_out::<T>(&dev, n)?;
        if n > 0 {
            let f = func(&dev, Module::Dropout, &format!("dropout_{}", T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let mut a = stream.launch_builder(&f);
            a.arg(&x)
                .arg(&mut y)
                .arg(&n)
                .arg(&op.seed)
                .arg(&op.counter)
                .arg(&op.p)
                .arg(&op.scale);
            // SAFETY: x and y hold n elements; the grid-stride loop stays below n. The
            // arguments match the kernel's (size_t, two unsigned long long, two float).
            launched(unsafe { a.launch(elementwise_cfg(n)) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l.shape().clone()))
    })
}

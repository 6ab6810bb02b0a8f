//! The fused AdamW launch (`kernels/adamw.cu`): one pass reads g, m, v, p and writes m, v, p
//! and the working copy.

use super::{elementwise_cfg, func, launched, Module};
use crate::adamw::Scalars;
use crate::grad_norm::overlapping;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DevicePtr, DeviceRepr, PushKernelArg};
use candle_core::{DType, Error, Result, Storage, Tensor};

// SAFETY: #[repr(C)] of eight f32 and two i32, the layout of `AdamWArgs` in adamw.cu.
unsafe impl DeviceRepr for Scalars {}

/// Inputs are checked by `adamw_update`: same shape, contiguous, f32 (work bf16/f16).
pub(crate) fn update(
    master: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    work: Option<&Tensor>,
    s: &Scalars,
) -> Result<()> {
    let n = master.elem_count();
    if n == 0 {
        return Ok(());
    }
    let dev = master.device().as_cuda_device()?.clone();
    let stream = dev.cuda_stream();
    let tensors: Vec<&Tensor> = [master, grad, m, v].into_iter().chain(work).collect();
    // Read guards on every storage for the whole launch: nothing else can take a write lock
    // (or free the buffer) meanwhile.
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut ptrs = Vec::with_capacity(guards.len());
    let mut syncs = Vec::with_capacity(guards.len());
    let mut ranges = Vec::with_capacity(guards.len());
    for (s, l) in &guards {
        let Storage::Cuda(cs) = &**s else {
            return Err(Error::msg(
                "adamw_update: all tensors must be on the same CUDA device",
            ));
        };
        let start = l.start_offset();
        let (ptr, sync, bytes) = match cs.dtype() {
            DType::F32 => {
                let (p, sy) = cs.as_cuda_slice::<f32>()?.device_ptr(&stream);
                (p + 4 * start as u64, sy, 4)
            }
            DType::BF16 => {
                let (p, sy) = cs.as_cuda_slice::<half::bf16>()?.device_ptr(&stream);
                (p + 2 * start as u64, sy, 2)
            }
            DType::F16 => {
                let (p, sy) = cs.as_cuda_slice::<half::f16>()?.device_ptr(&stream);
                (p + 2 * start as u64, sy, 2)
            }
            d => return Err(Error::msg(format!("adamw_update: unexpected dtype {d:?}"))),
        };
        ranges.push((ptr as usize, ptr as usize + bytes * n));
        ptrs.push(ptr);
        syncs.push(sync);
    }
    // The kernel writes p, m, v and work: they must not alias each other or g.
    overlapping(&mut ranges)?;
    let name = match work.map(|w| w.dtype()) {
        None => "adamw_f32",
        Some(DType::BF16) => "adamw_bf16",
        _ => "adamw_f16",
    };
    let f = func(&dev, Module::AdamW, name)?;
    let mut a = stream.launch_builder(&f);
    for p in &ptrs {
        a.arg(p);
    }
    a.arg(s).arg(&n);
    // SAFETY: every pointer addresses n elements of its tensor's dtype (f32 for p, g, m, v;
    // bf16/f16 for work), the ranges do not overlap (checked above), the read guards keep the
    // buffers alive and unlocked for writing by anyone else, and the launch is ordered on
    // candle's stream after every earlier op on these buffers. Element i is read and written
    // by one thread only.
    launched(unsafe { a.launch(elementwise_cfg(n)) })?;
    drop(syncs);
    drop(guards);
    Ok(())
}

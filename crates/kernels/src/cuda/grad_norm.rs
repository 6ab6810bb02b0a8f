//! Multi-tensor gradient norm and scaling launches (`kernels/grad_norm.cu`): the tensors are
//! cut into chunks of at most [`CHUNK`] elements, one block per chunk, so one launch covers
//! every gradient of the model.

use super::{alloc_scratch, func, launched, Module};
use crate::grad_norm::overlapping;
use candle_core::cuda::cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaDevice;
use candle_core::{Error, Result, Storage, Tensor};

const CHUNK: usize = 1 << 16;

/// Runs `launch(dev, chunk_ptrs, chunk_lens, chunks)` with the chunk table of `grads` uploaded.
fn with_chunks(
    grads: &[&Tensor],
    op: &str,
    launch: impl FnOnce(&CudaDevice, &CudaSlice<u64>, &CudaSlice<u64>, usize) -> Result<()>,
) -> Result<()> {
    let dev = grads[0].device().as_cuda_device()?.clone();
    let stream = dev.cuda_stream();
    let guards: Vec<_> = grads.iter().map(|t| t.storage_and_layout()).collect();
    let (mut ptrs, mut lens, mut syncs, mut ranges) = (vec![], vec![], vec![], vec![]);
    for ((s, l), g) in guards.iter().zip(grads) {
        let Storage::Cuda(cs) = &**s else {
            return Err(Error::msg(format!(
                "{op}: all gradients must be on one CUDA device"
            )));
        };
        let n = g.elem_count();
        if n == 0 {
            continue;
        }
        let (base, sync) = cs.as_cuda_slice::<f32>()?.device_ptr(&stream);
        let base = base + 4 * l.start_offset() as u64;
        syncs.push(sync);
        ranges.push((base as usize, base as usize + 4 * n));
        for start in (0..n).step_by(CHUNK) {
            ptrs.push(base + 4 * start as u64);
            lens.push((CHUNK.min(n - start)) as u64);
        }
    }
    overlapping(&mut ranges)?;
    let chunks = ptrs.len();
    if chunks == 0 {
        return Ok(());
    }
    let d_ptrs = dev.clone_htod(&ptrs[..])?;
    let d_lens = dev.clone_htod(&lens[..])?;
    launch(&dev, &d_ptrs, &d_lens, chunks)?;
    drop(syncs);
    drop(guards);
    Ok(())
}

fn chunk_cfg(chunks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (chunks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn norm(grads: &[&Tensor], unscale: f64) -> Result<f64> {
    let mut total = 0f64;
    with_chunks(grads, "grad_norm", |dev, d_ptrs, d_lens, chunks| {
        let stream = dev.cuda_stream();
        let mut partial = alloc_scratch(dev, chunks)?;
        let mut out = dev.alloc_zeros::<f64>(1)?;
        let unscale = unscale as f32;
        let f = func(dev, Module::GradNorm, "grad_sumsq_chunks")?;
        let mut a = stream.launch_builder(&f);
        a.arg(d_ptrs).arg(d_lens).arg(&unscale).arg(&mut partial);
        // SAFETY: chunk k addresses lens[k] f32 inside one gradient (built above from its
        // length), read only; partial holds one float per chunk. The storages' read guards
        // are held by `with_chunks` for the duration.
        launched(unsafe { a.launch(chunk_cfg(chunks)) })?;
        let f = func(dev, Module::GradNorm, "grad_norm_finish")?;
        let ci = i32::try_from(chunks).map_err(|_| Error::msg("grad_norm: too many chunks"))?;
        let mut a = stream.launch_builder(&f);
        a.arg(&partial).arg(&ci).arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one block reads partial[0..chunks] and writes out[0].
        launched(unsafe { a.launch(cfg) })?;
        total = dev.clone_dtoh(&out)?[0];
        Ok(())
    })?;
    Ok(total.sqrt())
}

pub(crate) fn scale(grads: &[&Tensor], factor: f64) -> Result<()> {
    with_chunks(grads, "scale_grads", |dev, d_ptrs, d_lens, chunks| {
        let stream = dev.cuda_stream();
        let factor = factor as f32;
        let f = func(dev, Module::GradNorm, "grad_scale_chunks")?;
        let mut a = stream.launch_builder(&f);
        a.arg(d_ptrs).arg(d_lens).arg(&factor);
        // SAFETY: chunk k addresses lens[k] f32 inside one gradient; the gradients do not
        // overlap (checked by `with_chunks`), so each element is written by one thread. The
        // read guards keep the buffers alive, and the launch is ordered on candle's stream.
        launched(unsafe { a.launch(chunk_cfg(chunks)) })
    })
}

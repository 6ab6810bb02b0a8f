//! How a CUDA device is set up for training, and its memory pool.
//!
//! cudarc allocates with `cuMemAllocAsync` from the device's default memory pool. Two of its
//! defaults cost a training loop on every tensor:
//! - the pool's release threshold is 0, so at every synchronisation (each step reads its loss)
//!   the pool hands all free memory back to the driver, and the next step maps it again;
//! - every allocation gets two CUDA events (created, then destroyed with the tensor) for
//!   ordering its uses across streams, while all our work runs on one stream.
//!
//! [`prepare_for_training`] keeps freed memory in the pool, as PyTorch's caching allocator
//! does, and turns the events off.

use candle_core::cuda::cudarc::driver::{result, sys};
use candle_core::cuda::{CudaDevice, WrapErr};
use candle_core::Result;

/// The default memory pool of `d`'s device, when cudarc allocates from it (the device supports
/// memory pools); `None` when it allocates with plain `cuMemAlloc`.
pub fn default_mem_pool(d: &CudaDevice) -> Result<Option<sys::CUmemoryPool>> {
    let stream = d.cuda_stream();
    let ctx = stream.context();
    if !ctx.has_async_alloc() {
        return Ok(None);
    }
    ctx.bind_to_thread().w()?;
    // SAFETY: `cu_device` is the device of a live context, and the default pool exists as long
    // as the device does; the handle is only passed back to the driver.
    let pool = unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }.w()?;
    Ok(Some(pool))
}

/// Sets `d` up for a training loop: freed memory stays in the pool, and allocations carry no
/// cross-stream events. Call it once, right after opening the device.
pub fn prepare_for_training(d: &CudaDevice) -> Result<()> {
    // SAFETY: the events only order a buffer's uses across streams. Every kernel, candle's and
    // ours, every copy and every NCCL collective (lantern-comm) runs on `d.cuda_stream()`, so
    // stream order alone keeps each buffer's uses in order and its free after them.
    unsafe { d.disable_event_tracking() };
    if let Some(pool) = default_mem_pool(d)? {
        let mut keep: u64 = u64::MAX;
        // SAFETY: RELEASE_THRESHOLD is a cuuint64_t attribute and `keep` is a live u64.
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep as *mut u64).cast(),
            )
        }
        .w()?;
    }
    Ok(())
}

/// What [`prepare_for_training`] set, read back from the driver and cudarc: the pool's release
/// threshold (`None` without a pool) and whether allocations still carry events.
pub fn training_setup(d: &CudaDevice) -> Result<(Option<u64>, bool)> {
    let threshold = match default_mem_pool(d)? {
        None => None,
        Some(pool) => {
            let mut v: u64 = 0;
            // SAFETY: RELEASE_THRESHOLD is a cuuint64_t attribute and `v` is a live u64.
            unsafe {
                result::mem_pool::get_attribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut v as *mut u64).cast(),
                )
            }
            .w()?;
            Some(v)
        }
    };
    Ok((threshold, d.is_event_tracking()))
}

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
pub use sys::CUmemPool_attribute as Attr;

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
    set_pool_u64(d, Attr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX)?;
    Ok(())
}

/// What [`prepare_for_training`] set, read back from the driver and cudarc: the pool's release
/// threshold (`None` without a pool) and whether allocations still carry events.
pub fn training_setup(d: &CudaDevice) -> Result<(Option<u64>, bool)> {
    let threshold = pool_u64(d, Attr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)?;
    Ok((threshold, d.is_event_tracking()))
}

/// The attributes of a memory pool whose value is a `cuuint64_t` (the others are `int`).
fn is_u64(attr: Attr) -> bool {
    matches!(
        attr,
        Attr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD
            | Attr::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT
            | Attr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH
            | Attr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT
            | Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH
    )
}

fn expect_u64(attr: Attr) -> Result<()> {
    if is_u64(attr) {
        Ok(())
    } else {
        Err(candle_core::Error::msg(format!(
            "memory pool attribute {attr:?} is not a 64-bit one"
        )))
    }
}

/// A 64-bit attribute of the default pool of `d`'s device; `None` when it has no pool.
pub fn pool_u64(d: &CudaDevice, attr: Attr) -> Result<Option<u64>> {
    expect_u64(attr)?;
    let Some(pool) = default_mem_pool(d)? else {
        return Ok(None);
    };
    let mut v: u64 = 0;
    // SAFETY: `attr` is a cuuint64_t attribute (checked above) and `v` is a live u64.
    unsafe { result::mem_pool::get_attribute(pool, attr, (&mut v as *mut u64).cast()) }.w()?;
    Ok(Some(v))
}

/// Sets a 64-bit attribute of the default pool of `d`'s device; `false` when it has no pool.
pub fn set_pool_u64(d: &CudaDevice, attr: Attr, value: u64) -> Result<bool> {
    expect_u64(attr)?;
    let Some(pool) = default_mem_pool(d)? else {
        return Ok(false);
    };
    let mut v = value;
    // SAFETY: `attr` is a cuuint64_t attribute (checked above) and `v` is a live u64.
    unsafe { result::mem_pool::set_attribute(pool, attr, (&mut v as *mut u64).cast()) }.w()?;
    Ok(true)
}

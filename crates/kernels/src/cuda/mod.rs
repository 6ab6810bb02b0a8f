//! Launches of our CUDA kernels (`kernels/*.cu`, compiled to PTX by `build.rs` and embedded
//! here) from the `cuda_fwd` of the same custom ops whose `cpu_fwd` is in [`crate::cpu`], plus
//! the fused optimizer and gradient-norm functions. Each module loads once per device (candle
//! caches it by name) and every launch goes on candle's own stream, so it is ordered with
//! candle's ops without extra synchronisation.
//!
//! Inputs must be contiguous (the public wrappers in `ops` make them so) and f32 or bf16;
//! anything else is an error that names the op, never a silent fallback.

pub(crate) mod adamw;
pub(crate) mod attention;
pub(crate) mod bias_act;
pub(crate) mod cross_entropy;
pub mod device;
pub(crate) mod dropout;
pub(crate) mod embedding;
pub(crate) mod gated;
pub(crate) mod gelu;
pub(crate) mod grad_norm;
pub(crate) mod layer_norm;
pub(crate) mod rms_norm;
pub(crate) mod rope;
pub(crate) mod softmax;

use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig,
};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{DType, Error, Layout, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// One PTX module per `.cu` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Module {
    LayerNorm,
    RmsNorm,
    Rope,
    Gelu,
    Gated,
    Softmax,
    CrossEntropy,
    AdamW,
    GradNorm,
    Attention,
    BiasAct,
    Embedding,
    Dropout,
}

impl Module {
    fn name(self) -> &'static str {
        match self {
            Module::LayerNorm => "lantern_layer_norm",
            Module::RmsNorm => "lantern_rms_norm",
            Module::Rope => "lantern_rope",
            Module::Gelu => "lantern_gelu",
            Module::Gated => "lantern_gated",
            Module::Softmax => "lantern_softmax",
            Module::CrossEntropy => "lantern_cross_entropy",
            Module::AdamW => "lantern_adamw",
            Module::GradNorm => "lantern_grad_norm",
            Module::Attention => "lantern_attention",
            Module::BiasAct => "lantern_bias_act",
            Module::Embedding => "lantern_embedding",
            Module::Dropout => "lantern_dropout",
        }
    }

    fn ptx(self) -> &'static str {
        match self {
            Module::LayerNorm => include_str!(concat!(env!("OUT_DIR"), "/layer_norm.ptx")),
            Module::RmsNorm => include_str!(concat!(env!("OUT_DIR"), "/rms_norm.ptx")),
            Module::Rope => include_str!(concat!(env!("OUT_DIR"), "/rope.ptx")),
            Module::Gelu => include_str!(concat!(env!("OUT_DIR"), "/gelu.ptx")),
            Module::Gated => include_str!(concat!(env!("OUT_DIR"), "/gated.ptx")),
            Module::Softmax => include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx")),
            Module::CrossEntropy => include_str!(concat!(env!("OUT_DIR"), "/cross_entropy.ptx")),
            Module::AdamW => include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx")),
            Module::GradNorm => include_str!(concat!(env!("OUT_DIR"), "/grad_norm.ptx")),
            Module::Attention => include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")),
            Module::BiasAct => include_str!(concat!(env!("OUT_DIR"), "/bias_act.ptx")),
            Module::Embedding => include_str!(concat!(env!("OUT_DIR"), "/embedding.ptx")),
            Module::Dropout => include_str!(concat!(env!("OUT_DIR"), "/dropout.ptx")),
        }
    }
}

/// The kernel `name` of module `m` on `dev` (the module is loaded on first use). Launch it
/// with `dev.cuda_stream().launch_builder(&f)`: candle's stream.
pub(crate) fn func(dev: &CudaDevice, m: Module, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, m.name(), m.ptx())?
        .into_cuda_function())
}

/// Threads per block of the row kernels (a multiple of 32, as the block reductions need).
pub(crate) const BLOCK: u32 = 256;

/// One block of [`BLOCK`] threads per row.
pub(crate) fn rows_cfg(rows: usize) -> Result<LaunchConfig> {
    let rows = u32::try_from(rows)
        .ok()
        .filter(|&r| r < i32::MAX as u32)
        .ok_or_else(|| Error::msg(format!("{rows} rows is too many for one launch")))?;
    Ok(LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Grid-stride elementwise launch over `n` elements.
pub(crate) fn elementwise_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A row length as the kernels' `int`.
pub(crate) fn int(op: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::msg(format!("{op}: size {n} does not fit a kernel int")))
}

/// Float types the kernels are instantiated for.
pub(crate) trait KernelFloat: CudaDType + DeviceRepr + Copy + 'static {
    const NAN: Self;
    /// The suffix of the kernel names (`layer_norm_fwd_f32`, `..._bf16`).
    const SUFFIX: &'static str;
}

impl KernelFloat for f32 {
    const NAN: Self = f32::NAN;
    const SUFFIX: &'static str = "f32";
}

impl KernelFloat for half::bf16 {
    const NAN: Self = half::bf16::NAN;
    const SUFFIX: &'static str = "bf16";
}

/// Calls `$body` with `$T` bound to f32 or bf16 after `$dtype`; other dtypes are an error.
macro_rules! with_kernel_float {
    ($dtype:expr, $op:expr, $T:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            candle_core::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            d => Err(candle_core::Error::msg(format!(
                "{}: the CUDA kernel takes f32 or bf16, got {d:?}",
                $op
            ))),
        }
    };
}
pub(crate) use with_kernel_float;

static POISON: AtomicBool = AtomicBool::new(false);

/// While on, every output buffer a kernel writes is first filled with NaN, so that an element
/// the kernel fails to write shows up as NaN instead of stale memory (`lantern selfcheck`).
pub fn set_poison_outputs(on: bool) {
    POISON.store(on, Ordering::SeqCst);
}

/// An output buffer of `n` elements: uninitialised, or NaN-filled while poisoning is on.
pub(crate) fn alloc_out<T: KernelFloat>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    if POISON.load(Ordering::SeqCst) {
        return dev.clone_htod(&vec![T::NAN; n]);
    }
    // SAFETY: every caller launches a kernel that writes all `n` elements before the buffer is
    // read (checked by `lantern selfcheck` with poisoning on).
    unsafe { dev.alloc::<T>(n) }
}

/// An f32 scratch buffer that the kernels fully write before reading.
pub(crate) fn alloc_scratch(dev: &CudaDevice, n: usize) -> Result<CudaSlice<f32>> {
    // SAFETY: as for `alloc_out`: the producing kernel writes every element first.
    unsafe { dev.alloc::<f32>(n.max(1)) }
}

/// The contiguous part of `s` that `l` describes, as a view.
pub(crate) fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::msg(format!("{op}: {what} must be contiguous")))?;
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

/// The dtype of a storage, checked to be `want`.
pub(crate) fn expect_dtype(s: &CudaStorage, want: DType, op: &str, what: &str) -> Result<()> {
    use candle_core::backend::BackendStorage;
    if s.dtype() != want {
        return Err(Error::msg(format!(
            "{op}: {what} must be {want:?}, got {:?}",
            s.dtype()
        )));
    }
    Ok(())
}

/// Converts a cudarc launch result into candle's error.
pub(crate) fn launched<T>(
    r: std::result::Result<T, candle_core::cuda::cudarc::driver::DriverError>,
) -> Result<()> {
    r.map(|_| ()).w()
}

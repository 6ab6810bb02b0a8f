//! `train.device` strings (`auto`, `cpu`, `cuda`, `cuda:N`) and the device-wide numeric
//! switches.

use crate::{Error, Result};
use candle_core::Device;

/// `auto` becomes `cuda` when this build has CUDA and the driver reports at least one GPU,
/// else `cpu` (the choice `torch.cuda.is_available()` makes for HF Trainer); any other string
/// comes back unchanged. With several ranks, `cuda` then means each rank's own GPU.
pub fn resolve_auto(s: &str) -> String {
    if s != "auto" {
        return s.to_string();
    }
    if cuda_device_count() > 0 {
        "cuda".into()
    } else {
        "cpu".into()
    }
}

/// GPUs the driver reports; 0 without CUDA support, a driver or a device.
#[cfg(feature = "cuda")]
fn cuda_device_count() -> i32 {
    // An error here (no device, no usable driver) means no GPU to train on, as for
    // `torch.cuda.is_available()`; naming a GPU explicitly (`cuda`) reports the error instead.
    candle_core::cuda::cudarc::driver::CudaContext::device_count().unwrap_or(0)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device_count() -> i32 {
    0
}

/// The device a `train.device` string names (`auto` resolved by [`resolve_auto`]), opened and
/// set up for training.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = &resolve_auto(s);
    let ordinal = match s.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => {
                return Err(Error::Config(format!(
                    "train.device = {s:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""
                )))
            }
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::Device(format!(
            "train.device = {s:?} but this build has no CUDA support: rebuild with `--features cuda`"
        )));
    }
    open_cuda(ordinal).map_err(|e| Error::Device(format!("cannot open {s}: {e}")))
}

/// CUDA device `ordinal`, set up for training (freed memory kept in the pool, no per-buffer
/// events: `lantern_kernels::cuda::device`).
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    if let Device::Cuda(d) = &device {
        lantern_kernels::cuda::device::prepare_for_training(d)?;
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    Device::new_cuda(ordinal)
}

/// `train.tf32`: on a CUDA device, lets candle's f32 matmuls use TF32 tensor cores (cuBLAS
/// `CUBLAS_COMPUTE_32F_FAST_TF32`). The switch is process-wide in candle, so it is set (on or
/// off) whenever a run opens a CUDA device; the CPU ignores it.
pub fn set_tf32(device: &Device, on: bool) {
    if device.is_cuda() {
        candle_core::cuda::set_gemm_reduced_precision_f32(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert_eq!(resolve_auto("cuda:1"), "cuda:1");
        assert_eq!(resolve_auto("cpu"), "cpu");
        if !cfg!(feature = "cuda") {
            assert_eq!(resolve_auto("auto"), "cpu");
            assert!(parse_device("auto").unwrap().is_cpu());
        }
        for bad in ["gpu", "cuda:x", "cuda:", "CPU"] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
        if !cfg!(feature = "cuda") {
            let e = parse_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        // The CPU ignores the TF32 switch (and it must not fail there).
        set_tf32(&Device::Cpu, true);
    }
}

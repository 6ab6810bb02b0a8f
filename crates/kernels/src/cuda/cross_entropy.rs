//! Fused cross-entropy launches (`kernels/cross_entropy.cu`). Shapes are checked by the custom
//! ops in `cpu::cross_entropy` first; targets are u32 (the public wrapper converts them).

use super::{
    alloc_out, alloc_scratch, expect_dtype, func, int, launched, rows_cfg, view, with_kernel_float,
    KernelFloat, Module,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{DType, Error, Layout, Result, Shape};

const OP: &str = "lantern-cross-entropy-sum (cuda)";

/// The scalar f32 loss (with `per_row`, each row's weighted loss, (N) f32) and every row's
/// logsumexp (NaN for rows skipped for weight 0).
pub(crate) fn fwd(
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_t, l_t): (&CudaStorage, &Layout),
    w: Option<(&CudaStorage, &Layout)>,
    per_row: bool,
    n: usize,
    v: usize,
) -> Result<(CudaStorage, CudaSlice<f32>)> {
    let dev = s_x.device().clone();
    let stream = dev.cuda_stream();
    expect_dtype(s_t, DType::U32, OP, "targets")?;
    let t = view::<u32>(s_t, l_t, OP, "targets")?;
    let w = match w {
        Some((s_w, l_w)) => {
            expect_dtype(s_w, DType::F32, OP, "weights")?;
            Some(view::<f32>(s_w, l_w, OP, "weights")?)
        }
        None => None,
    };
    let null = 0u64;
    // The kernel writes every row's loss (0 for skipped rows): an output when `per_row`.
    let mut loss_rows = match per_row && n > 0 {
        true => alloc_out::<f32>(&dev, n)?,
        false => alloc_scratch(&dev, n)?,
    };
    let mut lse = alloc_scratch(&dev, n)?;
    let mut bad = dev.clone_htod(&[u32::MAX][..])?;
    let vi = int(OP, v)?;
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, "logits")?;
        if n > 0 {
            let f = func(&dev, Module::CrossEntropy, &format!("cross_entropy_fwd_{}", T::SUFFIX))?;
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&t);
            match &w {
                Some(w) => a.arg(w),
                None => a.arg(&null),
            };
            a.arg(&mut loss_rows).arg(&mut lse).arg(&mut bad).arg(&vi);
            // SAFETY: x holds n * v elements, t and w n, loss_rows and lse n; one block per
            // row; a null w is checked by the kernel and means weight 1.
            launched(unsafe { a.launch(rows_cfg(n)?) })
        } else {
            Ok(())
        }
    })?;
    let loss = match per_row {
        true => loss_rows,
        false => {
            let mut loss = alloc_out::<f32>(&dev, 1)?;
            let f = func(&dev, Module::CrossEntropy, "cross_entropy_sum_rows")?;
            let ni = int(OP, n)?;
            let mut a = stream.launch_builder(&f);
            a.arg(&loss_rows).arg(&mut loss).arg(&ni);
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1024, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: one block reads loss_rows[0..n] and writes loss[0].
            launched(unsafe { a.launch(cfg) })?;
            loss
        }
    };
    // A bad target must be an error, not a wrong loss: the flag costs one 4-byte copy (and the
    // wait for this kernel), which the caller pays anyway when it reads the loss.
    let flag = dev.clone_dtoh(&bad)?[0];
    if flag != u32::MAX {
        let row = (flag - 1) as usize;
        let target = dev.clone_dtoh(&t.slice(row..row + 1))?[0];
        return Err(Error::msg(format!(
            "{OP}: target {target} at row {row} is out of range for {v} classes"
        )));
    }
    Ok((CudaStorage::wrap_cuda_slice(loss, dev.clone()), lse))
}

/// (N * V) dlogits then, with `weight_grad`, (N) dweights, in the logits' dtype. `lse` is the
/// forward's (rows with NaN, or all rows without it, are recomputed).
#[allow(clippy::too_many_arguments)]
pub(crate) fn bwd(
    (s_x, l_x): (&CudaStorage, &Layout),
    (s_t, l_t): (&CudaStorage, &Layout),
    w: Option<(&CudaStorage, &Layout)>,
    lse: Option<&CudaSlice<f32>>,
    g: f64,
    weight_grad: bool,
    n: usize,
    v: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_x.device().clone();
    let stream = dev.cuda_stream();
    expect_dtype(s_t, DType::U32, OP, "targets")?;
    let t = view::<u32>(s_t, l_t, OP, "targets")?;
    let w = match w {
        Some((s_w, l_w)) => {
            expect_dtype(s_w, DType::F32, OP, "weights")?;
            Some(view::<f32>(s_w, l_w, OP, "weights")?)
        }
        None => None,
    };
    let lse = lse.filter(|l| l.len() == n);
    let null = 0u64;
    let len = n * v + if weight_grad { n } else { 0 };
    let (vi, gf) = (int(OP, v)?, g as f32);
    with_kernel_float!(s_x.dtype(), OP, T => {
        let x = view::<T>(s_x, l_x, OP, "logits")?;
        let mut out = alloc_out::<T>(&dev, len)?;
        if n > 0 {
            let (mut dx, mut dw) = out.split_at_mut(n * v);
            let f = func(&dev, Module::CrossEntropy, &format!("cross_entropy_bwd_{}", T::SUFFIX))?;
            let mut a = stream.launch_builder(&f);
            a.arg(&x).arg(&t);
            match &w {
                Some(w) => a.arg(w),
                None => a.arg(&null),
            };
            match lse {
                Some(l) => a.arg(l),
                None => a.arg(&null),
            };
            a.arg(&mut dx);
            if weight_grad {
                a.arg(&mut dw);
            } else {
                a.arg(&null);
            }
            a.arg(&gf).arg(&vi);
            // SAFETY: x and dx hold n * v elements, t, w, lse and dw n (dw is passed only when
            // the buffer has those n extra elements); null pointers are checked by the kernel.
            launched(unsafe { a.launch(rows_cfg(n)?) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(len)))
    })
}

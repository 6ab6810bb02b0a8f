//! Masked softmax launches (`kernels/softmax.cu`).

use super::{
    alloc_out, func, int, launched, rows_cfg, view, with_kernel_float, KernelFloat, Module,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda::CudaStorage;
use candle_core::{Error, Layout, Result, Shape};

const OP: &str = "lantern-masked-softmax (cuda)";

/// `MaskIndex` of softmax.cu: the mask's dims and element strides, padded on the left to four.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct MaskIndex {
    dims: [i64; 4],
    strides: [i64; 4],
    start: i64,
}

// SAFETY: a plain #[repr(C)] struct of nine i64, laid out as the C struct the kernel takes.
unsafe impl DeviceRepr for MaskIndex {}

fn mask_index(l: &Layout) -> Result<MaskIndex> {
    let nd = l.dims().len();
    if nd > 4 {
        return Err(Error::msg(format!(
            "{OP}: a mask of rank {nd} is not supported (at most 4)"
        )));
    }
    let mut mi = MaskIndex {
        dims: [1; 4],
        strides: [0; 4],
        start: l.start_offset() as i64,
    };
    for (k, (&d, &s)) in l.dims().iter().zip(l.stride()).enumerate() {
        mi.dims[4 - nd + k] = d as i64;
        mi.strides[4 - nd + k] = s as i64;
    }
    Ok(mi)
}

/// y = softmax(s * scale + mask) over the last dimension (length c). The mask, if any, has the
/// scores' shape (broadcast, any strides) and dtype.
pub(crate) fn fwd(
    scale: f64,
    (s, l): (&CudaStorage, &Layout),
    mask: Option<(&CudaStorage, &Layout)>,
    c: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s.device().clone();
    let n = l.shape().elem_count();
    let rows = n / c;
    with_kernel_float!(s.dtype(), OP, T => {
        let x = view::<T>(s, l, OP, "scores")?;
        let mut y = alloc_out::<T>(&dev, n)?;
        if rows > 0 {
            let stream = dev.cuda_stream();
            let (ci, scalef) = (int(OP, c)?, scale as f32);
            match mask {
                None => {
                    let f = func(&dev, Module::Softmax, &format!("softmax_fwd_{}", T::SUFFIX))?;
                    let mut a = stream.launch_builder(&f);
                    a.arg(&x).arg(&mut y).arg(&ci).arg(&scalef);
                    // SAFETY: x and y hold rows * c elements; one block per row.
                    launched(unsafe { a.launch(rows_cfg(rows)?) })?;
                }
                Some((s_m, l_m)) => {
                    let mi = mask_index(l_m)?;
                    // The whole allocation: the kernel indexes it through start and strides.
                    let m = s_m.as_cuda_slice::<T>()?;
                    let f = func(&dev, Module::Softmax, &format!("softmax_masked_fwd_{}", T::SUFFIX))?;
                    let mut a = stream.launch_builder(&f);
                    a.arg(&x).arg(m).arg(&mi).arg(&mut y).arg(&ci).arg(&scalef);
                    // SAFETY: x and y hold rows * c elements. The mask layout has the scores'
                    // shape, so start + sum(index * stride) stays inside the mask's storage, as
                    // it does for candle's own strided kernels.
                    launched(unsafe { a.launch(rows_cfg(rows)?) })?;
                }
            }
        }
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), l.shape().clone()))
    })
}

/// ds = scale * y * (dy - sum(dy * y)); y and dy have the same shape (checked by the op).
pub(crate) fn bwd(
    scale: f64,
    (s_y, l_y): (&CudaStorage, &Layout),
    (s_dy, l_dy): (&CudaStorage, &Layout),
    c: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = s_y.device().clone();
    let n = l_y.shape().elem_count();
    let rows = n / c;
    with_kernel_float!(s_y.dtype(), OP, T => {
        let y = view::<T>(s_y, l_y, OP, "y")?;
        let dy = view::<T>(s_dy, l_dy, OP, "dy")?;
        let mut ds = alloc_out::<T>(&dev, n)?;
        if rows > 0 {
            let f = func(&dev, Module::Softmax, &format!("softmax_bwd_{}", T::SUFFIX))?;
            let stream = dev.cuda_stream();
            let (ci, scalef) = (int(OP, c)?, scale as f32);
            let mut a = stream.launch_builder(&f);
            a.arg(&y).arg(&dy).arg(&mut ds).arg(&ci).arg(&scalef);
            // SAFETY: y, dy and ds hold rows * c elements; one block per row.
            launched(unsafe { a.launch(rows_cfg(rows)?) })?;
        }
        Ok((CudaStorage::wrap_cuda_slice(ds, dev.clone()), l_y.shape().clone()))
    })
}

//! Fused multiply-add, `a·b + c` rounded once, for the optimizer updates.
//!
//! torch's CPU and CUDA kernels compute `add(.., alpha)`, `addcmul` and `lerp` as fused
//! multiply-adds (measured on torch 2.15's CPU kernels: 0 of 30,000 elements differ from a
//! single-rounding `a·b + c`, 2% differ from a multiply and an add). candle has no such op, and
//! two roundings drift past 1e-6 relative from torch within 20 steps; with these, SGD matches
//! torch bit for bit.
//!
//! On the CPU the op is a custom op over `f32::mul_add` (one pass, no temporaries), compiled
//! with AVX2 and hardware FMA where the CPU has them (`lantern_kernels::cpu::with_simd`; the same bits). Elsewhere
//! it is computed in f64: the product of two f32 values is exact there, so only the sum is
//! rounded (to f64 and then to f32, which differs from one rounding only when the f64 sum lies
//! exactly halfway between two f32 values).

use crate::Result;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Error, Layout, Shape, Tensor};

/// `a·b + c`, all f32 of one shape.
pub(super) fn fma(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    if a.device().is_cpu() {
        return Ok(a
            .contiguous()?
            .apply_op3_no_bwd(&b.contiguous()?, &c.contiguous()?, &Fma)?);
    }
    fma_wide(a, b, c)
}

/// `a·s + c` for f32 tensors of one shape; `s` is first rounded to f32, as torch rounds the
/// scalar of `add(.., alpha=s)`.
pub(super) fn fma_s(a: &Tensor, s: f64, c: &Tensor) -> Result<Tensor> {
    let s = s as f32;
    if a.device().is_cpu() {
        return Ok(a
            .contiguous()?
            .apply_op2_no_bwd(&c.contiguous()?, &FmaScalar(s))?);
    }
    fma_wide(a, &Tensor::full(s, a.shape(), a.device())?, c)
}

/// The f64 form, for devices without the custom op.
fn fma_wide(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    let prod = (a.to_dtype(DType::F64)? * b.to_dtype(DType::F64)?)?;
    Ok((prod + c.to_dtype(DType::F64)?)?.to_dtype(DType::F32)?)
}

/// The contiguous f32 data of one input.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::msg(format!("{op}: inputs must be contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        other => Err(Error::msg(format!(
            "{op}: expected f32, got {:?}",
            other.dtype()
        ))),
    }
}

fn same_shape(op: &str, a: &Layout, other: &Layout) -> candle_core::Result<()> {
    if a.shape() != other.shape() {
        return Err(Error::msg(format!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape(),
            other.shape()
        )));
    }
    Ok(())
}

struct Fma;

impl CustomOp3 for Fma {
    fn name(&self) -> &'static str {
        "lantern-fma"
    }

    fn cpu_fwd(
        &self,
        s_a: &CpuStorage,
        l_a: &Layout,
        s_b: &CpuStorage,
        l_b: &Layout,
        s_c: &CpuStorage,
        l_c: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = self.name();
        same_shape(op, l_a, l_b)?;
        same_shape(op, l_a, l_c)?;
        let (a, b, c) = (
            f32_slice(s_a, l_a, op)?,
            f32_slice(s_b, l_b, op)?,
            f32_slice(s_c, l_c, op)?,
        );
        let out = lantern_kernels::cpu::with_simd(|| {
            a.iter()
                .zip(b)
                .zip(c)
                .map(|((a, b), c)| a.mul_add(*b, *c))
                .collect()
        });
        Ok((CpuStorage::F32(out), l_a.shape().clone()))
    }
}

struct FmaScalar(f32);

impl CustomOp2 for FmaScalar {
    fn name(&self) -> &'static str {
        "lantern-fma-scalar"
    }

    fn cpu_fwd(
        &self,
        s_a: &CpuStorage,
        l_a: &Layout,
        s_c: &CpuStorage,
        l_c: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = self.name();
        same_shape(op, l_a, l_c)?;
        let (a, c) = (f32_slice(s_a, l_a, op)?, f32_slice(s_c, l_c, op)?);
        let out = lantern_kernels::cpu::with_simd(|| {
            a.iter()
                .zip(c)
                .map(|(a, c)| a.mul_add(self.0, *c))
                .collect()
        });
        Ok((CpuStorage::F32(out), l_a.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Inputs where one rounding and two differ: (1 + 2⁻¹²)² = 1 + 2⁻¹¹ + 2⁻²⁴, whose last
    /// term a separate multiply rounds away before the − 1 − 2⁻¹¹ that would reveal it.
    #[test]
    fn rounds_once_on_cpu_and_in_the_f64_path() {
        let x = 1.0f32 + 2f32.powi(-12);
        let c = -(1.0f32 + 2f32.powi(-11));
        let dev = Device::Cpu;
        let t = |v: f32| Tensor::new(&[v, 2.0][..], &dev).unwrap();
        let want = [2f32.powi(-24), 2.0f32.mul_add(2.0, 1.0)];
        let (a, b, cc) = (t(x), t(x), Tensor::new(&[c, 1.0][..], &dev).unwrap());
        let got: Vec<f32> = fma(&a, &b, &cc).unwrap().to_vec1().unwrap();
        assert_eq!(got, want);
        let got: Vec<f32> = fma_s(&a, x as f64, &cc).unwrap().to_vec1().unwrap();
        assert_eq!(got[0], want[0]);
        // Two roundings lose the 2⁻²⁴ entirely.
        let unfused: Vec<f32> = ((&a * &b).unwrap() + &cc).unwrap().to_vec1().unwrap();
        assert_eq!(unfused[0], 0.0);
        // The f64 path (taken off the CPU) on the same inputs.
        let got: Vec<f32> = fma_wide(&a, &b, &cc).unwrap().to_vec1().unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_mismatched_shapes() {
        let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let c = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let e = fma(&a, &a, &c).unwrap_err().to_string();
        assert!(e.contains("lantern-fma") && e.contains("differ"), "{e}");
    }
}

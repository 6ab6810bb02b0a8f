//! The gated activation of a feed-forward block, `y = act(g) · u`: SwiGLU with SiLU (Llama,
//! Mistral, Qwen, …), GeGLU with the tanh GELU (Gemma) or the exact erf GELU (ModernBERT),
//! fused into one pass each way.
//!
//! Backward, from dy: `dg = dy · u · act'(g)` and `du = dy · act(g)`, both from one read of
//! g, u and dy. candle's composite runs `silu` (a libm `exp` per element), the product, and a
//! backward of seven tensor ops (the sigmoid again, `1 − y`, products, sums), each a pass over
//! memory and a fresh tensor; here the exp is the vectorisable `Real::exp` and each direction
//! is one pass.
//!
//! SiLU: with `s = 1 / (1 + e^{-x})`, `f(x) = x s`, `f'(x) = s (1 + x (1 − s))`. For very
//! negative x, e^{-x} = inf gives s = 0, f = −0 and f' = 0: no NaN from the exp's range.
//! The GELUs are [`super::gelu`]'s, formulas and constants alike.

use super::gelu::{Act, ErfGelu, TanhGelu};
use super::{float_dtype, for_row_blocks, simd_kernel, slice, with_float, Real};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor};

/// The activation of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `silu(g) · u` (transformers' `act_fn` "silu", Llama's SwiGLU).
    Silu,
    /// `gelu_tanh(g) · u` (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
    /// `gelu(g) · u` with the exact erf GELU (ModernBERT's `Wi` input and gate).
    GeluErf,
}

/// Backward: (g, u, dy) → (2, ..): `dg` then `du`, each of g's shape.
#[derive(Debug, Clone, Copy)]
pub struct GateBwd(pub Gate);

/// SiLU as an [`Act`].
pub(crate) struct Silu;

impl Act for Silu {
    #[inline(always)]
    fn f<T: Real>(x: T) -> T {
        x * sigmoid(x)
    }
    #[inline(always)]
    fn df<T: Real>(x: T) -> T {
        let s = sigmoid(x);
        s * (T::ONE + x * (T::ONE - s))
    }
    #[inline(always)]
    fn f_df<T: Real>(x: T) -> (T, T) {
        let s = sigmoid(x);
        (x * s, s * (T::ONE + x * (T::ONE - s)))
    }
}

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

/// Evaluates `$body` with `$A` bound to the [`Act`] type of the [`Gate`] `$gate`.
macro_rules! with_gate {
    ($gate:expr, $A:ident => $body:expr) => {
        match $gate {
            Gate::Silu => {
                type $A = Silu;
                $body
            }
            Gate::GeluTanh => {
                type $A = TanhGelu;
                $body
            }
            Gate::GeluErf => {
                type $A = ErfGelu;
                $body
            }
        }
    };
}

/// Elementwise work is cut into fixed-size pieces for the thread pool.
const PIECE: usize = 4096;

simd_kernel! {
/// y = A(g) · u, elementwise.
fn fwd<T: Real, A: Act>(g: &[T], u: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; g.len()];
    for_row_blocks(&mut y, PIECE, PIECE, |first, out| {
        let off = first * PIECE;
        let (g, u) = (&g[off..][..out.len()], &u[off..][..out.len()]);
        for ((o, &a), &b) in out.iter_mut().zip(g).zip(u) {
            *o = A::f(a) * b;
        }
    });
    y
}
}

simd_kernel! {
/// [dg, du] with dg = dy · u · A'(g) and du = dy · A(g), elementwise: 2n values.
fn bwd<T: Real, A: Act>(g: &[T], u: &[T], dy: &[T]) -> Vec<T> {
    let n = g.len();
    let mut out = vec![T::ZERO; 2 * n];
    let (dg, du) = out.split_at_mut(n);
    // Pieces of dg and du side by side, so that one task reads each element of g, u, dy once.
    let mut pairs: Vec<(&mut [T], &mut [T])> =
        dg.chunks_mut(PIECE).zip(du.chunks_mut(PIECE)).collect();
    for_row_blocks(&mut pairs, 1, PIECE, |first, block| {
        for (k, (dg, du)) in block.iter_mut().enumerate() {
            let off = (first + k) * PIECE;
            let len = dg.len();
            let (g, u, dy) = (&g[off..][..len], &u[off..][..len], &dy[off..][..len]);
            let outs = dg.iter_mut().zip(du.iter_mut());
            for (((dg, du), &a), (&b, &d)) in outs.zip(g).zip(u.iter().zip(dy)) {
                let (f, df) = A::f_df(a);
                *dg = d * b * df;
                *du = d * f;
            }
        }
    });
    out
}
}

fn same_shapes(op: &str, shapes: &[(&str, &Layout)]) -> Result<()> {
    let (first, l0) = shapes[0];
    for &(name, l) in &shapes[1..] {
        if l.shape() != l0.shape() {
            return Err(Error::msg(format!(
                "{op}: {first} is {:?}, {name} is {:?}",
                l0.shape(),
                l.shape()
            )));
        }
    }
    Ok(())
}

/// The (2, ..) shape of the backward's output for inputs of `shape`.
fn pair_shape(shape: &Shape) -> Shape {
    let mut dims = vec![2];
    dims.extend_from_slice(shape.dims());
    Shape::from(dims)
}

impl CustomOp2 for Gate {
    fn name(&self) -> &'static str {
        match self {
            Gate::Silu => "lantern-swiglu",
            Gate::GeluTanh => "lantern-geglu-tanh",
            Gate::GeluErf => "lantern-geglu-erf",
        }
    }

    fn cpu_fwd(
        &self,
        s_g: &CpuStorage,
        l_g: &Layout,
        s_u: &CpuStorage,
        l_u: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        same_shapes(op, &[("gate", l_g), ("up", l_u)])?;
        let y = with_float!(float_dtype(s_g, op)?, T => {
            let g: &[T] = slice(s_g, l_g, op, "gate")?;
            let u: &[T] = slice(s_u, l_u, op, "up")?;
            T::to_cpu_storage_owned(with_gate!(*self, A => fwd::<T, A>(g, u)))
        });
        Ok((y, l_g.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_g: &CudaStorage,
        l_g: &Layout,
        s_u: &CudaStorage,
        l_u: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        same_shapes(self.name(), &[("gate", l_g), ("up", l_u)])?;
        crate::cuda::gated::fwd(*self, (s_g, l_g), (s_u, l_u))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = g.apply_op3_no_bwd(u, &dy.contiguous()?, &GateBwd(*self))?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

impl CustomOp3 for GateBwd {
    fn name(&self) -> &'static str {
        "lantern-gated-bwd"
    }

    fn cpu_fwd(
        &self,
        s_g: &CpuStorage,
        l_g: &Layout,
        s_u: &CpuStorage,
        l_u: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        same_shapes(op, &[("gate", l_g), ("up", l_u), ("dy", l_dy)])?;
        let out = with_float!(float_dtype(s_g, op)?, T => {
            let g: &[T] = slice(s_g, l_g, op, "gate")?;
            let u: &[T] = slice(s_u, l_u, op, "up")?;
            let dy: &[T] = slice(s_dy, l_dy, op, "dy")?;
            T::to_cpu_storage_owned(with_gate!(self.0, A => bwd::<T, A>(g, u, dy)))
        });
        Ok((out, pair_shape(l_g.shape())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_g: &CudaStorage,
        l_g: &Layout,
        s_u: &CudaStorage,
        l_u: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        same_shapes(self.name(), &[("gate", l_g), ("up", l_u), ("dy", l_dy)])?;
        let out = crate::cuda::gated::bwd(self.0, (s_g, l_g), (s_u, l_u), (s_dy, l_dy))?;
        Ok((out, pair_shape(l_g.shape())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Tensor};

    type F = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
    const PAIRS: [(F, F); 3] = [
        (ops::swiglu, reference::swiglu),
        (ops::geglu_tanh, reference::geglu_tanh),
        (ops::geglu_erf, reference::geglu_erf),
    ];

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(31);
        for (op, reference) in PAIRS {
            // Pieces of 4096 and a ragged last one, and a single element.
            for shape in [&[1][..], &[3, 7], &[2, 5, 129], &[64, 300]] {
                let g = randn(&mut rng, shape, 3.0, DType::F32);
                let u = randn(&mut rng, shape, 1.0, DType::F32);
                let (a, b) = (op(&g, &u).unwrap(), reference(&g, &u).unwrap());
                assert_close(&a, &b, 1e-6, "forward");
                // candle's GELU backward rounds its constants to six digits, hence 1e-5.
                compare_with_reference(
                    &mut rng,
                    &[g, u],
                    &[true, true],
                    |v| op(&v[0], &v[1]),
                    |v| reference(&v[0], &v[1]),
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(32);
        for (op, _) in PAIRS {
            let g = randn(&mut rng, &[4, 9], 2.0, DType::F64);
            let u = randn(&mut rng, &[4, 9], 1.0, DType::F64);
            grad_check(&mut rng, &[g, u], &[true, true], |v| op(&v[0], &v[1]));
        }
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(33);
        for (op, _) in PAIRS {
            let g = randn(&mut rng, &[100, 700], 2.0, DType::F32);
            let u = randn(&mut rng, &[100, 700], 1.0, DType::F32);
            assert_deterministic(&mut rng, &[g, u], |v| op(&v[0], &v[1]));
        }
    }

    #[test]
    fn extreme_gates_stay_finite() {
        // e^{-g} overflows for g far below 0: the SiLU is −0, its derivative 0, no NaN.
        let g = Tensor::new(
            &[-1e4f32, -100.0, 0.0, 100.0, 1e4],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let u = Tensor::new(&[1f32, 2.0, 3.0, 4.0, 5.0], &candle_core::Device::Cpu).unwrap();
        let y: Vec<f32> = ops::swiglu(&g, &u).unwrap().to_vec1().unwrap();
        assert_eq!(y, [0.0, 0.0, 0.0, 400.0, 5e4]);
    }

    #[test]
    fn mismatched_shapes_are_named() {
        let g = Tensor::zeros((2, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
        let u = Tensor::zeros((3, 2), DType::F32, &candle_core::Device::Cpu).unwrap();
        let e = ops::swiglu(&g, &u).unwrap_err().to_string();
        assert!(e.contains("gate is [2, 3], up is [3, 2]"), "{e}");
    }
}

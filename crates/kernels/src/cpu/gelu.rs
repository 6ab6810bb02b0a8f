//! GELU (Hendrycks, Gimpel 2016), both forms, with exact derivatives.
//!
//! tanh form (`gelu_new`, GPT-2): with `k = sqrt(2/pi)`, `u = k (x + 0.044715 x^3)`, `t = tanh u`
//! and `s = (1 + t)/2 = 1 / (1 + e^{-2u})` (the logistic function of 2u):
//!   y  = x/2 (1 + t)                                   = x s
//!   y' = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 * 0.044715 x^2) = s + 2 x s (1 - s) k (1 + 3 * 0.044715 x^2)
//! erf form (`gelu`, BERT): with `phi(x) = exp(-x^2/2) / sqrt(2 pi)`:
//!   y  = x/2 (1 + erf(x / sqrt 2))    = x/2 erfc(-x / sqrt 2)
//!   y' = (1 + erf(x / sqrt 2))/2 + x phi(x)
//! The tanh form is computed through `s`, with one exp (`Real::exp`, vectorisable in f32) where
//! candle's `gelu` calls libm's tanh; the erf form through erfc (`Real::erfc`, vectorisable in
//! f32) where candle's `gelu_erf` calls libm's erf. Both are within 1e-6 of candle's results
//! and more accurate for negative x, where `1 + t` and `1 + erf` cancel and `x s` and `erfc`
//! do not. candle's own backward uses constants rounded to six digits; these derivatives are
//! exact.

use super::{float_dtype, for_row_blocks, simd_kernel, slice, with_float, Real};
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Error, Layout, Result, Shape, Tensor};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7; // 1 / sqrt(2 pi)
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const C3: f64 = 0.044715;

/// Which GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    Tanh,
    Erf,
}

/// Backward: (x, dy) -> dx.
#[derive(Debug, Clone, Copy)]
pub struct GeluBwd(pub Gelu);

/// An activation and its derivative as a type: a loop generic over it is compiled once per
/// activation, with the formula inlined and vectorised, where a `match` on [`Gelu`] per element
/// would keep the loop scalar. [`with_act!`] picks the type for a runtime choice.
pub(crate) trait Act {
    fn f<T: Real>(x: T) -> T;
    fn df<T: Real>(x: T) -> T;
    /// Both at once, for a backward that needs the value too (the gated activations'); an
    /// activation overrides it to share its exp.
    #[inline(always)]
    fn f_df<T: Real>(x: T) -> (T, T) {
        (Self::f(x), Self::df(x))
    }
}

/// No activation (a plain bias add).
pub(crate) struct Identity;
/// GELU, tanh form.
pub(crate) struct TanhGelu;
/// GELU, erf form.
pub(crate) struct ErfGelu;

impl Act for Identity {
    #[inline(always)]
    fn f<T: Real>(x: T) -> T {
        x
    }
    #[inline(always)]
    fn df<T: Real>(_: T) -> T {
        T::ONE
    }
}

impl Act for TanhGelu {
    #[inline(always)]
    fn f<T: Real>(x: T) -> T {
        x * sigmoid_2u(x)
    }
    #[inline(always)]
    fn df<T: Real>(x: T) -> T {
        let s = sigmoid_2u(x);
        let k = T::from_f64(2.0 * SQRT_2_OVER_PI);
        s + x * s * (T::ONE - s) * k * (T::ONE + T::from_f64(3.0 * C3) * x * x)
    }
    #[inline(always)]
    fn f_df<T: Real>(x: T) -> (T, T) {
        // f and df above with their one sigmoid shared: the same operations, the same bits.
        let s = sigmoid_2u(x);
        let k = T::from_f64(2.0 * SQRT_2_OVER_PI);
        let df = s + x * s * (T::ONE - s) * k * (T::ONE + T::from_f64(3.0 * C3) * x * x);
        (x * s, df)
    }
}

impl Act for ErfGelu {
    #[inline(always)]
    fn f<T: Real>(x: T) -> T {
        // 1 + erf(x / sqrt 2) = erfc(-x / sqrt 2), without the cancellation for negative x.
        (-x * T::from_f64(FRAC_1_SQRT_2)).erfc() * T::from_f64(0.5) * x
    }
    #[inline(always)]
    fn df<T: Real>(x: T) -> T {
        let half = T::from_f64(0.5);
        half * (-x * T::from_f64(FRAC_1_SQRT_2)).erfc()
            + x * T::from_f64(INV_SQRT_2PI) * (-half * x * x).exp()
    }
}

/// Evaluates `$body` with `$A` bound to the [`Act`] type of `$act`, an `Option<Gelu>` (`None`
/// is [`Identity`]).
macro_rules! with_act {
    ($act:expr, $A:ident => $body:expr) => {
        match $act {
            None => {
                type $A = $crate::cpu::gelu::Identity;
                $body
            }
            Some($crate::cpu::gelu::Gelu::Tanh) => {
                type $A = $crate::cpu::gelu::TanhGelu;
                $body
            }
            Some($crate::cpu::gelu::Gelu::Erf) => {
                type $A = $crate::cpu::gelu::ErfGelu;
                $body
            }
        }
    };
}
pub(crate) use with_act;

/// `s = 1 / (1 + e^{-2u})` with `u = k (x + 0.044715 x^3)`. e^{-2u} = inf for very negative x
/// gives s = 0, and 0 for large x gives s = 1: no NaN from the exp's range.
#[inline(always)]
fn sigmoid_2u<T: Real>(x: T) -> T {
    let (k2, c3) = (T::from_f64(-2.0 * SQRT_2_OVER_PI), T::from_f64(C3));
    T::ONE / (T::ONE + (k2 * x * (T::ONE + c3 * x * x)).exp())
}

/// Elementwise work is cut into fixed-size pieces for the thread pool.
const PIECE: usize = 4096;

simd_kernel! {
/// y = A(x), elementwise.
fn map<T: Real, A: Act>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    for_row_blocks(&mut y, PIECE, PIECE, |first, out| {
        let x = &x[first * PIECE..][..out.len()];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = A::f(v);
        }
    });
    y
}
}

simd_kernel! {
/// dx = dy A'(x), elementwise.
fn map_bwd<T: Real, A: Act>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; x.len()];
    for_row_blocks(&mut dx, PIECE, PIECE, |first, out| {
        let off = first * PIECE;
        let (x, dy) = (&x[off..][..out.len()], &dy[off..][..out.len()]);
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
            *o = g * A::df(v);
        }
    });
    dx
}
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        match self {
            Gelu::Tanh => "lantern-gelu-tanh",
            Gelu::Erf => "lantern-gelu-erf",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let y = with_float!(float_dtype(s, op)?, T => {
            let x: &[T] = slice(s, l, op, "x")?;
            T::to_cpu_storage_owned(with_act!(Some(*self), A => map::<T, A>(x)))
        });
        Ok((y, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        crate::cuda::gelu::fwd(*self, s, l)
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &GeluBwd(*self))?,
        ))
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "lantern-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_dy: &CpuStorage,
        l_dy: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        if l_x.shape() != l_dy.shape() {
            return Err(Error::msg(format!(
                "{op}: x is {:?}, dy is {:?}",
                l_x.shape(),
                l_dy.shape()
            )));
        }
        let dx = with_float!(float_dtype(s_x, op)?, T => {
            let x: &[T] = slice(s_x, l_x, op, "x")?;
            let dy: &[T] = slice(s_dy, l_dy, op, "dy")?;
            T::to_cpu_storage_owned(with_act!(Some(self.0), A => map_bwd::<T, A>(x, dy)))
        });
        Ok((dx, l_x.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s_x: &CudaStorage,
        l_x: &Layout,
        s_dy: &CudaStorage,
        l_dy: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        if l_x.shape() != l_dy.shape() {
            return Err(Error::msg(format!(
                "{}: x is {:?}, dy is {:?}",
                self.name(),
                l_x.shape(),
                l_dy.shape()
            )));
        }
        crate::cuda::gelu::bwd(self.0, (s_x, l_x), (s_dy, l_dy))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::{ops, reference, Rng};
    use candle_core::{DType, Tensor};

    type F = fn(&Tensor) -> candle_core::Result<Tensor>;
    const PAIRS: [(F, F); 2] = [
        (ops::gelu_tanh, reference::gelu_tanh),
        (ops::gelu_erf, reference::gelu_erf),
    ];

    #[test]
    fn matches_reference_forward_and_backward() {
        let mut rng = Rng::new(21);
        // Through e^{-2u} and erfc instead of libm's tanh and erf: a few ulp apart.
        for (op, reference) in PAIRS {
            for shape in [&[1][..], &[3, 7], &[2, 5, 129], &[64, 300]] {
                let x = randn(&mut rng, shape, 2.0, DType::F32);
                assert_close(&op(&x).unwrap(), &reference(&x).unwrap(), 1e-6, "forward");
                // candle's backward rounds its constants to six digits, hence 1e-5 and not less.
                compare_with_reference(
                    &mut rng,
                    &[x],
                    &[true],
                    |v| op(&v[0]),
                    |v| reference(&v[0]),
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn finite_differences_f64() {
        let mut rng = Rng::new(22);
        for (op, _) in PAIRS {
            let x = randn(&mut rng, &[4, 9], 2.0, DType::F64);
            grad_check(&mut rng, &[x], &[true], |v| op(&v[0]));
        }
    }

    #[test]
    fn bit_identical_across_runs_and_thread_counts() {
        let mut rng = Rng::new(23);
        for (op, _) in PAIRS {
            let x = randn(&mut rng, &[100, 700], 2.0, DType::F32);
            assert_deterministic(&mut rng, &[x], |v| op(&v[0]));
        }
    }
}

//! Fused CPU kernels: one candle custom op per forward, one per backward.
//!
//! Each op reads contiguous f32 or f64 storage (the public wrappers in `ops` convert other dtypes
//! to f32 and make inputs contiguous first) and works one row at a time. Rows are independent,
//! so they are spread over rayon's threads; every reduction inside a row, and every reduction
//! across rows (the norms' weight and bias gradients, the loss sum), runs in a fixed order
//! that depends only on the shape. Results are therefore bit-identical run to run and for any
//! number of threads, which exact resume relies on.

pub mod attention;
pub mod bias_act;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod gated;
pub mod gelu;
pub mod gemv;
pub mod layer_norm;
mod math;
pub mod rms_norm;
pub mod rope;
pub mod softmax;

#[cfg(test)]
pub(crate) mod testutil;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Error, Layout, Result, WithDType};
use rayon::prelude::*;

/// The float types the kernels are written for: f32 for training, f64 for gradient checks.
pub trait Real: WithDType + Copy + Send + Sync + std::ops::Neg<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    /// e^x; for f32 [`math::exp_f32`] (within 1 ulp, vectorisable), for f64 the library's.
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    /// The complementary error function; for f32 [`math::erfc_f32`] (vectorisable), for f64
    /// libm's.
    fn erfc(self) -> Self;
    fn fmax(self, other: Self) -> Self;
}

macro_rules! impl_real {
    ($t:ty, $exp:path, $erfc:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn erfc(self) -> Self {
                $erfc(self)
            }
            #[inline(always)]
            fn fmax(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
        }
    };
}
// f32, the training dtype, has exp and erfc without libm so that loops vectorise (`math`);
// f64, the gradient checks' dtype, keeps the library's.
impl_real!(f32, math::exp_f32, math::erfc_f32);
impl_real!(f64, f64::exp, libm::erfc);

/// Sum of `f(0) + .. + f(n-1)` in eight interleaved lanes (`f(j)` goes to lane `j % 8`, in
/// increasing `j`), combined pairwise at the end: the order is fixed by `n` alone
/// (deterministic), and its rounding error is lower than one running sum's. The terms are
/// first written to a block of 64 and then added: the loop that fills the block vectorises
/// (with the exp of `Real` for f32, a softmax's or a loss's sum of exponentials runs 4 lanes at
/// a time), where evaluating `f` straight into the lanes stays scalar.
#[inline(always)]
pub(crate) fn sum8<T: Real>(n: usize, f: impl Fn(usize) -> T) -> T {
    const BLOCK: usize = 64;
    let mut acc = [T::ZERO; 8];
    let mut buf = [T::ZERO; BLOCK];
    let full = n - n % BLOCK;
    let mut i = 0;
    while i < full {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = f(i + k);
        }
        for c in buf.chunks_exact(8) {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        i += BLOCK;
    }
    for j in full..n {
        acc[j % 8] += f(j);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Largest element of a row (`-inf` for an empty or fully masked row; NaNs are skipped, as
/// `f32::max` does). `max` is exact, so the order does not matter for the result; eight lanes
/// let it vectorise.
#[inline(always)]
pub(crate) fn row_max<T: Real>(row: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = if v > *a { v } else { *a };
    }
    acc.iter().fold(T::NEG_INFINITY, |m, &v| m.fmax(v))
}

/// Whether the CPU has AVX2 and FMA (x86-64 since 2013), for [`with_simd`] and
/// [`simd_kernel!`]. std caches the detection: this is a load and a test.
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(test)]
    if BASELINE_ONLY.with(|b| b.get()) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
thread_local! {
    static BASELINE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the kernels it calls on this thread in their baseline code, also where the
/// CPU has AVX2 and FMA: the tests compare the two for the same bits.
#[cfg(test)]
pub(crate) fn baseline_only<R>(f: impl FnOnce() -> R) -> R {
    BASELINE_ONLY.with(|b| b.set(true));
    let r = f();
    BASELINE_ONLY.with(|b| b.set(false));
    r
}

/// Why compiling for AVX2 and FMA at run time gives the same bits as the baseline code: Rust
/// never fuses a multiply and an add on its own, and LLVM does not reorder float operations, so
/// the wider vectors compute exactly the baseline's operations, lane by lane; `f32::mul_add`
/// is one rounding by definition. What changes is the speed: the baseline x86-64 target has
/// 4-lane SSE2 vectors, no 8-lane integer shifts for `exp`'s exponent bits, and makes every
/// `mul_add` a library call that keeps its loop scalar.
///
/// `with_simd` runs `body` compiled for AVX2 and FMA where the CPU has both, else as it is.
/// It only helps when `body` is inlined into the enabled frame, which LLVM decides: use it for
/// short closures used once (the optimizers' elementwise passes), and [`simd_kernel!`] for a
/// kernel with closures of its own, which it compiles for AVX2 and FMA whatever gets inlined.
#[inline(always)]
pub fn with_simd<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn simd_frame<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if has_avx2_fma() {
            // SAFETY: `simd_frame` only requires the CPU to support AVX2 and FMA, checked just
            // above.
            return unsafe { simd_frame(body) };
        }
    }
    body()
}

/// Defines a generic kernel function twice, once compiled for AVX2 and FMA (used where the CPU
/// has both) and once for the baseline target, behind one function of the given name and
/// signature. The closures a `#[target_feature]` function defines are compiled with its
/// features, so the row closures a kernel hands to [`for_row_blocks`] and its threads get the
/// wide vectors too, which [`with_simd`] can only give what LLVM inlines. The same bits either
/// way (see [`with_simd`]). The arguments must be plain names; every generic parameter, if any,
/// has one bound.
macro_rules! simd_kernel {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$($g:ident: $bound:path),+>)?
            ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$($g: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide $(<$($g: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? $body
                if $crate::cpu::has_avx2_fma() {
                    // SAFETY: `wide` only requires the CPU to support AVX2 and FMA, checked
                    // just above.
                    return unsafe { wide $(::<$($g),+>)? ($($arg),*) };
                }
            }
            fn baseline $(<$($g: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            baseline $(::<$($g),+>)? ($($arg),*)
        }
    };
}
pub(crate) use simd_kernel;

/// Below this many elements a kernel runs on the calling thread: rayon's fork/join costs more
/// than it saves. Each parallel task gets at least this many elements too.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// Rows per rayon task for rows of `row_len` elements (at least one).
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    PAR_MIN_ELEMS.div_ceil(row_len.max(1)).max(1)
}

/// Runs `f(first_row, rows)` over `out`, cut into blocks of whole rows of `row_len` elements,
/// in parallel when there is enough work: `row_work` is the elements each row reads (a loss
/// row writes 1 but reads V). `f` must treat each row on its own: the result is then the same
/// whatever the split.
pub(crate) fn for_row_blocks<T: Send>(
    out: &mut [T],
    row_len: usize,
    row_work: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    if row_len == 0 {
        return;
    }
    let rows = rows_per_task(row_work);
    if out.len() / row_len * row_work <= PAR_MIN_ELEMS {
        f(0, out);
    } else {
        out.par_chunks_mut(rows * row_len)
            .enumerate()
            .for_each(|(i, block)| f(i * rows, block));
    }
}

/// Rows whose column sums form one partial (LayerNorm's weight and bias gradients, bias
/// gradients). Fixed, not derived from the thread count, so that the cross-row sum always has
/// the same order.
pub(crate) const SUM_BLOCK_ROWS: usize = 32;

/// Row-wise work that also sums over rows. `f(rows, out_block, partial)` handles the rows in
/// `rows` (a block of at most [`SUM_BLOCK_ROWS`]): it writes their rows of `out`
/// (`out_row_len` elements each; `out` is empty when `out_row_len` is 0) and adds into its own
/// zeroed `partial` of `sums` elements. Blocks run in parallel when `work` (the elements read)
/// is large enough; their partials are then added in block order, so the returned sums are the
/// same whatever ran the blocks.
pub(crate) fn row_blocks_with_sums<T: Real>(
    rows: usize,
    out: &mut [T],
    out_row_len: usize,
    sums: usize,
    work: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [T], &mut [T]) + Send + Sync,
) -> Vec<T> {
    let mut total = vec![T::ZERO; sums];
    if sums == 0 || rows == 0 {
        return total;
    }
    let n_blocks = rows.div_ceil(SUM_BLOCK_ROWS);
    let mut partials = vec![T::ZERO; n_blocks * sums];
    let block_rows = |bi: usize| bi * SUM_BLOCK_ROWS..((bi + 1) * SUM_BLOCK_ROWS).min(rows);
    let parallel = work > PAR_MIN_ELEMS;
    if out_row_len == 0 {
        let run = |(bi, p): (usize, &mut [T])| f(block_rows(bi), &mut [], p);
        if parallel {
            partials.par_chunks_mut(sums).enumerate().for_each(run);
        } else {
            partials.chunks_mut(sums).enumerate().for_each(run);
        }
    } else {
        let run = |(bi, (o, p)): (usize, (&mut [T], &mut [T]))| f(block_rows(bi), o, p);
        let len = SUM_BLOCK_ROWS * out_row_len;
        if parallel {
            out.par_chunks_mut(len)
                .zip(partials.par_chunks_mut(sums))
                .enumerate()
                .for_each(run);
        } else {
            out.chunks_mut(len)
                .zip(partials.chunks_mut(sums))
                .enumerate()
                .for_each(run);
        }
    }
    for part in partials.chunks_exact(sums) {
        for (acc, p) in total.iter_mut().zip(part) {
            *acc += *p;
        }
    }
    total
}

/// The contiguous slice of `storage` that `layout` describes, as `T`.
pub(crate) fn slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::msg(format!("{op}: {what} must be contiguous")))?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// The float dtype a kernel runs in, taken from its first input.
pub(crate) fn float_dtype(storage: &CpuStorage, op: &str) -> Result<DType> {
    match storage.dtype() {
        d @ (DType::F32 | DType::F64) => Ok(d),
        d => Err(Error::msg(format!("{op}: expected f32 or f64, got {d:?}"))),
    }
}

/// Calls `$body` with `$T` bound to the Rust type of `$dtype` (f32 or f64).
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            _ => {
                type $T = f64;
                $body
            }
        }
    };
}
pub(crate) use with_float;

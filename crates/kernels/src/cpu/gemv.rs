//! Products whose left side has a few rows, `y = x · w` or `y = x · wᵀ`, for inference: text
//! generation with a KV cache runs every linear layer on one new token a step, a (1, K) row
//! times a (K, N) matrix. Each weight is then read once per token and used for one multiply-add
//! per element, so the product is bound by memory bandwidth; a general matrix product's blocking
//! and packing only cost time there. No backward: the op is for detached inputs, and a backward
//! through it is candle's "not supported" error rather than a gradient silently lost.
//!
//! Two layouts, as the models store their weights:
//! - [`WeightLayout::InOut`], w (K, N) row-major (GPT-2's Conv1D): y[r] is the sum over i of
//!   the rows w[i] scaled by x[r, i]. The columns are cut into blocks, one rayon task each; a
//!   task walks down its columns, i = 0, 1, .., K - 1, adding into one f32 accumulator per
//!   output element.
//! - [`WeightLayout::OutIn`], w (N, K) row-major (torch's Linear, the LM heads): y[r, o] is the
//!   dot product of x[r] and w[o], read contiguously; the output rows o are spread over rayon's
//!   tasks, and each dot product sums in [`LANES`] interleaved f32 lanes (element j to lane
//!   j % LANES, in increasing j) combined pairwise at the end.
//!
//! Either way every output element is summed in an order fixed by the shape alone, never by
//! the split into tasks, so the result is bit-identical for any number of threads. The sums use
//! a separate multiply and add rather than `mul_add`: the AVX2 code then gives the baseline
//! code's bits (`cpu::with_simd`), and the baseline keeps SSE2 vectors where `mul_add` would be
//! a library call per element. The one extra rounding per term costs nothing measurable in a
//! product bound by memory.

use super::{for_row_blocks, simd_kernel, slice, PAR_MIN_ELEMS};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Error, Layout, Result, Shape};
use rayon::prelude::*;

/// How the weight w of `y = x · w` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// w (K, N): `y = x · w` (GPT-2's Conv1D weights).
    InOut,
    /// w (N, K): `y = x · wᵀ` (torch Linear weights, and a head tied to embeddings (V, C)).
    OutIn,
}

/// Forward only: (x (M, K), w (K, N) or (N, K) by `layout`) -> y (M, N), in f32.
#[derive(Debug, Clone, Copy)]
pub struct Gemv {
    pub layout: WeightLayout,
}

/// Lanes of a dot product for [`WeightLayout::OutIn`]: four 8-lane AVX2 accumulators (two of
/// AVX-512's), enough independent additions to hide the adds' latency.
const LANES: usize = 32;

/// Columns of a task for [`WeightLayout::InOut`] are a multiple of this: whole 64-byte lines.
const COL_ALIGN: usize = 16;

/// At most this many columns per task: its accumulators, M x width f32, stay in the L1 cache.
const MAX_COLS: usize = 1024;

/// `acc[l] += u[l] * v[l]` for every lane: one step of [`dot`].
#[inline(always)]
fn lanes_step(acc: &mut [f32; LANES], u: &[f32; LANES], v: &[f32; LANES]) {
    for l in 0..LANES {
        acc[l] += u[l] * v[l];
    }
}

/// The dot product of `a` and `b` (equal lengths) in [`LANES`] lanes, combined pairwise. The
/// tail is zero-padded to a whole step, so that one loop body, which LLVM vectorises, does all
/// of it (a zero product leaves a lane's sum as it is, up to the sign of a zero).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    for (u, v) in ca.iter().zip(cb) {
        lanes_step(&mut acc, u, v);
    }
    if !ra.is_empty() {
        let (mut u, mut v) = ([0f32; LANES], [0f32; LANES]);
        u[..ra.len()].copy_from_slice(ra);
        v[..rb.len()].copy_from_slice(rb);
        lanes_step(&mut acc, &u, &v);
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// The column blocks of an (.., n) output for [`WeightLayout::InOut`]: about two per thread (so
/// that a thread slowed by other work is made up for), each a multiple of [`COL_ALIGN`] and at
/// most [`MAX_COLS`]. Only the speed depends on the split, not the bits.
fn column_width(n: usize, threads: usize) -> usize {
    let blocks = 2 * threads.max(1);
    n.div_ceil(blocks)
        .next_multiple_of(COL_ALIGN)
        .clamp(COL_ALIGN, MAX_COLS)
}

simd_kernel! {
/// y (M, N) = x (M, K) · w (K, N), each output element summed over i = 0..K in order.
fn x_w(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    // Columns j0..j0 + width of every row of y, (M, width) row-major.
    let columns = |j0: usize, width: usize| -> Vec<f32> {
        let mut acc = vec![0f32; m * width];
        // Four rows of w a pass, added in order (`a + p0 + p1 + p2 + p3` is left to right):
        // the bits of one row at a time, with a quarter of the accumulators' loads and stores.
        let k4 = k - k % 4;
        for i in (0..k4).step_by(4) {
            let wi = |d: usize| &w[(i + d) * n + j0..][..width];
            let (w0, w1, w2, w3) = (wi(0), wi(1), wi(2), wi(3));
            for (r, ar) in acc.chunks_exact_mut(width).enumerate() {
                let xr = &x[r * k + i..][..4];
                let (x0, x1, x2, x3) = (xr[0], xr[1], xr[2], xr[3]);
                for j in 0..width {
                    ar[j] = ar[j] + x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
                }
            }
        }
        for i in k4..k {
            let wi = &w[i * n + j0..][..width];
            for (r, ar) in acc.chunks_exact_mut(width).enumerate() {
                let xi = x[r * k + i];
                for (a, &wv) in ar.iter_mut().zip(wi) {
                    *a += xi * wv;
                }
            }
        }
        acc
    };
    if k * n <= PAR_MIN_ELEMS {
        return columns(0, n);
    }
    let width = column_width(n, rayon::current_num_threads());
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(width))
        .into_par_iter()
        .map(|b| columns(b * width, width.min(n - b * width)))
        .collect();
    let mut y = vec![0f32; m * n];
    for (b, acc) in blocks.iter().enumerate() {
        let (j0, bw) = (b * width, width.min(n - b * width));
        for (yr, ar) in y.chunks_exact_mut(n).zip(acc.chunks_exact(bw)) {
            yr[j0..j0 + bw].copy_from_slice(ar);
        }
    }
    y
}
}

simd_kernel! {
/// y (M, N) = x (M, K) · wᵀ for w (N, K): one [`dot`] per output element.
fn x_wt(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    // yᵀ (N, M): output row o holds the M products with w[o], so that the tasks cut whole
    // rows of w, read once each while the few rows of x stay in cache.
    let mut yt = vec![0f32; n * m];
    for_row_blocks(&mut yt, m, k * m, |o0, out| {
        for (o, yo) in out.chunks_exact_mut(m).enumerate() {
            let wo = &w[(o0 + o) * k..][..k];
            for (r, v) in yo.iter_mut().enumerate() {
                *v = dot(&x[r * k..][..k], wo);
            }
        }
    });
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    for (o, yo) in yt.chunks_exact(m).enumerate() {
        for (r, &v) in yo.iter().enumerate() {
            y[r * n + o] = v;
        }
    }
    y
}
}

/// The sizes (M, K, N) of x (M, K) and w in `layout`, checked.
pub fn gemv_dims(x: &Shape, w: &Shape, layout: WeightLayout) -> Result<(usize, usize, usize)> {
    let (&[m, k], &[a, b]) = (x.dims(), w.dims()) else {
        return Err(Error::msg(format!(
            "lantern-gemv: x and w must be matrices, got {x:?} and {w:?}"
        )));
    };
    let (kw, n) = match layout {
        WeightLayout::InOut => (a, b),
        WeightLayout::OutIn => (b, a),
    };
    if kw != k {
        return Err(Error::msg(format!(
            "lantern-gemv: x is {x:?} and w ({layout:?}) is {w:?}: inner sizes {k} and {kw} differ"
        )));
    }
    Ok((m, k, n))
}

impl CustomOp2 for Gemv {
    fn name(&self) -> &'static str {
        "lantern-gemv"
    }

    fn cpu_fwd(
        &self,
        s_x: &CpuStorage,
        l_x: &Layout,
        s_w: &CpuStorage,
        l_w: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        for s in [s_x, s_w] {
            if s.dtype() != DType::F32 {
                return Err(Error::msg(format!(
                    "{op}: expected f32, got {:?}",
                    s.dtype()
                )));
            }
        }
        let (m, k, n) = gemv_dims(l_x.shape(), l_w.shape(), self.layout)?;
        let x = slice::<f32>(s_x, l_x, op, "x")?;
        let w = slice::<f32>(s_w, l_w, op, "w")?;
        let y = match self.layout {
            WeightLayout::InOut => x_w(x, w, m, k, n),
            WeightLayout::OutIn => x_wt(x, w, m, k, n),
        };
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::randn;
    use super::*;
    use crate::Rng;
    use candle_core::{DType, Device, Tensor, Var};

    /// (M, K, N): one element, sizes below and across a vector and a lane block, odd sizes,
    /// more columns than one task, and the GPT-2-small layers' shapes.
    const SHAPES: [(usize, usize, usize); 12] = [
        (1, 1, 1),
        (1, 7, 5),
        (2, 33, 17),
        (3, 31, 65),
        (4, 100, 257),
        (1, 129, 1031),
        (4, 1000, 999),
        (2, 517, 3001),
        (1, 768, 2304),
        (1, 3072, 768),
        (3, 768, 3072),
        (1, 64, 50_257),
    ];

    fn inputs(
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        layout: WeightLayout,
    ) -> [Tensor; 2] {
        let w = match layout {
            WeightLayout::InOut => [k, n],
            WeightLayout::OutIn => [n, k],
        };
        [
            randn(rng, &[m, k], 1.0, DType::F32),
            randn(rng, &w, 0.05, DType::F32),
        ]
    }

    fn gemv(x: &Tensor, w: &Tensor, layout: WeightLayout) -> Vec<f32> {
        x.apply_op2_no_bwd(w, &Gemv { layout })
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Against the product in f64: each element within the rounding bound of a sum of K
    /// products in f32, `|y - y64| <= 2K · eps · sum_i |x_i w_i|` (each term and each partial
    /// sum rounded once; Higham, Accuracy and Stability, §3.1).
    #[test]
    fn within_f32_rounding_of_the_f64_product() {
        let mut rng = Rng::new(61);
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for shape in SHAPES {
                let (m, k, n) = shape;
                let [x, w] = inputs(&mut rng, shape, layout);
                let y = gemv(&x, &w, layout);
                let f64s = |t: &Tensor| -> Vec<f64> {
                    let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
                    t.to_vec1().unwrap()
                };
                let (x64, w64) = (f64s(&x), f64s(&w));
                let at = |i: usize, j: usize| match layout {
                    WeightLayout::InOut => w64[i * n + j],
                    WeightLayout::OutIn => w64[j * k + i],
                };
                let eps = f32::EPSILON as f64 / 2.0;
                for r in 0..m {
                    for j in 0..n {
                        let (mut exact, mut abs) = (0f64, 0f64);
                        for i in 0..k {
                            let p = x64[r * k + i] * at(i, j);
                            exact += p;
                            abs += p.abs();
                        }
                        let got = y[r * n + j] as f64;
                        let bound = 2.0 * k as f64 * eps * abs;
                        assert!(
                            (got - exact).abs() <= bound,
                            "{layout:?} {shape:?} y[{r}, {j}] = {got} vs {exact} (bound {bound:e})"
                        );
                    }
                }
            }
        }
    }

    /// Twice, on 1, 2 and 3 threads, and with the baseline code instead of the AVX2 code: the
    /// same bits.
    #[test]
    fn bit_identical_across_runs_thread_counts_and_simd() {
        let mut rng = Rng::new(62);
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for shape in [
                (1, 768, 3072),
                (4, 1000, 999),
                (2, 517, 3001),
                (1, 3072, 768),
            ] {
                let [x, w] = inputs(&mut rng, shape, layout);
                let first = gemv(&x, &w, layout);
                assert_eq!(first, gemv(&x, &w, layout), "two runs differ");
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let y = pool.install(|| gemv(&x, &w, layout));
                    assert_eq!(first, y, "{layout:?} {shape:?}: {threads} threads differ");
                }
                let y = super::super::baseline_only(|| gemv(&x, &w, layout));
                assert_eq!(first, y, "{layout:?} {shape:?}: the baseline code differs");
            }
        }
    }

    /// The two layouts are the same product: w (K, N) and its transpose stored (N, K).
    #[test]
    fn layouts_agree_with_each_other_and_candle() {
        let mut rng = Rng::new(63);
        for shape in SHAPES {
            let [x, w] = inputs(&mut rng, shape, WeightLayout::InOut);
            let wt = w.t().unwrap().contiguous().unwrap();
            let a = Tensor::new(gemv(&x, &w, WeightLayout::InOut), &Device::Cpu).unwrap();
            let b = Tensor::new(gemv(&x, &wt, WeightLayout::OutIn), &Device::Cpu).unwrap();
            let c = x.matmul(&w).unwrap().flatten_all().unwrap();
            let scale = c
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(1.0);
            for (what, y) in [("in-out", &a), ("out-in", &b)] {
                let d = (y - &c)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    d <= 1e-5 * scale,
                    "{what} {shape:?}: {d:e} from candle's matmul"
                );
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut rng = Rng::new(64);
        let x = randn(&mut rng, &[2, 5], 1.0, DType::F32);
        let w = randn(&mut rng, &[4, 3], 1.0, DType::F32);
        let op = Gemv {
            layout: WeightLayout::InOut,
        };
        let e = x.apply_op2_no_bwd(&w, &op).unwrap_err().to_string();
        assert!(e.contains("inner sizes 5 and 4 differ"), "{e}");
        let e = x
            .unsqueeze(0)
            .unwrap()
            .apply_op2_no_bwd(&w, &op)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be matrices"), "{e}");
        let w64 = randn(&mut rng, &[5, 3], 1.0, DType::F64);
        let e = x.apply_op2_no_bwd(&w64, &op).unwrap_err().to_string();
        assert!(e.contains("expected f32"), "{e}");
    }

    /// Inference only: a backward through the op is an error, never a missing gradient.
    #[test]
    fn backward_is_an_error() {
        let mut rng = Rng::new(65);
        let x = Var::from_tensor(&randn(&mut rng, &[1, 8], 1.0, DType::F32)).unwrap();
        let w = randn(&mut rng, &[8, 3], 1.0, DType::F32);
        let y = x
            .as_tensor()
            .apply_op2(
                &w,
                Gemv {
                    layout: WeightLayout::InOut,
                },
            )
            .unwrap();
        assert!(y.sum_all().unwrap().backward().is_err());
    }
}

//! Test harness shared by the kernel tests: comparison with the composite reference, central
//! finite differences in f64, and bit-for-bit determinism across runs and thread counts.
//!
//! Every check drives an op through the scalar loss `L = sum(f(inputs) * R)` with a fixed random
//! `R`, so that backward sees a non-trivial upstream gradient.

use crate::Rng;
use candle_core::{DType, Device, Tensor, Var};

pub fn randn(rng: &mut Rng, shape: &[usize], std: f64, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.next_normal() * std).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b| <= tol * max |b|`: relative to the tensor's scale, so that elements that are
/// zero up to rounding (a derivative crossing zero) do not need an absolute floor of their own.
/// NaN anywhere fails.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let (a, b) = (to_f64(a), to_f64(b));
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0f64, 0);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(!x.is_nan(), "{what}: NaN at {i}");
        let d = (x - y).abs();
        if d > worst || d.is_nan() {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= tol * scale,
        "{what}: max abs diff {worst:e} at {at} ({} vs {}) > {tol:e} * {scale:e}",
        a[at],
        b[at]
    );
}

/// Output and input gradients of `f` under `L = sum(f(x) * R)`; `track[i]` says which inputs
/// get a gradient (integer inputs such as targets do not).
pub fn run(
    inputs: &[Tensor],
    track: &[bool],
    r: &Tensor,
    f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> (Tensor, Vec<Option<Tensor>>) {
    let vars: Vec<Option<Var>> = inputs
        .iter()
        .zip(track)
        .map(|(t, &on)| on.then(|| Var::from_tensor(&t.copy().unwrap()).unwrap()))
        .collect();
    let xs: Vec<Tensor> = inputs
        .iter()
        .zip(&vars)
        .map(|(t, v)| {
            v.as_ref()
                .map_or_else(|| t.clone(), |v| v.as_tensor().clone())
        })
        .collect();
    let y = f(&xs).unwrap();
    let loss = (y.to_dtype(r.dtype()).unwrap() * r)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| {
            v.as_ref().map(|v| {
                grads
                    .get(v.as_tensor())
                    .expect("input has no gradient")
                    .clone()
            })
        })
        .collect();
    (y, g)
}

/// The fused op (`f`) against the composite reference (`reference`): forward and the gradient of
/// every tracked input, within `tol` relative.
pub fn compare_with_reference(
    rng: &mut Rng,
    inputs: &[Tensor],
    track: &[bool],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    tol: f64,
) {
    let y = f(inputs).unwrap();
    let r = randn(rng, y.dims(), 1.0, y.dtype());
    let (y, g) = run(inputs, track, &r, &f);
    let (y_ref, g_ref) = run(inputs, track, &r, &reference);
    let shapes = format!("{:?}", inputs.iter().map(|t| t.dims()).collect::<Vec<_>>());
    assert_close(&y, &y_ref, tol, &format!("forward {shapes}"));
    for (i, (a, b)) in g.iter().zip(&g_ref).enumerate() {
        if let (Some(a), Some(b)) = (a, b) {
            assert_close(a, b, tol, &format!("grad of input {i} {shapes}"));
        }
    }
}

/// Central finite differences in f64 (step 1e-6) against the op's backward, within 1e-6 relative.
pub fn grad_check(
    rng: &mut Rng,
    inputs: &[Tensor],
    track: &[bool],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) {
    let y = f(inputs).unwrap();
    assert_eq!(y.dtype(), DType::F64, "gradient checks run in f64");
    let r = randn(rng, y.dims(), 1.0, DType::F64);
    let (_, grads) = run(inputs, track, &r, &f);
    let loss = |xs: &[Tensor]| -> f64 {
        (f(xs).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let h = 1e-6;
    for (i, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        let base = to_f64(&inputs[i]);
        let numeric: Vec<f64> = (0..base.len())
            .map(|k| {
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[k] += d;
                    let mut xs = inputs.to_vec();
                    xs[i] = Tensor::from_vec(v, inputs[i].shape(), &Device::Cpu).unwrap();
                    loss(&xs)
                };
                (at(h) - at(-h)) / (2.0 * h)
            })
            .collect();
        let numeric = Tensor::from_vec(numeric, g.shape(), &Device::Cpu).unwrap();
        assert_close(g, &numeric, 1e-6, &format!("finite differences, input {i}"));
    }
}

fn bits(y: &Tensor, g: &[Option<Tensor>]) -> Vec<u64> {
    std::iter::once(y)
        .chain(g.iter().flatten())
        .flat_map(to_f64)
        .map(f64::to_bits)
        .collect()
}

/// Forward and backward twice on the global pool, once on one thread, once on three, and once
/// with the kernels' baseline code instead of their AVX2 and FMA code (`cpu::simd_kernel!`; the
/// same where the CPU lacks them): all five bit-identical.
pub fn assert_deterministic(
    rng: &mut Rng,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor> + Sync,
) {
    let track: Vec<bool> = inputs.iter().map(|t| t.dtype().is_float()).collect();
    let y = f(inputs).unwrap();
    let r = randn(rng, y.dims(), 1.0, y.dtype());
    let once = || {
        let (y, g) = run(inputs, &track, &r, &f);
        bits(&y, &g)
    };
    let first = once();
    assert_eq!(first, once(), "two runs differ");
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(first, pool.install(once), "{threads} threads differ");
    }
    assert_eq!(
        first,
        super::baseline_only(once),
        "the baseline code differs from the AVX2 code"
    );
}

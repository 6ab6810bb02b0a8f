//! Every kernel of `kernels/*.cu`, run on the CUDA emulator, against the CPU implementation of
//! the same op in `lantern-kernels` (the reference the GPU selfcheck uses too), forward and
//! backward, f32 and bf16, at sizes that cross the block and tile edges: single elements, rows
//! shorter than a warp, rows longer than a 256-thread block, more rows than one chunk. Each test
//! runs in both of the emulator's orders ([`emu::Order`]), so a race between threads or blocks
//! fails it in one of them.

use candle_core::{DType, Device, Tensor, Var};
use half::{bf16, f16};
use lantern_kernel_emu as emu;
use lantern_kernels::{ops, Rng};

/// max |a - b| / max |b|, with NaN anywhere in `a` failing.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    assert!(a.iter().all(|x| x.is_finite()), "non-finite kernel output");
    let scale = b
        .iter()
        .fold(0f64, |m, &x| m.max(x.abs() as f64))
        .max(1e-30);
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

fn check(what: &str, a: &[f32], b: &[f32], tol: f64) {
    let r = rel(a, b);
    assert!(r <= tol, "{what}: relative difference {r:.3e} > {tol:.0e}");
}

fn tol<T: Conv>() -> f64 {
    T::TOL
}

/// f32 and bf16 host data, and their candle dtype.
trait Conv: emu::Float {
    const DTYPE: DType;
    const TOL: f64;
    fn from(v: f32) -> Self;
    fn to(self) -> f32;
}
impl Conv for f32 {
    const DTYPE: DType = DType::F32;
    const TOL: f64 = 2e-6;
    fn from(v: f32) -> Self {
        v
    }
    fn to(self) -> f32 {
        self
    }
}
impl Conv for bf16 {
    const DTYPE: DType = DType::BF16;
    // Inputs are identical bf16 values and both sides compute in f32 and round once, so the
    // outputs differ by at most a bf16 rounding of a slightly different f32.
    const TOL: f64 = 1e-2;
    fn from(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to(self) -> f32 {
        self.to_f32()
    }
}

fn host<T: Conv>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from(x)).collect()
}
fn back<T: Conv>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to()).collect()
}

/// Random data of `n` elements, rounded to T (so both sides see the same values), as an f32
/// vector and a CPU tensor of T's dtype.
fn data<T: Conv>(rng: &mut Rng, shape: &[usize], std: f64) -> (Vec<T>, Tensor) {
    let n = shape.iter().product();
    let h: Vec<T> = host(&rng.normal_vec(n, std));
    let t = Tensor::from_vec(back(&h), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(T::DTYPE)
        .unwrap();
    (h, t)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Loss sum(y * dy) and its gradients with respect to `vars`.
fn grads(y: &Tensor, dy: &Tensor, vars: &[&Var]) -> Vec<Vec<f32>> {
    let loss = (y.to_dtype(DType::F32).unwrap() * dy.to_dtype(DType::F32).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    vars.iter()
        .map(|v| flat(g.get(v.as_tensor()).expect("gradient")))
        .collect()
}

const ROW_LENGTHS: [usize; 6] = [1, 7, 32, 255, 300, 1030];

fn softmax_case<T: Conv>(rng: &mut Rng) {
    for &c in &ROW_LENGTHS {
        let shape = [2, 3, c];
        let (s, st) = data::<T>(rng, &shape, 2.0);
        let (dy, dyt) = data::<T>(rng, &shape, 1.0);
        let scale = 0.37f32;
        // Unmasked.
        let v = Var::from_tensor(&st).unwrap();
        let y_ref = ops::masked_softmax(v.as_tensor(), scale as f64, None).unwrap();
        let y = emu::softmax_fwd(&s, c, scale);
        check(
            &format!("softmax fwd c={c}"),
            &back(&y),
            &flat(&y_ref),
            tol::<T>(),
        );
        // The kernel's backward takes the CPU forward's y (rounded to T), so only the backward
        // is compared.
        let y_in: Vec<T> = host(&flat(&y_ref));
        let ds = emu::softmax_bwd(&y_in, &dy, c, scale);
        let g = grads(&y_ref, &dyt, &[&v]);
        check(
            &format!("softmax bwd c={c}"),
            &back(&ds),
            &g[0],
            tol::<T>() * 2.0,
        );
        // A causal (c, c) mask broadcast over (1, 2, c, c) scores, read through stride 0.
        if c <= 300 {
            let shape4 = [1, 2, c, c];
            let (s4, st4) = data::<T>(rng, &shape4, 2.0);
            let mask = ops::causal_mask(c, &Device::Cpu)
                .unwrap()
                .to_dtype(T::DTYPE)
                .unwrap();
            let y_ref = ops::masked_softmax(&st4, scale as f64, Some(&mask)).unwrap();
            let mh: Vec<T> = host(&flat(&mask));
            let m = emu::Mask {
                data: &mh,
                dims: shape4.to_vec(),
                strides: vec![0, 0, c, 1],
            };
            let y = emu::softmax_masked_fwd(&s4, &m, scale);
            check(
                &format!("causal softmax fwd c={c}"),
                &back(&y),
                &flat(&y_ref),
                tol::<T>(),
            );
        }
        // A padding mask (2, 1, 1, c) over (2, 2, 3, c) scores: -inf past each row's length.
        let shape4 = [2, 2, 3, c];
        let (s4, st4) = data::<T>(rng, &shape4, 2.0);
        let lens = [c, c.div_ceil(2)];
        let pad: Vec<f32> = lens
            .iter()
            .flat_map(|&l| (0..c).map(move |j| if j < l { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(pad.clone(), (2, 1, 1, c), &Device::Cpu)
            .unwrap()
            .to_dtype(T::DTYPE)
            .unwrap();
        let y_ref = ops::masked_softmax(&st4, scale as f64, Some(&mask)).unwrap();
        let mh: Vec<T> = host(&pad);
        let m = emu::Mask {
            data: &mh,
            dims: shape4.to_vec(),
            strides: vec![c, 0, 0, 1],
        };
        let y = emu::softmax_masked_fwd(&s4, &m, scale);
        check(
            &format!("padded softmax fwd c={c}"),
            &back(&y),
            &flat(&y_ref),
            tol::<T>(),
        );
    }
}

/// A kernel's case in f32 and then in bf16 from one seeded generator, in every run order.
fn f32_then_bf16(seed: u64, f32_case: fn(&mut Rng), bf16_case: fn(&mut Rng)) {
    emu::in_every_order(|| {
        let mut rng = Rng::new(seed);
        f32_case(&mut rng);
        bf16_case(&mut rng);
    });
}

#[test]
fn softmax_matches_the_cpu_op() {
    f32_then_bf16(1, softmax_case::<f32>, softmax_case::<bf16>);
}

/// Rows whose values lie 600 apart: a row maximum taken partly from another row's values (a
/// missing barrier in the block-wide max) shifts the exponentials by hundreds, and they
/// overflow or vanish, where within one row the shift cancels out and the tests above cannot
/// see it.
#[test]
fn softmax_and_cross_entropy_keep_each_rows_own_maximum() {
    emu::in_every_order(|| {
        let (rows, c) = (6, 1000);
        let mut rng = Rng::new(11);
        let x: Vec<f32> = (0..rows * c)
            .map(|i| rng.normal_vec(1, 2.0)[0] + if (i / c) % 2 == 0 { 300.0 } else { -300.0 })
            .collect();
        let xt = Tensor::from_vec(x.clone(), (rows, c), &Device::Cpu).unwrap();
        let y_ref = ops::masked_softmax(&xt, 1.0, None).unwrap();
        check(
            "softmax fwd",
            &emu::softmax_fwd(&x, c, 1.0),
            &flat(&y_ref),
            2e-6,
        );
        let t: Vec<u32> = (0..rows as u32).map(|r| r * 7 % c as u32).collect();
        check_f32_loss(&x, &t, c);
    });
}

#[test]
fn a_fully_masked_row_gives_zeros() {
    emu::in_every_order(|| {
        let c = 5;
        let s = vec![1f32; 2 * c];
        let mut mask = vec![0f32; 2 * c];
        mask[c..].fill(f32::NEG_INFINITY);
        let y = emu::softmax_masked_fwd(
            &s,
            &emu::Mask {
                data: &mask,
                dims: vec![2, c],
                strides: vec![c, 1],
            },
            1.0,
        );
        assert!(y[..c].iter().all(|&v| (v - 0.2).abs() < 1e-7), "{y:?}");
        assert!(y[c..].iter().all(|&v| v == 0.0), "{y:?}");
    });
}

fn layer_norm_case<T: Conv>(rng: &mut Rng) {
    // 300 rows cross the 256-row chunk of the weight/bias gradient.
    for &(rows, c) in &[(1, 1), (3, 7), (300, 33), (5, 300), (2, 1030)] {
        let (x, xt) = data::<T>(rng, &[rows, c], 1.5);
        let (w, wt) = data::<T>(rng, &[c], 1.0);
        let (b, bt) = data::<T>(rng, &[c], 1.0);
        let (dy, dyt) = data::<T>(rng, &[rows, c], 1.0);
        let eps = 1e-5f32;
        let (vx, vw, vb) = (
            Var::from_tensor(&xt).unwrap(),
            Var::from_tensor(&wt).unwrap(),
            Var::from_tensor(&bt).unwrap(),
        );
        let y_ref =
            ops::layer_norm(vx.as_tensor(), vw.as_tensor(), vb.as_tensor(), eps as f64).unwrap();
        let y = emu::layer_norm_fwd(&x, &w, &b, eps);
        let what = format!("layer norm {rows}x{c}");
        check(
            &format!("{what} fwd"),
            &back(&y),
            &flat(&y_ref),
            tol::<T>() * 2.0,
        );
        let g = grads(&y_ref, &dyt, &[&vx, &vw, &vb]);
        let (dx, dw, db) = emu::layer_norm_bwd(&x, &w, &dy, eps);
        // c = 1 makes x - mean exactly 0, so dx is 0 up to rounding on both sides.
        if c > 1 {
            check(&format!("{what} dx"), &back(&dx), &g[0], tol::<T>() * 4.0);
        }
        check(&format!("{what} dw"), &back(&dw), &g[1], tol::<T>() * 4.0);
        check(&format!("{what} db"), &back(&db), &g[2], tol::<T>() * 4.0);
    }
}

#[test]
fn layer_norm_matches_the_cpu_op() {
    f32_then_bf16(2, layer_norm_case::<f32>, layer_norm_case::<bf16>);
}

/// Rows of `c` whose scales alternate 0.1, 1 and 10 (so a mean square taken from another
/// row's sums is off by a factor of 100 or more), rounded to T, as in [`data`].
fn rows_of_three_scales<T: Conv>(rng: &mut Rng, rows: usize, c: usize) -> (Vec<T>, Tensor) {
    let v: Vec<f32> = rng
        .normal_vec(rows * c, 1.0)
        .iter()
        .enumerate()
        .map(|(i, x)| x * [0.1, 1.0, 10.0][(i / c) % 3])
        .collect();
    let h: Vec<T> = host(&v);
    let t = Tensor::from_vec(back(&h), (rows, c), &Device::Cpu)
        .unwrap()
        .to_dtype(T::DTYPE)
        .unwrap();
    (h, t)
}

fn rms_norm_case<T: Conv>(rng: &mut Rng) {
    // 300 rows cross the 256-row chunk of the weight gradient; 33 and 1030 columns end inside
    // a 32-column tile and past a 256-thread block; 768 is a Llama width.
    for &(rows, c) in &[(1, 1), (3, 7), (300, 33), (5, 300), (4, 768), (2, 1030)] {
        let (x, xt) = rows_of_three_scales::<T>(rng, rows, c);
        // N(0, 1) gains: of both signs, some near 0.
        let (w, wt) = data::<T>(rng, &[c], 1.0);
        let (dy, dyt) = data::<T>(rng, &[rows, c], 1.0);
        for eps in [1e-5f32, 1e-6] {
            let (vx, vw) = (
                Var::from_tensor(&xt).unwrap(),
                Var::from_tensor(&wt).unwrap(),
            );
            let y_ref = ops::rms_norm(vx.as_tensor(), vw.as_tensor(), eps as f64).unwrap();
            let y = emu::rms_norm_fwd(&x, &w, eps);
            let what = format!("rms norm {rows}x{c} eps {eps:e}");
            check(
                &format!("{what} fwd"),
                &back(&y),
                &flat(&y_ref),
                tol::<T>() * 2.0,
            );
            let g = grads(&y_ref, &dyt, &[&vx, &vw]);
            let (dx, dw) = emu::rms_norm_bwd(&x, &w, &dy, eps);
            check(&format!("{what} dx"), &back(&dx), &g[0], tol::<T>() * 4.0);
            check(&format!("{what} dw"), &back(&dw), &g[1], tol::<T>() * 4.0);
        }
    }
}

#[test]
fn rms_norm_matches_the_cpu_op() {
    f32_then_bf16(9, rms_norm_case::<f32>, rms_norm_case::<bf16>);
}

fn rope_case<T: Conv>(rng: &mut Rng) {
    // (B, T, H, D): one pair; halves shorter than a warp (lanes left idle); 33 and 65 pairs, a
    // warp's stride past its first round; Llama's head dims; row counts that end inside a block
    // of 8 rows. Random tables, whose two halves differ, so that a half read from the wrong
    // side fails.
    for &(b, t, h, d) in &[
        (1, 1, 1, 2),
        (2, 3, 1, 4),
        (2, 5, 3, 6),
        (1, 7, 2, 66),
        (3, 4, 4, 64),
        (1, 3, 5, 130),
        (2, 9, 3, 128),
    ] {
        let (x, xt) = data::<T>(rng, &[b, t, h, d], 1.5);
        let (cos, cost) = data::<T>(rng, &[t, d], 1.0);
        let (sin, sint) = data::<T>(rng, &[t, d], 1.0);
        let (dy, dyt) = data::<T>(rng, &[b, t, h, d], 1.0);
        let vx = Var::from_tensor(&xt).unwrap();
        let y_ref = ops::rope(vx.as_tensor(), &cost, &sint).unwrap();
        let what = format!("rope ({b}, {t}, {h}, {d})");
        // The kernel rounds each product and sum as the CPU op does, and once to T: the same
        // bits, so the tolerance is 0.
        let y = emu::rope(&x, &cos, &sin, h, d, false);
        check(&format!("{what} fwd"), &back(&y), &flat(&y_ref), 0.0);
        let g = grads(&y_ref, &dyt, &[&vx]);
        let dx = emu::rope(&dy, &cos, &sin, h, d, true);
        check(&format!("{what} dx"), &back(&dx), &g[0], 0.0);
    }
}

#[test]
fn rope_matches_the_cpu_op() {
    f32_then_bf16(10, rope_case::<f32>, rope_case::<bf16>);
}

fn gelu_case<T: Conv>(rng: &mut Rng) {
    // 1 and 7 leave most of a block idle; 70_001 ends inside the last of 274 blocks.
    for &n in &[1usize, 7, 1000, 70_001] {
        let (x, xt) = data::<T>(rng, &[n], 3.0);
        let (dy, dyt) = data::<T>(rng, &[n], 1.0);
        for (kind, f) in [
            (
                emu::Gelu::Tanh,
                ops::gelu_tanh as fn(&Tensor) -> candle_core::Result<Tensor>,
            ),
            (emu::Gelu::Erf, ops::gelu_erf),
        ] {
            let v = Var::from_tensor(&xt).unwrap();
            let y_ref = f(v.as_tensor()).unwrap();
            let y = emu::gelu_fwd(kind, &x);
            check(
                &format!("gelu {kind:?} fwd n={n}"),
                &back(&y),
                &flat(&y_ref),
                tol::<T>(),
            );
            let g = grads(&y_ref, &dyt, &[&v]);
            let dx = emu::gelu_bwd(kind, &x, &dy);
            check(
                &format!("gelu {kind:?} bwd n={n}"),
                &back(&dx),
                &g[0],
                tol::<T>(),
            );
        }
    }
}

#[test]
fn gelu_matches_the_cpu_op() {
    f32_then_bf16(3, gelu_case::<f32>, gelu_case::<bf16>);
}

fn gated_case<T: Conv>(rng: &mut Rng) {
    for &n in &[1usize, 7, 1000, 70_001] {
        let (g, gt) = data::<T>(rng, &[n], 3.0);
        let (u, ut) = data::<T>(rng, &[n], 1.0);
        let (dy, dyt) = data::<T>(rng, &[n], 1.0);
        type Op = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
        for (gate, f) in [
            (emu::Gate::Silu, ops::swiglu as Op),
            (emu::Gate::GeluTanh, ops::geglu_tanh),
            (emu::Gate::GeluErf, ops::geglu_erf),
        ] {
            let (vg, vu) = (
                Var::from_tensor(&gt).unwrap(),
                Var::from_tensor(&ut).unwrap(),
            );
            let y_ref = f(vg.as_tensor(), vu.as_tensor()).unwrap();
            let y = emu::gated_fwd(gate, &g, &u);
            let what = format!("gated {gate:?} n={n}");
            check(&format!("{what} fwd"), &back(&y), &flat(&y_ref), tol::<T>());
            let want = grads(&y_ref, &dyt, &[&vg, &vu]);
            let (dg, du) = emu::gated_bwd(gate, &g, &u, &dy);
            check(&format!("{what} dg"), &back(&dg), &want[0], tol::<T>());
            check(&format!("{what} du"), &back(&du), &want[1], tol::<T>());
        }
    }
}

#[test]
fn gated_matches_the_cpu_op() {
    f32_then_bf16(4, gated_case::<f32>, gated_case::<bf16>);
}

fn dropout_case<T: Conv>(rng: &mut Rng) {
    for &n in &[1usize, 7, 1000, 70_001] {
        let (x, xt) = data::<T>(rng, &[n], 3.0);
        let (dy, dyt) = data::<T>(rng, &[n], 1.0);
        for p in [0.1f64, 0.5] {
            // The CPU op (a mask drawn on the host for bf16) with a generator mid-stream.
            let mut gen = Rng::new(7 + n as u64);
            gen.skip(12345);
            let start = gen.state();
            let v = Var::from_tensor(&xt).unwrap();
            let y_ref = ops::dropout(v.as_tensor(), p, &mut gen).unwrap();
            assert_eq!(gen.state().counter, start.counter + n as u64);
            let scale = (1.0 / (1.0 - p)) as f32;
            let y = emu::dropout(&x, start.seed, start.counter, p as f32, scale);
            // The same draws and the same rounding: equal to the bit.
            check(
                &format!("dropout p={p} fwd n={n}"),
                &back(&y),
                &flat(&y_ref),
                0.0,
            );
            let g = grads(&y_ref, &dyt, &[&v]);
            let dx = emu::dropout(&dy, start.seed, start.counter, p as f32, scale);
            check(&format!("dropout p={p} bwd n={n}"), &back(&dx), &g[0], 0.0);
        }
    }
}

#[test]
fn dropout_matches_the_cpu_op() {
    f32_then_bf16(31, dropout_case::<f32>, dropout_case::<bf16>);
}

fn bias_act_case<T: Conv>(rng: &mut Rng) {
    type Op = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
    let acts: [(Option<emu::Gelu>, Op); 3] = [
        (None, ops::bias_add),
        (Some(emu::Gelu::Tanh), ops::bias_gelu_tanh),
        (Some(emu::Gelu::Erf), ops::bias_gelu_erf),
    ];
    // 300 rows cross the 256-row chunk of the bias gradient, 8300 the forward's 8192 row
    // blocks; 33 and 1030 columns end inside a 32-column block and a 256-thread block.
    for &(rows, n) in &[(1, 1), (3, 7), (300, 33), (5, 300), (2, 1030), (8300, 2)] {
        let (x, xt) = data::<T>(rng, &[rows, n], 2.0);
        let (b, bt) = data::<T>(rng, &[n], 1.0);
        let (dy, dyt) = data::<T>(rng, &[rows, n], 1.0);
        for (act, op) in acts {
            let (vx, vb) = (
                Var::from_tensor(&xt).unwrap(),
                Var::from_tensor(&bt).unwrap(),
            );
            let y_ref = op(vx.as_tensor(), vb.as_tensor()).unwrap();
            let what = format!("bias {act:?} {rows}x{n}");
            let y = emu::bias_act_fwd(act, &x, &b);
            check(&format!("{what} fwd"), &back(&y), &flat(&y_ref), tol::<T>());
            let g = grads(&y_ref, &dyt, &[&vx, &vb]);
            let (dz, db) = emu::bias_act_bwd(act, &x, &b, &dy);
            match act {
                Some(_) => check(&format!("{what} dz"), &back(&dz), &g[0], tol::<T>()),
                None => assert!(dz.is_empty()),
            }
            check(&format!("{what} db"), &back(&db), &g[1], tol::<T>() * 2.0);
        }
    }
}

#[test]
fn bias_act_matches_the_cpu_op() {
    f32_then_bf16(7, bias_act_case::<f32>, bias_act_case::<bf16>);
}

fn embedding_case<T: Conv>(rng: &mut Rng) {
    // 8300 positions cross the forward's 8192 position blocks; 300 columns two 256-thread
    // column blocks; half the positions hit the first 3 ids (frequent tokens).
    for &(n, vocab, c) in &[(1, 1, 1), (7, 5, 3), (300, 50, 300), (8300, 40, 2)] {
        let ids: Vec<u32> = (0..n)
            .map(|_| match rng.below(2) {
                0 => rng.below(3.min(vocab as u64)) as u32,
                _ => rng.below(vocab as u64) as u32,
            })
            .collect();
        let idt = Tensor::from_vec(ids.clone(), n, &Device::Cpu).unwrap();
        let (table, tt) = data::<T>(rng, &[vocab, c], 1.0);
        let (dy, dyt) = data::<T>(rng, &[n, c], 1.0);
        for pad in [None, Some(1.min(vocab as u32 - 1))] {
            let v = Var::from_tensor(&tt).unwrap();
            let y_ref = ops::embedding(v.as_tensor(), &idt, pad).unwrap();
            let what = format!("embedding {n}x{vocab}x{c} pad {pad:?}");
            let y = emu::embedding_fwd(&table, &ids, c);
            check(&format!("{what} fwd"), &back(&y), &flat(&y_ref), 0.0);
            let g = grads(&y_ref, &dyt, &[&v]);
            let dt = emu::embedding_bwd(&ids, &dy, vocab, c, pad);
            check(&format!("{what} bwd"), &back(&dt), &g[0], tol::<T>());
        }
    }
}

#[test]
fn embedding_matches_the_cpu_op() {
    f32_then_bf16(8, embedding_case::<f32>, embedding_case::<bf16>);
}

fn cross_entropy_case<T: Conv>(rng: &mut Rng) {
    for &(n, v) in &[(1usize, 1usize), (5, 7), (3, 300), (4, 1030)] {
        let (x, xt) = data::<T>(rng, &[n, v], 2.0);
        let t: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let tt = Tensor::from_vec(t.clone(), n, &Device::Cpu).unwrap();
        // Weights 0/1 with at least one of each when n > 1.
        let w: Vec<f32> = (0..n).map(|i| if i % 3 == 1 { 0.0 } else { 1.0 }).collect();
        let wt = Tensor::from_vec(w.clone(), n, &Device::Cpu).unwrap();
        for weighted in [false, true] {
            let what = format!("cross entropy {n}x{v} weighted={weighted}");
            let vx = Var::from_tensor(&xt).unwrap();
            let loss_ref =
                ops::cross_entropy_sum(vx.as_tensor(), &tt, weighted.then_some(&wt)).unwrap();
            let (loss, lse, bad) = emu::cross_entropy_fwd(&x, &t, weighted.then_some(&w[..]), v);
            assert_eq!(bad, None, "{what}");
            let lr = flat(&loss_ref)[0];
            check(&format!("{what} loss"), &[loss], &[lr], tol::<T>());
            let g = 0.75f32;
            let gx = (loss_ref * g as f64).unwrap().backward().unwrap();
            let dx_ref = flat(gx.get(vx.as_tensor()).unwrap());
            let (dx, _) =
                emu::cross_entropy_bwd(&x, &t, weighted.then_some(&w[..]), Some(&lse), g, v, false);
            check(&format!("{what} dx"), &back(&dx), &dx_ref, tol::<T>());
            // Without the saved logsumexp the kernel recomputes it: the same gradient.
            let (dx2, _) =
                emu::cross_entropy_bwd(&x, &t, weighted.then_some(&w[..]), None, g, v, false);
            check(
                &format!("{what} dx without lse"),
                &back(&dx2),
                &dx_ref,
                tol::<T>(),
            );
        }
        // dL/dw_i = g * (lse_i - x_i[t_i]): the per-row loss.
        let (_, lse, _) = emu::cross_entropy_fwd(&x, &t, Some(&w[..]), v);
        let (_, dw) = emu::cross_entropy_bwd(&x, &t, Some(&w[..]), Some(&lse), 2.0, v, true);
        let xf = back(&x);
        let want: Vec<f32> = (0..n)
            .map(|i| 2.0 * (lse[i] - xf[i * v + t[i] as usize]))
            .collect();
        check(
            &format!("cross entropy {n}x{v} dw"),
            &back(&dw.unwrap()),
            &want,
            tol::<T>(),
        );
    }
}

#[test]
fn cross_entropy_matches_the_cpu_op() {
    f32_then_bf16(4, cross_entropy_case::<f32>, cross_entropy_case::<bf16>);
}

/// 1100 rows: more than the 1024 threads that add up the rows' losses, so every level of that
/// tree adds live values (a missing barrier there reads a stale one). Forward only, f32: each
/// row is a block of its own, and the emulator runs 256 threads per block.
#[test]
fn cross_entropy_over_more_rows_than_threads() {
    emu::in_every_order(|| {
        let (n, v) = (1100, 2);
        let mut rng = Rng::new(12);
        let x = rng.normal_vec(n * v, 2.0);
        let t: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        check_f32_loss(&x, &t, v);
    });
}

/// cross_entropy.cu's unweighted f32 loss over logits x (t.len() rows of v) against the CPU op.
fn check_f32_loss(x: &[f32], t: &[u32], v: usize) {
    let n = t.len();
    let xt = Tensor::from_vec(x.to_vec(), (n, v), &Device::Cpu).unwrap();
    let tt = Tensor::from_vec(t.to_vec(), n, &Device::Cpu).unwrap();
    let loss_ref = ops::cross_entropy_sum(&xt, &tt, None).unwrap();
    let (loss, _, _) = emu::cross_entropy_fwd(x, t, None, v);
    let what = format!("cross entropy loss {n}x{v}");
    check(&what, &[loss], &flat(&loss_ref), 2e-6);
}

#[test]
fn an_out_of_range_target_is_reported_with_its_row() {
    emu::in_every_order(|| {
        let x = vec![0f32; 3 * 4];
        let (_, _, bad) = emu::cross_entropy_fwd(&x, &[1, 4, 9], None, 4);
        assert_eq!(bad, Some(1));
    });
}

/// The kernel is written to round exactly as the CPU update does: compare bit for bit.
#[test]
fn adamw_matches_the_cpu_update_bit_for_bit() {
    emu::in_every_order(|| {
        let mut rng = Rng::new(5);
        let n = 70_001;
        let dev = Device::Cpu;
        let mut p = rng.normal_vec(n, 1.0);
        let mut m = rng.normal_vec(n, 0.1);
        let mut v: Vec<f32> = rng.normal_vec(n, 0.1).iter().map(|x| x * x).collect();
        // beta1 0.9 takes torch's lower lerp branch, 0.3 the upper one; decay on and off.
        for (step, beta1, wd) in [(1u64, 0.9, 0.1), (2, 0.9, 0.0), (7, 0.3, 0.01)] {
            let g = rng.normal_vec(n, 0.5);
            let h = lantern_kernels::AdamWHyper {
                lr: 3e-3,
                beta1,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: wd,
                step,
            };
            let t = |x: &[f32]| Tensor::from_slice(x, n, &dev).unwrap();
            let (tp, tm, tv) = (t(&p), t(&m), t(&v));
            let tw = Tensor::zeros(n, DType::BF16, &dev).unwrap();
            lantern_kernels::adamw_update(&tp, &t(&g), &tm, &tv, Some(&tw), &h).unwrap();
            let mut work = vec![bf16::ZERO; n];
            emu::adamw(&mut p, &g, &mut m, &mut v, emu::Work::Bf16(&mut work), &h);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&p),
                bits(&tp.to_vec1::<f32>().unwrap()),
                "p at step {step}"
            );
            assert_eq!(
                bits(&m),
                bits(&tm.to_vec1::<f32>().unwrap()),
                "m at step {step}"
            );
            assert_eq!(
                bits(&v),
                bits(&tv.to_vec1::<f32>().unwrap()),
                "v at step {step}"
            );
            assert_eq!(
                work,
                tw.to_vec1::<bf16>().unwrap(),
                "bf16 copy at step {step}"
            );
        }
        // The fp32-only and fp16-copy kernels run the same update.
        let g = rng.normal_vec(n, 0.5);
        let h = lantern_kernels::AdamWHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            step: 3,
        };
        let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
        let mut w16 = vec![f16::ZERO; n];
        emu::adamw(&mut p, &g, &mut m, &mut v, emu::Work::None, &h);
        emu::adamw(&mut p2, &g, &mut m2, &mut v2, emu::Work::F16(&mut w16), &h);
        assert_eq!(p, p2);
        assert!(w16.iter().zip(&p2).all(|(w, p)| *w == f16::from_f32(*p)));
    });
}

#[test]
fn grad_norm_and_scale_match_the_cpu_functions() {
    emu::in_every_order(|| {
        let mut rng = Rng::new(6);
        let dev = Device::Cpu;
        // A small chunk size so that several tensors are cut into several chunks, as 65536-element
        // chunks cut a real model's gradients.
        let sizes = [1usize, 1000, 4097, 300];
        let mut gs: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.normal_vec(n, 2.0)).collect();
        let ts: Vec<Tensor> = gs
            .iter()
            .map(|g| Tensor::from_slice(g, g.len(), &dev).unwrap())
            .collect();
        let refs: Vec<&Tensor> = ts.iter().collect();
        for unscale in [1.0f32, 1.0 / 1024.0] {
            let want = lantern_kernels::grad_norm(&refs, unscale as f64).unwrap();
            let views: Vec<&[f32]> = gs.iter().map(|g| &g[..]).collect();
            let got = emu::grad_sumsq(&views, unscale, 1024).sqrt();
            assert!(((got - want) / want).abs() < 1e-6, "norm {got} vs {want}");
        }
        // Chunks of 4: 1351 partials, more than the 1024 threads that add them up, so every
        // level of that tree adds live values (a missing barrier there reads a stale one).
        let want = lantern_kernels::grad_norm(&refs, 1.0).unwrap();
        let views: Vec<&[f32]> = gs.iter().map(|g| &g[..]).collect();
        let got = emu::grad_sumsq(&views, 1.0, 4).sqrt();
        assert!(
            ((got - want) / want).abs() < 1e-6,
            "norm {got} vs {want} (chunks of 4)"
        );
        lantern_kernels::scale_grads(&refs, 0.3).unwrap();
        let mut views: Vec<&mut [f32]> = gs.iter_mut().map(|g| &mut g[..]).collect();
        emu::grad_scale(&mut views, 0.3, 1024);
        for (g, t) in gs.iter().zip(&ts) {
            assert_eq!(g, &t.to_vec1::<f32>().unwrap());
        }
        // inf anywhere makes the norm non-finite (the fp16 overflow check).
        let mut bad = vec![1f32; 10];
        bad[7] = f32::INFINITY;
        assert!(!emu::grad_sumsq(&[&bad], 1.0, 4).is_finite());
    });
}

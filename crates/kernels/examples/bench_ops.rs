//! Forward and forward+backward time of each fused CPU op against its composite reference, at
//! GPT-tiny shapes (B=16, T=128, C=128, H=4, V=4096).
//!
//!     cargo run --release -p lantern-kernels --example bench_ops
//!
//! Backward is driven through `sum(op(x) * R)` with a fixed random R (through the loss itself for
//! the cross-entropy, a scalar). That harness costs the same in both columns; its own time, with
//! the identity in place of the op, is printed too (it is candle's multiply, sum, their backward
//! and the gradient accumulation). Times are medians over repeated runs.

use candle_core::{Device, Result, Tensor, Var};
use lantern_kernels::{ops, reference, Rng};
use std::time::{Duration, Instant};

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// Name, inputs, which inputs get a gradient, fused op, reference op.
type Case = (String, Vec<Tensor>, Vec<bool>, Op, Op);

fn randn(rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(rng.normal_vec(n, 1.0), shape, &Device::Cpu)
}

/// Median seconds of `f` over at least 5 runs and about `budget` of wall time.
fn median(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 200) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// (forward, forward + backward) seconds.
fn time(inputs: &[Tensor], track: &[bool], op: &Op) -> Result<(f64, f64)> {
    let mut rng = Rng::new(7);
    let vars: Vec<Tensor> = inputs
        .iter()
        .zip(track)
        .map(|(t, &on)| {
            Ok(if on {
                Var::from_tensor(t)?.as_tensor().clone()
            } else {
                t.clone()
            })
        })
        .collect::<Result<_>>()?;
    let y = op(&vars)?;
    let r = randn(&mut rng, y.dims())?;
    let budget = Duration::from_millis(3000);
    let fwd = median(budget, || op(&vars).map(drop))?;
    let both = median(budget, || {
        let y = op(&vars)?;
        let loss = match y.rank() {
            0 => y,
            _ => (y * &r)?.sum_all()?,
        };
        let g = loss.backward()?;
        for (v, &on) in vars.iter().zip(track) {
            if on {
                assert!(g.get(v).is_some(), "missing gradient");
            }
        }
        Ok(())
    })?;
    Ok((fwd, both))
}

fn main() -> Result<()> {
    let mut rng = Rng::new(1);
    let (b, t, c, h, v) = (16, 128, 128, 4, 4096);
    let mask = ops::causal_mask(t, &Device::Cpu)?;
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    let targets = Tensor::from_vec(targets, b * t, &Device::Cpu)?;
    let scale = 1.0 / ((c / h) as f64).sqrt();
    let w = ((randn(&mut rng, &[c])? * 0.1)? + 1.0)?;

    let cases: Vec<Case> = vec![
        (
            format!("layer_norm ({}, {c})", b * t),
            vec![
                randn(&mut rng, &[b * t, c])?,
                w.clone(),
                randn(&mut rng, &[c])?,
            ],
            vec![true; 3],
            Box::new(|x| ops::layer_norm(&x[0], &x[1], &x[2], 1e-5)),
            Box::new(|x| reference::layer_norm(&x[0], &x[1], &x[2], 1e-5)),
        ),
        (
            format!("rms_norm ({}, {c})", b * t),
            vec![randn(&mut rng, &[b * t, c])?, w],
            vec![true; 2],
            Box::new(|x| ops::rms_norm(&x[0], &x[1], 1e-5)),
            Box::new(|x| reference::rms_norm(&x[0], &x[1], 1e-5)),
        ),
        (
            format!("rope ({b}, {t}, {h}, {})", c / h),
            vec![
                randn(&mut rng, &[b, t, h, c / h])?,
                randn(&mut rng, &[t, c / h])?,
                randn(&mut rng, &[t, c / h])?,
            ],
            vec![true, false, false],
            Box::new(|x| ops::rope(&x[0], &x[1], &x[2])),
            Box::new(|x| reference::rope(&x[0], &x[1], &x[2])),
        ),
        (
            format!("masked_softmax ({b}, {h}, {t}, {t}) causal"),
            vec![randn(&mut rng, &[b, h, t, t])?],
            vec![true],
            Box::new(move |x| ops::masked_softmax(&x[0], scale, Some(&mask))),
            Box::new({
                let mask = ops::causal_mask(t, &Device::Cpu)?;
                move |x| reference::masked_softmax(&x[0], scale, Some(&mask))
            }),
        ),
        (
            format!("cross_entropy_sum ({}, {v})", b * t),
            vec![randn(&mut rng, &[b * t, v])?, targets],
            vec![true, false],
            Box::new(|x| ops::cross_entropy_sum(&x[0], &x[1], None)),
            Box::new(|x| reference::cross_entropy_sum(&x[0], &x[1], None)),
        ),
        (
            format!("gelu_tanh ({}, {})", b * t, 4 * c),
            vec![randn(&mut rng, &[b * t, 4 * c])?],
            vec![true],
            Box::new(|x| ops::gelu_tanh(&x[0])),
            Box::new(|x| reference::gelu_tanh(&x[0])),
        ),
        (
            format!("gelu_erf ({}, {})", b * t, 4 * c),
            vec![randn(&mut rng, &[b * t, 4 * c])?],
            vec![true],
            Box::new(|x| ops::gelu_erf(&x[0])),
            Box::new(|x| reference::gelu_erf(&x[0])),
        ),
    ];

    println!("rayon threads: {}", rayon::current_num_threads());
    println!(
        "{:<38} {:>10} {:>10} {:>7} | {:>10} {:>10} {:>7} | {:>9}",
        "op (f32)", "fwd ref", "fwd fused", "x", "f+b ref", "f+b fused", "x", "harness"
    );
    for (name, inputs, track, fused, reference) in &cases {
        // What the harness itself costs, with the op replaced by the identity on a tensor of its
        // output's shape.
        let out = fused(inputs)?;
        let identity: Op = Box::new(|x| Ok(x[0].clone()));
        let (_, harness) = time(&[out.zeros_like()?], &[true], &identity)?;
        let (rf, rb) = time(inputs, track, reference)?;
        let (ff, fb) = time(inputs, track, fused)?;
        println!(
            "{name:<38} {:>8.3}ms {:>8.3}ms {:>6.1}x | {:>8.3}ms {:>8.3}ms {:>6.1}x | {:>7.3}ms",
            rf * 1e3,
            ff * 1e3,
            rf / ff,
            rb * 1e3,
            fb * 1e3,
            rb / fb,
            harness * 1e3
        );
    }
    Ok(())
}

//! `lantern selfcheck`: is this binary right on this machine's GPU?
//!
//! 1. Every kernel, forward and backward, on fresh seeded random inputs at several shapes (odd
//!    sizes, one element, rows longer than a 256- or 1024-thread block), f32 and bf16, against
//!    its CPU implementation. Output buffers are filled with NaN before each kernel runs, so an
//!    element a kernel fails to write fails the check. Error = max |device − reference| divided
//!    by max |reference| (NaN counts as infinite); tolerance 1e-5 for f32, 1e-2 for bf16.
//! 2. The fused AdamW step and the multi-tensor gradient norm/clip, the same way; on a GPU,
//!    NCCL's collectives in a world of one rank (they must return their input unchanged).
//! 3. The `gpt-tiny` model trained [`Options::steps`] steps in fp32 on the GPU and on the CPU
//!    from the same seed and batches, and a small BERT classifier fine-tuned as many steps on
//!    a padded two-segment batch; the losses must agree step by step within 1e-4 relative.
//!
//! With `--cpu` the same checks run on the CPU against the composite candle-op references
//! (and the training check compares two CPU runs), which is how CI exercises this command on
//! machines without a GPU. There the bf16 checks compare with the references run in f32 on the
//! same bf16-rounded inputs: candle's composite ops round every intermediate, and its sums
//! over rows (bias and embedding gradients) accumulate in bf16, which the fused ops do not. One line per check; a non-zero exit if any fails.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use lantern_kernels::{ops, reference, AdamWHyper, Rng};
use lantern_models::gpt::{AttentionImpl, GptConfig};
use lantern_models::llama::LlamaConfig;
use lantern_train::optim::{AdamWConfig, Optimizer, OptimizerConfig};
use lantern_train::task::ModelConfig;
use lantern_train::trainer::{to_batch, train_step, StepInputs};
use std::path::{Path, PathBuf};

pub struct Options {
    /// Check the CPU kernels against the composite references instead of a GPU.
    pub cpu: bool,
    /// The CUDA device, `cuda` or `cuda:N`.
    pub device: String,
    /// A folder written by `lantern prepare`; without it the training check uses random tokens.
    pub data: Option<PathBuf>,
    pub steps: usize,
}

const TOL_F32: f64 = 1e-5;
const TOL_BF16: f64 = 1e-2;
const TOL_TRAIN: f64 = 1e-4;

/// What is checked against what.
struct Setup {
    /// Where the checked kernels run.
    device: Device,
    /// CUDA mode: the same public op on the CPU. CPU mode: the composite reference.
    cpu_mode: bool,
}

#[derive(Default)]
struct Report {
    total: usize,
    failed: Vec<String>,
}

impl Report {
    fn line(&mut self, name: &str, shape: &str, dtype: &str, what: &str, err: f64, tol: f64) {
        let ok = err <= tol; // false for NaN
        self.total += 1;
        let verdict = if ok { "pass" } else { "FAIL" };
        println!("{name:<16} {shape:<26} {dtype:<5} {what:<10} max err {err:<9.2e} tol {tol:<7.0e} {verdict}");
        if !ok {
            self.failed.push(format!("{name} {shape} {dtype} {what}"));
        }
    }
}

/// max |a − b| / max |b| over all elements (both moved to the CPU as f64); NaN anywhere in `a`
/// gives infinity. Shapes must match.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        bail!("shape {:?} vs reference {:?}", a.dims(), b.dims());
    }
    let f = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?)
    };
    let (a, b) = (f(a)?, f(b)?);
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(&b) {
        let d = (x - y).abs();
        if d.is_nan() {
            return Ok(f64::INFINITY);
        }
        worst = worst.max(d);
    }
    Ok(worst / scale)
}

fn randn(rng: &mut Rng, shape: &[usize], std: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    Ok(Tensor::from_vec(
        rng.normal_vec(n, std),
        shape,
        &Device::Cpu,
    )?)
}

/// Seeded random tensors of `shapes` on the CPU, and copies of them on `device` that own their
/// storage (`copy`: on the CPU `to_device` shares it, and the checked ops work in place).
fn randn_on(
    rng: &mut Rng,
    shapes: &[&[usize]],
    std: f64,
    device: &Device,
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let host: Vec<Tensor> = shapes
        .iter()
        .map(|sh| randn(rng, sh, std))
        .collect::<Result<_>>()?;
    let dev = host
        .iter()
        .map(|t| t.to_device(device)?.copy())
        .collect::<candle_core::Result<_>>()?;
    Ok((host, dev))
}

/// The largest [`rel_err`] over pairs of tensors.
fn max_rel_err(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    a.iter()
        .zip(b)
        .map(|(a, b)| rel_err(a, b))
        .try_fold(0f64, |m, e| e.map(|e| m.max(e)))
}

type OpFn<'a> = &'a dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>;

/// Output and gradients of the tracked inputs under `L = sum(f(x) · R)`, on `device`.
fn forward_backward(
    f: OpFn<'_>,
    inputs: &[Tensor],
    track: &[bool],
    r: &Tensor,
    device: &Device,
    dtype: DType,
) -> Result<(Tensor, Vec<Option<Tensor>>)> {
    let mut vars = Vec::new();
    let mut xs = Vec::new();
    for (t, &on) in inputs.iter().zip(track) {
        let t = t.to_device(device)?;
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t
        };
        if on {
            let v = Var::from_tensor(&t)?;
            xs.push(v.as_tensor().clone());
            vars.push(Some(v));
        } else {
            xs.push(t);
            vars.push(None);
        }
    }
    let y = f(&xs)?;
    let loss = (y.to_dtype(DType::F32)? * r.to_device(device)?)?.sum_all()?;
    let grads = loss.backward()?;
    let g = vars
        .iter()
        .map(|v| {
            v.as_ref()
                .map(|v| {
                    grads
                        .get(v.as_tensor())
                        .cloned()
                        .ok_or_else(|| anyhow!("no gradient reached an input"))
                })
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((y, g))
}

/// One op at one shape and dtype: forward and every tracked input's gradient.
#[allow(clippy::too_many_arguments)]
fn check_op(
    rep: &mut Report,
    s: &Setup,
    rng: &mut Rng,
    name: &str,
    inputs: &[Tensor],
    track: &[bool],
    dtype: DType,
    op: OpFn<'_>,
    oracle: OpFn<'_>,
) -> Result<()> {
    let shape = format!("{:?}", inputs[0].dims());
    let (dname, tol) = dtype_label(dtype);
    // Inputs rounded to the checked dtype once, so both sides see the same values.
    let rounded = inputs
        .iter()
        .map(|t| match t.dtype().is_float() {
            true => t.to_dtype(dtype)?.to_dtype(DType::F32),
            false => Ok(t.clone()),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let inputs = &rounded[..];
    let oracle_dtype = if s.cpu_mode { DType::F32 } else { dtype };
    let mut run = || -> Result<Vec<(String, f64)>> {
        let y_shape = op(&inputs
            .iter()
            .map(|t| {
                if t.dtype().is_float() {
                    t.to_dtype(dtype)
                } else {
                    Ok(t.clone())
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?)?
        .dims()
        .to_vec();
        // R rounded to the checked dtype too: the output gradient reaches the op as R in that
        // dtype, and a gradient that is one short sum (LayerNorm's bias at one column) would
        // otherwise measure the rounding of R amplified by cancellation, not the op.
        let r = randn(rng, &y_shape, 1.0)?
            .to_dtype(dtype)?
            .to_dtype(DType::F32)?;
        let (y, g) = forward_backward(op, inputs, track, &r, &s.device, dtype)?;
        let oracle_dev = Device::Cpu;
        let (y_ref, g_ref) =
            forward_backward(oracle, inputs, track, &r, &oracle_dev, oracle_dtype)?;
        let mut out = vec![("forward".to_string(), rel_err(&y, &y_ref)?)];
        for (i, (a, b)) in g.iter().zip(&g_ref).enumerate() {
            if let (Some(a), Some(b)) = (a, b) {
                out.push((format!("grad {i}"), rel_err(a, b)?));
            }
        }
        Ok(out)
    };
    match run() {
        Ok(results) => {
            for (what, err) in results {
                rep.line(name, &shape, dname, &what, err, tol);
            }
        }
        Err(e) => {
            println!("{name:<16} {shape:<26} {dname:<5} error: {e:#}");
            rep.total += 1;
            rep.failed.push(format!("{name} {shape} {dname}: {e:#}"));
        }
    }
    Ok(())
}

fn dtype_label(dtype: DType) -> (&'static str, f64) {
    match dtype {
        DType::BF16 => ("bf16", TOL_BF16),
        _ => ("f32", TOL_F32),
    }
}

fn pick<'a>(s: &Setup, fused: OpFn<'a>, composite: OpFn<'a>) -> OpFn<'a> {
    if s.cpu_mode {
        composite
    } else {
        fused
    }
}

fn check_ops(rep: &mut Report, s: &Setup, rng: &mut Rng) -> Result<()> {
    // RMSNorm draws from a generator of its own, so that the checks after it keep the inputs
    // their tolerances were chosen at (a lone GELU element is ill-conditioned at some draws).
    let rms_rng = &mut Rng::new(17);
    // RoPE too, for the same reason.
    let rope_rng = &mut Rng::new(18);
    // And packed attention, added after the checks that follow it.
    let packed_rng = &mut Rng::new(19);
    // The gated activations' draws, apart from the earlier checks' streams.
    let gated_rng = &mut Rng::new(20);
    for dtype in [DType::F32, DType::BF16] {
        // LayerNorm: weights around 1, rows of 1 to 1000 elements (more than a block).
        for shape in [
            &[3, 5][..],
            &[4, 1],
            &[7, 3, 129],
            &[16, 768],
            &[2, 1000],
            &[300, 64],
        ] {
            let c = shape[shape.len() - 1];
            let xs = [
                randn(rng, shape, 1.5)?,
                (randn(rng, &[c], 0.5)? + 1.0)?,
                randn(rng, &[c], 0.5)?,
            ];
            let f = |v: &[Tensor]| ops::layer_norm(&v[0], &v[1], &v[2], 1e-5);
            let r = |v: &[Tensor]| reference::layer_norm(&v[0], &v[1], &v[2], 1e-5);
            check_op(
                rep,
                s,
                rng,
                "layer_norm",
                &xs,
                &[true; 3],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
        }
        // RMSNorm (Llama's): gains around 1, rows of 2 to 1000 elements (more than a block),
        // a Llama width, more rows than one 256-row chunk of the weight gradient. Not rows of
        // one: there dx = r * g * eps / (x^2 + eps) comes out of a difference of two nearly
        // equal terms that f32 cannot resolve on either side (the CPU tests check it in f64).
        for shape in [
            &[3, 5][..],
            &[4, 2],
            &[7, 3, 129],
            &[16, 768],
            &[2, 1000],
            &[300, 64],
        ] {
            let c = shape[shape.len() - 1];
            let xs = [
                randn(rms_rng, shape, 1.5)?,
                (randn(rms_rng, &[c], 0.5)? + 1.0)?,
            ];
            let f = |v: &[Tensor]| ops::rms_norm(&v[0], &v[1], 1e-5);
            let r = |v: &[Tensor]| reference::rms_norm(&v[0], &v[1], 1e-5);
            check_op(
                rep,
                s,
                rms_rng,
                "rms_norm",
                &xs,
                &[true; 2],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
        }
        // RoPE (Llama's) over x (B, T, H, D) with tables (T, D): one pair, halves shorter than
        // a warp, 33 and 65 pairs (past a warp's first round), Llama's head dims, row counts
        // that end inside a block of 8 rows. Random tables, not cos and sin of angles: their two
        // halves differ, so a kernel that reads the wrong half fails. Only x has a gradient.
        // The last two take tables of (B·T, D), a row per token (packed sequences).
        for (shape, per_token) in [
            (&[1, 1, 1, 2][..], false),
            (&[2, 5, 3, 6], false),
            (&[1, 7, 2, 66], false),
            (&[2, 16, 12, 64], false),
            (&[1, 3, 5, 130], false),
            (&[2, 33, 3, 128], false),
            (&[3, 5, 3, 6], true),
            (&[2, 33, 4, 64], true),
        ] {
            let (t, d) = (shape[1], shape[3]);
            let rows = if per_token { shape[0] * t } else { t };
            let xs = [
                randn(rope_rng, shape, 1.5)?,
                randn(rope_rng, &[rows, d], 1.0)?,
                randn(rope_rng, &[rows, d], 1.0)?,
            ];
            let f = |v: &[Tensor]| ops::rope(&v[0], &v[1], &v[2]);
            let r = |v: &[Tensor]| reference::rope(&v[0], &v[1], &v[2]);
            check_op(
                rep,
                s,
                rope_rng,
                "rope",
                &xs,
                &[true, false, false],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
        }
        // GELU, both forms.
        for shape in [&[1][..], &[3, 7], &[2, 5, 129], &[64, 1000]] {
            let xs = [randn(rng, shape, 2.0)?];
            let (ft, rt) = (
                |v: &[Tensor]| ops::gelu_tanh(&v[0]),
                |v: &[Tensor]| reference::gelu_tanh(&v[0]),
            );
            check_op(
                rep,
                s,
                rng,
                "gelu_tanh",
                &xs,
                &[true],
                dtype,
                &ft,
                pick(s, &ft, &rt),
            )?;
            let (fe, re) = (
                |v: &[Tensor]| ops::gelu_erf(&v[0]),
                |v: &[Tensor]| reference::gelu_erf(&v[0]),
            );
            check_op(
                rep,
                s,
                rng,
                "gelu_erf",
                &xs,
                &[true],
                dtype,
                &fe,
                pick(s, &fe, &re),
            )?;
        }
        // Gated activations (SwiGLU, GeGLU): both inputs get gradients; a ragged last block.
        for shape in [&[1][..], &[3, 7], &[2, 5, 129], &[64, 1000]] {
            let xs = [randn(gated_rng, shape, 3.0)?, randn(gated_rng, shape, 1.0)?];
            let (fs, rs) = (
                |v: &[Tensor]| ops::swiglu(&v[0], &v[1]),
                |v: &[Tensor]| reference::swiglu(&v[0], &v[1]),
            );
            check_op(
                rep,
                s,
                gated_rng,
                "swiglu",
                &xs,
                &[true, true],
                dtype,
                &fs,
                pick(s, &fs, &rs),
            )?;
            let (fg, rg) = (
                |v: &[Tensor]| ops::geglu_tanh(&v[0], &v[1]),
                |v: &[Tensor]| reference::geglu_tanh(&v[0], &v[1]),
            );
            check_op(
                rep,
                s,
                gated_rng,
                "geglu_tanh",
                &xs,
                &[true, true],
                dtype,
                &fg,
                pick(s, &fg, &rg),
            )?;
            let (fe, re) = (
                |v: &[Tensor]| ops::geglu_erf(&v[0], &v[1]),
                |v: &[Tensor]| reference::geglu_erf(&v[0], &v[1]),
            );
            check_op(
                rep,
                s,
                gated_rng,
                "geglu_erf",
                &xs,
                &[true, true],
                dtype,
                &fe,
                pick(s, &fe, &re),
            )?;
        }
        // Dropout: the op draws each element's mask from its position, the oracle from the
        // generator's sequence on the host; the same seed must zero the same elements, in the
        // forward and in the backward (which redraws the mask).
        for shape in [&[1][..], &[3, 7], &[2, 5, 129], &[64, 1000]] {
            let xs = [randn(rng, shape, 1.0)?];
            let fd = |v: &[Tensor]| ops::dropout(&v[0], 0.1, &mut Rng::derive(7, 3));
            let rd = |v: &[Tensor]| reference::dropout(&v[0], 0.1, &mut Rng::derive(7, 3));
            check_op(
                rep,
                s,
                rng,
                "dropout",
                &xs,
                &[true],
                dtype,
                &fd,
                pick(s, &fd, &rd),
            )?;
        }
        // Bias add and bias + GELU: one row, rows past one 256-row chunk of the bias gradient,
        // rows inside and past a 32-column block, GPT-2's c_fc width. (Not one element alone:
        // its relative error is ill-conditioned where GELU's derivative nears 0, against
        // candle's backward with its constants rounded to six digits.)
        for shape in [
            &[1, 7][..],
            &[3, 7],
            &[2, 150, 33],
            &[300, 129],
            &[16, 3072],
        ] {
            let n = shape[shape.len() - 1];
            let xs = [randn(rng, shape, 2.0)?, randn(rng, &[n], 0.5)?];
            type BiasFn = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
            let cases: [(&str, BiasFn, BiasFn); 3] = [
                ("bias_add", ops::bias_add, reference::bias_add),
                (
                    "bias_gelu_tanh",
                    ops::bias_gelu_tanh,
                    reference::bias_gelu_tanh,
                ),
                (
                    "bias_gelu_erf",
                    ops::bias_gelu_erf,
                    reference::bias_gelu_erf,
                ),
            ];
            for (name, op, oracle) in cases {
                let f = |v: &[Tensor]| op(&v[0], &v[1]);
                let r = |v: &[Tensor]| oracle(&v[0], &v[1]);
                check_op(
                    rep,
                    s,
                    rng,
                    name,
                    &xs,
                    &[true; 2],
                    dtype,
                    &f,
                    pick(s, &f, &r),
                )?;
            }
        }
        // Embedding: frequent ids (half the positions on the first three), more positions than
        // the forward's 8192 position blocks, a GPT-2-wide row, with and without padding_idx.
        for (n, vocab, c) in [
            (1, 1, 1),
            (37, 11, 5),
            (300, 50, 300),
            (8300, 97, 2),
            (64, 1000, 768),
        ] {
            let ids: Vec<u32> = (0..n)
                .map(|i| match i % 2 {
                    0 => rng.below(3.min(vocab as u64)) as u32,
                    _ => rng.below(vocab as u64) as u32,
                })
                .collect();
            let xs = [
                randn(rng, &[vocab, c], 1.0)?,
                Tensor::from_vec(ids, n, &Device::Cpu)?,
            ];
            for pad in [None, Some(0)] {
                let f = |v: &[Tensor]| ops::embedding(&v[0], &v[1], pad);
                let r = |v: &[Tensor]| reference::embedding(&v[0], &v[1], pad);
                let name = ["embedding", "embedding_pad"][pad.is_some() as usize];
                check_op(
                    rep,
                    s,
                    rng,
                    name,
                    &xs,
                    &[true, false],
                    dtype,
                    &f,
                    pick(s, &f, &r),
                )?;
            }
        }
        // Softmax: no mask, causal (broadcast (T, T)), padding ((B, 1, 1, Tk), never a whole row).
        for (b, h, tq, tk) in [
            (1, 1, 1, 1),
            (2, 3, 5, 5),
            (2, 2, 9, 9),
            (2, 4, 64, 64),
            (1, 2, 17, 300),
            (1, 1, 3, 1030),
        ] {
            let xs = [randn(rng, &[b, h, tq, tk], 2.0)?];
            let scale = 0.35;
            let none = |v: &[Tensor]| ops::masked_softmax(&v[0], scale, None);
            let none_ref = |v: &[Tensor]| reference::masked_softmax(&v[0], scale, None);
            check_op(
                rep,
                s,
                rng,
                "softmax",
                &xs,
                &[true],
                dtype,
                &none,
                pick(s, &none, &none_ref),
            )?;
            let pad: Vec<f32> = (0..b)
                .flat_map(|i| {
                    (0..tk).map(move |j| {
                        if j + (i * 3) % tk >= tk {
                            f32::NEG_INFINITY
                        } else {
                            0.
                        }
                    })
                })
                .collect();
            let pad = Tensor::from_vec(pad, (b, 1, 1, tk), &s.device)?;
            let pad_cpu = pad.to_device(&Device::Cpu)?;
            let masked = |v: &[Tensor]| {
                let m = if v[0].device().is_cpu() {
                    &pad_cpu
                } else {
                    &pad
                };
                ops::masked_softmax(&v[0], scale, Some(&m.to_dtype(v[0].dtype())?))
            };
            let masked_ref = |v: &[Tensor]| {
                reference::masked_softmax(&v[0], scale, Some(&pad_cpu.to_dtype(v[0].dtype())?))
            };
            check_op(
                rep,
                s,
                rng,
                "softmax_padding",
                &xs,
                &[true],
                dtype,
                &masked,
                pick(s, &masked, &masked_ref),
            )?;
            if tq == tk {
                let causal = |v: &[Tensor]| {
                    let m = ops::causal_mask(tq, v[0].device())?.to_dtype(v[0].dtype())?;
                    ops::masked_softmax(&v[0], scale, Some(&m))
                };
                let causal_ref = |v: &[Tensor]| {
                    let m = ops::causal_mask(tq, v[0].device())?.to_dtype(v[0].dtype())?;
                    reference::masked_softmax(&v[0], scale, Some(&m))
                };
                check_op(
                    rep,
                    s,
                    rng,
                    "softmax_causal",
                    &xs,
                    &[true],
                    dtype,
                    &causal,
                    pick(s, &causal, &causal_ref),
                )?;
            }
        }
        // Causal attention from the (B, T, 3C) qkv: T of one row, below, at and past the
        // kernels' 64-row tiles, head dims 32, 64 (GPT-2) and 128.
        for (b, t, h, hd) in [
            (1, 1, 2, 64),
            (2, 37, 3, 32),
            (1, 64, 2, 64),
            (2, 130, 2, 64),
            (1, 200, 2, 32),
            (1, 67, 1, 128),
        ] {
            let xs = [randn(rng, &[b, t, 3 * h * hd], 1.0)?];
            let scale = 1.0 / (hd as f64).sqrt();
            let f = |v: &[Tensor]| ops::causal_attention(&v[0], h, scale);
            let r = |v: &[Tensor]| reference::causal_attention(&v[0], h, scale);
            check_op(
                rep,
                s,
                rng,
                "attention",
                &xs,
                &[true],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
        }
        // Packed rows (positions restarting per sequence): sequences within a tile, across
        // tile edges and longer than a tile, from a generator of their own so that the checks
        // after them keep their inputs.
        for (lengths, t, hd) in [
            (&[&[1usize, 5, 2, 9][..], &[40, 3]][..], 48, 32),
            (&[&[10, 60, 30], &[64, 66]], 130, 64),
            (&[&[3, 100, 27]], 130, 128),
        ] {
            let h = 2;
            let pos = lantern_kernels::packed_positions(lengths, t);
            let b = lengths.len();
            let xs = [
                randn(packed_rng, &[b, t, 3 * h * hd], 1.0)?,
                Tensor::from_vec(pos, (b, t), &Device::Cpu)?,
            ];
            let scale = 1.0 / (hd as f64).sqrt();
            let f = |v: &[Tensor]| ops::packed_causal_attention(&v[0], h, scale, &v[1]);
            let r = |v: &[Tensor]| reference::packed_causal_attention(&v[0], h, scale, &v[1]);
            check_op(
                rep,
                s,
                packed_rng,
                "attention_packed",
                &xs,
                &[true, false],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
        }
        // Cross-entropy: without weights and with 0/1 weights, summed and per row; vocabularies up
        // to GPT-2's.
        for (n, v) in [(1, 1), (5, 7), (33, 129), (64, 1000), (8, 50304)] {
            let x = randn(rng, &[n, v], 3.0)?;
            let t: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
            let t = Tensor::from_vec(t, n, &Device::Cpu)?;
            let w: Vec<f32> = (0..n).map(|i| (i % 3 != 1) as u32 as f32).collect();
            let w = Tensor::from_vec(w, n, &Device::Cpu)?;
            let f = |a: &[Tensor]| ops::cross_entropy_sum(&a[0], &a[1], a.get(2));
            let r = |a: &[Tensor]| reference::cross_entropy_sum(&a[0], &a[1], a.get(2));
            check_op(
                rep,
                s,
                rng,
                "cross_entropy",
                &[x.clone(), t.clone()],
                &[true, false],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
            check_op(
                rep,
                s,
                rng,
                "cross_entropy_w",
                &[x.clone(), t.clone(), w.clone()],
                &[true, false, false],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
            // Per-row terms (DPO's sequence log-probabilities): a gradient per row.
            let f = |a: &[Tensor]| ops::cross_entropy_rows(&a[0], &a[1], a.get(2));
            let r = |a: &[Tensor]| reference::cross_entropy_rows(&a[0], &a[1], a.get(2));
            check_op(
                rep,
                s,
                rng,
                "cross_entropy_rows_w",
                &[x, t, w],
                &[true, false, false],
                dtype,
                &f,
                pick(s, &f, &r),
            )?;
        }
    }
    Ok(())
}

/// The fused AdamW step on the checked device against the CPU one (in CPU mode: against the
/// trainer's formula written with candle ops), five steps, with and without a bf16 copy.
fn check_adamw(rep: &mut Report, s: &Setup, rng: &mut Rng) -> Result<()> {
    for (n, wd, work) in [
        (1usize, 0.0, false),
        (1000, 0.1, true),
        (65536 * 2 + 7, 0.1, true),
        (4099, 0.0, true),
    ] {
        let p0 = randn(rng, &[n], 1.0)?;
        let dev = &s.device;
        let make = |d: &Device| -> Result<[Tensor; 3]> {
            Ok([
                p0.to_device(d)?.copy()?,
                Tensor::zeros(n, DType::F32, d)?,
                Tensor::zeros(n, DType::F32, d)?,
            ])
        };
        let [p, m, v] = make(dev)?;
        let [rp, rm, rv] = make(&Device::Cpu)?;
        let w = if work {
            Some(p.to_dtype(DType::BF16)?)
        } else {
            None
        };
        for step in 1..=5u64 {
            let g = randn(rng, &[n], 0.1)?;
            let h = AdamWHyper {
                lr: 3e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: wd,
                step,
            };
            lantern_kernels::adamw_update(&p, &g.to_device(dev)?, &m, &v, w.as_ref(), &h)?;
            if s.cpu_mode {
                // The trainer's update, op for op.
                let bc1 = 1.0 - h.beta1.powi(step as i32);
                let bc2_sqrt = (1.0 - h.beta2.powi(step as i32)).sqrt();
                let q = if wd != 0.0 {
                    (&rp * (1.0 - h.lr * wd))?
                } else {
                    rp.clone()
                };
                let nm = ((&rm * h.beta1)? + (&g * (1.0 - h.beta1))?)?;
                let nv = ((&rv * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
                let denom = ((nv.sqrt()? / bc2_sqrt)? + h.eps)?;
                let np = (q - (nm.div(&denom)? * (h.lr / bc1))?)?;
                for (dst, src) in [(&rp, np), (&rm, nm), (&rv, nv)] {
                    dst.slice_set(&src, 0, 0)?;
                }
            } else {
                lantern_kernels::adamw_update(&rp, &g, &rm, &rv, None, &h)?;
            }
        }
        let shape = format!("[{n}] wd {wd}");
        let label = if work { "bf16" } else { "f32" };
        for (what, a, b) in [
            ("master", &p, &rp),
            ("exp_avg", &m, &rm),
            ("exp_avg_sq", &v, &rv),
        ] {
            rep.line("adamw", &shape, label, what, rel_err(a, b)?, TOL_F32);
        }
        if let Some(w) = &w {
            rep.line(
                "adamw",
                &shape,
                label,
                "work copy",
                rel_err(w, &rp.to_dtype(DType::BF16)?)?,
                TOL_BF16,
            );
        }
    }
    Ok(())
}

/// The multi-tensor norm (with unscaling) and in-place clip on the device against the CPU
/// (in CPU mode: against an f64 evaluation).
fn check_grad_norm(rep: &mut Report, s: &Setup, rng: &mut Rng) -> Result<()> {
    let sizes: [&[usize]; 3] = [&[1], &[7, 3, 5], &[65536 * 3 + 11]];
    for (set, unscale) in [
        (&sizes[..1], 1.0),
        (&sizes[..], 1.0),
        (&sizes[..], 1.0 / 1024.0),
    ] {
        let (host, dev) = randn_on(rng, set, 2.0, &s.device)?;
        let href: Vec<&Tensor> = host.iter().collect();
        let dref: Vec<&Tensor> = dev.iter().collect();
        let shape = format!("{} tensors, unscale {unscale}", set.len());
        let out = lantern_kernels::clip_grad_norm(&dref, 1.0, unscale)?;
        let want = if s.cpu_mode {
            let sq: f64 = host
                .iter()
                .map(|t| {
                    Ok(t.to_dtype(DType::F64)?
                        .sqr()?
                        .sum_all()?
                        .to_scalar::<f64>()?)
                })
                .sum::<Result<f64>>()?;
            let norm = sq.sqrt() * unscale;
            let coef = lantern_kernels::grad_norm::clip_coef(norm, 1.0);
            lantern_kernels::scale_grads(&href, unscale * coef)?;
            norm
        } else {
            lantern_kernels::clip_grad_norm(&href, 1.0, unscale)?.norm
        };
        rep.line(
            "grad_norm",
            &shape,
            "f32",
            "norm",
            (out.norm - want).abs() / want,
            TOL_F32,
        );
        let err = max_rel_err(&dev, &host)?;
        rep.line("grad_norm", &shape, "f32", "clipped", err, TOL_F32);
    }
    Ok(())
}

/// The LoRA settings of the selfcheck's LoRA lines: rank 4, alpha 8, peft's default targets,
/// dropout 0.1 on the side path (the same masks on every device: our seeded generator).
fn lora_spec() -> lantern_train::lora::LoraSection {
    lantern_train::lora::LoraSection {
        r: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: None,
        use_rslora: false,
        adapter: None,
    }
}

/// Per-step losses of `steps` fp32 steps of the `preset` language model (gpt-tiny,
/// llama-tiny) on `device`, with its blocks recomputed in the backward pass when `recompute`,
/// batches (B 4, T 64) from the data folder, or else one seeded random-token batch repeated
/// (which the model memorises, so the loss falls).
fn train_losses(
    device: &Device,
    data: Option<&PathBuf>,
    steps: usize,
    (preset, recompute, lora): (&str, bool, bool),
) -> Result<Vec<f64>> {
    let (b, t) = (4, 64);
    let shard = match data {
        Some(dir) => {
            let meta = lantern_data::prepare::read_meta(dir)?;
            Some(lantern_data::shard::Shard::open_checked(
                &dir.join("train.bin"),
                meta.vocab_size,
            )?)
        }
        None => None,
    };
    let vocab = shard.as_ref().map_or(512, |s| s.vocab_size() as usize);
    let cfg = match preset.starts_with("llama") {
        true => ModelConfig::Llama(LlamaConfig::preset(preset, vocab)?),
        false => ModelConfig::Gpt(GptConfig::preset(preset, vocab)?),
    };
    let mut rng = Rng::new(1337);
    let params = cfg.init_params(&mut rng, device)?;
    // LoRA (as `lantern train` with [lora]): r=4 on peft's default targets, the rest frozen.
    let lora = match lora {
        true => {
            let spec = lora_spec();
            let decoder = cfg.clone().decoder(Path::new(preset))?;
            Some(lantern_train::lora::Lora::new(
                &spec,
                lantern_train::lora::Base::CausalLm(&decoder),
                (&params, None),
                &[],
                &mut Rng::new(7),
            )?)
        }
        false => None,
    };
    let view = lora.as_ref().map(lantern_train::lora::Lora::view);
    let trained = lora.as_ref().map_or(&params, |l| l.master());
    let model = cfg.build(
        view.as_ref().unwrap_or(&params),
        AttentionImpl::default(),
        recompute,
        0.0,
    )?;
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(AdamWConfig::default()), trained)?;
    let toks: Vec<u32> = (0..b * (t + 1))
        .map(|_| rng.below(vocab as u64) as u32)
        .collect();
    let (mut inp, mut tgt): (Vec<u32>, Vec<u32>) = (
        toks.chunks(t + 1).flat_map(|r| r[..t].to_vec()).collect(),
        toks.chunks(t + 1).flat_map(|r| r[1..].to_vec()).collect(),
    );
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        if let Some(sh) = &shard {
            lantern_data::sampler::lm_batch(sh, 1337, (step * b) as u64, b, t, &mut inp, &mut tgt)?;
        }
        let batches = [to_batch(&inp, &tgt, b, t, device)?];
        let out = train_step(
            &StepInputs {
                model: model.as_ref(),
                params: view.as_ref().unwrap_or(&params),
                master: trained,
                batches: &batches,
                micro_batches: 1,
                lr: 1e-3,
                grad_clip: 1.0,
                dropout_seed: 0,
                step: step as u64,
                check_integrity: step == 0,
                poison_grad: false,
                lora: lora.as_ref(),
            },
            &mut opt,
            None,
        )?;
        losses.push(out.loss);
    }
    Ok(losses)
}

/// NCCL on the checked GPU, in a world of one rank (NCCL puts at most one rank on a GPU), where
/// every collective hands its input back unchanged (error 0). What this checks is the path the
/// trainer's data parallelism takes: libnccl.so.2 loads, a communicator initialises on
/// candle's stream, and the in-place device collectives (f32 and bf16), the host-buffer one
/// and the bucketed gradient all-reduce run and return the data intact. With `--cpu` the same
/// checks run through the `single` backend (no engine), which checks the checks.
fn check_collectives(rep: &mut Report, s: &Setup, rng: &mut Rng) -> Result<()> {
    use lantern_comm::{all_reduce_bucketed, BackendKind, CommOptions, Communicator, ReduceOp};
    let (kind, name) = match s.device.is_cuda() {
        true => (BackendKind::Nccl, "nccl"),
        false => (BackendKind::Single, "comm single"),
    };
    let comm = Communicator::from_env(kind, &s.device, &CommOptions::default())
        .with_context(|| format!("{name}: a one-rank communicator on the checked device"))?;
    for dtype in [DType::F32, DType::BF16] {
        let want = randn(rng, &[1000, 37], 1.0)?.to_dtype(dtype)?;
        // A tensor that owns its storage: the collectives write in place.
        let t = want.to_device(&s.device)?.copy()?;
        comm.all_reduce(&t, ReduceOp::Sum)?;
        comm.all_reduce(&t, ReduceOp::Avg)?;
        comm.broadcast(&t, 0)?;
        let (label, _) = dtype_label(dtype);
        let err = rel_err(&t, &want)?;
        rep.line(
            name,
            "(1000, 37) one rank",
            label,
            "sum,avg,bcast",
            err,
            0.0,
        );
    }
    let (want, on_dev) = randn_on(rng, &[&[300], &[5000], &[64, 65]], 1.0, &s.device)?;
    // 4 KiB buckets: the 5000-element tensor spans several, the others share one.
    let summed = all_reduce_bucketed(&comm, &on_dev, ReduceOp::Sum, 4096)?;
    let err = max_rel_err(&summed, &want)?;
    rep.line(
        name,
        "3 tensors, 4 KiB buckets",
        "f32",
        "bucketed",
        err,
        0.0,
    );
    let mut host = [1.0f32, -2.5, 3.25];
    comm.all_reduce_f32(&mut host, ReduceOp::Sum)?;
    let err = if host == [1.0, -2.5, 3.25] {
        0.0
    } else {
        f64::INFINITY
    };
    rep.line(name, "host buffer of 3", "f32", "sum", err, 0.0);
    Ok(())
}

/// Per-step losses of `steps` fp32 fine-tuning steps of a small BERT classifier (2 layers, 64
/// wide, 4 heads, erf GELU, 3 labels; no dropout) on `device`: one seeded batch repeated, whose
/// 4 rows hold 64, 50, 33 and 17 real tokens of two segments, so that the padding mask, the
/// token types, the pooler and the classifier head are all on the path. The step is the
/// fine-tuning loop's own (`finetune::classifier_step`), with clipping at 1 and lr 1e-3.
/// `head` is the sequence classifier (a class per row) or the token classifier (a tag at
/// every other real position but [CLS], the others weighted 0 as first sub-tokens are);
/// `recompute` runs the step with activation checkpointing. With `family` "gpt2", "llama",
/// "qwen2", "mistral", "qwen3", "gemma3_text", "gemma2", "gemma", "olmo2", "smollm3" or "phi3",
/// the model is a GPT-2 or Llama-family sequence or token classifier of
/// the same width (the
/// sequence's last non-padding token scored, or the same positions as BERT's tags; the fused
/// causal attention on a GPU, the composite one on the CPU) on the same batch.
fn cls_losses(
    device: &Device,
    steps: usize,
    (family, head, recompute, lora): (&str, lantern_models::bert::BertHead, bool, bool),
) -> Result<Vec<f64>> {
    use lantern_data::labelled::ProblemType;
    use lantern_models::bert::{BertConfig, BertHead};
    use lantern_models::decoder::classifier::DecoderClsConfig;
    use lantern_models::decoder::DecoderConfig;
    use lantern_models::gpt::GptConfig;
    use lantern_models::llama::{LlamaConfig, LlamaFamily};
    use lantern_models::task::{TaskConfig, TaskModel};
    let (t, vocab, lens) = (64usize, 512u64, [64usize, 50, 33, 17]);
    let b = lens.len();
    let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut rng = Rng::new(1337);
    let lm = match family {
        "gpt2" => Some(DecoderConfig::Gpt(GptConfig {
            vocab_size: vocab as usize,
            n_positions: t,
            n_embd: 64,
            n_layer: 2,
            n_head: 4,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        })),
        "llama" | "qwen2" | "mistral" | "qwen3" | "gemma3_text" | "gemma2" | "gemma" | "olmo2"
        | "smollm3" | "phi3" => {
            let mut c = LlamaConfig::preset("llama-tiny", vocab as usize)?;
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers) = (64, 192, 2);
            c.max_position_embeddings = t;
            // Qwen2: biased q/k/v; Mistral: a window of 16, shorter than most rows, so the
            // device runs the composite attention with the sliding mask; Qwen3: head norms,
            // and heads of 32 (a width the fused attention kernel takes) under a width of 64
            // and 4 heads; Phi-3: fused q/k/v and gate/up layers, Mistral's window.
            c.model_type = LlamaFamily::from_model_type(family).expect("a Llama family");
            c.sliding_window = matches!(family, "mistral" | "phi3").then_some(16);
            // SmolLM3: its second layer without RoPE.
            if family == "smollm3" {
                c.nope_layers = vec![false, true];
            }
            // Phi-4-mini's RoPE over three quarters of each head (12 of 16 dimensions).
            c.partial_rotary_factor = (family == "phi3").then_some(0.75);
            c.head_dim = (family == "qwen3").then_some(32);
            if family == "gemma3_text" || family == "gemma2" {
                // Gemma 3: sliding (window 16) then full layers, heads of 32, its norms, GELU
                // MLP, scaled embeddings and scores; Gemma 2: the same with one RoPE base and
                // soft-capped scores (so the composite attention on every layer).
                (c.sliding_window, c.head_dim) = (Some(16), Some(32));
                c.sliding_layers = vec![true, false];
                c.query_pre_attn_scalar = Some(24.0);
                match family {
                    "gemma2" => c.attn_logit_softcapping = Some(5.0),
                    _ => c.rope_local_theta = Some(100.0),
                }
            }
            Some(DecoderConfig::Llama(c))
        }
        _ => None,
    };
    let cfg = if let Some(lm) = lm {
        let mut cfg = DecoderClsConfig::from_lm(lm).with_labels(&labels);
        cfg.pad_token_id = Some(0);
        cfg.classifier_dropout = Some(0.0);
        TaskConfig::Decoder(cfg)
    } else {
        let mut cfg = BertConfig::new(vocab as usize, 64, 2, 4, 256, t).with_labels(&labels);
        cfg.hidden_dropout_prob = 0.0;
        cfg.attention_probs_dropout_prob = 0.0;
        if family == "modernbert" {
            // A full layer then a local one (16 keys on either side, fewer than most rows
            // hold);
            // every bias, and mean pooling over the padded rows.
            let mut m = lantern_models::bert::ModernSettings::new(2);
            m.local_attention = 32;
            (m.norm_bias, m.attention_bias, m.mlp_bias, m.classifier_bias) =
                (true, true, true, true);
            m.classifier_pooling = lantern_models::bert::Pooling::Mean;
            cfg.model_type = lantern_models::bert::Family::ModernBert;
            (cfg.modern, cfg.type_vocab_size, cfg.classifier_dropout) = (Some(m), 0, Some(0.0));
        }
        TaskConfig::Bert(cfg)
    };
    let params = cfg.init_params(head, &mut rng, device, DType::F32)?;
    // LoRA of rank 4 on the family's default targets: the adapters and the head train.
    let lora = match lora {
        true => {
            let spec = lora_spec();
            let mut lora_rng = Rng::new(7);
            let l = lantern_train::lora::Lora::new(
                &spec,
                lantern_train::lora::Base::Task(&cfg, head),
                (&params, None),
                &[],
                &mut lora_rng,
            )?;
            Some(l)
        }
        false => None,
    };
    let view = lora.as_ref().map(lantern_train::lora::Lora::view);
    let work = view.as_ref().unwrap_or(&params);
    let trained = lora.as_ref().map_or(&params, |l| l.master());
    let model = TaskModel::new(&cfg, work, head)?;
    let mut opt = lantern_train::optim::Optimizer::new(
        lantern_train::optim::OptimizerConfig::AdamW(AdamWConfig::default()),
        trained,
    )?;
    let (mut ids, mut types, mut mask) = (vec![0u32; b * t], vec![0u32; b * t], vec![0u32; b * t]);
    for (r, &len) in lens.iter().enumerate() {
        for j in 0..len {
            // Real tokens avoid the pad id 0; the second half of each row is segment 1.
            ids[r * t + j] = 1 + rng.below(vocab - 1) as u32;
            types[r * t + j] = u32::from(j >= len / 2);
            mask[r * t + j] = 1;
        }
    }
    let (problem, y, weights, rows) = if head == BertHead::TokenClassification {
        let y: Vec<u32> = (0..b * t).map(|_| rng.below(3) as u32).collect();
        let w: Vec<f32> = (0..b * t)
            .map(|i| f32::from(i % t > 0 && i % t < lens[i / t] && i % 2 == 1))
            .collect();
        let rows = w.iter().filter(|&&x| x > 0.0).count();
        let w = Tensor::from_slice(&w, b * t, device)?;
        (
            ProblemType::TokenClassification,
            Tensor::from_slice(&y, b * t, device)?,
            Some(w),
            rows,
        )
    } else {
        let y: Vec<u32> = (0..b).map(|_| rng.below(3) as u32).collect();
        let y = Tensor::from_slice(&y, b, device)?;
        (ProblemType::SingleLabelClassification, y, None, b)
    };
    let ids = Tensor::from_slice(&ids, (b, t), device)?;
    let types = Tensor::from_slice(&types, (b, t), device)?;
    let mask = Tensor::from_slice(&mask, (b, t), device)?;
    let single = lantern_comm::Communicator::single();
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps as u64 {
        let micro = [lantern_train::finetune::ClsMicro {
            input: lantern_models::bert::BertInput {
                ids: &ids,
                token_type_ids: Some(&types),
                attention_mask: Some(&mask),
            },
            labels: y.clone(),
            weights: weights.clone(),
            stream: step,
        }];
        let out = lantern_train::finetune::classifier_step(
            &single,
            lantern_train::finetune::ClsModel {
                model: &model,
                work,
                master: trained,
                lora: lora.as_ref(),
            },
            &mut opt,
            &micro,
            lantern_train::finetune::ClsStep {
                lr: 1e-3,
                grad_clip: 1.0,
                dropout_seed: 0,
                step,
                rows,
                problem,
                loss_coef: 0.0,
                activation_checkpointing: recompute,
            },
            None,
        )?;
        losses.push(out.loss);
    }
    Ok(losses)
}

/// One line per step: the loss on the checked device against the CPU's.
fn loss_lines(rep: &mut Report, name: &str, source: &str, device: &[f64], cpu: &[f64]) {
    for (i, (a, b)) in device.iter().zip(cpu).enumerate() {
        let shape = format!("step {i} loss {b:.5} ({source})");
        rep.line(
            name,
            &shape,
            "f32",
            "loss",
            (a - b).abs() / b.abs(),
            TOL_TRAIN,
        );
    }
}

fn check_training(rep: &mut Report, s: &Setup, opts: &Options) -> Result<()> {
    let data = opts.data.as_ref();
    let source = if data.is_some() {
        "data"
    } else {
        "random batch"
    };
    for (preset, recompute, lora, name) in [
        ("gpt-tiny", false, false, "train gpt-tiny"),
        ("llama-tiny", false, false, "train llama-tiny"),
        // Recomputed on the device against stored on the CPU: the same losses.
        ("llama-tiny", true, false, "train llama-tiny recompute"),
        ("gpt-tiny", false, true, "train gpt-tiny lora"),
        ("llama-tiny", false, true, "train llama-tiny lora"),
    ] {
        let on_device = train_losses(&s.device, data, opts.steps, (preset, recompute, lora))
            .with_context(|| format!("{name} on the checked device"))?;
        let on_cpu = train_losses(&Device::Cpu, data, opts.steps, (preset, false, lora))
            .with_context(|| format!("{name} on the CPU"))?;
        loss_lines(rep, name, source, &on_device, &on_cpu);
    }
    use lantern_models::bert::BertHead;
    let seq = BertHead::SequenceClassification;
    let tags = BertHead::TokenClassification;
    for (kind, name) in [
        (("bert", seq, false, false), "finetune bert"),
        (("bert", tags, false, false), "finetune bert tags"),
        // Recomputed on the device against stored on the CPU: the same losses.
        (("bert", seq, true, false), "finetune bert recompute"),
        (("bert", seq, false, true), "finetune bert lora"),
        (
            ("modernbert", seq, false, false),
            "finetune modernbert window",
        ),
        (
            ("modernbert", tags, true, true),
            "finetune modernbert window tags recompute lora",
        ),
        (("gpt2", seq, false, false), "finetune gpt2"),
        (("gpt2", tags, false, false), "finetune gpt2 tags"),
        (("gpt2", seq, true, false), "finetune gpt2 recompute"),
        (("gpt2", seq, false, true), "finetune gpt2 lora"),
        (("llama", seq, false, false), "finetune llama"),
        (("llama", tags, false, false), "finetune llama tags"),
        (("llama", seq, true, false), "finetune llama recompute"),
        (("llama", tags, false, true), "finetune llama tags lora"),
        (("qwen2", seq, false, false), "finetune qwen2"),
        (("mistral", seq, false, false), "finetune mistral window"),
        (
            ("mistral", tags, true, false),
            "finetune mistral window tags recompute",
        ),
        (("qwen3", seq, false, false), "finetune qwen3"),
        (("qwen3", tags, false, true), "finetune qwen3 tags lora"),
        (("gemma3_text", seq, false, false), "finetune gemma3"),
        (
            ("gemma3_text", seq, true, true),
            "finetune gemma3 recompute lora",
        ),
        (
            ("gemma2", seq, true, true),
            "finetune gemma2 softcap recompute lora",
        ),
        (("olmo2", seq, true, true), "finetune olmo2 recompute lora"),
        (("gemma", tags, false, false), "finetune gemma tags"),
        (("smollm3", seq, false, true), "finetune smollm3 nope lora"),
        (("phi3", seq, false, false), "finetune phi3 window"),
        (
            ("phi3", tags, true, true),
            "finetune phi3 window tags recompute lora",
        ),
    ] {
        let on_device = cls_losses(&s.device, opts.steps, kind)
            .with_context(|| format!("{name} on the checked device"))?;
        let on_cpu = cls_losses(&Device::Cpu, opts.steps, (kind.0, kind.1, false, kind.3))
            .with_context(|| format!("{name} on the CPU"))?;
        loss_lines(rep, name, "padded batch", &on_device, &on_cpu);
    }
    Ok(())
}

fn setup(opts: &Options) -> Result<Setup> {
    if opts.cpu {
        return Ok(Setup {
            device: Device::Cpu,
            cpu_mode: true,
        });
    }
    if !cfg!(feature = "cuda") {
        bail!(
            "no CUDA device is available: this binary was built without `--features cuda`. \
             `lantern selfcheck --cpu` runs the same checks on the CPU against the composite ops"
        );
    }
    let device = lantern_train::device::parse_device(&opts.device)
        .map_err(|e| anyhow!("no CUDA device is available ({e}). `lantern selfcheck --cpu` runs the same checks on the CPU"))?;
    if !device.is_cuda() {
        bail!(
            "--device {}: selfcheck needs a CUDA device (or --cpu)",
            opts.device
        );
    }
    // Exact f32 matmuls for the comparison with the CPU.
    lantern_train::device::set_tf32(&device, false);
    Ok(Setup {
        device,
        cpu_mode: false,
    })
}

/// The device as `parse_device` set it up for training: freed memory kept in the pool (when
/// the device allocates from one) and no per-buffer events.
#[cfg(feature = "cuda")]
fn check_device_setup(rep: &mut Report, d: &candle_core::CudaDevice) -> Result<()> {
    let (threshold, events) = lantern_kernels::cuda::device::training_setup(d)?;
    let kept = threshold.is_none_or(|t| t == u64::MAX);
    println!(
        "device setup: pool release threshold {}, per-buffer events {}",
        threshold.map_or("(no pool)".to_string(), |t| t.to_string()),
        if events { "on" } else { "off" }
    );
    rep.total += 1;
    if !kept || events {
        println!("device setup FAIL");
        rep.failed.push("device setup".to_string());
    }
    Ok(())
}

pub fn run(opts: &Options) -> Result<()> {
    let s = setup(opts)?;
    let against = if s.cpu_mode {
        "CPU kernels vs composite candle ops"
    } else {
        "CUDA kernels vs CPU kernels"
    };
    println!("selfcheck on {:?}: {against}", s.device);
    #[cfg(feature = "cuda")]
    lantern_kernels::cuda::set_poison_outputs(!s.cpu_mode);
    let mut rep = Report::default();
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = &s.device {
        check_device_setup(&mut rep, d)?;
    }
    let mut rng = Rng::new(20261124);
    check_ops(&mut rep, &s, &mut rng)?;
    check_adamw(&mut rep, &s, &mut rng)?;
    check_grad_norm(&mut rep, &s, &mut rng)?;
    check_collectives(&mut rep, &s, &mut rng)?;
    #[cfg(feature = "cuda")]
    lantern_kernels::cuda::set_poison_outputs(false);
    if opts.steps > 0 {
        check_training(&mut rep, &s, opts)?;
    }
    if rep.failed.is_empty() {
        println!("selfcheck passed: {} checks", rep.total);
        Ok(())
    } else {
        bail!(
            "{} of {} checks failed: {}",
            rep.failed.len(),
            rep.total,
            rep.failed.join("; ")
        )
    }
}

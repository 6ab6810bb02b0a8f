//! The ops the models call, each with a recorded backward.
//!
//! Each runs as a fused custom op with a hand-written backward: on the CPU the Rust kernels of
//! `crate::cpu` (in f32, or f64 for gradient checks), on CUDA (feature `cuda`) our kernels from
//! `kernels/*.cu` (in f32 or bf16: bf16 tensors stay bf16 in memory), anywhere else the
//! composite version in [`crate::reference`]. Statistics that need range (LayerNorm mean and
//! variance, RMSNorm's mean square, softmax, the loss) are computed in f32 whatever the storage
//! dtype (f64 stays f64 on the CPU), as PyTorch's autocast does, and the result is cast back to
//! the input dtype.
//! Inputs may be strided: they are made contiguous first.

use crate::cpu::{
    attention::{CausalAttention, Dims},
    bias_act::BiasAct,
    cross_entropy::CrossEntropySum,
    dropout::Dropout,
    embedding::Embedding,
    gated::Gate,
    gelu::Gelu,
    gemv::{Gemv, WeightLayout},
    layer_norm::LayerNorm,
    rms_norm::RmsNorm,
    rope::Rope,
    softmax::MaskedSoftmax,
};
use crate::{reference, Rng};
use candle_core::{DType, Device, Result, Tensor, D};

/// Whether `device` has fused kernels (else the composite reference runs).
fn fused(device: &Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

/// The storage dtype a fused kernel runs on: on the CPU f64 stays f64 (gradient checks) and the
/// rest is f32; on CUDA bf16 stays bf16 (the kernels compute in f32) and the rest is f32.
fn kernel_dtype(device: &Device, dtype: DType) -> DType {
    match (device.is_cpu(), dtype) {
        (true, DType::F64) => DType::F64,
        (false, DType::BF16) => DType::BF16,
        _ => DType::F32,
    }
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`, with the
/// biased variance (as `torch.nn.LayerNorm`). x: (.., C), weight and bias: (C).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x.device()) {
        return reference::layer_norm(x, weight, bias, eps);
    }
    let dtype = x.dtype();
    let ct = kernel_dtype(x.device(), dtype);
    let prep = |t: &Tensor| t.to_dtype(ct)?.contiguous();
    prep(x)?
        .apply_op3(&prep(weight)?, &prep(bias)?, LayerNorm { eps })?
        .to_dtype(dtype)
}

/// RMSNorm over the last dimension (Llama's norm): `x * rsqrt(mean(x^2) + eps) * weight`.
/// x: (.., C), weight: (C); the output has x's dtype. The mean square and the whole product are
/// computed in f32 (f64 stays f64 on the CPU) and rounded to x's dtype once, as [`layer_norm`]
/// does. transformers' `LlamaRMSNorm` instead rounds `x * rsqrt(..)` to the input dtype and then
/// multiplies by the weight in that dtype: the same operations in f32, one rounding fewer in
/// bf16. The weight gradient is summed over rows in f32 in a fixed order.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x.device()) {
        return reference::rms_norm(x, weight, eps);
    }
    let dtype = x.dtype();
    let ct = kernel_dtype(x.device(), dtype);
    let prep = |t: &Tensor| t.to_dtype(ct)?.contiguous();
    prep(x)?
        .apply_op2(&prep(weight)?, RmsNorm { eps })?
        .to_dtype(dtype)
}

/// Rotary position embedding (RoPE) as transformers' `apply_rotary_pos_emb`:
/// `x * cos + rotate_half(x) * sin` with `rotate_half(x) = cat(-x[.., D/2..], x[.., ..D/2])`.
/// x: (B, T, H, D) with D even; cos, sin: (T, D), row t for the position of x's index t (any
/// float dtype: they are converted to the kernel's). The output has x's dtype; the products and
/// sums are computed in f32 (f64 stays f64 on the CPU) and rounded to x's dtype once.
/// transformers computes in the input dtype and rounds each product and the sum: the same
/// operations in f32, fewer roundings in bf16. Only x gets a gradient: the tables are constants
/// of the positions, and the backward returns none for them even when they are variables.
/// Shapes that do not fit are errors that name them.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused(x.device()) {
        return reference::rope(x, cos, sin);
    }
    let dtype = x.dtype();
    let ct = kernel_dtype(x.device(), dtype);
    let prep = |t: &Tensor| t.to_dtype(ct)?.contiguous();
    prep(x)?
        .apply_op3(&prep(cos)?, &prep(sin)?, Rope)?
        .to_dtype(dtype)
}

/// GELU, tanh approximation (`gelu_new` in transformers, GPT-2's activation).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    gelu(x, Gelu::Tanh)
}

/// GELU with the exact erf (`gelu` in transformers, BERT's activation).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    gelu(x, Gelu::Erf)
}

fn gelu(x: &Tensor, kind: Gelu) -> Result<Tensor> {
    if !fused(x.device()) {
        return match kind {
            Gelu::Tanh => reference::gelu_tanh(x),
            Gelu::Erf => reference::gelu_erf(x),
        };
    }
    let dtype = x.dtype();
    x.to_dtype(kernel_dtype(x.device(), dtype))?
        .contiguous()?
        .apply_op1(kind)?
        .to_dtype(dtype)
}

/// SwiGLU's `silu(g) · u` in one pass (Llama's feed-forward: `down(silu(gate(x)) · up(x))`),
/// with both gradients from one pass back. g and u of one shape; the output has g's dtype,
/// computed in f32 (f64 stays f64 on the CPU) and rounded once.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    gated(g, u, Gate::Silu)
}

/// Gemma's `gelu_tanh(g) · u` in one pass, as [`swiglu`].
pub fn geglu_tanh(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    gated(g, u, Gate::GeluTanh)
}

/// ModernBERT's `gelu(g) · u` with the exact erf GELU in one pass, as [`swiglu`].
pub fn geglu_erf(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    gated(g, u, Gate::GeluErf)
}

fn gated(g: &Tensor, u: &Tensor, gate: Gate) -> Result<Tensor> {
    if !fused(g.device()) {
        return match gate {
            Gate::Silu => reference::swiglu(g, u),
            Gate::GeluTanh => reference::geglu_tanh(g, u),
            Gate::GeluErf => reference::geglu_erf(g, u),
        };
    }
    let dtype = g.dtype();
    let ct = kernel_dtype(g.device(), dtype);
    let prep = |t: &Tensor| t.to_dtype(ct)?.contiguous();
    prep(g)?.apply_op2(&prep(u)?, gate)?.to_dtype(dtype)
}

/// `x + b` with b (n) added to every row of x (.., n): a linear layer's bias. The bias
/// gradient is summed over the rows in f32 whatever the storage dtype (`cpu::bias_act`).
pub fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    bias_act(x, b, None)
}

/// `gelu_tanh(x + b)` in one pass (GPT-2's c_fc and activation), without the sum in between
/// being stored or rounded.
pub fn bias_gelu_tanh(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    bias_act(x, b, Some(Gelu::Tanh))
}

/// `gelu_erf(x + b)` in one pass (BERT's intermediate layer and activation).
pub fn bias_gelu_erf(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    bias_act(x, b, Some(Gelu::Erf))
}

fn bias_act(x: &Tensor, b: &Tensor, act: Option<Gelu>) -> Result<Tensor> {
    if !fused(x.device()) {
        return match act {
            None => reference::bias_add(x, b),
            Some(Gelu::Tanh) => reference::bias_gelu_tanh(x, b),
            Some(Gelu::Erf) => reference::bias_gelu_erf(x, b),
        };
    }
    let dtype = x.dtype();
    let ct = kernel_dtype(x.device(), dtype);
    let prep = |t: &Tensor| t.to_dtype(ct)?.contiguous();
    prep(x)?.apply_op2(&prep(b)?, BiasAct(act))?.to_dtype(dtype)
}

/// The rows of `table` (V, C) at `ids` (integers of any shape): (ids.., C). The backward sums
/// each row's gradient in f32 whatever the storage dtype, in position order, and leaves the
/// row `padding_idx` (as `torch.nn.Embedding`'s) without gradient (`cpu::embedding`). An id
/// `>= V` is an error that names it and its position.
pub fn embedding(table: &Tensor, ids: &Tensor, padding_idx: Option<u32>) -> Result<Tensor> {
    let mut dims = ids.dims().to_vec();
    dims.push(table.dim(D::Minus1)?);
    let flat = ids.flatten_all()?.to_dtype(DType::U32)?;
    if !fused(table.device()) {
        return reference::embedding(table, &flat, padding_idx)?.reshape(dims);
    }
    let dtype = table.dtype();
    let ct = kernel_dtype(table.device(), dtype);
    table
        .to_dtype(ct)?
        .contiguous()?
        .apply_op2(&flat.contiguous()?, Embedding { padding_idx })?
        .to_dtype(dtype)?
        .reshape(dims)
}

/// Additive causal mask (T, T): 0 where key <= query, -inf above the diagonal.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    causal_mask_after(0, t, device)
}

/// Additive causal mask (T, start + T) of T queries at positions `start..start + T` over the
/// keys of positions `0..start + T`: query i sees keys 0..=start + i (generation with cached
/// keys).
pub fn causal_mask_after(start: usize, t: usize, device: &Device) -> Result<Tensor> {
    sliding_causal_mask(start, t, None, device)
}

/// [`causal_mask_after`] within a sliding window of `window` keys (Mistral's): query i, at
/// position p = start + i, sees the keys of positions p - window + 1 ..= p
/// (transformers' `sliding_window_overlay`: key > query - window). `None`: no window.
pub fn sliding_causal_mask(
    start: usize,
    t: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let p = start + i;
            (0..start + t).map(move |j| {
                let outside = window.is_some_and(|w| j + w <= p);
                if j > p || outside {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, start + t), device)
}

/// Softmax over the last dimension of `scores * scale + mask`, computed in f32.
/// scores: (B, H, Tq, Tk); mask: anything that broadcasts to it, additive (0 or -inf), and gets
/// no gradient. On the CPU a fully masked row gives zeros rather than NaN.
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    if !fused(scores.device()) {
        return reference::masked_softmax(scores, scale, mask);
    }
    let dtype = scores.dtype();
    let ct = kernel_dtype(scores.device(), dtype);
    let s = scores.to_dtype(ct)?.contiguous()?;
    let op = MaskedSoftmax { scale };
    let y = match mask {
        // The CUDA kernel indexes a mask of rank <= 4 through its strides; beyond that the
        // scores become (rows, C) and the mask is materialised to match.
        Some(m) if s.rank() > 4 && !s.device().is_cpu() => {
            let c = s.dim(D::Minus1)?;
            let rows = s.elem_count() / c;
            let m = m.to_dtype(ct)?.broadcast_as(s.shape())?.contiguous()?;
            s.reshape((rows, c))?
                .apply_op2(&m.reshape((rows, c))?, op)?
                .reshape(s.shape())?
        }
        // The broadcast mask is read through its strides, never materialised.
        Some(m) => s.apply_op2(&m.to_dtype(ct)?.broadcast_as(s.shape())?, op)?,
        None => s.apply_op1(op)?,
    };
    y.to_dtype(dtype)
}

/// Head dimensions the CUDA attention kernels are instantiated for; other head dimensions run
/// the composite [`reference::causal_attention`] on CUDA.
pub const CUDA_ATTENTION_HEAD_DIMS: [usize; 3] = [32, 64, 128];

/// Whether [`causal_attention`] runs its fused kernel on `device` for heads of `head_dim`
/// (otherwise it runs the composite reference).
pub fn causal_attention_kernel_on(device: &Device, head_dim: usize) -> bool {
    fused(device) && (!device.is_cuda() || CUDA_ATTENTION_HEAD_DIMS.contains(&head_dim))
}

/// Causal self-attention of GPT: qkv (B, T, 3C) as c_attn produces it (q = columns [0, C),
/// k = [C, 2C), v = [2C, 3C), head h at columns h*hd.. of each) -> y (B, T, C), head h at
/// columns h*hd.., i.e. `softmax(scale * q k^T + causal mask) v` transposed back, as c_proj
/// reads it. The softmax runs in f32 (f64 stays f64 on the CPU); the gradient flows to qkv.
/// Fused on the CPU and on CUDA (head dims [`CUDA_ATTENTION_HEAD_DIMS`], f32 or bf16: the
/// (B, H, T, T) scores are never stored); elsewhere the composite reference.
pub fn causal_attention(qkv: &Tensor, n_head: usize, scale: f64) -> Result<Tensor> {
    let dev = qkv.device();
    let d = Dims::of("causal_attention", qkv.shape(), n_head)?;
    if !causal_attention_kernel_on(dev, d.hd) {
        return reference::causal_attention(qkv, n_head, scale);
    }
    let dtype = qkv.dtype();
    qkv.to_dtype(kernel_dtype(dev, dtype))?
        .contiguous()?
        .apply_op1(CausalAttention::new(n_head, scale))?
        .to_dtype(dtype)
}

/// [`causal_attention`] over packed rows (several sequences one after the other in a row):
/// query i sees only the keys of its own sequence, `i - positions[i] ..= i`. positions (B, T),
/// integers: each token's position within its sequence, restarting at 0 with each sequence and
/// counting up by one (`lantern_models::Packing` makes them). The same kernels, their key
/// loops bounded per query: no (B, 1, T, T) mask is made or read.
pub fn packed_causal_attention(
    qkv: &Tensor,
    n_head: usize,
    scale: f64,
    positions: &Tensor,
) -> Result<Tensor> {
    let dev = qkv.device();
    let d = Dims::of("packed_causal_attention", qkv.shape(), n_head)?;
    if !causal_attention_kernel_on(dev, d.hd) {
        return reference::packed_causal_attention(qkv, n_head, scale, positions);
    }
    let dtype = qkv.dtype();
    let positions = positions.to_dtype(DType::U32)?.contiguous()?;
    qkv.to_dtype(kernel_dtype(dev, dtype))?
        .contiguous()?
        .apply_op2(&positions, CausalAttention::new(n_head, scale))?
        .to_dtype(dtype)
}

/// The positions [`packed_causal_attention`] reads for rows of `t` tokens, row r holding
/// sequences of `lengths[r]` one after the other from its start, the rest of the row one more
/// sequence → (B·T): each token's position within its sequence. Lengths past `t` are cut there.
pub fn packed_positions(lengths: &[&[usize]], t: usize) -> Vec<u32> {
    lengths
        .iter()
        .flat_map(|row| {
            let used: usize = row.iter().sum();
            row.iter()
                .copied()
                .chain((used < t).then_some(t - used))
                .flat_map(|n| 0..n as u32)
                .take(t)
        })
        .collect()
}

/// Summed token cross-entropy, computed in f32. logits: (N, V); targets: (N) u32; weights:
/// optional (N) of 0/1 that removes positions from the sum (padding, unmasked MLM positions).
/// Returns an f32 scalar (f64 for f64 logits); callers divide by the number of target tokens of
/// the whole optimizer step so that gradient accumulation is exact. A target >= V is an error.
pub fn cross_entropy_sum(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    if !fused(logits.device()) {
        return reference::cross_entropy_sum(logits, targets, weights);
    }
    cross_entropy(logits, targets, weights, false)
}

/// [`cross_entropy_sum`]'s terms, unsummed: each row's `w_i * -log softmax(x_i)[t_i]` → (N)
/// f32 (f64 for f64 logits), with the gradient of each (the fused kernels of the sum, one
/// pass over the logits each way). Sums over groups of rows (a sequence's log-probability)
/// follow with candle's sum.
pub fn cross_entropy_rows(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    if !fused(logits.device()) {
        return reference::cross_entropy_rows(logits, targets, weights);
    }
    cross_entropy(logits, targets, weights, true)
}

fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    per_row: bool,
) -> Result<Tensor> {
    let dev = logits.device();
    let ct = kernel_dtype(dev, logits.dtype());
    let x = logits.to_dtype(ct)?.contiguous()?;
    // The CPU kernel reads u32, u8 and i64 targets; the CUDA kernel u32 and f32 weights.
    let (t, wt) = match dev.is_cpu() {
        true => (targets.contiguous()?, ct),
        false => (targets.to_dtype(DType::U32)?.contiguous()?, DType::F32),
    };
    let op = |weight_grad| match per_row {
        true => CrossEntropySum::rows(weight_grad),
        false => CrossEntropySum::new(weight_grad),
    };
    match weights {
        Some(w) => x.apply_op3(&t, &w.to_dtype(wt)?.contiguous()?, op(w.track_op())),
        None => x.apply_op2(&t, op(false)),
    }
}

/// Rows of x up to which [`inference_matmul`] runs the GEMV kernel (`cpu::gemv`). Generation
/// takes one row a step, where the kernel made `lantern generate` 28 % (GPT-2 size) and 54 %
/// (Llama) faster on a 2-core Xeon (docs/benchmarks.md); timed alone on one (768, 3072) weight
/// streamed from memory (`lantern bench-kernels`, the `gemv_*` rows), gemm's one-row path is as
/// fast or up to 20 % faster, and at 2 and 4 rows the kernel is 5-40 % faster. Not tuned
/// further: beyond a few rows a blocked product reuses each weight from cache, where the kernel
/// reads it once per row block and redoes the accumulators per row.
pub const GEMV_MAX_ROWS: usize = 4;

/// `x @ w` (`layout` [`WeightLayout::InOut`], w (K, N)) or `x @ wᵀ` ([`WeightLayout::OutIn`],
/// w (N, K)) for x (M, K) -> (M, N), **for inference** (generation). On the CPU, for f32 with
/// M <= [`GEMV_MAX_ROWS`] and w contiguous, the GEMV kernel, which has no backward: a backward
/// through it is an error, not a lost gradient. Otherwise candle's matmul, as training runs it.
pub fn inference_matmul(x: &Tensor, w: &Tensor, layout: WeightLayout) -> Result<Tensor> {
    let gemv = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && x.dim(0)? <= GEMV_MAX_ROWS
        && w.is_contiguous();
    match (gemv, layout) {
        (true, _) => x.contiguous()?.apply_op2(w, Gemv { layout }),
        (false, WeightLayout::InOut) => x.matmul(w),
        (false, WeightLayout::OutIn) => x.matmul(&w.t()?),
    }
}

/// Inverted dropout: zero each element with probability `p`, scale the rest by 1/(1-p).
/// The mask comes from our seeded generator so training is reproducible and resumable: the
/// element `i` draws the generator's next `i`-th number, and `rng` moves past all of them.
/// On the CPU (f32, f64) and CUDA (f32, bf16) one op computes the mask in place, in forward and
/// backward (`cpu::dropout`); elsewhere the same mask is built on the host and multiplied in.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let in_place = match (x.device().is_cpu(), x.dtype()) {
        (true, DType::F32 | DType::F64) => true,
        (false, DType::F32 | DType::BF16) => fused(x.device()),
        _ => false,
    };
    if p <= 0.0 || !in_place {
        return reference::dropout(x, p, rng);
    }
    let start = rng.state();
    rng.skip(x.elem_count() as u64);
    let op = Dropout {
        p: p as f32,
        scale: (1.0 / (1.0 - p)) as f32,
        seed: start.seed,
        counter: start.counter,
    };
    x.contiguous()?.apply_op1(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= tol, "max abs diff {d} > {tol}");
    }

    /// A mask's rows as strings: '1' where the key is visible, '.' where masked.
    fn rows(m: Tensor) -> Vec<String> {
        m.to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&x| if x == 0.0 { '1' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn sliding_masks_keep_the_window_ending_at_each_query() {
        let visible =
            |start, t, window| rows(sliding_causal_mask(start, t, window, &Device::Cpu).unwrap());
        assert_eq!(visible(0, 4, None), ["1...", "11..", "111.", "1111"]);
        assert_eq!(visible(0, 4, Some(2)), ["1...", "11..", ".11.", "..11"]);
        // Two queries at positions 3 and 4 over keys 0..5, a window of 3.
        assert_eq!(visible(3, 2, Some(3)), [".111.", "..111"]);
        // A window as long as the sequence is no window, and no window is the causal mask.
        assert_eq!(visible(1, 3, Some(4)), visible(1, 3, None));
        let causal = rows(causal_mask_after(1, 3, &Device::Cpu).unwrap());
        assert_eq!(visible(1, 3, None), causal);
    }

    #[test]
    fn layer_norm_matches_definition_and_has_gradients() {
        let mut rng = Rng::new(3);
        let x = Var::from_vec(rng.normal_vec(2 * 3 * 8, 1.0), (2, 3, 8), &Device::Cpu).unwrap();
        let w = Var::from_vec(rng.normal_vec(8, 1.0), 8, &Device::Cpu).unwrap();
        let b = Var::from_vec(rng.normal_vec(8, 1.0), 8, &Device::Cpu).unwrap();
        let y = layer_norm(&x, &w, &b, 1e-5).unwrap();
        // Normalised rows have zero mean and unit variance before the affine part.
        let xhat = layer_norm(
            &x,
            &Tensor::ones(8, DType::F32, &Device::Cpu).unwrap(),
            &Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap(),
            1e-5,
        )
        .unwrap();
        close(
            &xhat.mean_keepdim(D::Minus1).unwrap(),
            &Tensor::zeros((2, 3, 1), DType::F32, &Device::Cpu).unwrap(),
            1e-5,
        );
        let loss = (y * Tensor::arange(0f32, 48., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 8))
            .unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let g = loss.backward().unwrap();
        for v in [&x, &w, &b] {
            let gv = g.get(v).expect("gradient missing");
            assert!(
                gv.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
        }
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 0.]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[2u32, 1], &Device::Cpu).unwrap();
        let l = cross_entropy_sum(&logits, &targets, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let want = (lse - 3.0) + 3f32.ln();
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
        let w = Tensor::new(&[1f32, 0.], &Device::Cpu).unwrap();
        let l = cross_entropy_sum(&logits, &targets, Some(&w))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - (lse - 3.0)).abs() < 1e-5);
    }

    #[test]
    fn causal_softmax_ignores_the_future() {
        let s = Tensor::zeros((1, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let p = masked_softmax(&s, 1.0, Some(&causal_mask(3, &Device::Cpu).unwrap())).unwrap();
        let p: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        let want = [1., 0., 0., 0.5, 0.5, 0., 1. / 3., 1. / 3., 1. / 3.];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn dropout_is_seeded_and_unbiased() {
        let x = Tensor::ones(10_000, DType::F32, &Device::Cpu).unwrap();
        let a = dropout(&x, 0.25, &mut Rng::new(5)).unwrap();
        let b = dropout(&x, 0.25, &mut Rng::new(5)).unwrap();
        close(&a, &b, 0.0);
        let mean = a.mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        let zeros = a
            .eq(0f32)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((zeros - 0.25).abs() < 0.02, "{zeros}");
    }
}

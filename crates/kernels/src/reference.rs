//! The ops written from candle tensor ops, with candle's autograd as their backward.
//!
//! They run on every device, so the public ops in [`crate::ops`] use them wherever no fused
//! kernel exists yet (today: anything but the CPU), and they are the oracle the fused kernels are
//! tested against. Statistics that need range (LayerNorm mean and variance, RMSNorm's mean
//! square, softmax, the loss) are computed in f32 whatever the input dtype, as PyTorch's
//! autocast does.

use crate::Rng;
use candle_core::{DType, Device, Result, Tensor, D};

/// LayerNorm over the last dimension with the biased variance; see [`crate::ops::layer_norm`].
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(&weight.to_dtype(DType::F32)?)?
        .broadcast_add(&bias.to_dtype(DType::F32)?)?
        .to_dtype(dtype)
}

/// RMSNorm over the last dimension; see [`crate::ops::rms_norm`]. The formula the Llama model
/// used before the fused op, `x * rsqrt(mean(x^2) + eps)`, in f32 (f64 stays f64, for gradient
/// checks), but with the weight multiplied in before the one rounding back to x's dtype, as
/// the fused op does.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let ct = match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let x = x.to_dtype(ct)?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?; // (.., 1)
    x.broadcast_mul(&(ms + eps)?.sqrt()?.recip()?)?
        .broadcast_mul(&weight.to_dtype(ct)?)?
        .to_dtype(dtype)
}

/// Rotary position embedding; see [`crate::ops::rope`]. The composite the Llama model used
/// before the fused op (`narrow`, `neg`, `cat`, broadcast products and a sum), in f32 (f64
/// stays f64, for gradient checks) and rounded once back to x's dtype, as the fused op does.
/// Its backward is candle's autograd through those ops; the tables get a gradient here when
/// they are variables, which the fused op does not give them.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d =
        crate::cpu::rope::rope_dims("reference::rope", "x", x.shape(), cos.shape(), sin.shape())?;
    // Tables of (T, D) serve every row of x; (B·T, D) hold a row per token.
    let (t, hd) = (x.dim(1)?, d.head_dim);
    let rows = d.seq / t.max(1);
    let dtype = x.dtype();
    let ct = match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let x = x.to_dtype(ct)?;
    let cos = cos.to_dtype(ct)?.reshape((rows, t, 1, hd))?;
    let sin = sin.to_dtype(ct)?.reshape((rows, t, 1, hd))?;
    let (x1, x2) = (x.narrow(3, 0, hd / 2)?, x.narrow(3, hd / 2, hd / 2)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    (x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.to_dtype(dtype)
}

/// candle's tanh GELU (its backward rounds the constants to six digits).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// candle's erf GELU (its backward rounds the constants to six digits).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// `silu(g) · u`, candle's SiLU and product; see [`crate::ops::swiglu`].
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.silu()? * u
}

/// `gelu_tanh(g) · u`, candle's tanh GELU and product; see [`crate::ops::geglu_tanh`].
pub fn geglu_tanh(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.gelu()? * u
}

/// `gelu(g) · u` with candle's exact erf GELU and product; see [`crate::ops::geglu_erf`].
pub fn geglu_erf(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.gelu_erf()? * u
}

/// `x + b` over the rows of x, candle's broadcast add (its backward sums in x's dtype).
pub fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.broadcast_add(b)
}

/// candle's tanh GELU of `x + b`.
pub fn bias_gelu_tanh(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.broadcast_add(b)?.gelu()
}

/// candle's erf GELU of `x + b`.
pub fn bias_gelu_erf(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.broadcast_add(b)?.gelu_erf()
}

/// Inverted dropout with the mask built on the host: element `i` is dropped when the
/// generator's `i`-th next draw is below `p`, so [`crate::ops::dropout`], which computes the
/// same draws from the elements' positions, must give the same zeros; `rng` moves past them.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let (p32, scale) = (p as f32, (1.0 / (1.0 - p)) as f32);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.next_f32() < p32 { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?
        .to_device(x.device())?
        .to_dtype(x.dtype())?;
    x * mask
}

/// candle's embedding (`index_select`; its backward is `index_add`, summing in the table's
/// dtype). ids: (N) u32. With `padding_idx`, the gradient of that row's lookups is dropped by
/// adding those rows detached.
pub fn embedding(table: &Tensor, ids: &Tensor, padding_idx: Option<u32>) -> Result<Tensor> {
    let y = table.embedding(ids)?;
    match padding_idx {
        None => Ok(y),
        Some(pad) => {
            let keep = ids.ne(pad)?.to_dtype(y.dtype())?.unsqueeze(1)?; // (N, 1)
            y.broadcast_mul(&keep)? + y.detach().broadcast_mul(&(1.0 - keep)?)?
        }
    }
}

/// Softmax over the last dimension of `scores * scale + mask` in f32. A fully masked row gives
/// NaN here (the fused op gives zeros).
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = scores.dtype();
    let mut s = (scores.to_dtype(DType::F32)? * scale)?;
    if let Some(m) = mask {
        s = s.broadcast_add(&m.to_dtype(DType::F32)?)?;
    }
    candle_nn::ops::softmax(&s, D::Minus1)?.to_dtype(dtype)
}

/// Summed, optionally weighted token cross-entropy in f32; see [`crate::ops::cross_entropy_sum`].
pub fn cross_entropy_sum(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    cross_entropy_rows(logits, targets, weights)?.sum_all()
}

/// Each row's weighted token cross-entropy in f32 → (N); see [`crate::ops::cross_entropy_rows`].
pub fn cross_entropy_rows(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?; // (N)
    let picked = match weights {
        Some(w) => (picked * w.to_dtype(DType::F32)?)?,
        None => picked,
    };
    picked.neg()
}

/// Causal self-attention over the (B, T, 3C) output of c_attn, written from candle ops as the
/// GPT model did before the fused op: q, k, v copied out per head, the (B, H, T, T) scores, the
/// masked softmax in f32, and y transposed back to (B, T, C); see [`crate::ops::causal_attention`].
pub fn causal_attention(qkv: &Tensor, n_head: usize, scale: f64) -> Result<Tensor> {
    let t = qkv.dim(1)?;
    masked_attention(qkv, n_head, scale, &crate::causal_mask(t, qkv.device())?)
}

/// [`causal_attention`] over packed rows, each query within its own sequence; see
/// [`crate::ops::packed_causal_attention`]. The (B, 1, T, T) mask is made on the host.
pub fn packed_causal_attention(
    qkv: &Tensor,
    n_head: usize,
    scale: f64,
    positions: &Tensor,
) -> Result<Tensor> {
    let (b, t, _) = qkv.dims3()?;
    if positions.dims() != [b, t] {
        candle_core::bail!(
            "packed_causal_attention: positions {:?} for qkv {:?}",
            positions.dims(),
            qkv.dims()
        );
    }
    let pos = positions
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    let mask: Vec<f32> = (0..b * t)
        .flat_map(|row| {
            let i = row % t;
            let lo = i - (pos[row] as usize).min(i);
            (0..t).map(move |j| match (lo..=i).contains(&j) {
                true => 0.0,
                false => f32::NEG_INFINITY,
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (b, 1, t, t), qkv.device())?;
    masked_attention(qkv, n_head, scale, &mask)
}

/// `softmax(scale · q kᵀ + mask) v` per head of qkv (B, T, 3C) → (B, T, C); mask broadcasts to
/// the (B, H, T, T) scores.
fn masked_attention(qkv: &Tensor, n_head: usize, scale: f64, mask: &Tensor) -> Result<Tensor> {
    let (b, t, c3) = qkv.dims3()?;
    if n_head == 0 || c3 % (3 * n_head) != 0 {
        candle_core::bail!(
            "causal_attention: qkv {:?} does not split into 3 x {n_head} heads",
            qkv.shape()
        );
    }
    let (c, hd) = (c3 / 3, c3 / 3 / n_head);
    let qkv = qkv
        .reshape((b, t, 3, n_head, hd))?
        .permute((2, 0, 3, 1, 4))?; // (3, B, H, T, hd)
    let q = qkv.get(0)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let att = q.matmul(&k.t()?)?; // (B, H, T, T)
    let att = masked_softmax(&att, scale, Some(mask))?;
    let y = att.matmul(&v)?; // (B, H, T, hd)
    y.transpose(1, 2)?.reshape((b, t, c))
}

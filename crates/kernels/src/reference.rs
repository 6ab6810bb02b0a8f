//! The ops written from candle tensor ops, with candle's autograd as their backward.
//!
//! They run on every device, so the public ops in [`crate::ops`] use them wherever no fused
//! kernel exists yet (today: anything but the CPU), and they are the oracle the fused kernels are
//! tested against. Statistics that need range (LayerNorm mean and variance, softmax, the loss)
//! are computed in f32 whatever the input dtype, as PyTorch's autocast does.

use candle_core::{DType, Result, Tensor, D};

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

/// candle's tanh GELU (its backward rounds the constants to six digits).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// candle's erf GELU (its backward rounds the constants to six digits).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
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
    let logits = logits.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?; // (N)
    let picked = match weights {
        Some(w) => (picked * w.to_dtype(DType::F32)?)?,
        None => picked,
    };
    picked.sum_all()?.neg()
}

//! Ops with a recorded backward, written from candle tensor ops.
//!
//! Shapes are given in comments as `(B, T, C)` etc. Statistics that need range (LayerNorm mean
//! and variance, softmax, the loss) are computed in f32 whatever the input dtype, as PyTorch's
//! autocast does, and the result is cast back.

use crate::Rng;
use candle_core::{DType, Device, Result, Tensor, D};

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`, with the
/// biased variance (as `torch.nn.LayerNorm`). x: (.., C), weight and bias: (C).
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

/// GELU, tanh approximation (`gelu_new` in transformers, GPT-2's activation).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// GELU with the exact erf (`gelu` in transformers, BERT's activation).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// Additive causal mask (T, T): 0 where key <= query, -inf above the diagonal.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// Softmax over the last dimension of `scores * scale + mask` in f32.
/// scores: (B, H, Tq, Tk); mask: anything that broadcasts to it, additive (0 or -inf).
pub fn masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = scores.dtype();
    let mut s = (scores.to_dtype(DType::F32)? * scale)?;
    if let Some(m) = mask {
        s = s.broadcast_add(&m.to_dtype(DType::F32)?)?;
    }
    candle_nn::ops::softmax(&s, D::Minus1)?.to_dtype(dtype)
}

/// Summed token cross-entropy in f32. logits: (N, V); targets: (N) u32; weights: optional (N)
/// f32 of 0/1 that removes positions from the sum (padding, unmasked MLM positions).
/// Returns a scalar; callers divide by the number of target tokens of the whole optimizer step
/// so that gradient accumulation is exact.
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

/// Inverted dropout: zero each element with probability `p`, scale the rest by 1/(1-p).
/// The mask comes from our seeded generator so training is reproducible and resumable.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let p = p as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.next_f32() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?
        .to_device(x.device())?
        .to_dtype(x.dtype())?;
    x * mask
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

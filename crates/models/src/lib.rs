//! lantern-models: GPT-2, Llama and BERT with Hugging Face parameter names.
//!
//! A model here is a config plus a [`Params`] store of named variables and a pure `forward`.
//! The crate knows nothing of optimizers, checkpoints policy, devices beyond candle's `Device`,
//! or parallelism: the trainer wraps models from outside.

pub mod bert;
pub mod decoder;
pub mod error;
pub mod gpt;
pub mod hf_config;
pub mod llama;
pub mod lowrank;
pub mod packing;
pub mod params;
pub mod safetensors_io;
pub mod sampling;
pub mod task;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use hf_config::LoadReport;
pub use packing::Packing;
pub use params::Params;

use candle_core::Tensor;

/// Whether a forward pass trains (dropout on, drawing from the given generator) or evaluates.
pub enum Mode<'a> {
    Eval,
    Train(&'a mut lantern_kernels::Rng),
}

/// NEFTune (Jain et al. 2023; transformers' `neftune_noise_alpha`): while training, the token
/// embeddings x (B, T, C) plus noise uniform in [−α/√(T·C), α/√(T·C)), drawn from the mode's
/// generator, as transformers' forward hook on the input embeddings adds it (T the padded
/// length of the batch). Evaluation, or α = 0, returns x and draws nothing.
pub fn neftune(x: Tensor, alpha: f64, mode: &mut Mode<'_>) -> Result<Tensor> {
    let rng = match mode {
        Mode::Train(rng) if alpha > 0.0 => rng,
        _ => return Ok(x),
    };
    let (_, t, c) = x.dims3()?;
    let mag = (alpha / ((t * c) as f64).sqrt()) as f32;
    let noise: Vec<f32> = (0..x.elem_count())
        .map(|_| (2.0 * rng.next_f32() - 1.0) * mag)
        .collect();
    let noise = Tensor::from_vec(noise, x.shape(), &candle_core::Device::Cpu)?
        .to_device(x.device())?
        .to_dtype(x.dtype())?;
    Ok((x + noise)?)
}

/// How the blocks of a causal model attend in one forward, chosen once for all of them.
#[derive(Debug, Clone)]
pub enum BlockAttention {
    /// The fused causal op ([`lantern_kernels::causal_attention`]); over rows of packed
    /// sequences, with their positions (B, T), each query within its own sequence
    /// ([`lantern_kernels::packed_causal_attention`]).
    Fused(Option<candle_core::Tensor>),
    /// The composite attention with this additive mask: causal (T, T), a window's, or packed
    /// rows' (B, 1, T, T).
    Masked(candle_core::Tensor),
}

impl BlockAttention {
    /// The fused op over qkv (B, T, 3·H·hd) → (B, T, H·hd), packed or not.
    pub(crate) fn fused(
        positions: Option<&candle_core::Tensor>,
        qkv: &candle_core::Tensor,
        n_head: usize,
        scale: f64,
    ) -> Result<candle_core::Tensor> {
        Ok(match positions {
            Some(p) => lantern_kernels::packed_causal_attention(qkv, n_head, scale, p)?,
            None => lantern_kernels::causal_attention(qkv, n_head, scale)?,
        })
    }
}

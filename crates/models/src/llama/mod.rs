//! Llama (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models"): a
//! decoder with pre-RMSNorm blocks (Zhang & Sennrich 2019), rotary position embeddings (Su et
//! al. 2021) in place of a position table, grouped-query attention (Ainslie et al. 2023: a
//! key/value head serves several query heads), a SwiGLU MLP (Shazeer 2020:
//! `down(silu(gate(x)) · up(x))`), no biases, and an output head of its own (or tied to the
//! embedding). Names and layouts are transformers' `LlamaForCausalLM`, 1:1: Linear weights are
//! torch's (out, in).
//!
//! The same model runs Llama's relatives ([`LlamaFamily`]): Mistral (a sliding attention
//! window), Qwen2 (biases on the query, key and value projections), Qwen3 (an RMSNorm over
//! each query and key head, heads often wider than hidden / heads), Gemma (gains 1 + w, GELU
//! MLP, scaled embeddings), Gemma 3 (also sandwich norms, and sliding and full layers), Gemma 2
//! (Gemma 3's layout with soft-capped scores and logits), OLMo 2 (norms after attention and the
//! MLP, query and key norms over all heads), Granite (multipliers), SmolLM3 (layers without
//! RoPE) and Phi-3 (fused projections), Llama's own `attention_bias` and `mlp_bias`, and
//! transformers' RoPE scalings (`rope`).

mod config;
pub mod hf;
mod model;
mod rope;

pub use config::{GraniteMultipliers, LlamaConfig, LlamaFamily};
pub use model::{
    init_params, param_shapes, BlockContext, KvCache, Llama, Rope, EMBED_TOKENS, LM_HEAD,
};
pub use rope::{inv_freq, Llama3Rope, LongRope, RopeScaling, YarnRope};

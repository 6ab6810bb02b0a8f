//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"):
//! learned positions, pre-LayerNorm blocks, causal self-attention, GELU (tanh form), and an
//! output head tied to the token embedding. Layouts follow `GPT2LMHeadModel`: the four
//! projections are stored `[in, out]` (HF `Conv1D`), so `x @ W + b` needs no transpose and the
//! parameter names and layouts are HF's own, 1:1.

mod config;
pub mod hf;
mod model;
pub mod perplexity;

pub use config::GptConfig;
pub(crate) use model::Product;
pub use model::{init_params, param_shapes, AttentionImpl, Gpt, KvCache};

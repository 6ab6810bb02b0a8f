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
pub mod task;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use hf_config::LoadReport;
pub use packing::Packing;
pub use params::Params;

/// Whether a forward pass trains (dropout on, drawing from the given generator) or evaluates.
pub enum Mode<'a> {
    Eval,
    Train(&'a mut lantern_kernels::Rng),
}

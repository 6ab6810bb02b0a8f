//! lantern-kernels: the tensor ops the models call, in one place.
//!
//! Every op here has a backward that candle's autograd records. candle's own fused
//! `layer_norm`, `softmax_last_dim` and `rms_norm` are applied without a backward and silently
//! drop gradients (see `shared/CANDLE.md`), so the models must never call them; they call these.
//! Today each op is written from candle tensor ops (the CPU reference); fused CUDA kernels
//! replace them behind the `cuda` feature with the same signatures.

pub mod ops;
pub mod rng;

pub use ops::{
    causal_mask, cross_entropy_sum, dropout, gelu_erf, gelu_tanh, layer_norm, masked_softmax,
};
pub use rng::{Rng, RngState};

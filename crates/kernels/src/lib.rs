//! lantern-kernels: the tensor ops the models call, in one place.
//!
//! Every op here has a backward that candle's autograd records. candle's own fused
//! `layer_norm`, `softmax_last_dim` and `rms_norm` are applied without a backward and silently
//! drop gradients (see `shared/CANDLE.md`), so the models must never call them; they call these.
//! On the CPU each op is a fused custom op with a hand-written backward (`cpu`); elsewhere the
//! composite version written from candle tensor ops runs (`reference`, also the test oracle).
//! Fused CUDA kernels will replace it behind the `cuda` feature with the same signatures.

pub mod cpu;
pub mod ops;
pub mod reference;
pub mod rng;

pub use ops::{
    causal_mask, cross_entropy_sum, dropout, gelu_erf, gelu_tanh, layer_norm, masked_softmax,
};
pub use rng::{Rng, RngState};

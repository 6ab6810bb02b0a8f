//! lantern-kernels: the tensor ops the models call, in one place, and the fused optimizer
//! and gradient-norm functions the trainer calls.
//!
//! Every op here but one has a backward that candle's autograd records; the exception,
//! `inference_matmul` (generation's few-row products), makes a backward through it an error.
//! candle's own fused `layer_norm`, `softmax_last_dim` and `rms_norm` are applied without a
//! backward and silently drop gradients (see `shared/CANDLE.md`), so the models must never call
//! them; they call these.
//! Each op is a candle custom op with a hand-written backward: on the CPU its `cpu_fwd` runs
//! the fused Rust kernel (`cpu`); with the `cuda` feature its `cuda_fwd` launches our own CUDA
//! kernel (`cuda`, sources in the repository's `kernels/` folder). Other devices run the
//! composite version written from candle tensor ops (`reference`, also the test oracle).

pub mod adamw;
pub mod bench;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod grad_norm;
pub mod ops;
pub mod reference;
pub mod rng;

pub use adamw::{adamw_update, AdamWHyper};
pub use cpu::gemv::WeightLayout;
pub use grad_norm::{clip_grad_norm, grad_norm, scale_grads, ClipOutcome};
pub use ops::{
    bias_add, bias_gelu_erf, bias_gelu_tanh, causal_attention, causal_attention_kernel_on,
    causal_mask, causal_mask_after, cross_entropy_rows, cross_entropy_sum, dropout, embedding,
    geglu_erf, geglu_tanh, gelu_erf, gelu_tanh, inference_matmul, layer_norm, masked_softmax,
    packed_causal_attention, packed_positions, rms_norm, rope, sliding_causal_mask, swiglu,
    GEMV_MAX_ROWS,
};
pub use rng::{Rng, RngState};

//! lantern-train: everything between a model and a finished run — the config of a run, the
//! optimizers (AdamW, SGD, AdaGrad, RMSprop) and their saveable state, LR schedules, gradient
//! accumulation and clipping, the gradient-integrity guard, checkpoints, metrics and the
//! training loop itself.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod dpo;
pub mod early_stopping;
pub mod error;
pub mod finetune;
pub mod finetune_config;
pub mod finetune_qa;
pub mod finetune_reward;
pub mod grads;
pub mod kto;
pub mod lm_choice;
pub mod lora;
pub mod metrics;
pub mod metrics_cls;
pub mod metrics_qa;
pub mod metrics_tok;
pub mod model_tokens;
pub mod optim;
pub mod plot;
pub mod precision;
pub mod recompute;
pub mod samples;
pub mod schedule;
pub mod sft;
pub mod task;
pub mod tensorboard;
pub mod trainer;
pub mod world;

pub use config::RunConfig;
pub use error::{Error, Result};
pub use trainer::{train, TrainOptions, TrainSummary};

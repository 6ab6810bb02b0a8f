//! Training-step benchmark: the same `train_step` the trainer runs, on seeded random tokens,
//! timed per step. The PyTorch baseline (`scripts/bench_torch_gpt.py`) measures the same thing.

use crate::optim::{AdamWConfig, Optimizer, OptimizerConfig};
use crate::trainer::{to_batch, train_step, StepInputs};
use crate::Result;
use candle_core::{DType, Device};
use lantern_kernels::Rng;
use lantern_models::gpt::{init_params, Gpt, GptConfig};
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub tokens_per_s: f64,
    pub step_ms_median: f64,
    pub params: usize,
    pub steps: usize,
}

/// Times `steps` optimizer steps (after `warmup` untimed ones) of batch `b` × length `t`.
/// Median, not mean: one slow step (page faults, another process) should not move it.
pub fn bench_train_step(
    cfg: &GptConfig,
    b: usize,
    t: usize,
    steps: usize,
    warmup: usize,
    device: &Device,
) -> Result<BenchResult> {
    let mut rng = Rng::new(0);
    let params = init_params(cfg, &mut rng, device, DType::F32)?;
    let model = Gpt::new(cfg, &params)?;
    let mut opt = Optimizer::new(OptimizerConfig::AdamW(AdamWConfig::default()), &params)?;
    let mut times = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let ids: Vec<u32> = (0..b * t)
            .map(|_| rng.below(cfg.vocab_size as u64) as u32)
            .collect();
        let tgt: Vec<u32> = (0..b * t)
            .map(|_| rng.below(cfg.vocab_size as u64) as u32)
            .collect();
        let batches = [to_batch(&ids, &tgt, b, t, device)?];
        let t0 = Instant::now();
        let out = train_step(
            &StepInputs {
                model: &model,
                params: &params,
                master: &params,
                batches: &batches,
                lr: 3e-4,
                grad_clip: 1.0,
                dropout_seed: 0,
                step: step as u64,
                check_integrity: false,
                poison_grad: false,
            },
            &mut opt,
            None,
        )?;
        // Kernels are asynchronous on a GPU: wait for the optimizer update before stopping.
        device.synchronize()?;
        debug_assert!(out.loss.is_finite());
        if step >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchResult {
        tokens_per_s: (b * t) as f64 / median,
        step_ms_median: median * 1e3,
        params: cfg.num_params(),
        steps,
    })
}

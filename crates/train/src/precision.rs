//! Mixed precision: fp32 master weights and optimizer state, a bf16/fp16 working copy of the
//! weights that forward and backward run on (refreshed after every optimizer step), and for
//! fp16 the dynamic loss scaler of PyTorch's `GradScaler` (same defaults and update rule).
//! Range-sensitive ops (softmax, LayerNorm statistics, the loss) compute in f32 inside the
//! kernels whatever the working dtype.

use candle_core::DType;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl std::fmt::Display for Precision {
    /// As the config spells it: `fp32`, `bf16`, `fp16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::Fp16 => DType::F16,
        }
    }
}

/// `torch.amp.GradScaler`: the loss is multiplied by `scale` before backward and gradients are
/// divided by it in fp32; a step whose gradients hold inf/NaN is skipped and the scale
/// multiplied by `backoff_factor`; after `growth_interval` good steps in a row it is
/// multiplied by `growth_factor`. Saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossScaler {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u64,
    /// Good steps since the last change of scale.
    pub good_steps: u64,
    /// Steps skipped for non-finite gradients since the start of the run.
    pub skipped_steps: u64,
}

impl LossScaler {
    pub fn new(
        init_scale: f64,
        growth_factor: f64,
        backoff_factor: f64,
        growth_interval: u64,
    ) -> Self {
        Self {
            scale: init_scale,
            growth_factor,
            backoff_factor,
            growth_interval,
            good_steps: 0,
            skipped_steps: 0,
        }
    }

    /// Records one step's outcome and adjusts the scale.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
            self.skipped_steps += 1;
        } else {
            self.good_steps += 1;
            if self.good_steps == self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_on_overflow_and_grows_after_the_interval() {
        let mut s = LossScaler::new(65536.0, 2.0, 0.5, 3);
        s.update(true);
        assert_eq!((s.scale, s.skipped_steps), (32768.0, 1));
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 32768.0);
        s.update(false);
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
    }
}

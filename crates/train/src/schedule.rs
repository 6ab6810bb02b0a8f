//! Learning-rate schedules with linear warmup, with transformers' formulas
//! (`get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
//! `get_cosine_with_min_lr_schedule_with_warmup`): the multiplier at optimizer step `s`
//! (0-based, the value used for the update that makes step s+1) is
//! - warmup (s < W): s / max(1, W)
//! - constant: 1
//! - linear: max(0, (S - s) / max(1, S - W))
//! - cosine: r + (1 - r) · max(0, ½(1 + cos(π · (s - W) / max(1, S - W)))), r = min_lr / lr.
//! - wsd (`get_wsd_schedule`, cosine decay): warmup r + (1 - r) · s / max(1, W) — it starts at
//!   r, not 0 —, then 1 until S - D (which may fall inside the warmup), then r + (1 - r) · ½(1 + cos(π · (s - (S - D)) / max(1, D))),
//!   and r from S on. D = decay steps.
//! - polynomial (`get_polynomial_decay_schedule_with_warmup`, lr_end = min_lr):
//!   ((lr − lr_end) · (1 − (s − W) / (S − W))^power + lr_end) / lr, and lr_end / lr past S.
//! - cosine_with_restarts (`get_cosine_with_hard_restarts_schedule_with_warmup`):
//!   ½(1 + cos(π · ((cycles · p) mod 1))), p = (s − W) / max(1, S − W); 0 from p = 1 on.
//! - inverse_sqrt (`get_inverse_sqrt_schedule`): 1 / √((s + τ − W) / τ), τ = timescale
//!   (default W, or 10,000 without warmup).

use crate::config::ScheduleKind;

/// transformers' default end LR of the polynomial schedule.
pub const POLYNOMIAL_LR_END: f64 = 1e-7;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    /// The floor of `Cosine` and `Wsd`, the end LR of `Polynomial`.
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Final decay length of `Wsd`; unused by the other kinds.
    pub decay_steps: u64,
    /// Exponent of `Polynomial`.
    pub power: f64,
    /// Restarts of `CosineWithRestarts`.
    pub cycles: u64,
    /// Time scale of `InverseSqrt`; `None` = warmup steps, or 10,000 without warmup.
    pub timescale: Option<u64>,
}

/// The end LR of a fine-tuning schedule (transformers' Trainer): 0 for cosine (its
/// `get_cosine_schedule_with_warmup`), 1e-7 for polynomial; the others have none.
pub fn finetune_end_lr(kind: ScheduleKind) -> f64 {
    match kind {
        ScheduleKind::Polynomial => POLYNOMIAL_LR_END,
        _ => 0.0,
    }
}

/// Checks the shape keys of `kind` as transformers' constructors would (`section` names the
/// config section in messages): a polynomial needs a finite, positive power and an end LR
/// below the LR; restarts and time scales are at least 1.
pub fn check_shape(
    kind: ScheduleKind,
    (lr, min_lr): (f64, f64),
    (power, cycles, timescale): (f64, u64, Option<u64>),
    section: &str,
) -> Result<(), String> {
    if !(power.is_finite() && power > 0.0) {
        return Err(format!(
            "{section}.poly_power must be a positive number, got {power}"
        ));
    }
    if cycles == 0 {
        return Err(format!("{section}.num_cycles must be at least 1"));
    }
    if timescale == Some(0) {
        return Err(format!("{section}.timescale must be at least 1"));
    }
    if kind == ScheduleKind::Polynomial && min_lr >= lr {
        return Err(format!(
            "the polynomial schedule's end LR ({section}.min_lr, {min_lr}) must be below \
             {section}.lr ({lr})"
        ));
    }
    Ok(())
}

impl Schedule {
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * self.factor(step)
    }

    fn factor(&self, s: u64) -> f64 {
        let (w, total) = (self.warmup_steps, self.total_steps);
        let r = if self.lr > 0.0 {
            self.min_lr / self.lr
        } else {
            0.0
        };
        let warmup = s as f64 / w.max(1) as f64;
        let half_cosine = |progress: f64| 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        let decay_len = total.saturating_sub(w).max(1) as f64;
        match self.kind {
            _ if s < w && self.kind != ScheduleKind::Wsd => warmup,
            ScheduleKind::Polynomial if s > total => self.min_lr / self.lr,
            ScheduleKind::Polynomial => {
                // transformers divides by S − W itself: S = W leaves only the step at S, where
                // its 0 / 0 is taken as the end of the decay.
                let remaining = match total - w {
                    0 => 0.0,
                    d => 1.0 - (s - w) as f64 / d as f64,
                };
                ((self.lr - self.min_lr) * remaining.powf(self.power) + self.min_lr) / self.lr
            }
            ScheduleKind::CosineWithRestarts => {
                let progress = (s - w) as f64 / decay_len;
                if progress >= 1.0 {
                    0.0
                } else {
                    half_cosine((self.cycles as f64 * progress) % 1.0).max(0.0)
                }
            }
            ScheduleKind::InverseSqrt => {
                let tau = self.timescale.unwrap_or(if w > 0 { w } else { 10_000 }) as f64;
                1.0 / ((s as f64 + tau - w as f64) / tau).sqrt()
            }
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => (total.saturating_sub(s) as f64 / decay_len).max(0.0),
            ScheduleKind::Cosine => {
                r + (1.0 - r) * half_cosine((s - w) as f64 / decay_len).max(0.0)
            }
            ScheduleKind::Wsd => {
                // As transformers: the decay starts at S - D even if that falls inside the
                // warmup (a negative stable phase), and then continues from that point.
                let d = self.decay_steps as i64;
                let decay_start = total as i64 - d;
                let si = s as i64;
                if s < w {
                    r + (1.0 - r) * warmup
                } else if si < decay_start {
                    1.0
                } else if s < total {
                    r + (1.0 - r) * half_cosine((si - decay_start) as f64 / d.max(1) as f64)
                } else {
                    r
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
            decay_steps: 20,
            power: 1.0,
            cycles: 1,
            timescale: None,
        }
    }

    #[test]
    fn warmup_is_linear_from_zero() {
        for k in [
            ScheduleKind::Constant,
            ScheduleKind::Linear,
            ScheduleKind::Cosine,
        ] {
            assert_eq!(s(k).lr_at(0), 0.0);
            assert!((s(k).lr_at(5) - 0.5).abs() < 1e-12);
            assert!((s(k).lr_at(10) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn decays_end_where_transformers_ends() {
        assert!((s(ScheduleKind::Linear).lr_at(60) - 0.5).abs() < 1e-12);
        assert_eq!(s(ScheduleKind::Linear).lr_at(110), 0.0);
        assert!((s(ScheduleKind::Cosine).lr_at(60) - 0.55).abs() < 1e-12);
        assert!((s(ScheduleKind::Cosine).lr_at(110) - 0.1).abs() < 1e-12);
        assert_eq!(s(ScheduleKind::Constant).lr_at(1000), 1.0);
    }
}

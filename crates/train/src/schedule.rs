//! Learning-rate schedules with linear warmup, with transformers' formulas
//! (`get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
//! `get_cosine_with_min_lr_schedule_with_warmup`): the multiplier at optimizer step `s`
//! (0-based, the value used for the update that makes step s+1) is
//! - warmup (s < W): s / max(1, W)
//! - constant: 1
//! - linear: max(0, (S - s) / max(1, S - W))
//! - cosine: r + (1 - r) · max(0, ½(1 + cos(π · (s - W) / max(1, S - W)))), r = min_lr / lr.

use crate::config::ScheduleKind;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * self.factor(step)
    }

    fn factor(&self, s: u64) -> f64 {
        let (w, total) = (self.warmup_steps, self.total_steps);
        if s < w {
            return s as f64 / w.max(1) as f64;
        }
        let decay_len = total.saturating_sub(w).max(1) as f64;
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => (total.saturating_sub(s) as f64 / decay_len).max(0.0),
            ScheduleKind::Cosine => {
                let progress = (s - w) as f64 / decay_len;
                let c = (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0);
                let r = if self.lr > 0.0 {
                    self.min_lr / self.lr
                } else {
                    0.0
                };
                r + (1.0 - r) * c
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

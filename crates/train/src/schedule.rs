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

use crate::config::ScheduleKind;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Final decay length of `Wsd`; unused by the other kinds.
    pub decay_steps: u64,
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

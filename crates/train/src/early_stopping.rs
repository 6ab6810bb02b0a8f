//! Early stopping as a pure state machine, for fine-tuning (any metric) and pretraining (the
//! validation loss): transformers' `EarlyStoppingCallback` (`early_stopping_patience`,
//! `early_stopping_threshold`) together with the Trainer's best metric.

/// `observe` each evaluation's metric: it says whether the value is the best so far (strictly
/// better: the best checkpoint moves) and whether to stop, which happens after `patience`
/// evaluations in a row without an improvement by more than `threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    pub higher_is_better: bool,
    pub patience: Option<usize>,
    /// An evaluation restarts the count only if it beats the best by more than this.
    pub threshold: f64,
    pub best: Option<f64>,
    pub evals_without_improvement: usize,
}

impl EarlyStopping {
    pub fn new(higher_is_better: bool, patience: Option<usize>) -> Self {
        Self {
            higher_is_better,
            patience,
            threshold: 0.0,
            best: None,
            evals_without_improvement: 0,
        }
    }

    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Returns (the best so far, stop). As in transformers, the count compares with the best
    /// before this evaluation and needs a margin above `threshold`, while any strictly better
    /// value becomes the best. A non-finite value is never better.
    pub fn observe(&mut self, value: f64) -> (bool, bool) {
        // How much better than the best so far (positive = better).
        let gain = self.best.map(|b| match self.higher_is_better {
            true => value - b,
            false => b - value,
        });
        let better = value.is_finite() && gain.is_none_or(|g| g > 0.0);
        if better && gain.is_none_or(|g| g > self.threshold) {
            self.evals_without_improvement = 0;
        } else {
            self.evals_without_improvement += 1;
        }
        if better {
            self.best = Some(value);
        }
        (better, self.exhausted())
    }

    /// Whether `patience` evaluations in a row did not improve (the run stops).
    pub fn exhausted(&self) -> bool {
        self.patience
            .is_some_and(|p| self.evals_without_improvement >= p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_evaluations_without_improvement() {
        let mut s = EarlyStopping::new(false, Some(2));
        assert_eq!(s.observe(1.0), (true, false));
        assert_eq!(s.observe(0.8), (true, false));
        assert_eq!(s.observe(0.8), (false, false), "equal is not better");
        assert_eq!(
            s.observe(0.9),
            (false, true),
            "second evaluation without improvement"
        );
        let mut h = EarlyStopping::new(true, Some(1));
        assert_eq!(h.observe(0.5), (true, false));
        assert_eq!(h.observe(0.6), (true, false));
        assert_eq!(h.observe(0.4), (false, true));
        let mut never = EarlyStopping::new(true, None);
        for _ in 0..10 {
            assert!(!never.observe(0.0).1);
        }
        assert_eq!(never.evals_without_improvement, 9);
    }

    #[test]
    fn the_threshold_delays_the_count_not_the_best() {
        let mut s = EarlyStopping::new(false, Some(4)).with_threshold(0.05);
        // value -> (best?, evaluations without improvement after it)
        for (v, best, stale) in [
            (3.0, true, 0),
            (2.5, true, 0),
            (2.6, false, 1),
            // Lower than the best, by less than the threshold: the best moves, the count
            // goes on.
            (2.46, true, 2),
            (f64::NAN, false, 3),
            (2.3, true, 0),
            (2.3, false, 1),
        ] {
            assert_eq!(s.observe(v).0, best, "{v}");
            assert_eq!(s.evals_without_improvement, stale, "{v}");
        }
        assert_eq!(s.best, Some(2.3));
        let mut h = EarlyStopping::new(true, Some(1)).with_threshold(0.1);
        assert_eq!(h.observe(0.5), (true, false));
        assert_eq!(h.observe(0.55), (true, true));
        // A first value that is not finite is not a best.
        let mut s = EarlyStopping::new(false, None);
        assert_eq!(s.observe(f64::INFINITY), (false, false));
        assert_eq!((s.best, s.evals_without_improvement), (None, 1));
    }
}

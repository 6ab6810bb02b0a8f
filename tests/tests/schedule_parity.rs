//! LR schedules against transformers' own schedulers (`scripts/make_schedule_golden.py`):
//! constant, linear, cosine-with-min-lr, warmup-stable-decay, polynomial, cosine with hard
//! restarts and inverse square root, every step of each case, warmup and decay boundaries
//! included.

use lantern_train::config::ScheduleKind;
use lantern_train::schedule::Schedule;
use std::path::Path;

#[test]
fn every_schedule_matches_transformers_at_every_step() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/schedules.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 30);
    for c in cases {
        let kind = match c["kind"].as_str().unwrap() {
            "constant" => ScheduleKind::Constant,
            "linear" => ScheduleKind::Linear,
            "cosine" => ScheduleKind::Cosine,
            "wsd" => ScheduleKind::Wsd,
            "polynomial" => ScheduleKind::Polynomial,
            "cosine_with_restarts" => ScheduleKind::CosineWithRestarts,
            "inverse_sqrt" => ScheduleKind::InverseSqrt,
            other => panic!("unknown kind {other}"),
        };
        let s = Schedule {
            kind,
            lr: c["lr"].as_f64().unwrap(),
            min_lr: c["min_lr"].as_f64().unwrap(),
            warmup_steps: c["warmup_steps"].as_u64().unwrap(),
            total_steps: c["total_steps"].as_u64().unwrap(),
            decay_steps: c["decay_steps"].as_u64().unwrap(),
            power: c.get("power").and_then(|p| p.as_f64()).unwrap_or(1.0),
            cycles: c.get("num_cycles").and_then(|n| n.as_u64()).unwrap_or(1),
            timescale: c.get("timescale").and_then(|t| t.as_u64()),
        };
        for (step, want) in c["lrs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = s.lr_at(step as u64);
            assert!(
                (got - want).abs() <= 1e-12 + 1e-9 * want.abs(),
                "{kind:?} {s:?} step {step}: {got} vs transformers {want}"
            );
        }
    }
}

//! The optimizer family through the binary: the tiny GPT learns with each optimizer, a run
//! with momentum buffers resumes byte-identically, and a wrong optimizer name or a resume with
//! another optimizer is refused with a clear error.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn optimizer_state(ckpt: &Path) -> Value {
    let text = std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["optimizer"].clone()
}

/// Settings of each optimizer (learning rates in the usual range for each).
const SETTINGS: [(&str, &str); 5] = [
    ("adamw", "optimizer = \"adamw\"\nlr = 1e-2"),
    ("sgd", "optimizer = \"sgd\"\nlr = 0.3\nmomentum = 0.9"),
    (
        "sgd-nesterov",
        "optimizer = \"sgd\"\nlr = 0.3\nmomentum = 0.9\nnesterov = true",
    ),
    (
        "adagrad",
        "optimizer = \"adagrad\"\nlr = 0.2\nlr_decay = 1e-3\ninitial_accumulator_value = 0.1",
    ),
    (
        "rmsprop",
        "optimizer = \"rmsprop\"\nlr = 2e-3\nalpha = 0.95\nmomentum = 0.5\ncentered = true",
    ),
];

#[test]
fn the_tiny_gpt_learns_with_every_optimizer() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, keys) in SETTINGS {
        let run = tmp.path().join(name);
        // `lr` in the extra keys overrides the one of the shared config: TOML refuses a key
        // given twice, so the shared one is replaced through --set.
        let extra: Vec<&str> = keys.lines().filter(|l| !l.starts_with("lr ")).collect();
        let lr = keys.lines().find(|l| l.starts_with("lr ")).unwrap();
        let cfg = tiny_config(tmp.path(), &run, &extra.join("\n"));
        lantern_ok(&[
            "train",
            "--config",
            &s(&cfg),
            "--quiet",
            "--set",
            &format!("train.{}", lr.replace(' ', "")),
            "--set",
            "train.max_steps=30",
            "--set",
            "train.eval_every=0",
            "--set",
            "checkpoint.every=0",
            "--set",
            "model.dropout=0.0",
        ]);
        let losses = metric_values(&run, "train", "loss");
        assert_eq!(losses.len(), 30, "{name}");
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
        let last: f64 = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
        let val = metric_values(&run, "val", "val_loss");
        eprintln!(
            "{name}: train loss {first:.3} -> {last:.3}, val {:.3} -> {:.3}",
            val[0],
            val[val.len() - 1]
        );
        assert!(
            last < first - 0.5,
            "{name}: train loss did not fall: {losses:?}"
        );
        assert!(val[val.len() - 1] < val[0] - 0.5, "{name}: val {val:?}");
        let kind = keys.split('"').nth(1).unwrap();
        let st = optimizer_state(&newest_checkpoint(&run));
        assert_eq!(st["kind"], kind, "{name}");
        assert_eq!(st["step"], 30, "{name}");
    }
}

/// Stopped at step 20 and resumed in a new process vs 40 steps straight: the same bytes in
/// the weights and in every optimizer buffer.
fn exact_resume(name: &str, keys: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let cfg = tiny_config(tmp.path(), &straight, keys);
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet"]);

    let split = tmp.path().join("split");
    let cfg = tiny_config(tmp.path(), &split, keys);
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "20",
    ]);
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet", "--resume"]);
    let (a, b) = (newest_checkpoint(&straight), newest_checkpoint(&split));
    assert!(b.ends_with("step-00000040"));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{name}: {file} differs between the resumed and the uninterrupted run"
        );
    }
    assert_eq!(optimizer_state(&b)["step"], 40);
}

#[test]
fn sgd_with_momentum_resumes_byte_identically() {
    exact_resume(
        "sgd",
        "optimizer = \"sgd\"\nmomentum = 0.9\ndampening = 0.1",
    );
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = tiny_config(
        tmp.path(),
        &run,
        "optimizer = \"sgd\"\nmomentum = 0.9\ndampening = 0.1",
    );
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "1",
    ]);
    // One buffer per parameter, named after it.
    let names: Vec<String> =
        read_f32_tensors(&newest_checkpoint(&run).join("optimizer.safetensors"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
    assert!(
        names.iter().all(|n| n.ends_with(".momentum_buffer")),
        "{names:?}"
    );
    assert!(names.contains(&"transformer.wte.weight.momentum_buffer".to_string()));
}

#[test]
fn rmsprop_centered_with_momentum_resumes_byte_identically() {
    exact_resume(
        "rmsprop",
        "optimizer = \"rmsprop\"\nmomentum = 0.5\ncentered = true",
    );
}

#[test]
fn wrong_optimizer_name_and_switching_optimizers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &run, "optimizer = \"adam\"");
    let e = lantern_err(&["train", "--config", &s(&cfg), "--quiet"]);
    assert!(
        e.contains(&s(&cfg)) && e.contains("train.optimizer") && e.contains("adam"),
        "{e}"
    );
    assert!(
        e.contains("sgd") && e.contains("rmsprop"),
        "lists the choices: {e}"
    );

    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        "train.optimizer=\"sgd\"",
        "--set",
        "train.nesterov=true",
    ]);
    assert!(
        e.contains("train.nesterov") && e.contains("momentum"),
        "{e}"
    );

    // A run with SGD, resumed with AdamW: refused, naming the checkpoint and both optimizers.
    let cfg = tiny_config(tmp.path(), &run, "optimizer = \"sgd\"\nmomentum = 0.9");
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "2",
    ]);
    let ckpt = newest_checkpoint(&run);
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--resume",
        "--set",
        "train.optimizer=\"adamw\"",
    ]);
    assert!(
        e.contains(&s(&ckpt)) && e.contains("\"sgd\"") && e.contains("\"adamw\""),
        "{e}"
    );
    // Same optimizer, other hyper-parameters that drop a buffer: the missing/extra tensor is
    // named rather than silently ignored.
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--resume",
        "--set",
        "train.momentum=0.0",
    ]);
    assert!(
        e.contains("optimizer.safetensors") && e.contains("momentum_buffer"),
        "{e}"
    );
    // The checkpoint is left as it was and still resumes with the right optimizer.
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--resume",
        "--stop-after",
        "3",
    ]);
    assert!(newest_checkpoint(&run).ends_with("step-00000003"));
}

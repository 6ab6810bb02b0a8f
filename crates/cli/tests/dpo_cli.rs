//! DPO through the binary (`lantern train` with preference records in `data.train`): a run cut
//! short and resumed ends byte for byte as the run that was not (the reference is computed
//! again from the same weights; TR-DPO's moved reference is read back from the checkpoint),
//! LoRA's reference is the pretrained model (the first step's loss is ln 2), and bad input
//! fails naming the file, line or key.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn dpo_config(dir: &Path, run: &Path, layout: &str, extra: &str) -> PathBuf {
    let records = format!("dpo/{layout}");
    golden_run_config(dir, run, (&records, ""), extra)
}

fn train_args(cfg: &Path, sets: &[&str], extra: &[&str]) -> Vec<String> {
    command_args("train", cfg, sets, extra)
}

/// Runs `layout` with `sets` straight and stopped after step 2 then resumed; the files of both
/// runs' last checkpoints must be the same bytes. Returns the straight run's folder.
fn straight_and_resumed(tmp: &Path, layout: &str, sets: &[&str], files: &[&str]) -> PathBuf {
    let straight = tmp.join("straight");
    let cfg = dpo_config(tmp, &straight, layout, "");
    lantern_ok(&strs(&train_args(&cfg, sets, &["--quiet"])));
    let split = tmp.join("split");
    let cfg = dpo_config(tmp, &split, layout, "");
    lantern_ok(&strs(&train_args(
        &cfg,
        sets,
        &["--quiet", "--stop-after", "2"],
    )));
    lantern_ok(&strs(&train_args(&cfg, sets, &["--quiet", "--resume"])));
    let file = |d: &Path, f: &str| std::fs::read(newest_checkpoint(d).join(f)).unwrap();
    for f in files {
        assert!(
            file(&straight, f) == file(&split, f),
            "{f} differs after the resume"
        );
    }
    straight
}

/// TR-DPO (`data.sync_ref_model`, the reference moved after every step): the checkpoint holds
/// the moved reference and a resume continues from it, byte for byte. A resume that started
/// from the initial reference again would train against another one.
#[test]
fn a_tr_dpo_run_resumes_byte_for_byte_with_its_moved_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "data.sync_ref_model=true",
        "data.ref_model_sync_steps=1",
        "data.ref_model_mixup_alpha=0.5",
    ];
    let files = [
        "model.safetensors",
        "optimizer.safetensors",
        "reference.safetensors",
    ];
    let straight = straight_and_resumed(tmp.path(), "text", &sets, &files);
    // The reference moved: not the initial weights, not the policy's.
    let ckpt = newest_checkpoint(&straight);
    let reference = std::fs::read(ckpt.join("reference.safetensors")).unwrap();
    assert!(reference != std::fs::read(ckpt.join("model.safetensors")).unwrap());
    assert!(reference != std::fs::read(golden("sft/model/model.safetensors")).unwrap());
    // Only the first step starts at its reference (ln 2); after it the reference is half-way.
    let loss = metric_values(&straight, "train", "loss");
    assert!((loss[0] - std::f64::consts::LN_2).abs() < 1e-6, "{loss:?}");
    // Without sync_ref_model no reference is written.
    let plain = tmp.path().join("plain");
    let cfg = dpo_config(tmp.path(), &plain, "text", "");
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "1",
    ]);
    assert!(!newest_checkpoint(&plain)
        .join("reference.safetensors")
        .exists());
}

#[test]
fn a_dpo_run_resumes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let cfg = dpo_config(tmp.path(), &straight, "conversational", "");
    let out = lantern(&["train", "--config", &s(&cfg)]);
    assert!(out.status.success());
    let out = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.contains("dpo: conversational preference records"),
        "{out}"
    );
    assert!(
        out.contains("dropped, their prompt filling max_length 64"),
        "{out}"
    );
    let tmp2 = tempfile::tempdir().unwrap();
    straight_and_resumed(
        tmp2.path(),
        "conversational",
        &[],
        &["model.safetensors", "optimizer.safetensors"],
    );
    // The first step starts at the reference: every margin 0, the loss ln 2.
    let loss = metric_values(&straight, "train", "loss");
    assert!((loss[0] - std::f64::consts::LN_2).abs() < 1e-6, "{loss:?}");
    assert!(!metric_values(&straight, "val", "val_accuracy").is_empty());
}

/// A GPT-2 whose config has dropout 0.1 trains without it (TRL's `disable_dropout`, checked
/// against TRL by tests/tests/dpo_golden.rs), and its checkpoints keep the configured rate; the
/// setting is DPO's alone.
#[test]
fn dpo_trains_without_dropout_and_keeps_the_configured_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("gpt2");
    let cfg = dpo_config(tmp.path(), &run, "text", "");
    let model = format!("model.init_from=\"{}\"", s(&golden("dpo/gpt2-model")));
    let tokenizer = format!(
        "data.tokenizer=\"{}\"",
        s(&golden("sft/model/tokenizer.json"))
    );
    let args = train_args(
        &cfg,
        &[&model, &tokenizer],
        &["--quiet", "--stop-after", "1"],
    );
    lantern_ok(&strs(&args));
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(newest_checkpoint(&run).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["resid_pdrop"], 0.1, "{config}");
    let sft = format!("data.train=\"{}\"", s(&golden("sft/text/train.jsonl")));
    let other = format!("run.dir=\"{}\"", s(&tmp.path().join("sft")));
    let e = lantern_err(&strs(&train_args(
        &cfg,
        &[&sft, &other, "data.disable_dropout=false"],
        &[],
    )));
    assert!(e.contains("data.disable_dropout is DPO's"), "{e}");
}

/// LoRA: the reference is the pretrained model the adapters start from (their B is zero), so
/// the first step's loss is ln 2 too; the adapter is written beside the model.
#[test]
fn lora_dpo_starts_at_its_reference_and_writes_an_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("lora");
    let cfg = dpo_config(tmp.path(), &run, "text", "[lora]\nr = 4\nalpha = 8");
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet"]);
    let loss = metric_values(&run, "train", "loss");
    assert!((loss[0] - std::f64::consts::LN_2).abs() < 1e-6, "{loss:?}");
    assert!(
        loss.iter()
            .any(|&l| (l - std::f64::consts::LN_2).abs() > 1e-4),
        "{loss:?}"
    );
    let ckpt = newest_checkpoint(&run);
    assert!(ckpt.join("adapter/adapter_model.safetensors").is_file());
}

#[test]
fn bad_dpo_input_names_the_file_line_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("train.jsonl"),
        "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\"}\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let cfg = dpo_config(tmp.path(), &run, "text", "");
    let bad = format!("data.train=\"{}\"", s(&data.join("train.jsonl")));
    let sft = format!("data.train=\"{}\"", s(&golden("sft/text/train.jsonl")));
    let other_vocab = format!("data.ref_model=\"{}\"", s(&golden("llama3_rope")));
    let cases: [(&[&str], &[&str]); 13] = [
        (&[&bad], &["train.jsonl: line 2", "\"rejected\" is missing"]),
        (
            &["data.packing=true"],
            &["data.packing is a setting of SFT records", "preference"],
        ),
        (&["data.beta=0"], &["data.beta must be positive"]),
        // DPO's keys and losses on SFT records, SFT's loss on preferences.
        (&[&sft, "data.beta=0.2"], &["data.beta is DPO's"]),
        (
            &[&sft, "data.loss_type=\"ipo\""],
            &["SFT records train with one of nll, dft"],
        ),
        (&["data.loss_type=\"dft\""], &["`dft` is not a DPO loss"]),
        // A loss that needs a setting, a setting out of range.
        (
            &["data.loss_type=[\"sigmoid\", \"exo_pair\"]"],
            &["exo_pair loss needs data.label_smoothing"],
        ),
        (&["data.ld_alpha=1.5"], &["data.ld_alpha must be in [0, 1]"]),
        // TR-DPO's settings without it, out of range, with LoRA.
        (
            &["data.ref_model_sync_steps=4"],
            &["data.ref_model_sync_steps is read only with data.sync_ref_model = true"],
        ),
        (
            &["data.sync_ref_model=true", "data.ref_model_mixup_alpha=1.5"],
            &["data.ref_model_mixup_alpha must be in [0, 1]"],
        ),
        (
            &["data.sync_ref_model=true", "data.ref_model_sync_steps=0"],
            &["data.ref_model_sync_steps must be at least 1"],
        ),
        (
            &["data.sync_ref_model=true", "lora.r=4"],
            &["data.sync_ref_model with [lora]"],
        ),
        // A reference of another vocabulary.
        (
            &[&other_vocab],
            &[
                "data.ref_model",
                "a vocabulary of 96 tokens, the model's has",
            ],
        ),
    ];
    for (sets, want) in cases {
        let e = lantern_err(&strs(&train_args(&cfg, sets, &[])));
        assert!(want.iter().all(|w| e.contains(w)), "{sets:?}: {e}");
    }
    assert!(!run.join("checkpoints").exists());
}

/// Two ranks under the launcher train as one process with their whole batch: each rank its
/// share of the preferences, the loss a mean over every rank's, the validation split between
/// them (the reward accuracy summed over both).
#[test]
fn two_ranks_train_as_one_process_with_twice_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) =
        two_ranks_and_one(tmp.path(), 2, |dir| dpo_config(tmp.path(), dir, "text", ""));
    assert_same_weights(&two, &one, 1e-5);
    for key in ["val_loss", "val_accuracy"] {
        let (v2, v1) = (
            metric_values(&two, "val", key),
            metric_values(&one, "val", key),
        );
        assert_eq!(v2.len(), v1.len());
        for (a, b) in v2.iter().zip(&v1) {
            assert!((a - b).abs() <= 1e-5, "{key} {a} vs {b}");
        }
    }
    assert_eq!(metric_values(&two, "train", "world_size")[0], 2.0);
}

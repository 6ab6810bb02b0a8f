//! KTO through the binary (`lantern train` with unpaired records, or preference records with
//! `data.loss_type = "kto"`): a run cut short and resumed ends byte for byte (with TR-DPO's
//! moving reference too), two ranks train as one process with twice the batch, and bad input
//! fails naming the file, line or key.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn kto_config(dir: &Path, run: &Path, layout: &str, extra: &str) -> PathBuf {
    let records = format!("kto/{layout}");
    golden_run_config(dir, run, (&records, "loss_type = \"kto\""), extra)
}

fn args(cfg: &Path, sets: &[&str], extra: &[&str]) -> Vec<String> {
    command_args("train", cfg, sets, extra)
}

#[test]
fn a_kto_run_resumes_byte_for_byte_with_a_moving_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = ["data.sync_ref_model=true", "data.ref_model_sync_steps=1"];
    let straight = tmp.path().join("straight");
    let cfg = kto_config(tmp.path(), &straight, "conversational", "");
    let out = lantern(&strs(&args(&cfg, &sets, &[])));
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        log.contains("kto: conversational unpaired records") && log.contains("desirable"),
        "{log}"
    );
    let split = tmp.path().join("split");
    let cfg = kto_config(tmp.path(), &split, "conversational", "");
    lantern_ok(&strs(&args(&cfg, &sets, &["--quiet", "--stop-after", "2"])));
    lantern_ok(&strs(&args(&cfg, &sets, &["--quiet", "--resume"])));
    let file = |d: &Path, f: &str| std::fs::read(newest_checkpoint(d).join(f)).unwrap();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "reference.safetensors",
    ] {
        assert!(
            file(&straight, f) == file(&split, f),
            "{f} differs after the resume"
        );
    }
    assert_eq!(metrics_of(&straight, "val"), metrics_of(&split, "val")[..]);
    // No accuracy: KTO's examples are not pairs to rank.
    assert!(metrics_of(&straight, "val")
        .iter()
        .all(|r| r.get("val_accuracy").is_none() && r.get("val_ppl").is_none()));
    // The first step starts at the reference: every log-ratio 0, the loss 1 − σ(0) = 0.5.
    let loss = metric_values(&straight, "train", "loss");
    assert!((loss[0] - 0.5).abs() < 1e-6, "{loss:?}");
}

/// Two ranks train as one process with twice the batch: with `apo_zero_unpaired` (no KL
/// estimate) the same weights; with `kto` the ranks agree on one KL estimate (gathered as TRL
/// does; each rank's KL completions rotate within its own batch, so the runs differ) and the
/// evaluation of a validation set the ranks split unevenly completes.
#[test]
fn two_ranks_train_kto_as_one_process_with_twice_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = two_ranks_and_one(tmp.path(), 2, |dir| {
        let cfg = kto_config(tmp.path(), dir, "text-paired", "");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("loss_type = \"kto\"", "loss_type = \"apo_zero_unpaired\"");
        std::fs::write(&cfg, text).unwrap();
        cfg
    });
    assert_same_weights(&two, &one, 1e-5);
    let (v2, v1) = (
        metric_values(&two, "val", "val_loss"),
        metric_values(&one, "val", "val_loss"),
    );
    assert_eq!(v2.len(), v1.len());
    for (a, b) in v2.iter().zip(&v1) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }
    let kto = tmp.path().join("kto");
    let cfg = kto_config(tmp.path(), &kto, "text-paired", "");
    lantern_ok(&[
        "launch",
        "--nproc-per-node",
        "2",
        "--backend",
        "mpi",
        "--",
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        "train.batch_size=3",
    ]);
    assert!(metric_values(&kto, "val", "val_loss")
        .iter()
        .all(|l| l.is_finite()));
}

#[test]
fn bad_kto_input_names_the_file_line_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad");
    std::fs::create_dir_all(&data).unwrap();
    let file = |name: &str, text: &str| data_train_file(&data, name, text);
    let no_label = file(
        "nolabel.jsonl",
        "{\"prompt\": \"a\", \"completion\": \"b\", \"label\": true}\n{\"prompt\": \"a\", \"completion\": \"b\", \"label\": \"yes\"}\n",
    );
    let mixed = file(
        "mixed.jsonl",
        "{\"prompt\": \"a\", \"completion\": \"b\", \"label\": true}\n{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n",
    );
    let dpo_pairs = format!("data.train=\"{}\"", s(&golden("dpo/text/train.jsonl")));
    let run = tmp.path().join("run");
    let cfg = kto_config(tmp.path(), &run, "text", "");
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &[&no_label],
            &["nolabel.jsonl: line 2", "boolean \"label\""],
        ),
        (&[&mixed], &["mixed.jsonl: line 2", "records mix pairs"]),
        (
            &["data.ld_alpha=0.5"],
            &["data.ld_alpha is not a setting of KTO"],
        ),
        (
            &["data.loss_type=[\"kto\", \"sigmoid\"]"],
            &["KTO's examples train with one of kto, apo_zero_unpaired"],
        ),
        (
            &["data.desirable_weight=0"],
            &["data.desirable_weight must be positive"],
        ),
        // KTO's weights on a DPO run, and on SFT records.
        (
            &[
                &dpo_pairs,
                "data.loss_type=\"sigmoid\"",
                "data.undesirable_weight=2",
            ],
            &["data.undesirable_weight is KTO's"],
        ),
        (
            &[
                &format!("data.train=\"{}\"", s(&golden("sft/text/train.jsonl"))),
                "data.loss_type=\"nll\"",
                "data.desirable_weight=2",
            ],
            &["data.desirable_weight is DPO's or KTO's"],
        ),
    ];
    for (sets, want) in cases {
        let e = lantern_err(&strs(&args(&cfg, sets, &[])));
        assert!(want.iter().all(|w| e.contains(w)), "{sets:?}: {e}");
    }
    assert!(!run.join("checkpoints").exists());
}

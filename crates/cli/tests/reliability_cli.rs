//! Reliability through the binary: preemption by signal, a kill at every point of the checkpoint
//! write protocol, a failing disk, and the NaN guard.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// `lantern train` exit status after a SIGTERM/SIGINT checkpoint (documented in main.rs and
/// docs/reliability.md).
const EXIT_PREEMPTED: i32 = 75;

fn ckpt_file(run: &Path, step: u64, name: &str) -> Vec<u8> {
    let p = run
        .join("checkpoints")
        .join(format!("step-{step:08}"))
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn state(run: &Path, step: u64) -> Value {
    serde_json::from_slice(&ckpt_file(run, step, "trainer_state.json")).unwrap()
}

/// Final weights and optimizer state of a finished run.
fn final_bytes(run: &Path) -> (Vec<u8>, Vec<u8>) {
    let c = newest_checkpoint(run);
    (
        std::fs::read(c.join("model.safetensors")).unwrap(),
        std::fs::read(c.join("optimizer.safetensors")).unwrap(),
    )
}

/// A step between 5 and 124 that changes from run to run (printed, to reproduce a failure).
fn random_step() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    5 + nanos % 120
}

const LONG: &[&str] = &[
    "--set",
    "train.max_steps=300",
    "--set",
    "checkpoint.every=100",
    "--set",
    "train.eval_every=50",
];

#[test]
fn sigterm_checkpoints_exits_75_and_resume_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let cfg_s = s(&tiny_config(tmp.path(), &straight, ""));
    let mut args = vec!["train", "--config", &cfg_s, "--quiet"];
    args.extend_from_slice(LONG);
    lantern_ok(&args);

    let split = tmp.path().join("split");
    let cfg = tiny_config(tmp.path(), &split, "");
    let cfg_s = s(&cfg);
    let mut args = vec!["train", "--config", &cfg_s, "--quiet"];
    args.extend_from_slice(LONG);
    let k = random_step();
    eprintln!("sending SIGTERM once step {k} is recorded");
    let mut child = lantern_cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &split, k, Duration::from_secs(120));
    send_signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_PREEMPTED),
        "status {}; stderr:\n{stderr}",
        out.status
    );
    assert!(stderr.contains("--resume"), "{stderr}");
    // The current step was finished and checkpointed: nothing recorded is lost.
    let stopped = last_train_step(&split);
    assert!(
        (k..300).contains(&stopped),
        "stopped at {stopped}, signalled at {k}"
    );
    assert!(newest_checkpoint(&split).ends_with(format!("step-{stopped:08}")));

    args.push("--resume");
    lantern_ok(&args);
    assert!(
        final_bytes(&straight) == final_bytes(&split),
        "weights after SIGTERM at step {stopped} and --resume differ from the uninterrupted run"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &run, "");
    let cfg_s = s(&cfg);
    let mut args = vec!["train", "--config", &cfg_s, "--quiet"];
    args.extend_from_slice(LONG);
    args.extend_from_slice(&["--set", "checkpoint.every=0"]);
    // The checkpoint the first signal asks for hangs before its rename; the second signal must
    // not wait for it.
    let mut child = lantern_cmd(&args)
        .env("LANTERN_TEST_PAUSE_IN_SAVE", "before-rename")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &run, 3, Duration::from_secs(120));
    send_signal(&child, libc::SIGTERM);
    wait_for_stderr_line(&mut child, "LANTERN_PAUSED before-rename");
    send_signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status}");
    // Nothing complete was written; --resume cleans up and starts over.
    let entries = checkpoint_entries(&run);
    assert!(
        entries.len() == 1 && entries[0].starts_with(".tmp-step-"),
        "{entries:?}"
    );
    let out = lantern_cmd(&["train", "--config", &cfg_s, "--resume", "--quiet"])
        .args(["--set", "train.max_steps=4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removed incomplete checkpoint"), "{stderr}");
    assert_eq!(checkpoint_entries(&run), vec!["step-00000004"]);
}

#[test]
fn a_kill_at_any_point_of_a_save_resumes_from_the_newest_complete_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // keep = 1, so that pruning has something to delete at every save.
    let extra = ["--set", "checkpoint.every=10", "--set", "checkpoint.keep=1"];
    let straight = tmp.path().join("straight");
    let cfg = tiny_config(tmp.path(), &straight, "");
    let cfg_s = s(&cfg);
    let mut args = vec!["train", "--config", &cfg_s, "--quiet"];
    args.extend_from_slice(&extra);
    lantern_ok(&args);
    let want = final_bytes(&straight);

    for (point, complete_after_kill) in [
        ("after-first-file", 10),
        ("before-fsync", 10),
        ("before-rename", 10),
        ("before-prune", 20),
    ] {
        let run = tmp.path().join(point);
        let cfg = tiny_config(tmp.path(), &run, "");
        let cfg_s = s(&cfg);
        let mut args = vec!["train", "--config", &cfg_s, "--quiet"];
        args.extend_from_slice(&extra);
        let mut child = lantern_cmd(&args)
            .env("LANTERN_TEST_PAUSE_IN_SAVE", format!("{point}@20"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_stderr_line(&mut child, &format!("LANTERN_PAUSED {point} step 20"));
        child.kill().unwrap(); // SIGKILL: no handler, no cleanup.
        child.wait().unwrap();

        let entries = checkpoint_entries(&run);
        let complete: Vec<&String> = entries.iter().filter(|e| e.starts_with("step-")).collect();
        if complete_after_kill == 20 {
            // Renamed but not yet pruned: both are there.
            assert_eq!(complete, ["step-00000010", "step-00000020"], "{point}");
        } else {
            assert_eq!(complete, ["step-00000010"], "{point}");
            assert!(
                entries.iter().any(|e| e.starts_with(".tmp-step-00000020-")),
                "{point}: {entries:?}"
            );
        }

        args.push("--resume");
        let out = lantern_cmd(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{point}: resume failed:\n{stderr}");
        if complete_after_kill == 10 {
            assert!(
                stderr.contains("removed incomplete checkpoint") && stderr.contains(".tmp-step-"),
                "{point}: {stderr}"
            );
        }
        assert_eq!(checkpoint_entries(&run), vec!["step-00000040"], "{point}");
        let recs = metrics(&run);
        let first_resumed = complete_after_kill + 1;
        assert_eq!(
            recs.iter()
                .filter(|r| r["kind"] == "train" && r["step"] == first_resumed)
                .count(),
            1,
            "{point}: metrics of the lost steps were not rewound"
        );
        assert!(
            final_bytes(&run) == want,
            "{point}: weights after kill and --resume differ from the uninterrupted run"
        );
    }
}

#[test]
fn a_failing_write_names_the_file_and_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &run, "");
    let cfg_s = s(&cfg);
    lantern_ok(&["train", "--config", &cfg_s, "--quiet", "--stop-after", "20"]);
    let before = final_bytes(&run);

    // model.safetensors of this model is ~170 kB: a 100 kB file-size limit makes its write fail
    // with EFBIG, as a full disk or quota would.
    let mut cmd = lantern_cmd(&["train", "--config", &cfg_s, "--quiet", "--resume"]);
    apply_limits(
        &mut cmd,
        Limits {
            file_size: Some(100_000),
            ..Limits::default()
        },
    );
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("could not write checkpoint step 40")
            && stderr.contains("model.safetensors")
            && stderr.contains("File too large")
            && stderr.contains("untouched"),
        "{stderr}"
    );
    assert_eq!(checkpoint_entries(&run), vec!["step-00000020"]);
    assert!(
        final_bytes(&run) == before,
        "the previous checkpoint changed"
    );

    // And it still resumes.
    lantern_ok(&["train", "--config", &cfg_s, "--quiet", "--resume"]);
    assert!(newest_checkpoint(&run).ends_with("step-00000040"));
}

fn poisoned_run(
    tmp: &Path,
    name: &str,
    steps: &str,
    extra: &[&str],
) -> (std::process::Output, std::path::PathBuf) {
    let run = tmp.join(name);
    let cfg = tiny_config(tmp, &run, "");
    let cfg_s = s(&cfg);
    let mut args = vec![
        "train",
        "--config",
        &cfg_s,
        "--quiet",
        "--set",
        "train.max_steps=24",
        "--set",
        "checkpoint.every=1",
        "--set",
        "checkpoint.keep=100",
        "--poison-grad-at",
        steps,
    ];
    args.extend_from_slice(extra);
    (lantern_cmd(&args).output().unwrap(), run)
}

/// The parameter the test hook poisons (the last one) and the guard must name.
const POISONED: &str = "transformer.ln_f.bias";

#[test]
fn one_nonfinite_step_is_skipped_and_logged_in_every_precision() {
    let tmp = tempfile::tempdir().unwrap();
    for p in ["fp32", "bf16"] {
        let prec = format!("train.precision=\"{p}\"");
        // 0-based step 6 is step 7 of the records.
        let (out, run) = poisoned_run(tmp.path(), p, "6", &["--set", &prec]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{p}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "warning: step 7: non-finite gradient of {POISONED}"
            )),
            "{p}: {stderr}"
        );
        let recs = metrics(&run);
        let r = train_record(&recs, 7);
        assert_eq!(r["skipped"], true, "{p}");
        assert_eq!(r["skipped_steps"], 1, "{p}");
        assert_eq!(r["consecutive_skips"], 1, "{p}");
        assert!(r["skip_reason"].as_str().unwrap().contains(POISONED), "{p}");
        assert_eq!(train_record(&recs, 8)["consecutive_skips"], 0, "{p}");
        assert_eq!(train_record(&recs, 24)["skipped_steps"], 1, "{p}");
        // Weights, moments and the optimizer's step count are untouched by the skipped step.
        for f in ["model.safetensors", "optimizer.safetensors"] {
            assert!(
                ckpt_file(&run, 6, f) == ckpt_file(&run, 7, f),
                "{p}: {f} changed"
            );
            assert!(
                ckpt_file(&run, 7, f) != ckpt_file(&run, 8, f),
                "{p}: {f} frozen"
            );
        }
        assert_eq!(state(&run, 6)["optimizer"]["step"], 6);
        assert_eq!(state(&run, 7)["optimizer"]["step"], 6);
        assert_eq!(state(&run, 24)["optimizer"]["step"], 23);
    }
}

#[test]
fn k_nonfinite_steps_in_a_row_stop_the_run_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // 0-based steps 10..=12 are records 11..=13; K = 3.
    let (out, run) = poisoned_run(
        tmp.path(),
        "k3",
        "10-12",
        &["--set", "train.max_consecutive_skips=3"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("training stopped at step 13: 3 consecutive steps skipped")
            && stderr.contains(POISONED)
            && stderr.contains("last good update (step 10)")
            && stderr.contains("step-00000013"),
        "{stderr}"
    );
    assert_eq!(last_train_step(&run), 13);
    // The checkpoint of the stop holds the last good weights and moments.
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(ckpt_file(&run, 10, f) == ckpt_file(&run, 13, f), "{f}");
    }
    assert_eq!(state(&run, 13)["consecutive_skips"], 3);

    // 0 = never stop: the same poisoning is skipped and the run finishes.
    let (out, run) = poisoned_run(
        tmp.path(),
        "k0",
        "10-12",
        &["--set", "train.max_consecutive_skips=0"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(train_record(&metrics(&run), 24)["skipped_steps"], 3);
}

#[test]
fn fp16_overflows_belong_to_the_scaler_until_the_scale_reaches_one() {
    let tmp = tempfile::tempdir().unwrap();
    let fp16 = ["--set", "train.precision=\"fp16\""];
    // Seven overflows in a row at a high scale: the scaler backs off each time, no guard stop.
    let (out, run) = poisoned_run(tmp.path(), "high", "5-11", &fp16);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = metrics(&run);
    assert_eq!(train_record(&recs, 12)["skipped"], true);
    assert_eq!(train_record(&recs, 12)["consecutive_skips"], 0);
    assert_eq!(train_record(&recs, 24)["skipped_steps"], 7);
    assert_eq!(
        train_record(&recs, 12)["loss_scale"].as_f64().unwrap(),
        65536.0 / 128.0
    );

    // At a scale of 1 the unscaled gradients themselves are non-finite: the guard counts them.
    let mut args = fp16.to_vec();
    args.extend_from_slice(&["--set", "train.loss_scale_init=1.0"]);
    let (out, run) = poisoned_run(tmp.path(), "one", "5-11", &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("training stopped at step 10: 5 consecutive"),
        "{stderr}"
    );
    assert_eq!(last_train_step(&run), 10);
}

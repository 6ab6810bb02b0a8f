//! Supervised fine-tuning through the binary (`lantern train` with `data.train` records): a
//! run cut short and resumed ends byte for byte as the run that was not (the order of the
//! epochs, accumulation and padded batches are functions of the step), LoRA writes peft's
//! adapter beside the merged model, and bad input fails with the file and line named.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The SFT golden's tiny Llama folder (tokenizer with a chat template) and its records.
fn golden(rel: &str) -> PathBuf {
    workspace_root().join("tests/golden/sft").join(rel)
}

/// A run's progress (stderr) and summary (stdout); it must succeed.
fn run_ok(args: &[&str]) -> String {
    let out = lantern(args);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lantern {args:?} failed:\n{text}");
    text
}

fn sft_config(dir: &Path, run: &Path, layout: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
init_from = "{model}"
[data]
train = "{data}/train.jsonl"
val_fraction = 0.25
max_length = 64
[train]
device = "cpu"
batch_size = 2
grad_accum = 2
epochs = 2
lr = 3e-2
warmup_steps = 1
eval_every = 2
{extra}
[checkpoint]
every = 2
[run]
dir = "{run}"
"#,
        model = s(&golden("model")),
        data = s(&golden(layout)),
        run = s(run),
    );
    write_config(dir, "sft", run, &text)
}

#[test]
fn an_sft_run_resumes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let cfg = sft_config(tmp.path(), &straight, "messages", "");
    let out = run_ok(&["train", "--config", &s(&cfg)]);
    // 12 records, 3 held out: 9 a epoch, 4 a step, 2 epochs = 5 steps.
    assert!(
        out.contains("conversational (messages) records, 9 train / 3 validation examples"),
        "{out}"
    );
    assert!(newest_checkpoint(&straight).ends_with("step-00000005"));
    let split = tmp.path().join("split");
    let cfg = sft_config(tmp.path(), &split, "messages", "");
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "3",
    ]);
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet", "--resume"]);
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(newest_checkpoint(&straight).join(f)).unwrap();
        let b = std::fs::read(newest_checkpoint(&split).join(f)).unwrap();
        assert!(a == b, "{f} differs after the resume");
    }
    let vals = |run: &Path| metric_values(run, "val", "val_loss");
    assert_eq!(vals(&straight).last(), vals(&split).last());
    // The checkpoint keeps the folder's chat template for what comes next (generate, export).
    let cfg_json = std::fs::read_to_string(
        newest_checkpoint(&straight).join(lantern_data::TOKENIZER_CONFIG_FILE),
    )
    .unwrap();
    assert!(cfg_json.contains("chat_template"), "{cfg_json}");
}

#[test]
fn lora_sft_writes_an_adapter_and_trains_the_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("lora");
    let cfg = sft_config(
        tmp.path(),
        &run,
        "prompt-completion",
        "[lora]\nr = 4\nalpha = 8",
    );
    let out = run_ok(&["train", "--config", &s(&cfg)]);
    assert!(out.contains("prompt-completion records"), "{out}");
    assert!(out.contains("1 dropped with nothing to train on"), "{out}");
    let ckpt = newest_checkpoint(&run);
    assert!(ckpt.join("adapter/adapter_model.safetensors").is_file());
    let vals = metric_values(&run, "val", "val_loss");
    assert!(vals.last() < vals.first(), "{vals:?}");
}

#[test]
fn bad_sft_input_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("train.jsonl"),
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let cfg = sft_config(tmp.path(), &run, "text", "");
    let set = format!("data.train=\"{}\"", s(&data.join("train.jsonl")));
    let e = lantern_err(&["train", "--config", &s(&cfg), "--set", &set]);
    assert!(
        e.contains("train.jsonl: line 2: a prompt-completion record needs both"),
        "{e}"
    );
    let set = format!("data.train=\"{}\"", s(&data.join("missing.jsonl")));
    let e = lantern_err(&["train", "--config", &s(&cfg), "--set", &set]);
    assert!(
        e.contains("missing.jsonl") && e.contains("does not exist"),
        "{e}"
    );
    // Nothing was written over: no checkpoint, no run folder content.
    assert!(!run.join("checkpoints").exists());
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "data.max_length=4096",
    ]);
    assert!(
        e.contains("data.max_length 4096 exceeds the model's context of 128"),
        "{e}"
    );
    let e = lantern_err(&["train", "--config", &s(&cfg), "--set", "data.maxlen=3"]);
    assert!(e.contains("data.maxlen"), "{e}");
}

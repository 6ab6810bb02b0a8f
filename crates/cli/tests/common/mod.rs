//! Shared helpers of the CLI tests: the binary, a small prepared corpus of real text, and
//! tiny run configs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn lantern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .output()
        .expect("lantern runs")
}

/// Runs and asserts success, printing the output otherwise.
pub fn lantern_ok(args: &[&str]) -> String {
    let out = lantern(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "lantern {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs, asserts failure, returns stderr.
pub fn lantern_err(args: &[&str]) -> String {
    let out = lantern(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "lantern {args:?} should fail; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "lantern {args:?} panicked:\n{stderr}"
    );
    stderr
}

/// Three categories of the fortunes corpus (real English text), prepared once per test
/// binary with a 512-token BPE vocabulary.
pub fn prepared_data() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let raw = workspace_root().join("data/raw/fortunes");
        assert!(
            raw.is_dir(),
            "{} is missing: run `bash scripts/fetch_fortunes.sh` (scripts/test.sh does)",
            raw.display()
        );
        let out = workspace_root()
            .join("target/test-data")
            .join(format!("fortunes-512-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec!["prepare".to_string()];
        for cat in ["computers", "science", "work"] {
            args.push("--input".into());
            args.push(raw.join(cat).display().to_string());
        }
        args.extend([
            "--out".into(),
            out.display().to_string(),
            "--vocab-size".into(),
            "512".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lantern_ok(&refs);
        out
    })
    .clone()
}

/// A tiny GPT run config (2 layers, 32 wide, 32 tokens) writing to `run_dir`.
pub fn tiny_config(dir: &Path, run_dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
preset = "gpt-tiny"
n_layer = 2
n_embd = 32
n_head = 4
n_positions = 32
dropout = 0.1

[data]
dir = "{data}"

[train]
batch_size = 4
seq_len = 32
max_steps = 40
lr = 1e-2
warmup_steps = 5
eval_every = 20
eval_batches = 2
log_every = 10
{extra}

[checkpoint]
every = 20
keep = 5

[run]
dir = "{run}"
"#,
        data = prepared_data().display(),
        run = run_dir.display(),
    );
    let p = dir.join(format!(
        "config-{}.toml",
        run_dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&p, text).unwrap();
    p
}

pub fn newest_checkpoint(run_dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    v.sort();
    v.pop().expect("a checkpoint")
}

pub fn read_f32_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let f = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, f)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

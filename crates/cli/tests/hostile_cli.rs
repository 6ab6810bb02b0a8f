//! Hostile files through the binary: every corrupt, lying or dangerous input we read must give
//! the normal error status (1) with a message naming the file — never a panic, never an attempt
//! to allocate what a header claims. Each case runs under a 4 GiB address-space limit, so a
//! huge allocation would abort the process and fail the test.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const ADDRESS_SPACE: u64 = 4 << 30;

/// Runs `lantern args` under the limits and checks it fails cleanly with a message holding
/// every one of `expect`.
fn expect_clean_error(case: &str, args: &[&str], expect: &[&str]) {
    let mut cmd = lantern_cmd(args);
    apply_limits(
        &mut cmd,
        Limits {
            address_space: Some(ADDRESS_SPACE),
            ..Limits::default()
        },
    );
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{case}: expected the error status 1, got {}; stderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{case}: panicked:\n{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "{case}: stderr lacks {e:?}:\n{stderr}");
    }
}

/// A finished two-step run (config, run folder) built once per test binary.
fn base_run() -> &'static (PathBuf, PathBuf) {
    static RUN: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = workspace_root()
            .join("target/test-data")
            .join(format!("hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = dir.join("base");
        let cfg = tiny_config(&dir, &run, "");
        lantern_ok(&[
            "train",
            "--config",
            &s(&cfg),
            "--quiet",
            "--set",
            "train.max_steps=2",
        ]);
        (cfg, run)
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the base checkpoint in `tmp/name`.
fn checkpoint_copy(tmp: &Path, name: &str) -> PathBuf {
    let dst = tmp.join(name);
    copy_dir(&newest_checkpoint(&base_run().1), &dst);
    dst
}

/// (header JSON, data section) of a safetensors file.
fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        bytes[8 + n..].to_vec(),
    )
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Names of the tensors of a header in data order.
fn by_offset(header: &Value) -> Vec<String> {
    let mut v: Vec<(u64, String)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, t)| (t["data_offsets"][0].as_u64().unwrap(), k.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|x| x.1).collect()
}

fn generate(dir: &Path) -> Vec<String> {
    ["generate", "--model", &s(dir), "--max-new-tokens", "1"]
        .map(String::from)
        .to_vec()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn the_base_checkpoint_loads_under_the_same_limits() {
    // Without this the other cases could pass because of the limit, not the validation.
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint_copy(tmp.path(), "ok");
    let mut cmd = lantern_cmd(&refs(&generate(&dir)));
    apply_limits(
        &mut cmd,
        Limits {
            address_space: Some(ADDRESS_SPACE),
            ..Limits::default()
        },
    );
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_model_files_give_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(newest_checkpoint(&base_run().1).join("model.safetensors")).unwrap();
    let (header, data) = split_safetensors(&good);
    let order = by_offset(&header);

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push((
        "truncated",
        good[..good.len() / 2].to_vec(),
        "not a valid safetensors",
    ));
    cases.push(("empty", Vec::new(), "not a valid safetensors"));
    let mut longer = good.clone();
    longer[..8].copy_from_slice(&(good.len() as u64 + 100).to_le_bytes());
    cases.push((
        "header longer than the file",
        longer,
        "not a valid safetensors",
    ));
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    cases.push(("header length 2^60", huge, "not a valid safetensors"));

    let mut h = header.clone();
    let first = h[&order[0]]["data_offsets"].clone();
    h[&order[1]]["data_offsets"] = first;
    cases.push((
        "overlapping offsets",
        join_safetensors(&h, &data),
        "not a valid safetensors",
    ));
    let mut h = header.clone();
    let last = &order[order.len() - 1];
    let start = h[last]["data_offsets"][0].as_u64().unwrap();
    h[last]["data_offsets"] = serde_json::json!([start, data.len() as u64 * 4]);
    cases.push((
        "offsets past the end",
        join_safetensors(&h, &data),
        "not a valid safetensors",
    ));
    let mut h = header.clone();
    h[&order[0]]["shape"] = serde_json::json!([u64::MAX / 2, 4]);
    cases.push((
        "shape overflowing",
        join_safetensors(&h, &data),
        "not a valid safetensors",
    ));
    let mut h = header.clone();
    h["transformer.wte.weight"]["dtype"] = "U32".into();
    cases.push(("integer dtype", join_safetensors(&h, &data), "dtype U32"));
    let mut h = header.clone();
    h["transformer.wte.weight"]["dtype"] = "I8".into();
    cases.push((
        "dtype with another size",
        join_safetensors(&h, &data),
        "not a valid safetensors",
    ));
    let mut h = header.clone();
    let t = h
        .as_object_mut()
        .unwrap()
        .remove("transformer.wpe.weight")
        .unwrap();
    h["transformer.wpe.weight.renamed"] = t;
    cases.push((
        "renamed tensor",
        join_safetensors(&h, &data),
        "transformer.wpe.weight",
    ));
    let mut h = header.clone();
    h["transformer.ln_f.bias"]["shape"] = serde_json::json!([8, 4]);
    cases.push((
        "wrong shape",
        join_safetensors(&h, &data),
        "transformer.ln_f.bias",
    ));

    for (case, bytes, expect) in cases {
        let dir = checkpoint_copy(tmp.path(), &case.replace(' ', "-"));
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        expect_clean_error(case, &refs(&generate(&dir)), &["model.safetensors", expect]);
    }
}

#[test]
fn hostile_checkpoint_companions_give_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let state_of = |dir: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("trainer_state.json")).unwrap()).unwrap()
    };
    type Edit = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "future trainer-state version",
            Box::new(move |d| {
                let mut st = state_of(d);
                st["format_version"] = 99.into();
                std::fs::write(d.join("trainer_state.json"), st.to_string()).unwrap();
            }),
            "trainer_state.json",
            "newer lantern",
        ),
        (
            "non-UTF-8 trainer state",
            Box::new(|d| {
                std::fs::write(d.join("trainer_state.json"), b"{\"step\": \xff}").unwrap()
            }),
            "trainer_state.json",
            "UTF-8",
        ),
        (
            "implausible model in the trainer state",
            Box::new(move |d| {
                let mut st = state_of(d);
                st["model"]["n_layer"] = 1_000_000_000_000u64.into();
                std::fs::write(d.join("trainer_state.json"), st.to_string()).unwrap();
            }),
            "trainer_state.json",
            "n_layer",
        ),
        (
            "garbage tokenizer",
            Box::new(|d| std::fs::write(d.join("tokenizer.json"), b"{\"model\": 3}").unwrap()),
            "tokenizer.json",
            "not a valid tokenizer.json",
        ),
    ];
    for (case, edit, file, expect) in cases {
        let dir = checkpoint_copy(tmp.path(), &case.replace(' ', "-"));
        edit(&dir);
        expect_clean_error(case, &refs(&generate(&dir)), &[file, expect]);
    }
}

#[test]
fn pickle_files_are_refused_on_every_load_path() {
    let tmp = tempfile::tempdir().unwrap();
    // A Hugging Face folder holding only a pickle (a zip archive whose data.pkl could run code).
    let hf = tmp.path().join("hf");
    lantern_ok(&["export", "--model", &s(&base_run().1), "--out", &s(&hf)]);
    std::fs::remove_file(hf.join("model.safetensors")).unwrap();
    std::fs::write(
        hf.join("pytorch_model.bin"),
        b"PK\x03\x04 data.pkl cos\nsystem\n",
    )
    .unwrap();
    let why = "can execute arbitrary code";
    expect_clean_error(
        "pickle in a model folder",
        &refs(&generate(&hf)),
        &["pytorch_model.bin", why, "safetensors"],
    );
    expect_clean_error(
        "pickle given directly",
        &refs(&generate(&hf.join("pytorch_model.bin"))),
        &["pytorch_model.bin", why],
    );
    let (cfg, _) = base_run();
    let run = tmp.path().join("from-pickle");
    expect_clean_error(
        "pickle as init_from",
        &[
            "train",
            "--config",
            &s(cfg),
            "--quiet",
            "--set",
            &format!("model.init_from=\"{}\"", s(&hf)),
            "--set",
            &format!("run.dir=\"{}\"", s(&run)),
        ],
        &["pytorch_model.bin", why],
    );
}

#[test]
fn hostile_run_inputs_give_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, base) = base_run();
    let text = std::fs::read_to_string(cfg).unwrap();

    // A config that is not UTF-8.
    let bad_cfg = tmp.path().join("latin1.toml");
    let mut bytes = text.clone().into_bytes();
    bytes.extend_from_slice(b"\n# caf\xe9\n");
    std::fs::write(&bad_cfg, bytes).unwrap();
    expect_clean_error(
        "non-UTF-8 config",
        &["train", "--config", &s(&bad_cfg)],
        &["latin1.toml", "not UTF-8"],
    );

    // An optimizer file with integer moments, on --resume.
    let run = tmp.path().join("resume");
    copy_dir(base, &run);
    let ck = newest_checkpoint(&run);
    let (mut h, data) =
        split_safetensors(&std::fs::read(ck.join("optimizer.safetensors")).unwrap());
    h["transformer.wte.weight.exp_avg"]["dtype"] = "U32".into();
    std::fs::write(
        ck.join("optimizer.safetensors"),
        join_safetensors(&h, &data),
    )
    .unwrap();
    let run_s = format!("run.dir=\"{}\"", s(&run));
    expect_clean_error(
        "integer optimizer moments",
        &[
            "train",
            "--config",
            &s(cfg),
            "--resume",
            "--set",
            &run_s,
            "--set",
            "train.max_steps=4",
        ],
        &["optimizer.safetensors", "dtype U32"],
    );

    // Data folders whose train.bin lies about its count, holds an id out of range, or whose
    // tokenizer does not parse.
    let data_dir = prepared_data();
    let shard = std::fs::read(data_dir.join("train.bin")).unwrap();
    let mut lying = shard.clone();
    let count = u64::from_le_bytes(lying[16..24].try_into().unwrap());
    lying[16..24].copy_from_slice(&(count * 1000).to_le_bytes());
    let mut out_of_range = shard.clone();
    out_of_range[32..34].copy_from_slice(&u16::MAX.to_le_bytes());
    let cases: [(&str, &str, Vec<u8>, &str); 3] = [
        ("lying shard count", "train.bin", lying, "header says"),
        (
            "token id out of range",
            "train.bin",
            out_of_range,
            "token id 65535",
        ),
        (
            "garbage tokenizer",
            "tokenizer.json",
            b"\x00\x01".to_vec(),
            "tokenizer.json",
        ),
    ];
    for (case, file, bytes, expect) in cases {
        let d = tmp.path().join(case.replace(' ', "-"));
        copy_dir(&data_dir, &d);
        std::fs::write(d.join(file), bytes).unwrap();
        let run = tmp.path().join(format!("run-{}", case.replace(' ', "-")));
        expect_clean_error(
            case,
            &[
                "train",
                "--config",
                &s(cfg),
                "--quiet",
                "--set",
                &format!("data.dir=\"{}\"", s(&d)),
                "--set",
                &format!("run.dir=\"{}\"", s(&run)),
            ],
            &[file, expect],
        );
    }
}

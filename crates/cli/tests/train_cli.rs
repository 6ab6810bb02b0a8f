//! End-to-end behaviour of `lantern train` through the binary: exact resume, exact gradient
//! accumulation, outputs of a run, and clear errors on bad input.

mod common;
use common::*;

fn exact_resume(accum: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("grad_accum = {accum}");
    let straight = tmp.path().join("straight");
    let cfg = tiny_config(tmp.path(), &straight, &extra);
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet"]);

    let split = tmp.path().join("split");
    let cfg = tiny_config(tmp.path(), &split, &extra);
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "20",
    ]);
    assert!(newest_checkpoint(&split).ends_with("step-00000020"));
    // A new process continues from the checkpoint.
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet", "--resume"]);

    let a = std::fs::read(newest_checkpoint(&straight).join("model.safetensors")).unwrap();
    let b = std::fs::read(newest_checkpoint(&split).join("model.safetensors")).unwrap();
    assert!(newest_checkpoint(&split).ends_with("step-00000040"));
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run (grad_accum {accum})"
    );
    let oa = std::fs::read(newest_checkpoint(&straight).join("optimizer.safetensors")).unwrap();
    let ob = std::fs::read(newest_checkpoint(&split).join("optimizer.safetensors")).unwrap();
    assert!(oa == ob, "optimizer state differs after resume");
}

#[test]
fn resume_is_byte_identical() {
    exact_resume(1);
}

#[test]
fn resume_is_byte_identical_with_accumulation() {
    exact_resume(4);
}

/// `train.activation_checkpointing`: each block recomputed in the backward pass, with its
/// dropout masks replayed, trains as the run that kept the activations.
#[test]
fn activation_checkpointing_trains_as_keeping_the_activations() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, on: bool| {
        let dir = tmp.path().join(name);
        let cfg = tiny_config(
            tmp.path(),
            &dir,
            &format!("activation_checkpointing = {on}"),
        );
        train_ok(&cfg, &["train.max_steps=20"]);
        dir
    };
    let (kept, recomputed) = (run("kept", false), run("recomputed", true));
    let (a, b) = (
        metric_values(&kept, "train", "loss"),
        metric_values(&recomputed, "train", "loss"),
    );
    assert!(!a.is_empty() && a.len() == b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "loss {y} against {x}");
    }
    let wa = read_f32_tensors(&newest_checkpoint(&kept).join("model.safetensors"));
    let wb = read_f32_tensors(&newest_checkpoint(&recomputed).join("model.safetensors"));
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        if name.ends_with("attn.c_attn.bias") {
            continue; // its key part is rounding noise (accumulation_matches_a_large_batch)
        }
        let r = rel_l2(x, y);
        assert!(r <= 1e-4, "{name}: relative difference {r}");
    }
}

/// `run.tensorboard`: an event file per process in `<run>/tensorboard` (TensorBoard's own
/// reader is `scripts/tensorboard_check.sh`; the encoding is unit-tested in the train crate).
#[test]
fn tensorboard_event_files_are_written_per_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tb");
    let cfg = tiny_config(tmp.path(), &dir, "");
    let c = s(&cfg);
    let base = [
        "train",
        "--config",
        &c,
        "--quiet",
        "--set",
        "run.tensorboard=true",
    ];
    let sets = ["--set", "train.max_steps=20"];
    lantern_ok(&[&base[..], &sets, &["--stop-after", "10"]].concat());
    lantern_ok(&[&base[..], &sets, &["--resume"]].concat());
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let bytes = std::fs::read(f).unwrap();
        // The first record: its length, then the file_version event holding "brain.Event:2".
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert!(
            bytes.len() > 16 + len,
            "{name}: more than the version record"
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("brain.Event:2") && text.contains("train/loss"),
            "{name}"
        );
    }
}

#[test]
fn accumulation_matches_a_large_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, b: usize, acc: usize| {
        let dir = tmp.path().join(name);
        let extra = format!("grad_accum = {acc}");
        let cfg = tiny_config(tmp.path(), &dir, &extra);
        lantern_ok(&[
            "train",
            "--config",
            &s(&cfg),
            "--quiet",
            "--set",
            &format!("train.batch_size={b}"),
            "--set",
            "train.max_steps=10",
            "--set",
            "model.dropout=0.0",
        ]);
        read_f32_tensors(&newest_checkpoint(&dir).join("model.safetensors"))
    };
    let a = run("b4x4", 4, 4);
    let b = run("b16x1", 16, 1);
    assert_eq!(a.len(), b.len());
    for ((na, va), (_, vb)) in a.iter().zip(&b) {
        if na.ends_with("attn.c_attn.bias") {
            // [query | key | value] biases. The key bias has an exactly-zero true gradient
            // (softmax ignores a constant added to all of a query's scores), so its gradient is
            // pure rounding noise, which differs with summation order, and Adam scales noise up
            // to steps of ~lr. Its query and value parts are compared like everything else.
            let c = va.len() / 3;
            for part in [0..c, 2 * c..3 * c] {
                let r = rel_l2(&va[part.clone()], &vb[part]);
                assert!(r <= 1e-5, "{na}: relative difference {r}");
            }
            continue;
        }
        let r = rel_l2(va, vb);
        assert!(r <= 1e-5, "{na}: relative difference {r}");
    }
}

#[test]
fn a_run_writes_metrics_config_plot_and_exportable_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &dir, "");
    let out = lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        "train.max_steps=20",
    ]);
    assert!(out.contains("checkpoint:"), "{out}");
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let train_lines = metrics
        .lines()
        .filter(|l| l.contains("\"kind\":\"train\""))
        .count();
    assert_eq!(train_lines, 20);
    assert!(metrics.lines().any(|l| l.contains("\"val_loss\"")));
    assert!(std::fs::read(dir.join("loss.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let resolved = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(resolved.contains("max_steps = 20"), "{resolved}");
    // Only `keep` checkpoints remain, and the newest exports and samples.
    let export = tmp.path().join("export");
    lantern_ok(&["export", "--model", &s(&dir), "--out", &s(&export)]);
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(export.join(f).is_file(), "{f} missing from export");
    }
    // transformers' tokenizer settings, the checkpoint's: GPT-2's class, the end-of-text token
    // as BOS, EOS and unknown, no padding (a language model), the context.
    let tok_cfg = std::fs::read(export.join("tokenizer_config.json")).unwrap();
    let ckpt = dir.join("checkpoints/step-00000020");
    assert!(tok_cfg == std::fs::read(ckpt.join("tokenizer_config.json")).unwrap());
    let t: serde_json::Value = serde_json::from_slice(&tok_cfg).unwrap();
    let eot = lantern_data::tokenizer::EOT;
    assert_eq!(
        t,
        serde_json::json!({
            "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": false, "bos_token": eot,
            "eos_token": eot, "unk_token": eot, "model_max_length": 32,
        })
    );
    let names: Vec<String> = read_f32_tensors(&export.join("model.safetensors"))
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert!(names.contains(&"transformer.h.1.attn.c_attn.weight".to_string()));
    assert!(
        !names.iter().any(|n| n == "lm_head.weight"),
        "tied head must be written once"
    );
    // Exporting over an existing folder is refused, and the folder is left alone.
    let e = lantern_err(&["export", "--model", &s(&dir), "--out", &s(&export)]);
    assert!(e.contains("already exists"), "{e}");
    let gen = lantern_ok(&[
        "generate",
        "--model",
        &s(&export),
        "--prompt",
        "The",
        "--max-new-tokens",
        "8",
        "--seed",
        "3",
    ]);
    assert!(gen.contains("sample 1"), "{gen}");
    let again = lantern_ok(&[
        "generate",
        "--model",
        &s(&export),
        "--prompt",
        "The",
        "--max-new-tokens",
        "8",
        "--seed",
        "3",
    ]);
    assert_eq!(gen, again, "sampling with a seed is reproducible");
    // --ignore-eot: always the number asked for, said on stderr with the time it took.
    let out = lantern(&[
        "generate",
        "--model",
        &s(&export),
        "--max-new-tokens",
        "12",
        "--temperature",
        "0",
        "--ignore-eot",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sample 1: 12 tokens in "), "{err}");
}

#[test]
fn bad_config_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &dir, "");
    let e = lantern_err(&["train", "--config", &s(&cfg), "--set", "train.lrr=1"]);
    assert!(e.contains("lrr"), "{e}");
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "train.batch_size=big",
    ]);
    assert!(
        e.contains("train.batch_size") && e.contains("string"),
        "{e}"
    );
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "data.dir=/nonexistent/data",
    ]);
    assert!(e.contains("/nonexistent/data"), "{e}");
    let e = lantern_err(&["train", "--config", "/nonexistent/config.toml"]);
    assert!(e.contains("/nonexistent/config.toml"), "{e}");
    assert!(
        !dir.exists(),
        "a failed start must not create the run folder"
    );
}

#[test]
fn bad_checkpoints_are_refused_and_left_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &dir, "");
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "20",
    ]);
    let ckpt = newest_checkpoint(&dir);

    // Training into a folder that has checkpoints without --resume is refused.
    let e = lantern_err(&["train", "--config", &s(&cfg), "--quiet"]);
    assert!(e.contains("--resume"), "{e}");

    // A checkpoint of a different shape.
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--resume",
        "--set",
        "model.n_embd=64",
    ]);
    assert!(e.contains("different model"), "{e}");

    // A truncated model file: the error names it, nothing is written over it.
    let model = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let e = lantern_err(&["train", "--config", &s(&cfg), "--quiet", "--resume"]);
    assert!(e.contains("model.safetensors"), "{e}");
    assert_eq!(std::fs::read(&model).unwrap().len(), bytes.len() / 2);
    let e = lantern_err(&[
        "export",
        "--model",
        &s(&ckpt),
        "--out",
        &s(&tmp.path().join("x")),
    ]);
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn token_ids_past_the_vocabulary_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &dir, "");
    // The data was prepared with 512 tokens; a model with 300 cannot embed them.
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "model.vocab_size=300",
    ]);
    assert!(e.contains("300") && e.contains("512"), "{e}");
    let toks = tmp.path().join("t.json");
    std::fs::write(&toks, r#"{"input_ids": [[1, 2, 99999]]}"#).unwrap();
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        "train.max_steps=1",
    ]);
    let e = lantern_err(&["score", "--model", &s(&dir), "--tokens", &s(&toks)]);
    assert!(e.contains("99999"), "{e}");
}

#[test]
fn prepare_reads_json_lines_as_it_reads_the_text() {
    // The documents of the three categories `prepared_data` reads, one JSON record each in
    // field `content` (one gzipped, one zstd-compressed): the same split, tokenizer and shards.
    let tmp = tempfile::tempdir().unwrap();
    let raw = workspace_root().join("data/raw/fortunes");
    let mut inputs = Vec::new();
    for cat in ["computers", "science", "work"] {
        let text = String::from_utf8_lossy(&std::fs::read(raw.join(cat)).unwrap()).into_owned();
        let mut lines = String::new();
        for doc in lantern_data::prepare::split_documents(&text) {
            let record = serde_json::json!({"category": cat, "content": doc});
            lines.push_str(&format!("{record}\n"));
        }
        let (path, bytes) = match cat {
            "computers" => {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(lines.as_bytes()).unwrap();
                (format!("{cat}.jsonl.gz"), gz.finish().unwrap())
            }
            "science" => (
                format!("{cat}.jsonl.zst"),
                zstd::encode_all(lines.as_bytes(), 3).unwrap(),
            ),
            _ => (format!("{cat}.jsonl"), lines.into_bytes()),
        };
        let path = tmp.path().join(path);
        std::fs::write(&path, bytes).unwrap();
        inputs.push(path);
    }
    let out = tmp.path().join("data");
    let mut args = vec!["prepare".to_string()];
    for p in &inputs {
        args.extend(["--input".into(), p.display().to_string()]);
    }
    args.extend(["--text-field", "content", "--vocab-size", "512", "--out"].map(String::from));
    args.push(out.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = lantern(&refs);
    assert!(run.status.success());
    // Not a terminal: each pass's last state as a line, the training between them.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
    let (docs, tokens) = (
        meta["documents"].as_u64().unwrap(),
        meta["train_tokens"].as_u64().unwrap() + meta["val_tokens"].as_u64().unwrap(),
    );
    for line in [
        format!("prepare: 3/3 files read, {docs} documents"),
        "prepare: training the tokenizer on ".into(),
        format!("prepare: {docs}/{docs} documents encoded, {tokens} tokens"),
    ] {
        assert!(stderr.contains(&line), "{line:?} not in\n{stderr}");
    }
    for f in ["train.bin", "val.bin", "tokenizer.json", "meta.json"] {
        let a = std::fs::read(prepared_data().join(f)).unwrap();
        let b = std::fs::read(out.join(f)).unwrap();
        assert!(a == b, "{f} differs");
    }

    // Without --text-field the records have no `text`: the error names the file and line.
    let e = lantern_err(&[
        "prepare",
        "--input",
        inputs[1].to_str().unwrap(),
        "--out",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert!(
        e.contains(
            "science.jsonl.zst: line 1: no field \"text\" (the record has: category, content)"
        ),
        "{e}"
    );
    assert!(!tmp.path().join("nope").exists());
}

#[test]
fn prepare_reads_parquet_as_it_reads_json_lines() {
    // pyarrow's Parquet (snappy, row groups of 1000, beside other columns), its JSON Lines
    // twin and `datasets`' save_to_disk folder of it (three Arrow files; tests/golden/parquet):
    // the same dataset, byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let golden = workspace_root().join("tests/golden/parquet");
    for input in ["snappy.parquet", "docs.jsonl", "records/saved-docs"] {
        let out = tmp.path().join(input.replace('/', "-"));
        let run = lantern(&[
            "prepare",
            "--input",
            golden.join(input).to_str().unwrap(),
            "--vocab-size",
            "300",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{input}");
    }
    for f in ["train.bin", "val.bin", "tokenizer.json", "meta.json"] {
        let b = std::fs::read(tmp.path().join("docs.jsonl").join(f)).unwrap();
        for other in ["snappy.parquet", "records-saved-docs"] {
            let a = std::fs::read(tmp.path().join(other).join(f)).unwrap();
            assert!(a == b, "{other}: {f} differs");
        }
    }
    // A null text: the error names the file and the row, and nothing is written.
    let nope = tmp.path().join("nope");
    let e = lantern_err(&[
        "prepare",
        "--input",
        golden.join("null.parquet").to_str().unwrap(),
        "--out",
        nope.to_str().unwrap(),
    ]);
    assert!(
        e.contains("null.parquet: row 3: column \"text\" is null, not a string"),
        "{e}"
    );
    assert!(!nope.exists());
    // A file on which the parquet crate panics: one line, the error, and nothing written.
    let run = lantern(&[
        "prepare",
        "--input",
        golden.join("damaged-dictionary.parquet").to_str().unwrap(),
        "--out",
        nope.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("damaged-dictionary.parquet: cannot read as Parquet: the file is damaged"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!nope.exists());
}

#[test]
fn a_shard_with_an_id_past_the_vocabulary_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for e in std::fs::read_dir(prepared_data()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
    }
    // train.bin holds u16 ids after a 32-byte header (vocabulary 512): write 600 at token 10.
    let shard = data.join("train.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[32 + 20..32 + 22].copy_from_slice(&600u16.to_le_bytes());
    std::fs::write(&shard, bytes).unwrap();
    let dir = tmp.path().join("run");
    let cfg = tiny_config(tmp.path(), &dir, "");
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        &format!("data.dir=\"{}\"", s(&data)),
    ]);
    assert!(e.contains("train.bin") && e.contains("600"), "{e}");
}

#[test]
fn mfu_is_reported_against_a_given_peak_and_only_then() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mfu");
    let cfg = tiny_config(tmp.path(), &run, "");
    // 1e-3 TFLOP/s: a made-up peak, so that the CPU gets a figure to check.
    let out = train_ok(
        &cfg,
        &[
            "train.max_steps=6",
            "train.peak_tflops=1e-3",
            "train.eval_every=0",
        ],
    );
    assert!(out.contains("| mfu "), "{out}");
    // 6·N + 12·L·H·Q·T with N the model's parameters without the position table (tiny_config:
    // 2 layers, 4 heads of 8, T = 32), counted from the checkpoint itself.
    let n: usize = read_f32_tensors(&newest_checkpoint(&run).join("model.safetensors"))
        .iter()
        .filter(|(name, _)| !name.contains("wpe"))
        .map(|(_, v)| v.len())
        .sum();
    let flops_per_token = 6.0 * n as f64 + 12.0 * (2 * 4 * 8 * 32) as f64;
    let recs = metrics_of(&run, "train");
    assert_eq!(recs.len(), 6);
    for r in &recs {
        let (mfu, tok_s) = (
            r["mfu"].as_f64().unwrap(),
            r["tokens_per_s"].as_f64().unwrap(),
        );
        let want = flops_per_token * tok_s / 1e9;
        assert!((mfu - want).abs() <= 1e-9 * want, "{r}");
    }

    // No peak given and no GPU: no MFU anywhere.
    let run = tmp.path().join("plain");
    let cfg = tiny_config(tmp.path(), &run, "");
    let out = train_ok(&cfg, &["train.max_steps=2", "train.eval_every=0"]);
    assert!(!out.contains("| mfu"), "{out}");
    assert!(metrics_of(&run, "train").iter().all(|r| r["mfu"].is_null()));

    for bad in ["0", "-5", "nan"] {
        let e = lantern_err(&[
            "train",
            "--config",
            &s(&cfg),
            "--set",
            &format!("train.peak_tflops={bad}"),
        ]);
        assert!(e.contains("train.peak_tflops"), "{bad}: {e}");
    }
}

/// `checkpoint.save_best` keeps the checkpoint of the lowest validation loss in
/// `checkpoints/best`, whatever came after it.
#[test]
fn the_best_checkpoint_is_the_lowest_validation_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("best");
    // A learning rate high enough that the validation loss goes up again after its minimum.
    let cfg = tiny_config(tmp.path(), &run, "");
    let out = train_ok(
        &cfg,
        &[
            "checkpoint.save_best=true",
            "train.lr=0.1",
            "train.schedule=\"constant\"",
            "train.eval_every=5",
            "checkpoint.every=5",
            "checkpoint.keep=10",
        ],
    );
    let vals: Vec<(u64, f64)> = metrics_of(&run, "val")
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["val_loss"].as_f64().unwrap()))
        .filter(|&(step, _)| step > 0)
        .collect();
    let (best_step, best) = vals
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(
        best_step < 40,
        "the test needs a minimum before the last evaluation: {vals:?}"
    );
    let best_dir = run.join("checkpoints").join("best");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(best_dir.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], best_step, "{vals:?}");
    assert_eq!(state["best_val_loss"].as_f64().unwrap(), best);
    let same_step = run.join("checkpoints").join(format!("step-{best_step:08}"));
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(
            std::fs::read(best_dir.join(f)).unwrap() == std::fs::read(same_step.join(f)).unwrap(),
            "{f} of checkpoints/best differs from step {best_step}'s"
        );
    }
    assert!(
        out.contains(&format!("best val loss {best:.4} at step {best_step}")),
        "{out}"
    );
    // The newest checkpoint is still the last step's, and the best one samples.
    assert!(newest_checkpoint(&run).ends_with("step-00000040"));
    lantern_ok(&[
        "generate",
        "--model",
        &s(&best_dir),
        "--max-new-tokens",
        "4",
    ]);
}

/// `early_stopping.patience`: the run stops after that many evaluations without improvement,
/// with a checkpoint, and a run interrupted before and resumed stops at the same step with
/// the same weights; resuming a stopped run does nothing.
#[test]
fn early_stopping_stops_and_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    // No evaluation lowers the loss by more than 100: the first is the best, the next two
    // do not improve, and the run stops after step 30 of 40.
    let sets = [
        "early_stopping.patience=2",
        "early_stopping.threshold=100",
        "train.eval_every=10",
        "checkpoint.every=10",
    ];
    let straight = tmp.path().join("straight");
    let out = train_ok(&tiny_config(tmp.path(), &straight, ""), &sets);
    assert!(
        out.contains("trained 30 steps") && out.contains("stopped early"),
        "{out}"
    );
    assert!(newest_checkpoint(&straight).ends_with("step-00000030"));
    let stop = metrics_of(&straight, "early_stop");
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0]["step"], 30);
    // Each evaluation was lower, by less than the threshold: the best moves on (as
    // transformers' best metric does) while the count of evaluations without improvement
    // does not restart.
    assert_eq!(stop[0]["best_step"], 30);
    assert_eq!(last_train_step(&straight), 30);

    let split = tmp.path().join("split");
    let cfg = tiny_config(tmp.path(), &split, "");
    let cfgs = s(&cfg);
    let mut args = vec!["train", "--config", &cfgs, "--quiet", "--stop-after", "20"];
    for kv in &sets {
        args.extend(["--set", kv]);
    }
    lantern_ok(&args);
    assert!(newest_checkpoint(&split).ends_with("step-00000020"));
    args.splice(4..6, ["--resume"]);
    let out = lantern_ok(&args);
    assert!(out.contains("stopped early"), "{out}");
    assert!(newest_checkpoint(&split).ends_with("step-00000030"));
    let a = std::fs::read(newest_checkpoint(&straight).join("model.safetensors")).unwrap();
    let b = std::fs::read(newest_checkpoint(&split).join("model.safetensors")).unwrap();
    assert!(a == b, "the resumed run stopped with other weights");

    // Resuming the stopped run trains nothing more.
    let out = lantern_ok(&args);
    assert!(out.contains("trained 30 steps"), "{out}");
    assert_eq!(last_train_step(&split), 30);
}

/// `data.eval_choices`: every evaluation scores the multiple-choice file, and the figures
/// are those `lantern score --choices` gives the checkpoint of that step; an unlabelled
/// example, a choice longer than the model's window and a BERT are refused by name before
/// training.
#[test]
fn multiple_choice_accuracy_at_every_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("choices");
    let choices = short_choices(tmp.path());
    let cfg = tiny_config(tmp.path(), &run, "");
    let set = format!("data.eval_choices={}", s(&choices));
    train_ok(
        &cfg,
        &[
            &set,
            "train.max_steps=20",
            "train.eval_every=10",
            "checkpoint.every=10",
        ],
    );
    let vals = metrics_of(&run, "val");
    assert_eq!(vals.len(), 3, "steps 0, 10, 20: {vals:?}");
    for v in &vals {
        for key in ["choice_acc", "choice_acc_norm", "choice_acc_per_token"] {
            let x = v[key].as_f64().unwrap();
            // Eight examples: a multiple of 1/8.
            assert!((x * 8.0 - (x * 8.0).round()).abs() < 1e-9, "{key}: {v}");
        }
    }
    for step in [10, 20] {
        let ckpt = run.join("checkpoints").join(format!("step-{step:08}"));
        let got: serde_json::Value = serde_json::from_str(
            lantern_ok(&[
                "score",
                "--json",
                "--device",
                "cpu",
                "--batch",
                "1",
                "--model",
                &s(&ckpt),
                "--choices",
                &s(&choices),
            ])
            .trim(),
        )
        .unwrap();
        let v = vals.iter().find(|v| v["step"] == step).unwrap();
        for key in ["acc", "acc_norm", "acc_per_token"] {
            assert_eq!(v[format!("choice_{key}")], got[key], "step {step}: {key}");
        }
    }

    let bad = |name: &str, text: &str, want: &str, extra: &[&str]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        let run = tmp.path().join(format!("run-{name}"));
        let cfg = tiny_config(tmp.path(), &run, "");
        let set = format!("data.eval_choices={}", s(&p));
        let c = s(&cfg);
        let mut args = vec!["train", "--config", &c, "--set", &set];
        for kv in extra {
            args.extend(["--set", kv]);
        }
        let e = lantern_err(&args);
        assert!(e.contains(want), "{name}: {e}");
        assert!(!run.join("checkpoints").exists(), "{name}: nothing trained");
    };
    bad(
        "unlabelled.jsonl",
        "{\"ctx\": \"a b\", \"endings\": [\"c\", \"d\"], \"label\": 0}\n\
         {\"ctx\": \"a b\", \"endings\": [\"c\", \"d\"]}\n",
        "unlabelled.jsonl: line 2 has no label",
        &[],
    );
    let long = format!(
        "{{\"ctx\": \"a\", \"endings\": [\"{}\", \"b\"], \"label\": 0}}\n",
        "the cat sat ".repeat(20)
    );
    bad("long.jsonl", &long, "long.jsonl: line 1: choice 0 is", &[]);
    // lm-evaluation-harness's HellaSwag text needs HellaSwag's parts.
    bad(
        "no-parts.jsonl",
        "{\"ctx\": \"a b\", \"endings\": [\"c\", \"d\"], \"label\": 0}\n",
        "no-parts.jsonl: line 1: lm-evaluation-harness's HellaSwag text needs",
        &["data.eval_choices_hellaswag=\"lm-eval\""],
    );
    bad(
        "bert.jsonl",
        "{\"ctx\": \"a b\", \"endings\": [\"c\", \"d\"], \"label\": 0}\n",
        "data.eval_choices scores choices as a causal LM's continuations",
        &["model.arch=\"bert\""],
    );
}

/// `early_stopping.metric`: `checkpoints/best` follows a multiple-choice accuracy, higher
/// being better (the first evaluation of the highest value), and a resume that watches
/// another figure is refused.
#[test]
fn the_best_checkpoint_can_follow_a_multiple_choice_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("best-choice");
    let cfg = tiny_config(tmp.path(), &run, "");
    let choices = format!("data.eval_choices={}", s(&short_choices(tmp.path())));
    let out = train_ok(
        &cfg,
        &[
            &choices,
            "early_stopping.metric=\"choice_acc_per_token\"",
            "checkpoint.save_best=true",
            "train.eval_every=5",
            "checkpoint.every=5",
            "checkpoint.keep=10",
        ],
    );
    let vals: Vec<(u64, f64)> = metrics_of(&run, "val")
        .iter()
        .map(|r| {
            let v = r["choice_acc_per_token"].as_f64().unwrap();
            (r["step"].as_u64().unwrap(), v)
        })
        .filter(|&(step, _)| step > 0)
        .collect();
    let best = vals.iter().map(|v| v.1).fold(f64::MIN, f64::max);
    let best_step = vals.iter().find(|v| v.1 == best).unwrap().0;
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join("checkpoints/best/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], best_step, "{vals:?}");
    assert_eq!(state["best_val_loss"].as_f64().unwrap(), best, "{vals:?}");
    let last = metrics_of(&run, "val").pop().unwrap();
    assert_eq!(last["best_choice_acc_per_token"].as_f64().unwrap(), best);
    assert!(last.get("best_val_loss").is_none(), "{last}");
    assert!(
        out.contains(&format!(
            "best choice_acc_per_token {best:.4} at step {best_step}"
        )),
        "{out}"
    );
    let c = s(&cfg);
    let e = lantern_err(&[
        "train",
        "--config",
        &c,
        "--resume",
        "--set",
        &choices,
        "--set",
        "train.max_steps=50",
    ]);
    assert!(
        e.contains("early_stopping.metric choice_acc_per_token, the config asks for val_loss"),
        "{e}"
    );
}

/// `[sample]`: rank 0 writes a sample at step 0, every `every` steps and at the end; a
/// greedy sample is what `lantern generate` writes from that step's checkpoint, and a run
/// stopped and resumed samples what the uninterrupted run samples.
#[test]
fn samples_during_training_are_the_checkpoints_and_survive_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "train.max_steps=20",
        "checkpoint.every=10",
        "sample.every=10",
        "sample.max_new_tokens=12",
        "sample.prompt=\"The \"",
    ];
    let straight = tmp.path().join("straight");
    train_ok(&tiny_config(tmp.path(), &straight, ""), &sets);
    let samples = |run: &std::path::Path| -> Vec<(u64, String)> {
        metrics_of(run, "sample")
            .iter()
            .map(|r| {
                assert!(r["tokens"].as_u64().unwrap() <= 12, "{r}");
                let step = r["step"].as_u64().unwrap();
                (step, r["text"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let got = samples(&straight);
    assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 10, 20]);
    assert_ne!(
        got[0].1, got[2].1,
        "the model changed between step 0 and 20"
    );

    let resumed = tmp.path().join("resumed");
    let cfg = tiny_config(tmp.path(), &resumed, "");
    let c = s(&cfg);
    let mut args = vec!["train", "--config", &c, "--quiet", "--stop-after", "10"];
    for kv in &sets {
        args.extend(["--set", kv]);
    }
    lantern_ok(&args);
    args.retain(|a| *a != "--stop-after" && *a != "10");
    args.push("--resume");
    lantern_ok(&args);
    assert_eq!(
        samples(&resumed),
        got,
        "a resumed run samples as the uninterrupted one"
    );

    // Greedy: the same text as `lantern generate` from the checkpoint of that step.
    let greedy = tmp.path().join("greedy");
    let mut g = sets.to_vec();
    g.push("sample.temperature=0");
    train_ok(&tiny_config(tmp.path(), &greedy, ""), &g);
    let text = &samples(&greedy)[2].1;
    let ckpt = s(&greedy.join("checkpoints/step-00000020"));
    let out = lantern_ok(&[
        "generate",
        "--model",
        &ckpt,
        "--prompt",
        "The ",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
    ]);
    assert!(out.contains(&format!("The {text}")), "{text:?} vs {out}");

    // Bad settings are named before training.
    let bad = tmp.path().join("bad");
    let c = s(&tiny_config(tmp.path(), &bad, ""));
    for (kv, want) in [
        (
            "sample.top_p=1.5",
            "sample.top_p 1.5: expected a number in (0, 1]",
        ),
        (
            "sample.max_new_tokens=0",
            "sample.max_new_tokens must be at least 1",
        ),
        ("sample.topk=3", "sample.topk"),
    ] {
        let e = lantern_err(&[
            "train",
            "--config",
            &c,
            "--set",
            "sample.every=5",
            "--set",
            kv,
        ]);
        assert!(e.contains(want), "{kv}: {e}");
    }
    assert!(!bad.join("checkpoints").exists());
}

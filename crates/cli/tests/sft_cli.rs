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
    golden_run_config(dir, run, (&format!("sft/{layout}"), ""), extra)
}

#[test]
fn an_sft_run_resumes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let cfg = sft_config(tmp.path(), &straight, "messages", "");
    let out = run_ok(&["train", "--config", &s(&cfg)]);
    // 12 records, 3 held out: 9 an epoch, 4 a step: steps of 4, 4 and 1 (the epoch's last
    // step short, as transformers' data loader makes it), 2 epochs = 6 steps.
    assert!(
        out.contains("conversational (messages) records, 9 train / 3 validation examples"),
        "{out}"
    );
    assert!(newest_checkpoint(&straight).ends_with("step-00000006"));
    // Each epoch reads every example once, in steps that end with it: the tokens of steps
    // 1–3 are those of steps 4–6 (the examples' own, in another order).
    let seen = metric_values(&straight, "train", "tokens_seen");
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[5], 2.0 * seen[2], "tokens seen {seen:?}");
    assert!(
        seen[2] - seen[1] < seen[1] - seen[0],
        "a short third step: {seen:?}"
    );
    // transformers' fractional epoch: the share of the epoch's steps made.
    let epochs = metric_values(&straight, "train", "epoch");
    let want = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(|s: f64| s / 3.0);
    assert_eq!(epochs.len(), 6);
    for (g, w) in epochs.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "epochs {epochs:?}");
    }
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

    // Chatting with it: the template's conversation with the generation prompt, the reply alone.
    let out = lantern(&[
        "generate",
        "--model",
        &s(&straight),
        "--chat",
        "Time is money.",
        "--system",
        "Be brief.",
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let template = lantern_data::chat::ChatTemplate::from_folder(&golden("model"))
        .unwrap()
        .unwrap();
    let msgs = lantern_data::chat::Message::parse_list(
        r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Time is money."}]"#,
    )
    .unwrap();
    let text = template.render(&msgs, true).unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
    let tok = tokenizers::Tokenizer::from_file(golden("model/tokenizer.json")).unwrap();
    let n = tok.encode(text.as_str(), false).unwrap().get_ids().len();
    assert!(stderr.contains(&format!("prompt of {n})")), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("Time is money."),
        "the reply alone: {stdout}"
    );
    // A folder without a template says so.
    let e = lantern_err(&[
        "generate",
        "--model",
        &s(&straight),
        "--chat",
        "x",
        "--chat-template",
        "/nonexistent.jinja",
    ]);
    assert!(e.contains("/nonexistent.jinja"), "{e}");
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
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "data.truncation_mode=\"keep_middle\"",
    ]);
    assert!(
        e.contains("truncation_mode") && e.contains("keep_end"),
        "{e}"
    );
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "data.truncation_mode=\"keep_end\"",
        "--set",
        "data.packing=true",
    ]);
    assert!(e.contains("keep_end\" with data.packing"), "{e}");
    assert!(!run.join("checkpoints").exists());
}

/// Two ranks under the launcher fine-tune as one process with their whole batch: the same
/// examples a step (each rank its share, padded on its own), the loss normalised by the
/// trained tokens of every rank, the validation split between them.
#[test]
fn two_ranks_fine_tune_as_one_process_with_twice_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = two_ranks_and_one(tmp.path(), 2, |dir| {
        sft_config(tmp.path(), dir, "prompt-completion", "")
    });
    assert_same_weights(&two, &one, 1e-5);
    let (v2, v1) = (
        metric_values(&two, "val", "val_loss"),
        metric_values(&one, "val", "val_loss"),
    );
    assert_eq!(v2.len(), v1.len());
    for (a, b) in v2.iter().zip(&v1) {
        assert!((a - b).abs() <= 1e-5, "val loss {a} vs {b}");
    }
    let tokens = |d: &Path| metric_values(d, "train", "tokens_seen");
    assert_eq!(tokens(&two), tokens(&one));
    assert_eq!(metric_values(&two, "train", "world_size")[0], 2.0);
}

/// A copy of the golden model folder whose chat template is `chat_template.jinja` beside
/// tokenizer_config.json (transformers 5's layout), or nowhere (`jinja` false); returns the
/// folder and the template's text.
fn model_copy(root: &Path, jinja: bool) -> (PathBuf, String) {
    let dir = root.join(if jinja { "jinja-model" } else { "bare-model" });
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(golden("model")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let p = dir.join(lantern_data::TOKENIZER_CONFIG_FILE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let template = cfg["chat_template"].as_str().unwrap().to_string();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&p, cfg.to_string()).unwrap();
    if jinja {
        std::fs::write(dir.join("chat_template.jinja"), &template).unwrap();
    }
    (dir, template)
}

/// The template a model was fine-tuned with stays with it: a folder's `chat_template.jinja`,
/// or `data.chat_template` for a folder without one, ends up in every checkpoint's
/// tokenizer_config.json; without any, conversational records are refused by name.
#[test]
fn checkpoints_carry_the_chat_template_trained_with() {
    let tmp = tempfile::tempdir().unwrap();
    let template_of = |run: &Path| -> String {
        let p = newest_checkpoint(run).join(lantern_data::TOKENIZER_CONFIG_FILE);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["chat_template"].as_str().unwrap_or_default().to_string()
    };
    let (jinja, template) = model_copy(tmp.path(), true);
    let run = tmp.path().join("from-jinja");
    let cfg = sft_config(tmp.path(), &run, "messages", "");
    let set = format!("model.init_from=\"{}\"", s(&jinja));
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet", "--set", &set]);
    assert_eq!(template_of(&run), template);

    let (bare, _) = model_copy(tmp.path(), false);
    let set = format!("model.init_from=\"{}\"", s(&bare));
    let run = tmp.path().join("bare");
    let cfg = sft_config(tmp.path(), &run, "messages", "");
    let e = lantern_err(&["train", "--config", &s(&cfg), "--quiet", "--set", &set]);
    assert!(
        e.contains("train.jsonl: line 1: a conversational record needs the model's chat template"),
        "{e}"
    );
    let file = tmp.path().join("mine.jinja");
    std::fs::write(
        &file,
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    )
    .unwrap();
    let with = format!("data.chat_template=\"{}\"", s(&file));
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        &set,
        "--set",
        &with,
    ]);
    assert_eq!(
        template_of(&run),
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    );
}

/// `train.group_by_length` regroups each epoch's order by the examples' lengths: the run
/// still resumes byte for byte (the order is a function of the seed and the epoch), and the
/// order is not the plain shuffle's.
#[test]
fn length_grouped_sft_resumes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let grouped = "group_by_length = true";
    let straight = tmp.path().join("straight");
    let cfg = sft_config(tmp.path(), &straight, "text", grouped);
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet"]);
    let split = tmp.path().join("split");
    let cfg = sft_config(tmp.path(), &split, "text", grouped);
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "2",
    ]);
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet", "--resume"]);
    let file = |d: &Path, f: &str| std::fs::read(newest_checkpoint(d).join(f)).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            file(&straight, f) == file(&split, f),
            "{f} differs after the resume"
        );
    }
    let plain = tmp.path().join("plain");
    let cfg = sft_config(tmp.path(), &plain, "text", "");
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet"]);
    let tokens = |d: &Path| metric_values(d, "train", "tokens_seen");
    assert_ne!(
        tokens(&straight),
        tokens(&plain),
        "the steps read other examples"
    );
}

/// A model keeps its own special ids: the `init_from` folder's `eos_token_id` (a list, as Llama
/// 3 Instruct's) goes into every checkpoint's and export's config.json, and `data.eos_token`
/// makes another token the end of sequence of the model it trains (config.json and
/// tokenizer_config.json), as TRL's `eos_token` does; the records then end with it.
#[test]
fn the_model_keeps_its_special_ids_and_data_eos_token_replaces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = model_copy(tmp.path(), false);
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let (im_start, im_end) = (
        tok.token_to_id("<|im_start|>").unwrap(),
        tok.token_to_id("<|im_end|>").unwrap(),
    );
    let cfg_path = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    c["eos_token_id"] = serde_json::json!([im_end, im_start]);
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let set = format!("model.init_from=\"{}\"", s(&dir));

    let run = tmp.path().join("keep");
    let cfg = sft_config(tmp.path(), &run, "text", "");
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet", "--set", &set]);
    let ckpt = newest_checkpoint(&run);
    assert_eq!(
        json(ckpt.join("config.json"))["eos_token_id"],
        serde_json::json!([im_end, im_start])
    );
    let out = tmp.path().join("export");
    lantern_ok(&["export", "--model", &s(&run), "--out", &s(&out)]);
    assert_eq!(
        json(out.join("config.json"))["eos_token_id"],
        serde_json::json!([im_end, im_start])
    );

    let run = tmp.path().join("im-end");
    let cfg = sft_config(tmp.path(), &run, "text", "");
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        "--set",
        &set,
        "--set",
        "data.eos_token=\"<|im_end|>\"",
    ]);
    let ckpt = newest_checkpoint(&run);
    assert_eq!(json(ckpt.join("config.json"))["eos_token_id"], im_end);
    assert_eq!(
        json(ckpt.join(lantern_data::TOKENIZER_CONFIG_FILE))["eos_token"],
        "<|im_end|>"
    );
    let bad_run = format!("run.dir=\"{}\"", s(&tmp.path().join("bad")));
    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        &set,
        "--set",
        &bad_run,
        "--set",
        "data.eos_token=\"<|nope|>\"",
    ]);
    assert!(
        e.contains("data.eos_token \"<|nope|>\" is not a token of"),
        "{e}"
    );
}

/// Packed SFT (`data.packing`, best-fit decreasing into rows of 64 tokens): the log says how
/// the examples were packed, a run cut short and resumed ends byte for byte as the run that
/// was not, activation checkpointing (which runs the packed blocks again in the backward pass)
/// gives the same losses, and the steps read fewer, fuller rows than unpacked examples.
#[test]
fn packed_sft_resumes_byte_for_byte_and_recomputes_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let packed = ["--set", "data.packing=true"];
    let straight = tmp.path().join("straight");
    let cfg = sft_config(tmp.path(), &straight, "text", "");
    let out = run_ok(&[&["train", "--config", &s(&cfg)][..], &packed].concat());
    assert!(
        out.contains("packing (bfd): 9 train examples into"),
        "{out}"
    );
    assert!(out.contains("rows packed (bfd)"), "{out}");
    let split = tmp.path().join("split");
    let cfg = sft_config(tmp.path(), &split, "text", "");
    let args = ["train", "--config", &s(&cfg), "--quiet"];
    lantern_ok(&[&args[..], &packed, &["--stop-after", "1"]].concat());
    lantern_ok(&[&args[..], &packed, &["--resume"]].concat());
    let file = |d: &Path, f: &str| std::fs::read(newest_checkpoint(d).join(f)).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            file(&straight, f) == file(&split, f),
            "{f} differs after the resume"
        );
    }
    let recompute = tmp.path().join("recompute");
    let cfg = sft_config(
        tmp.path(),
        &recompute,
        "text",
        "activation_checkpointing = true",
    );
    lantern_ok(&[
        "train",
        "--config",
        &s(&cfg),
        "--quiet",
        packed[0],
        packed[1],
    ]);
    let (a, b) = (
        metric_values(&straight, "train", "loss"),
        metric_values(&recompute, "train", "loss"),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{a:?} vs {b:?}");
    }
    let plain = tmp.path().join("plain");
    let cfg = sft_config(tmp.path(), &plain, "text", "");
    lantern_ok(&["train", "--config", &s(&cfg), "--quiet"]);
    let steps = |d: &Path| metric_values(d, "train", "loss").len();
    assert!(steps(&straight) < steps(&plain), "packed rows are fewer");
}

/// NEFTune (`train.neftune_noise_alpha`, TRL's `neftune_noise_alpha`): the training forwards
/// see noised embeddings, the evaluations do not; the noise is a function of the step (a run
/// cut short and resumed ends byte for byte as the one that was not); α = 0 is no NEFTune.
#[test]
fn neftune_noises_training_only_and_resumes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let alpha = "train.neftune_noise_alpha=5";
    let run = |name: &str, set: &[&str], stop: Option<&str>| -> PathBuf {
        let dir = tmp.path().join(name);
        let cfg = sft_config(tmp.path(), &dir, "text", "");
        let mut args = vec!["train", "--config", cfg.to_str().unwrap(), "--quiet"];
        for s in set {
            args.extend(["--set", s]);
        }
        if let Some(n) = stop {
            args.extend(["--stop-after", n]);
        }
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lantern_ok(&refs);
        dir
    };
    let plain = run("plain", &[], None);
    let noised = run("noised", &[alpha], None);
    let zero = run("zero", &["train.neftune_noise_alpha=0"], None);
    let val = |d: &Path| metric_values(d, "val", "val_loss");
    let loss = |d: &Path| metric_values(d, "train", "loss");
    // The evaluation before the first step sees the same model, without noise.
    assert_eq!(val(&plain)[0], val(&noised)[0]);
    assert_ne!(
        loss(&plain)[0],
        loss(&noised)[0],
        "the first step saw the noise"
    );
    assert_eq!(loss(&plain), loss(&zero));
    let file = |d: &Path, f: &str| std::fs::read(newest_checkpoint(d).join(f)).unwrap();
    assert!(file(&plain, "model.safetensors") == file(&zero, "model.safetensors"));
    assert!(file(&plain, "model.safetensors") != file(&noised, "model.safetensors"));

    let split = run("split", &[alpha], Some("2"));
    let cfg = sft_config(tmp.path(), &split, "text", "");
    let resume = ["--quiet", "--resume", "--set", alpha];
    lantern_ok(&[&["train", "--config", &s(&cfg)][..], &resume].concat());
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            file(&noised, f) == file(&split, f),
            "{f} differs after the resume"
        );
    }

    let e = lantern_err(&[
        "train",
        "--config",
        &s(&cfg),
        "--set",
        "train.neftune_noise_alpha=-1",
    ]);
    assert!(
        e.contains("train.neftune_noise_alpha must be at least 0"),
        "{e}"
    );
}

/// The Hub's datasets come as Parquet: `data.train` naming `datasets`' `to_parquet` of a
/// golden file (scripts/make_record_parquet_fixtures.py) trains as the file's JSON Lines do,
/// for SFT, DPO and KTO (the trainer chosen from the first row), weights byte for byte; and so
/// do a `save_to_disk` folder and a pattern over a split's shards.
#[test]
fn parquet_records_train_as_their_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    for (layout, parquet) in [
        ("sft/messages", "sft-messages.parquet"),
        ("dpo/conversational", "dpo-conversational.parquet"),
        ("kto/text", "kto-text.parquet"),
        // `datasets`' save_to_disk folder of the SFT records (two Arrow files).
        ("sft/messages", "saved-sft-messages"),
    ] {
        let run = |name: &str, train: Option<PathBuf>| -> (PathBuf, String) {
            let dir = tmp.path().join(format!("{parquet}-{name}"));
            let cfg = golden_run_config(tmp.path(), &dir, (layout, ""), "");
            let mut args = vec!["train".to_string(), "--config".into(), s(&cfg)];
            if let Some(p) = train {
                args.extend(["--set".into(), format!("data.train=\"{}\"", s(&p))]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (dir, run_ok(&refs))
        };
        let (jsonl, _) = run("jsonl", None);
        let file = workspace_root().join(format!("tests/golden/parquet/records/{parquet}"));
        let (pq, out) = run("parquet", Some(file));
        assert!(out.contains(parquet), "{out}");
        let weights = |d: &Path| std::fs::read(newest_checkpoint(d).join("model.safetensors"));
        assert!(
            weights(&jsonl).unwrap() == weights(&pq).unwrap(),
            "{parquet}: the weights differ"
        );
        let loss = |d: &Path| metric_values(d, "train", "loss");
        assert_eq!(loss(&jsonl), loss(&pq), "{parquet}");
    }
    // A split in shards, named by a pattern as `datasets`' data_files names it, trains as
    // the shards' records in one file.
    let shards = tmp.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let golden_pq = workspace_root().join("tests/golden/parquet/records/sft-messages.parquet");
    for i in 0..2 {
        let to = shards.join(format!("train-{i:05}-of-00002.parquet"));
        std::fs::copy(&golden_pq, to).unwrap();
    }
    let lines = std::fs::read_to_string(golden("messages/train.jsonl")).unwrap();
    let whole = tmp.path().join("whole.jsonl");
    std::fs::write(&whole, lines.repeat(2)).unwrap();
    let run = |name: &str, train: &Path| -> PathBuf {
        let dir = tmp.path().join(name);
        let cfg = sft_config(tmp.path(), &dir, "messages", "");
        let set = format!("data.train=\"{}\"", s(train));
        run_ok(&["train", "--config", &s(&cfg), "--set", &set]);
        dir
    };
    let a = run("whole", &whole);
    let b = run("sharded", &shards.join("train-*.parquet"));
    let weights = |d: &Path| std::fs::read(newest_checkpoint(d).join("model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "the sharded run's weights differ"
    );
}

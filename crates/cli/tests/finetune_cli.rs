//! `lantern finetune`, `eval`, `predict`, `export` and `wordpiece` through the binary, on a
//! tiny fresh BERT and a tiny two-class dataset, so that they run in seconds.

mod common;

use common::{
    best_eval, lantern_cmd, lantern_err, lantern_ok, metrics_of, send_signal, wait_for_step,
};
use lantern_models::bert::Family;
use serde_json::Value;
use std::path::{Path, PathBuf};

const ANIMALS: [&str; 6] = ["cat", "dog", "horse", "cow", "sheep", "goat"];
const MACHINES: [&str; 6] = ["rocket", "engine", "laptop", "printer", "robot", "drone"];
const VERBS: [&str; 4] = ["sleeps", "runs", "waits", "stops"];

fn sentence(words: &[&str], i: usize) -> String {
    format!(
        "the {} {} near the {} today",
        words[i % words.len()],
        VERBS[(i / 2) % VERBS.len()],
        words[(i + 3) % words.len()]
    )
}

/// 48 training and 12 validation examples of two classes, a WordPiece tokenizer trained on
/// them, and a config for a 1-layer, 16-wide model.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut train = String::new();
        let mut val = String::new();
        let mut corpus = String::new();
        for i in 0..30 {
            for (words, label) in [(&ANIMALS, "animal"), (&MACHINES, "machine")] {
                let s = sentence(words, i);
                corpus += &format!("{s}\n");
                let line = format!("{{\"text\": \"{s}\", \"label\": \"{label}\"}}\n");
                if i < 24 {
                    train += &line;
                } else {
                    val += &line;
                }
            }
        }
        std::fs::write(root.join("train.jsonl"), train).unwrap();
        std::fs::write(root.join("val.jsonl"), val).unwrap();
        std::fs::write(root.join("corpus.txt"), corpus.repeat(3)).unwrap();
        lantern_ok(&[
            "wordpiece",
            "--input",
            p(&root.join("corpus.txt")),
            "--out",
            p(&root.join("tokenizer.json")),
            "--vocab-size",
            "100",
        ]);
        Self { _dir: dir, root }
    }

    /// Writes a config with `extra` lines appended to the [train] section.
    fn config(&self, name: &str, train_extra: &str, es: &str) -> PathBuf {
        self.config_on(name, ("train.jsonl", "val.jsonl", ""), train_extra, es)
    }

    /// [`Fixture::config`] on other data files of the fixture, with `data_extra` lines in
    /// the [data] section.
    fn config_on(
        &self,
        name: &str,
        data: (&str, &str, &str),
        train_extra: &str,
        es: &str,
    ) -> PathBuf {
        let model = format!(
            "tokenizer = {:?}\nhidden_size = 16\nnum_hidden_layers = 1\n\
             num_attention_heads = 2\nintermediate_size = 32",
            self.root.join("tokenizer.json")
        );
        self.config_with(name, (&model, 16), data, train_extra, es)
    }

    /// A config whose [model] section is `model` and whose data.max_length is `max_length`.
    fn config_with(
        &self,
        name: &str,
        (model, max_length): (&str, usize),
        (train, val, data_extra): (&str, &str, &str),
        train_extra: &str,
        es: &str,
    ) -> PathBuf {
        let r = &self.root;
        let text = format!(
            "[run]\ndir = {:?}\n[model]\n{model}\n[data]\ntrain = {:?}\nvalidation = {:?}\n\
             max_length = {max_length}\n{data_extra}\n[train]\nbatch_size = 8\nseed = 3\n{train_extra}\n[early_stopping]\n{es}\n",
            r.join(name),
            r.join(train),
            r.join(val),
        );
        let path = r.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn state_step(dir: &Path) -> u64 {
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("finetune_state.json")).unwrap())
            .unwrap();
    s["step"].as_u64().unwrap()
}

fn only_child(dir: &Path) -> PathBuf {
    let v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

#[test]
fn early_stopping_stops_after_patience_and_exports_the_best() {
    let f = Fixture::new();
    // lr 0: the validation loss never changes, so it improves only at the first evaluation
    // and the run must stop after exactly 1 + patience evaluations.
    let cfg = f.config(
        "stop",
        "epochs = 10\nlr = 0.0",
        "metric = \"eval_loss\"\npatience = 2",
    );
    let out = lantern_ok(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(out.contains("stopped early"), "{out}");
    let run = f.root.join("stop");
    let evals = metrics_of(&run, "eval");
    assert_eq!(evals.len(), 3, "1 + patience evaluations");
    let improved: Vec<bool> = evals
        .iter()
        .map(|e| e["improved"].as_bool().unwrap())
        .collect();
    assert_eq!(improved, [true, false, false]);
    let steps_per_epoch = 48u64.div_ceil(8);
    assert_eq!(metrics_of(&run, "train").len() as u64, 3 * steps_per_epoch);
    // best/ holds epoch 1, last/ epoch 3, and the exported model is the best.
    let best = only_child(&run.join("best"));
    let last = only_child(&run.join("last"));
    assert_eq!(state_step(&best), steps_per_epoch);
    assert_eq!(state_step(&last), 3 * steps_per_epoch);
    assert_eq!(state_step(&run.join("model")), steps_per_epoch);
    let cfg_json = exported_config(&run);
    assert_eq!(
        cfg_json["architectures"][0],
        "BertForSequenceClassification"
    );
    assert_eq!(cfg_json["id2label"]["0"], "animal");
    assert_eq!(cfg_json["label2id"]["machine"], 1);
    // The losses are plotted, as for `train`.
    let png = std::fs::read(run.join("loss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "loss.png is a PNG");
}

#[test]
fn finetune_learns_then_eval_predict_and_export_agree() {
    let f = Fixture::new();
    // The validation file doubles as the test file, scored with the best model at the end.
    let test_line = format!("test = {:?}", f.root.join("val.jsonl"));
    let cfg = f.config_on(
        "learn",
        ("train.jsonl", "val.jsonl", &test_line),
        "epochs = 12\nlr = 3e-3\neval_every_steps = 4",
        "metric = \"accuracy\"",
    );
    let out = lantern_ok(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(out.contains("test: eval loss"), "{out}");
    let run = f.root.join("learn");
    let evals = metrics_of(&run, "eval");
    // Evaluations at every 4 steps besides the 12 epoch ends (6 steps each).
    assert!(evals.len() > 12, "{}", evals.len());
    let best_acc = evals
        .iter()
        .map(|e| e["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        best_acc >= 0.9,
        "a trivial two-class task is learned: {best_acc}"
    );
    let first = &evals[0];
    assert!(first["confusion_matrix"].is_array() && first["per_class"]["animal"]["f1"].is_number());

    // eval on the validation file reproduces the best evaluation's numbers.
    let metrics = f.root.join("eval.json");
    let (out, m) = eval_json(&run, &f.root.join("val.jsonl"), &metrics, &[]);
    assert!(out.contains("macro") && out.contains("confusion"), "{out}");
    assert!((m["accuracy"].as_f64().unwrap() - best_acc).abs() < 1e-9);
    // The run's own test evaluation is that of the exported best model.
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test_metrics.json")).unwrap())
            .unwrap();
    for k in ["accuracy", "eval_loss", "macro_f1", "confusion_matrix"] {
        assert_eq!(t[k], m[k], "{k}");
    }
    let tests = metrics_of(&run, "test");
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0]["best_step"], state_step(&run.join("model")));

    // predict: one line per example, probabilities over both labels summing to 1.
    let preds = f.root.join("preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&f.root.join("val.jsonl")),
        "--out",
        p(&preds),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    for l in &lines {
        let pr = l["probabilities"].as_object().unwrap();
        let sum: f64 = pr.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{l}");
        assert!(l["label"] == "animal" || l["label"] == "machine");
    }

    // export of a BERT checkpoint: an HF folder with the classifier's names.
    let hf = f.root.join("hf");
    lantern_ok(&["export", "--model", p(&run.join("best")), "--out", p(&hf)]);
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["architectures"][0], "BertForSequenceClassification");
    assert!(hf.join("model.safetensors").is_file() && hf.join("tokenizer.json").is_file());
    // transformers' tokenizer settings: BERT's class and special tokens, lowercasing as the
    // WordPiece tokenizer normalises, the positions of the model; the same in the run's export.
    let t = tokenizer_config(&hf);
    assert_eq!(
        t,
        serde_json::json!({
            "tokenizer_class": "BertTokenizer", "do_lower_case": true, "strip_accents": null,
            "tokenize_chinese_chars": true, "unk_token": "[UNK]", "cls_token": "[CLS]",
            "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
            "model_max_length": c["max_position_embeddings"],
        })
    );
    assert_eq!(
        std::fs::read(hf.join("tokenizer_config.json")).unwrap(),
        std::fs::read(run.join("model/tokenizer_config.json")).unwrap()
    );
}

#[test]
fn bad_data_and_mismatched_checkpoints_are_clear_errors() {
    let f = Fixture::new();
    let r = &f.root;
    // A validation label outside the training labels: file, line and label named.
    std::fs::write(
        r.join("val.jsonl"),
        "{\"text\": \"the cat runs\", \"label\": \"animal\"}\n{\"text\": \"a plant\", \"label\": \"plant\"}\n",
    )
    .unwrap();
    let cfg = f.config("bad", "epochs = 1", "");
    let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(
        e.contains("val.jsonl") && e.contains("line 2") && e.contains("\"plant\""),
        "{e}"
    );
    // A test file (data.test) with a label outside the training labels fails before any
    // training step, naming it.
    std::fs::write(
        r.join("test.jsonl"),
        "{\"text\": \"the cat runs\", \"label\": \"animal\"}\n{\"text\": \"a rose\", \"label\": \"flower\"}\n",
    )
    .unwrap();
    let test_line = format!("test = {:?}", r.join("test.jsonl"));
    let with_test = f.config_on(
        "bad-test",
        ("train.jsonl", "train.jsonl", &test_line),
        "epochs = 1",
        "",
    );
    let e = lantern_err(&["finetune", "--config", p(&with_test), "--quiet"]);
    assert!(
        e.contains("test.jsonl") && e.contains("line 2") && e.contains("\"flower\""),
        "{e}"
    );
    assert!(
        !r.join("bad-test").join("metrics.jsonl").exists(),
        "nothing was trained"
    );
    // An empty text: file and line.
    std::fs::write(
        r.join("val.jsonl"),
        "{\"text\": \"\", \"label\": \"animal\"}\n",
    )
    .unwrap();
    let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(
        e.contains("val.jsonl") && e.contains("line 1") && e.contains("empty text"),
        "{e}"
    );

    // A trained checkpoint to break.
    std::fs::write(
        r.join("val.jsonl"),
        "{\"text\": \"the cat runs\", \"label\": \"animal\"}\n{\"text\": \"the robot runs\", \"label\": \"machine\"}\n",
    )
    .unwrap();
    lantern_ok(&["finetune", "--config", p(&cfg), "--quiet"]);
    let model = r.join("bad/model");
    // config.json that disagrees with the tensors: the tensor is named.
    let cfg_path = model.join("config.json");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        good.replace("\"intermediate_size\": 32", "\"intermediate_size\": 40"),
    )
    .unwrap();
    let e = lantern_err(&[
        "eval",
        "--checkpoint",
        p(&model),
        "--data",
        p(&r.join("val.jsonl")),
    ]);
    assert!(
        e.contains("intermediate.dense.weight") && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::write(&cfg_path, &good).unwrap();

    // A tokenizer whose vocabulary differs from the model's.
    let other = r.join("other.json");
    lantern_ok(&[
        "wordpiece",
        "--input",
        p(&r.join("corpus.txt")),
        "--out",
        p(&other),
        "--vocab-size",
        "70",
    ]);
    std::fs::copy(&other, model.join("tokenizer.json")).unwrap();
    let e = lantern_err(&[
        "eval",
        "--checkpoint",
        p(&model),
        "--data",
        p(&r.join("val.jsonl")),
    ]);
    assert!(
        e.contains("tokenizer.json") && e.contains("vocabulary size"),
        "{e}"
    );
    // ... also when fine-tuning from the checkpoint with another tokenizer.
    let text = format!(
        "[run]\ndir = {:?}\n[model]\ninit_from = {:?}\ntokenizer = {:?}\n[data]\ntrain = {:?}\nmax_length = 16\n",
        r.join("again"), model, other, r.join("train.jsonl")
    );
    std::fs::write(r.join("again.toml"), text).unwrap();
    let e = lantern_err(&["finetune", "--config", p(&r.join("again.toml")), "--quiet"]);
    assert!(e.contains("other.json") && e.contains("differs"), "{e}");
}

/// `--set` overrides that switch every dropout off, so that runs can be compared exactly.
const NO_DROPOUT: [&str; 6] = [
    "--set",
    "model.hidden_dropout_prob=0.0",
    "--set",
    "model.attention_probs_dropout_prob=0.0",
    "--set",
    "model.classifier_dropout=0.0",
];

/// `lantern eval --checkpoint <run> --data <data> --out <out> <extra>`, which must succeed:
/// its stdout and the metrics it wrote.
fn eval_json(run: &Path, data: &Path, out: &Path, extra: &[&str]) -> (String, Value) {
    let mut args = vec![
        "eval",
        "--checkpoint",
        p(run),
        "--data",
        p(data),
        "--out",
        p(out),
    ];
    args.extend(extra);
    let stdout = lantern_ok(&args);
    let metrics = std::fs::read_to_string(out).unwrap();
    (stdout, serde_json::from_str(&metrics).unwrap())
}

/// `lantern finetune --config <cfg> --quiet --resume --set <set>`, which must fail: its stderr.
fn resume_err(cfg: &Path, set: &str) -> String {
    lantern_err(&[
        "finetune",
        "--config",
        p(cfg),
        "--quiet",
        "--resume",
        "--set",
        set,
    ])
}

fn finetune_quiet(cfg: &Path, extra: &[&str]) {
    let mut args = vec!["finetune", "--config", p(cfg), "--quiet"];
    args.extend(extra);
    lantern_ok(&args);
}

#[test]
fn gradient_accumulation_matches_one_large_batch() {
    // 48 examples: 3 steps an epoch of 16, as one batch of 16, 2 × 8 or 4 × 4. Each
    // micro-batch is padded to its own longest example; the padding is masked, so only float
    // rounding may differ.
    let f = Fixture::new();
    let mut runs = Vec::new();
    for (batch, accum) in [(16, 1), (8, 2), (4, 4)] {
        let name = format!("accum{accum}");
        // The fixture writes batch_size = 8 and TOML refuses a repeated key: --set instead.
        let cfg = f.config(
            &name,
            &format!("epochs = 2\nlr = 3e-3\ngrad_accum = {accum}"),
            "",
        );
        let batch_set = format!("train.batch_size={batch}");
        let mut extra = NO_DROPOUT.to_vec();
        extra.extend(["--set", batch_set.as_str()]);
        finetune_quiet(&cfg, &extra);
        let run = f.root.join(&name);
        let losses: Vec<f64> = metrics_of(&run, "train")
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 6, "{name}: 3 steps an epoch");
        // Each step's record counts the tokens of all its 16 examples, however split (each
        // epoch reads every example once), and its time.
        let records = metrics_of(&run, "train");
        let tokens: Vec<u64> = records
            .iter()
            .map(|r| r["tokens"].as_u64().unwrap())
            .collect();
        let epoch = |e: &[u64]| e.iter().sum::<u64>();
        assert_eq!(
            epoch(&tokens[..3]),
            epoch(&tokens[3..]),
            "{name}: {tokens:?}"
        );
        let raw = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let timed = raw.lines().filter(|l| l.contains("\"step_ms\"")).count();
        assert_eq!(timed, 6, "{name}: a step_ms in every train record");
        runs.push((
            name,
            losses,
            common::read_f32_tensors(&only_child(&run.join("last")).join("model.safetensors")),
            tokens,
        ));
    }
    let (_, base_losses, base, base_tokens) = &runs[0];
    for (name, losses, w, tokens) in &runs[1..] {
        assert_eq!(tokens, base_tokens, "{name}: tokens per step");
        // Each step's loss is the mean over its 16 examples, however they were split.
        for (a, b) in base_losses.iter().zip(losses) {
            assert!((a - b).abs() <= 1e-5 * a.abs(), "{name}: loss {b} vs {a}");
        }
        for ((na, a), (nb, b)) in base.iter().zip(w) {
            assert_eq!(na, nb);
            if na.ends_with("attention.self.key.bias") {
                // Its true gradient is exactly zero (softmax ignores a constant added to all
                // of a query's scores): it holds only rounding noise, which AdamW scales up.
                continue;
            }
            let r = common::rel_l2(a, b);
            assert!(r < 1e-5, "{name}: {na} differs from one batch of 16 by {r}");
        }
    }
}

#[test]
fn bf16_and_fp16_fine_tuning_learn_with_fp32_masters() {
    let f = Fixture::new();
    let mut best = Vec::new();
    for precision in ["fp32", "bf16", "fp16"] {
        let cfg = f.config(
            precision,
            &format!("epochs = 12\nlr = 3e-3\nprecision = \"{precision}\""),
            "metric = \"accuracy\"",
        );
        finetune_quiet(&cfg, &NO_DROPOUT);
        let run = f.root.join(precision);
        let train = metrics_of(&run, "train");
        let evals = metrics_of(&run, "eval");
        let acc = evals
            .iter()
            .map(|e| e["accuracy"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let last_loss = evals.last().unwrap()["eval_loss"].as_f64().unwrap();
        best.push((precision, acc, last_loss));
        // fp16 records its loss scale (GradScaler's initial 65536 on the first step) and
        // whether each step was skipped; the other precisions have neither.
        match precision {
            "fp16" => {
                assert_eq!(train[0]["loss_scale"], 65536.0, "{}", train[0]);
                assert!(train.iter().all(|r| r["skipped"].is_boolean()));
            }
            _ => assert!(train[0].get("loss_scale").is_none(), "{}", train[0]),
        }
        // The checkpoint holds the fp32 master weights.
        let st = std::fs::read(only_child(&run.join("best")).join("model.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&st[8..8 + header_len]).unwrap();
        assert!(
            header.contains("\"F32\"")
                && !header.contains("\"BF16\"")
                && !header.contains("\"F16\""),
            "{precision}: {header}"
        );
    }
    for (precision, acc, loss) in &best {
        assert!(*acc >= 0.9, "{precision}: best accuracy {acc} ({best:?})");
        // Within 10 % of fp32's final validation loss.
        let fp32 = best[0].2;
        assert!(
            (loss - fp32).abs() <= 0.1 * fp32.max(0.05),
            "{precision}: eval loss {loss} vs fp32 {fp32} ({best:?})"
        );
    }
}

fn train_losses(run: &Path) -> Vec<f64> {
    metrics_of(run, "train")
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect()
}

/// Fine-tunes `cfg(run name)` on two ranks with `batch` examples each and in one process
/// with twice the batch; asserts that they logged the same training losses (1e-5) and
/// returns the two run folders (two ranks, one process).
fn two_ranks_and_one(
    f: &Fixture,
    name: &str,
    batch: usize,
    cfg: impl Fn(&str) -> PathBuf,
) -> (PathBuf, PathBuf) {
    let mut runs = Vec::new();
    for (ranks, b) in [(2, batch), (1, 2 * batch)] {
        let run_name = format!("{name}-{ranks}");
        let cfg = cfg(&run_name);
        let batch_set = format!("train.batch_size={b}");
        let mut args = vec![];
        if ranks == 2 {
            args.extend(["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"]);
        }
        args.extend(["finetune", "--config", p(&cfg), "--quiet"]);
        args.extend(NO_DROPOUT);
        args.extend(["--set", batch_set.as_str()]);
        lantern_ok(&args);
        runs.push(f.root.join(run_name));
    }
    let (two, one) = (runs[0].clone(), runs[1].clone());
    // Rank 0 alone wrote: one record per step and per evaluation.
    let (l2, l1) = (train_losses(&two), train_losses(&one));
    assert_eq!(l2.len(), l1.len(), "{name}");
    for (a, b) in l2.iter().zip(&l1) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{name}: loss {a} vs {b}");
    }
    (two, one)
}

#[test]
fn two_ranks_fine_tune_as_one_process_with_twice_the_batch() {
    // 48 examples. (batch per rank, grad_accum): 2 × 4 = 8 a step, 6 full steps; the same with
    // 2 micro-batches of 2; 2 × 5 = 10 a step, whose short last step of 8 leaves rank 1 with 3;
    // 2 × 11 = 22 a step, whose last step of 4 leaves rank 1 with none.
    let f = Fixture::new();
    for (batch, accum) in [(4, 1), (2, 2), (5, 1), (11, 1)] {
        let name = format!("ddp-b{batch}-a{accum}");
        let train = format!("epochs = 2\nlr = 3e-3\ngrad_accum = {accum}");
        let (two, one) = two_ranks_and_one(&f, &name, batch, |run| f.config(run, &train, ""));
        let (two, one) = (&two, &one);
        let (e2, e1) = (metrics_of(two, "eval"), metrics_of(one, "eval"));
        assert_eq!(e2.len(), e1.len(), "{name}");
        for (a, b) in e2.iter().zip(&e1) {
            // The ranks scored half the validation set each and summed their counts.
            assert_eq!(a["confusion_matrix"], b["confusion_matrix"], "{name}");
            assert_eq!(a["examples"], 12);
            let (la, lb) = (
                a["eval_loss"].as_f64().unwrap(),
                b["eval_loss"].as_f64().unwrap(),
            );
            assert!(
                (la - lb).abs() <= 1e-5 * lb,
                "{name}: eval loss {la} vs {lb}"
            );
        }
        let w2 = common::read_f32_tensors(&only_child(&two.join("last")).join("model.safetensors"));
        let w1 = common::read_f32_tensors(&only_child(&one.join("last")).join("model.safetensors"));
        for ((na, a), (_, b)) in w2.iter().zip(&w1) {
            if na.ends_with("attention.self.key.bias") {
                continue; // rounding noise only (see gradient_accumulation_matches_one_large_batch)
            }
            let r = common::rel_l2(a, b);
            assert!(r < 1e-5, "{name}: {na} differs by {r}");
        }
        assert!(
            two.join("model/model.safetensors").is_file(),
            "{name}: rank 0 exported"
        );
    }
}

/// LoRA on two ranks computes the step of one process with twice the batch: the adapters'
/// gradients are summed over the ranks, also when rank 1 gets 3 examples of the short last
/// step (batch 5) or none (batch 11, its gradients zero).
#[test]
fn two_ranks_fine_tune_lora_as_one_process_with_twice_the_batch() {
    let f = Fixture::new();
    // The pretrained model: a classifier fine-tuned in full for an epoch.
    finetune_quiet(&f.config("base", "epochs = 1\nlr = 3e-3", ""), &NO_DROPOUT);
    let model = format!("init_from = {:?}", f.root.join("base/model"));
    let lora = "[lora]\nr = 2\ntarget_modules = [\"query\", \"value\", \"dense\"]";
    for batch in [5, 11] {
        let data = ("train.jsonl", "val.jsonl", "");
        let cfg = |run: &str| f.config_with(run, (&model, 16), data, "epochs = 2\nlr = 1e-2", lora);
        let (two, one) = two_ranks_and_one(&f, &format!("lora-b{batch}"), batch, cfg);
        let (two, one) = (&two, &one);
        let adapter = |run: &Path| {
            common::read_f32_tensors(
                &only_child(&run.join("last")).join("adapter/adapter_model.safetensors"),
            )
        };
        let (a2, a1) = (adapter(two), adapter(one));
        // One layer: query, value and its three dense layers, the pooler's; the classifier.
        assert_eq!(
            a2.len(),
            6 * 2 + 2,
            "{:?}",
            a2.iter().map(|x| &x.0).collect::<Vec<_>>()
        );
        for ((n, a), (_, b)) in a2.iter().zip(&a1) {
            let r = common::rel_l2(a, b);
            assert!(r < 1e-5, "batch {batch}: {n} differs by {r}");
        }
        assert!(
            two.join("model/adapter/adapter_config.json").is_file(),
            "rank 0 exported"
        );
    }
}

/// Every file of a run that a resume must reproduce besides its records ([`assert_same_run`]
/// compares those): last/ (weights, moments, state) and the exported model, as (name, bytes).
fn run_files(run: &Path) -> Vec<(String, Vec<u8>)> {
    let last = only_child(&run.join("last"));
    let mut out = Vec::new();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "tokenizer_config.json",
    ] {
        out.push((format!("last/{f}"), std::fs::read(last.join(f)).unwrap()));
    }
    for f in ["model.safetensors", "tokenizer_config.json"] {
        out.push((
            format!("model/{f}"),
            std::fs::read(run.join("model").join(f)).unwrap(),
        ));
    }
    // A LoRA run's adapters.
    for dir in [last, run.join("model")] {
        for f in ["adapter_model.safetensors", "adapter_config.json"] {
            let path = dir.join("adapter").join(f);
            if path.is_file() {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.push((
        "best step".into(),
        state_step(&only_child(&run.join("best")))
            .to_string()
            .into_bytes(),
    ));
    out
}

fn assert_same_run(a: &Path, b: &Path) {
    let (ma, mb) = (common::metrics(a), common::metrics(b));
    if let Some((x, y)) = ma.iter().zip(&mb).find(|(x, y)| x != y) {
        panic!(
            "metrics of {} differ from the uninterrupted run's:\n{y}\n{x}",
            b.display()
        );
    }
    assert_eq!(ma.len(), mb.len(), "records of {}", b.display());
    for ((name, x), (_, y)) in run_files(a).iter().zip(run_files(b)) {
        assert!(
            *x == y,
            "{name} of {} differs from the uninterrupted run's",
            b.display()
        );
    }
}

/// 48 examples, batch 8: 6 steps an epoch, 3 epochs, an evaluation every 4 steps and after
/// each epoch; dropout on and fp16, so that the dropout streams and the loss scale are part of
/// what a resume must get right.
const RESUMABLE: &str = "epochs = 3\nlr = 3e-3\neval_every_steps = 4\nprecision = \"fp16\"";
const PATIENT: &str = "metric = \"accuracy\"\npatience = 10";

#[test]
fn a_fine_tune_cut_short_resumes_byte_identical() {
    let f = Fixture::new();
    let whole = f.config("whole", RESUMABLE, PATIENT);
    finetune_quiet(&whole, &[]);
    let cut = f.config("cut", RESUMABLE, PATIENT);
    let run = f.root.join("cut");
    // After step 5 (between two evaluations: last/ is written for the stop), after step 12
    // (an epoch's end: its evaluation wrote last/), then to the end, each from last/.
    let out = lantern_ok(&[
        "finetune",
        "--config",
        p(&cut),
        "--quiet",
        "--stop-after",
        "5",
    ]);
    assert!(!out.contains("exported"), "{out}");
    assert_eq!(state_step(&only_child(&run.join("last"))), 5);
    assert!(
        !run.join("model").exists(),
        "a run cut short exports nothing"
    );
    // Without --resume, the run folder is not trained over.
    let e = lantern_err(&["finetune", "--config", p(&cut), "--quiet"]);
    assert!(e.contains("already holds") && e.contains("--resume"), "{e}");
    finetune_quiet(&cut, &["--resume", "--stop-after", "12"]);
    assert_eq!(state_step(&only_child(&run.join("last"))), 12);
    finetune_quiet(&cut, &["--resume"]);
    assert_same_run(&f.root.join("whole"), &run);
    // A finished run resumed trains nothing more and exports the same best model.
    let out = lantern_ok(&["finetune", "--config", p(&cut), "--resume"]);
    assert!(out.contains("fine-tuned 18 steps"), "{out}");
    assert_same_run(&f.root.join("whole"), &run);
    // What a resume needs must be the same: another batch would change every step.
    let e = resume_err(&cut, "train.batch_size=4");
    assert!(
        e.contains("finetune_state.json") && e.contains("examples per step"),
        "{e}"
    );
}

/// NEFTune (`train.neftune_noise_alpha`, transformers' `neftune_noise_alpha`): the training
/// steps see noised embeddings, so the losses differ from a plain run's; α = 0 is the plain run
/// to the byte; the noise is a function of the step, so a run cut short and resumed ends as
/// the one that was not; a negative α is refused naming the key.
#[test]
fn neftune_fine_tunes_on_noised_embeddings_and_resumes_byte_identical() {
    let f = Fixture::new();
    let noised = format!("{RESUMABLE}\nneftune_noise_alpha = 5");
    finetune_quiet(&f.config("plain", RESUMABLE, PATIENT), &[]);
    finetune_quiet(&f.config("whole", &noised, PATIENT), &[]);
    let zero = format!("{RESUMABLE}\nneftune_noise_alpha = 0");
    finetune_quiet(&f.config("zero", &zero, PATIENT), &[]);
    let (plain, whole) = (f.root.join("plain"), f.root.join("whole"));
    assert_ne!(train_losses(&plain)[0], train_losses(&whole)[0]);
    assert_same_run(&plain, &f.root.join("zero"));
    let cut = f.config("cut", &noised, PATIENT);
    finetune_quiet(&cut, &["--stop-after", "5"]);
    finetune_quiet(&cut, &["--resume"]);
    assert_same_run(&whole, &f.root.join("cut"));
    let e = lantern_err(&[
        "finetune",
        "--config",
        p(&f.config(
            "bad",
            &format!("{RESUMABLE}\nneftune_noise_alpha = -1"),
            PATIENT,
        )),
    ]);
    assert!(
        e.contains("train.neftune_noise_alpha must be a finite, non-negative number, got -1"),
        "{e}"
    );
}

/// `train.group_by_length` (transformers' LengthGroupedSampler): the run learns, says so,
/// takes another order than the plain shuffle, resumes byte-identical, and a resume that
/// changes the setting is refused naming it.
#[test]
fn group_by_length_learns_and_resumes_byte_identical() {
    let f = Fixture::new();
    let learn = "epochs = 12\nlr = 3e-3\ngroup_by_length = true";
    let out = lantern_ok(&[
        "finetune",
        "--config",
        p(&f.config("learn", learn, PATIENT)),
    ]);
    assert!(out.contains("grouped by length"), "{out}");
    let best = best_of(&f.root.join("learn"), "accuracy");
    assert!(best >= 0.9, "best accuracy {best}\n{out}");
    let grouped = format!("{RESUMABLE}\ngroup_by_length = true");
    finetune_quiet(&f.config("whole", &grouped, PATIENT), &[]);
    let whole = f.root.join("whole");
    finetune_quiet(&f.config("plain", RESUMABLE, PATIENT), &[]);
    assert_ne!(
        train_losses(&whole),
        train_losses(&f.root.join("plain")),
        "the grouped order is the plain shuffle"
    );
    let cut = f.config("cut", &grouped, PATIENT);
    finetune_quiet(&cut, &["--stop-after", "5"]);
    let e = resume_err(&cut, "train.group_by_length=false");
    assert!(
        e.contains("finetune_state.json") && e.contains("group_by_length"),
        "{e}"
    );
    finetune_quiet(&cut, &["--resume"]);
    assert_same_run(&whole, &f.root.join("cut"));
}

#[test]
fn sigterm_stops_a_fine_tune_with_status_75_and_resume_finishes_it() {
    let f = Fixture::new();
    // 30 epochs of 6 steps: long enough that the signal lands mid-run.
    let train = "epochs = 30\nlr = 3e-3\neval_every_steps = 4\nprecision = \"fp16\"";
    let whole = f.config("whole", train, PATIENT);
    finetune_quiet(&whole, &[]);
    let cfg = f.config("signalled", train, PATIENT);
    let run = f.root.join("signalled");
    let mut child = lantern_cmd(&["finetune", "--config", p(&cfg), "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &run, 7, std::time::Duration::from_secs(120));
    send_signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    let stopped = state_step(&only_child(&run.join("last")));
    assert!((7..180).contains(&stopped), "stopped at step {stopped}");
    assert_eq!(common::last_train_step(&run), stopped);
    finetune_quiet(&cfg, &["--resume"]);
    assert_same_run(&f.root.join("whole"), &run);
}

#[test]
fn two_ranks_resume_a_fine_tune_as_they_would_have_run_it() {
    let f = Fixture::new();
    // 48 examples, 2 ranks x 4: 6 steps an epoch; cut after steps 3 and 8.
    let two = ["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"];
    let mut runs = Vec::new();
    for (name, cuts) in [("ddp-whole", &[][..]), ("ddp-cut", &["3", "8"][..])] {
        // TOML refuses the fixture's batch_size twice: the per-rank batch goes through --set.
        let cfg = f.config(name, "epochs = 2\nlr = 3e-3\neval_every_steps = 4", PATIENT);
        let mut base: Vec<&str> = two.to_vec();
        base.extend([
            "finetune",
            "--config",
            p(&cfg),
            "--quiet",
            "--set",
            "train.batch_size=4",
        ]);
        for (i, n) in cuts.iter().enumerate() {
            let mut args = base.clone();
            if i > 0 {
                args.push("--resume");
            }
            args.extend(["--stop-after", n]);
            lantern_ok(&args);
        }
        if !cuts.is_empty() {
            base.push("--resume");
        }
        lantern_ok(&base);
        runs.push(f.root.join(name));
    }
    assert_same_run(&runs[0], &runs[1]);
}

/// Sentences naming two things, each an animal or a machine: `(text, animals among the two)`.
fn mixed_sentences() -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for i in 0..24 {
        for (a, b) in [(true, true), (true, false), (false, true), (false, false)] {
            let word = |animal: bool, k: usize| {
                if animal {
                    ANIMALS[k % 6]
                } else {
                    MACHINES[k % 6]
                }
            };
            let text = format!(
                "the {} {} near the {} today",
                word(a, i),
                VERBS[(i / 2) % VERBS.len()],
                word(b, i + 3)
            );
            out.push((text, a as usize + b as usize));
        }
    }
    out
}

/// Writes `<stem>_train.jsonl` (80 examples) and `<stem>_val.jsonl` (16) with `label(n)` of
/// the number of animals.
fn write_mixed(root: &Path, stem: &str, label: impl Fn(usize, bool, bool) -> String) {
    let (mut train, mut val) = (String::new(), String::new());
    for (i, (text, _)) in mixed_sentences().iter().enumerate() {
        let first_animal = ANIMALS
            .iter()
            .any(|a| text.starts_with(&format!("the {a} ")));
        let second_animal = ANIMALS
            .iter()
            .any(|a| text.ends_with(&format!("the {a} today")));
        let n = first_animal as usize + second_animal as usize;
        let line = format!(
            "{{\"text\": \"{text}\", \"label\": {}}}\n",
            label(n, first_animal, second_animal)
        );
        if i < 80 {
            train += &line;
        } else {
            val += &line;
        }
    }
    std::fs::write(root.join(format!("{stem}_train.jsonl")), train).unwrap();
    std::fs::write(root.join(format!("{stem}_val.jsonl")), val).unwrap();
}

/// The `config.json` of a run's exported model.
fn exported_config(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap()).unwrap()
}

/// A model folder's tokenizer_config.json.
fn tokenizer_config(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn best_of(run: &Path, metric: &str) -> f64 {
    metrics_of(run, "eval")
        .iter()
        .map(|e| e[metric].as_f64().unwrap())
        .fold(f64::MIN, f64::max)
}

fn exported_problem_type(run: &Path) -> Value {
    exported_config(run)["problem_type"].clone()
}

#[test]
fn regression_learns_resumes_and_exports_its_problem_type() {
    let f = Fixture::new();
    // The score is the share of animals among the two things named: 0, 0.5 or 1.
    write_mixed(&f.root, "reg", |n, _, _| format!("{}", n as f64 / 2.0));
    let data = (
        "reg_train.jsonl",
        "reg_val.jsonl",
        "problem_type = \"regression\"",
    );
    let train = "epochs = 15\nlr = 3e-3";
    let es = "metric = \"pearson\"";
    let whole = f.config_on("reg-whole", data, train, es);
    finetune_quiet(&whole, &NO_DROPOUT);
    let run = f.root.join("reg-whole");
    let pearson = best_of(&run, "pearson");
    assert!(pearson >= 0.8, "best Pearson {pearson}");
    let eval = &metrics_of(&run, "eval")[0];
    for k in ["eval_loss", "mse", "rmse", "mae", "spearman"] {
        assert!(eval[k].is_f64(), "{k} in {eval}");
    }
    assert_eq!(exported_problem_type(&run), "regression");
    // Cut short and resumed: the same run (the best evaluation is read back from last/).
    let cut = f.config_on("reg-cut", data, train, es);
    let mut args = NO_DROPOUT.to_vec();
    args.extend(["--stop-after", "23"]);
    finetune_quiet(&cut, &args);
    let mut args = NO_DROPOUT.to_vec();
    args.push("--resume");
    finetune_quiet(&cut, &args);
    assert_same_run(&run, &f.root.join("reg-cut"));
    // predict gives a score; eval reports the regression metrics.
    let preds = f.root.join("reg-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&f.root.join("reg_val.jsonl")),
        "--out",
        p(&preds),
    ]);
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&preds)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        first["score"].is_f64() && first.get("label").is_none(),
        "{first}"
    );
    let out = lantern_ok(&[
        "eval",
        "--checkpoint",
        p(&run),
        "--data",
        p(&f.root.join("reg_val.jsonl")),
    ]);
    assert!(out.contains("Pearson") && out.contains("Spearman"), "{out}");
    // A label that is not a number is refused, naming the file and line.
    std::fs::write(
        f.root.join("bad_reg.jsonl"),
        "{\"text\": \"the cat runs\", \"label\": 0.5}\n{\"text\": \"the dog runs\", \"label\": \"high\"}\n",
    )
    .unwrap();
    let bad = f.config_on(
        "reg-bad",
        (
            "bad_reg.jsonl",
            "reg_val.jsonl",
            "problem_type = \"regression\"",
        ),
        "epochs = 1",
        "",
    );
    let e = lantern_err(&["finetune", "--config", p(&bad), "--quiet"]);
    assert!(
        e.contains("bad_reg.jsonl") && e.contains("line 2") && e.contains("not a number"),
        "{e}"
    );
}

#[test]
fn multi_label_learns_and_predicts_sets_of_labels() {
    let f = Fixture::new();
    // The label is the set of kinds named: ["animal"], ["machine"] or both.
    write_mixed(&f.root, "ml", |_, a, b| {
        let mut kinds = Vec::new();
        if a || b {
            kinds.push("\"animal\"");
        }
        if !a || !b {
            kinds.push("\"machine\"");
        }
        format!("[{}]", kinds.join(", "))
    });
    let data = (
        "ml_train.jsonl",
        "ml_val.jsonl",
        "problem_type = \"multi_label_classification\"",
    );
    let cfg = f.config_on(
        "ml",
        data,
        "epochs = 30\nlr = 3e-3",
        "metric = \"micro_f1\"",
    );
    finetune_quiet(&cfg, &NO_DROPOUT);
    let run = f.root.join("ml");
    let f1 = best_of(&run, "micro_f1");
    assert!(f1 >= 0.9, "best micro-F1 {f1}");
    assert!(best_of(&run, "subset_accuracy") >= 0.75);
    assert_eq!(exported_problem_type(&run), "multi_label_classification");
    let preds = f.root.join("ml-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&f.root.join("ml_val.jsonl")),
        "--out",
        p(&preds),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recs.iter().all(|r| r["labels"].is_array()));
    // Some sentence names both kinds and is predicted with both.
    assert!(
        recs.iter()
            .any(|r| r["labels"].as_array().unwrap().len() == 2),
        "{text}"
    );
}

#[test]
fn a_killed_rank_is_restarted_and_the_fine_tune_ends_as_if_never_interrupted() {
    // 2 ranks x 4: 6 steps an epoch, 30 epochs, last/ at every evaluation (every 4 steps).
    let f = Fixture::new();
    let train = "epochs = 30\nlr = 3e-3\neval_every_steps = 4";
    let args = |cfg: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["finetune", "--config", p(cfg), "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--set".into(), "train.batch_size=4".into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let straight = f.config("restart-straight", train, PATIENT);
    let mut all = vec!["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"];
    let a = args(&straight, &[]);
    all.extend(a.iter().map(String::as_str));
    lantern_ok(&all);

    let cfg = f.config("restarted", train, PATIENT);
    let run = f.root.join("restarted");
    // `--resume` from the first start on: with nothing to resume it begins a new run.
    let mut child = lantern_cmd(&["launch", "--nproc-per-node", "2", "--backend", "mpi"])
        .args(["--comm-timeout", "5", "--max-restarts", "1", "--"])
        .args(args(&cfg, &["--resume"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_step(&mut child, &run, 25, std::time::Duration::from_secs(60));
    let pid = common::rank_pid("finetune", &cfg, 1).expect("rank 1 is fine-tuning");
    // SAFETY: kill has no memory-safety preconditions; `pid` is a live process of this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("restarting every rank (restart 1 of 1)"),
        "{stderr}"
    );
    // Each step once in the log, and the same weights, moments and export as never killed.
    assert_same_run(&f.root.join("restart-straight"), &run);
}

#[test]
fn max_steps_and_warmup_steps_take_the_place_of_epochs_and_the_warmup_ratio() {
    // 6 steps an epoch: 10 steps are one epoch and 4 steps of a second, evaluated at its end.
    let f = Fixture::new();
    let cfg = f.config(
        "max-steps",
        "epochs = 99\nmax_steps = 10\nwarmup_steps = 2\nlr = 1e-3",
        "",
    );
    finetune_quiet(&cfg, &[]);
    let run = f.root.join("max-steps");
    let lrs: Vec<f64> = metrics_of(&run, "train")
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    // transformers' linear schedule: step/2 during the warmup, then (10 - step)/8.
    let want: Vec<f64> = (0..10u32)
        .map(|s| match s {
            0 | 1 => 1e-3 * f64::from(s) / 2.0,
            s => 1e-3 * f64::from(10 - s) / 8.0,
        })
        .collect();
    assert_eq!(lrs.len(), 10);
    for (a, b) in lrs.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12, "lr {a} vs {b} ({lrs:?})");
    }
    let evals: Vec<(u64, u64)> = metrics_of(&run, "eval")
        .iter()
        .map(|e| (e["step"].as_u64().unwrap(), e["epoch"].as_u64().unwrap()))
        .collect();
    assert_eq!(evals, [(6, 1), (10, 2)]);
    assert_eq!(
        state_step(&run.join("model")),
        state_step(&only_child(&run.join("best")))
    );
}

#[test]
fn label_smoothing_learns_and_is_refused_where_it_does_not_apply() {
    let f = Fixture::new();
    let cfg = f.config(
        "smooth",
        "epochs = 12\nlr = 3e-3\nlabel_smoothing = 0.1",
        "metric = \"accuracy\"",
    );
    finetune_quiet(&cfg, &NO_DROPOUT);
    let run = f.root.join("smooth");
    let acc = best_of(&run, "accuracy");
    assert!(acc >= 0.9, "best accuracy {acc}");
    // `lantern eval` reports the smoothed loss of the best evaluation, as training did.
    let (_, report) = eval_json(&run, &f.root.join("val.jsonl"), &f.root.join("e.json"), &[]);
    let best = best_eval(&run, "accuracy");
    for key in ["eval_loss", "accuracy"] {
        let (x, y) = (report[key].as_f64().unwrap(), best[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6, "{key}: {x} vs {y}");
    }
    let e = lantern_err(&[
        "finetune",
        "--config",
        p(&cfg),
        "--quiet",
        "--set",
        "data.problem_type=regression",
        "--set",
        "early_stopping.metric=mse",
    ]);
    assert!(
        e.contains("label_smoothing") && e.contains("regression"),
        "{e}"
    );
}

/// Word-level data for token classification: the words of [`mixed_sentences`], each animal
/// tagged `ANI` and each machine `MAC` (IOB2), every third sentence with "old" before its
/// first thing as part of the entity (`B-`, then `I-` on the thing). Writes
/// `tok_train.jsonl` (80 examples, `tokens`/`tags`) and `tok_val.conll` (16).
fn write_tagged(root: &Path) {
    let (mut train, mut val) = (String::new(), String::new());
    for (i, (text, _)) in mixed_sentences().iter().enumerate() {
        let mut words: Vec<&str> = text.split(' ').collect();
        if i % 3 == 0 {
            words.insert(1, "old");
        }
        let mut tags = Vec::new();
        for (k, w) in words.iter().enumerate() {
            let kind = if ANIMALS.contains(w) {
                "ANI"
            } else if MACHINES.contains(w) {
                "MAC"
            } else {
                ""
            };
            tags.push(match (kind, *w) {
                ("", "old") => {
                    let next = words[k + 1];
                    let kind = if ANIMALS.contains(&next) {
                        "ANI"
                    } else {
                        "MAC"
                    };
                    format!("B-{kind}")
                }
                ("", _) => "O".to_string(),
                (kind, _) if k > 0 && words[k - 1] == "old" => format!("I-{kind}"),
                (kind, _) => format!("B-{kind}"),
            });
        }
        if i < 80 {
            train += &serde_json::json!({"tokens": words, "tags": tags}).to_string();
            train.push('\n');
        } else {
            for (w, t) in words.iter().zip(&tags) {
                val += &format!("{w} {t}\n");
            }
            val.push('\n');
        }
    }
    std::fs::write(root.join("tok_train.jsonl"), train).unwrap();
    std::fs::write(root.join("tok_val.conll"), val).unwrap();
}

/// The files of [`write_tagged`] as `Fixture::config_on`'s data.
const TAGGED: (&str, &str, &str) = (
    "tok_train.jsonl",
    "tok_val.conll",
    "problem_type = \"token_classification\"",
);

#[test]
fn token_classification_learns_resumes_evaluates_and_predicts_entities() {
    let f = Fixture::new();
    write_tagged(&f.root);
    let data = TAGGED;
    let train = "epochs = 15\nlr = 3e-3";
    let es = "metric = \"f1\"";
    let whole = f.config_on("tok-whole", data, train, es);
    finetune_quiet(&whole, &NO_DROPOUT);
    let run = f.root.join("tok-whole");
    let f1 = best_of(&run, "f1");
    assert!(f1 >= 0.9, "best entity F1 {f1}");
    let eval = &metrics_of(&run, "eval")[0];
    for k in ["eval_loss", "precision", "recall", "accuracy"] {
        assert!(eval[k].is_f64(), "{k} in {eval}");
    }
    assert!(eval["per_type"]["ANI"]["f1"].is_f64(), "{eval}");
    // Exported as transformers' BertForTokenClassification: id2label, no problem_type (its
    // config refuses any but sequence classification's).
    let cfg = exported_config(&run);
    assert_eq!(cfg["architectures"][0], "BertForTokenClassification");
    assert_eq!(cfg["id2label"]["0"], "B-ANI");
    assert!(cfg.get("problem_type").is_none(), "{cfg}");

    // Cut short and resumed: the same run.
    let cut = f.config_on("tok-cut", data, train, es);
    let mut args = NO_DROPOUT.to_vec();
    args.extend(["--stop-after", "23"]);
    finetune_quiet(&cut, &args);
    let mut args = NO_DROPOUT.to_vec();
    args.push("--resume");
    finetune_quiet(&cut, &args);
    assert_same_run(&run, &f.root.join("tok-cut"));

    // eval on the CoNLL file reproduces the best evaluation.
    let metrics = f.root.join("tok-eval.json");
    let (out, m) = eval_json(&run, &f.root.join("tok_val.conll"), &metrics, &[]);
    assert!(out.contains("MAC"), "{out}");
    assert_eq!(m["f1"].as_f64().unwrap(), f1);

    // predict tags plain text word by word and gathers the entities.
    let input = f.root.join("texts.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"the old robot waits near the horse today\"}\n{\"text\": \"the dog runs\"}\n",
    )
    .unwrap();
    let preds = f.root.join("tok-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&input),
        "--out",
        p(&preds),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["words"].as_array().unwrap().len(), 8);
    assert_eq!(
        lines[0]["tags"],
        serde_json::json!(["O", "B-MAC", "I-MAC", "O", "O", "O", "B-ANI", "O"]),
        "{}",
        lines[0]
    );
    let entities: Vec<Value> = lines[0]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let score = e["score"].as_f64().unwrap();
            assert!(score > 0.2 && score <= 1.0, "{e}");
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("score");
            e
        })
        .collect();
    assert_eq!(
        entities,
        [
            serde_json::json!({"type": "MAC", "start": 1, "end": 2, "text": "old robot"}),
            serde_json::json!({"type": "ANI", "start": 6, "end": 6, "text": "horse"}),
        ]
    );
    // An entity's score is the mean of its words'.
    let s = &lines[0]["scores"];
    let mean = (s[1].as_f64().unwrap() + s[2].as_f64().unwrap()) / 2.0;
    assert!((lines[0]["entities"][0]["score"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(lines[1]["entities"][0]["text"], "dog");
    // Word-level input (CoNLL here, tags ignored) keeps its words.
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&f.root.join("tok_val.conll")),
        "--out",
        p(&preds),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(text.lines().count(), 16);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["words"].as_array().unwrap().len(),
        first["tags"].as_array().unwrap().len()
    );

    // transformers' --label_all_tokens: every sub-token trains (other losses), and it learns too.
    let all = f.config_on(
        "tok-all",
        (
            data.0,
            data.1,
            "problem_type = \"token_classification\"\nlabel_all_tokens = true",
        ),
        train,
        es,
    );
    finetune_quiet(&all, &NO_DROPOUT);
    let all_run = f.root.join("tok-all");
    assert!(
        best_of(&all_run, "f1") >= 0.9,
        "{}",
        best_of(&all_run, "f1")
    );
    assert_ne!(train_losses(&all_run)[0], train_losses(&run)[0]);
    let seq = f.config_on(
        "seq-all",
        ("train.jsonl", "val.jsonl", "label_all_tokens = true"),
        "epochs = 1",
        "",
    );
    let e = lantern_err(&["finetune", "--config", p(&seq), "--quiet"]);
    assert!(e.contains("label_all_tokens"), "{e}");

    // Activation checkpointing recomputes each layer, dropout masks included: BERT has no
    // weight used twice in fine-tuning, so every gradient is the same sum and the run the same
    // to the bit.
    let recomputed = f.config_on(
        "tok-recompute",
        data,
        &format!("{train}\nactivation_checkpointing = true"),
        es,
    );
    finetune_quiet(&recomputed, &[]);
    let plain = f.config_on("tok-plain", data, train, es);
    finetune_quiet(&plain, &[]);
    assert_same_run(&f.root.join("tok-plain"), &f.root.join("tok-recompute"));

    // Two ranks count the labelled words of the whole step: one process with twice the batch.
    let cfg = |run: &str| f.config_on(run, data, "epochs = 2\nlr = 3e-3", es);
    let (two, one) = two_ranks_and_one(&f, "tok-ddp", 5, cfg);
    let runs = [two, one];
    let (e2, e1) = (metrics_of(&runs[0], "eval"), metrics_of(&runs[1], "eval"));
    for (a, b) in e2.iter().zip(&e1) {
        assert_eq!(a["words"], b["words"]);
        assert_eq!(a["per_type"], b["per_type"]);
    }
}

/// SGD with momentum (transformers' `optim="sgd"`) on token classification: 6 epochs of 10
/// steps, dropout on. (On sequence classification a fresh tiny encoder gives SGD too little to
/// go on: its [CLS] features hardly differ between the classes at initialisation, and AdamW's
/// per-parameter scaling is what gets it started. A word's own tag is on the residual path.)
const SGD: &str = "optimizer = \"sgd\"\nmomentum = 0.9\nepochs = 6\nlr = 0.1";

/// It learns the tags, and a run cut short resumes byte-identical (weights, momentum buffers,
/// metrics); resuming it with another optimizer, or without the momentum its buffers need, is
/// refused.
#[test]
fn sgd_with_momentum_learns_and_resumes_byte_identical() {
    let f = Fixture::new();
    write_tagged(&f.root);
    let data = TAGGED;
    let es = "metric = \"f1\"";
    let whole = f.config_on("sgd-whole", data, SGD, es);
    let out = lantern_ok(&["finetune", "--config", p(&whole)]);
    assert!(
        out.contains("sgd(momentum=0.9, dampening=0.0, nesterov=false, weight_decay=0.01)"),
        "the header names the optimizer: {out}"
    );
    let run = f.root.join("sgd-whole");
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("optimizer = \"sgd\""), "{resolved}");
    let first_loss = train_losses(&run)[0];
    let evals = metrics_of(&run, "eval");
    let last_loss = evals.last().unwrap()["eval_loss"].as_f64().unwrap();
    let f1 = best_of(&run, "f1");
    assert!(
        last_loss < 0.1 * first_loss && f1 >= 0.85,
        "loss {first_loss} -> {last_loss}, best entity F1 {f1}"
    );
    let buffers: Vec<String> =
        common::read_f32_tensors(&only_child(&run.join("last")).join("optimizer.safetensors"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
    assert!(
        buffers.contains(&"classifier.weight.momentum_buffer".to_string())
            && buffers.iter().all(|n| n.ends_with(".momentum_buffer")),
        "{buffers:?}"
    );

    let cut = f.config_on("sgd-cut", data, SGD, es);
    let cut_run = f.root.join("sgd-cut");
    finetune_quiet(&cut, &["--stop-after", "25"]);
    assert_eq!(state_step(&only_child(&cut_run.join("last"))), 25);
    let e = resume_err(&cut, "train.optimizer=adamw");
    assert!(
        e.contains("finetune_state.json")
            && e.contains("\"sgd\"")
            && e.contains("\"adamw\"")
            && e.contains("train.optimizer"),
        "{e}"
    );
    let e = resume_err(&cut, "train.momentum=0");
    assert!(
        e.contains("optimizer.safetensors") && e.contains("momentum_buffer"),
        "{e}"
    );
    finetune_quiet(&cut, &["--resume"]);
    assert_same_run(&run, &cut_run);
}

/// One step of plain SGD (lr 0.1, no momentum, no weight decay, no clipping) over the whole
/// training set moves the classifier's bias by exactly −lr × its gradient, the mean over the
/// examples of softmax − one-hot, computed here from the starting model's probabilities (AdamW's
/// first step would move each element by about ±lr).
#[test]
fn a_fine_tune_step_is_the_chosen_optimizers_update() {
    let f = Fixture::new();
    let sgd = "optimizer = \"sgd\"\nmax_steps = 1\nschedule = \"constant\"\nweight_decay = 0.0\n\
               grad_clip = 0.0";
    let bias = |run: &str| -> Vec<f32> {
        let w = common::read_f32_tensors(&f.root.join(run).join("model/model.safetensors"));
        w.into_iter()
            .find(|(n, _)| n == "classifier.bias")
            .unwrap()
            .1
    };
    let mut sets = NO_DROPOUT.to_vec();
    sets.extend(["--set", "train.batch_size=48"]);
    // lr 0: the starting weights (the same seed draws the same head).
    let cfg = f.config("lr0", &format!("{sgd}\nlr = 0.0"), "");
    finetune_quiet(&cfg, &sets);
    let cfg = f.config("lr01", &format!("{sgd}\nlr = 0.1"), "");
    finetune_quiet(&cfg, &sets);
    let train = metrics_of(&f.root.join("lr01"), "train");
    assert_eq!(train.len(), 1);
    assert_eq!(train[0]["lr"], 0.1);

    let preds = f.root.join("preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&f.root.join("lr0")),
        "--input",
        p(&f.root.join("train.jsonl")),
        "--out",
        p(&preds),
    ]);
    let labels: Vec<String> = std::fs::read_to_string(f.root.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut grad = [0f64; 2];
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 48);
    for (l, label) in lines.iter().zip(&labels) {
        for (k, name) in ["animal", "machine"].iter().enumerate() {
            let prob = l["probabilities"][name].as_f64().unwrap();
            grad[k] += (prob - f64::from(u8::from(label == name))) / 48.0;
        }
    }
    let (before, after) = (bias("lr0"), bias("lr01"));
    for k in 0..2 {
        let step = f64::from(after[k]) - f64::from(before[k]);
        // To f32 rounding (the probabilities, the weights): 4e-6 of the step here.
        assert!(
            (step + 0.1 * grad[k]).abs() < 2e-5 * (0.1 * grad[k]).abs(),
            "bias[{k}] moved by {step}, -lr x gradient is {}",
            -0.1 * grad[k]
        );
    }
    assert!(grad[0].abs() > 1e-3, "a gradient to see: {grad:?}");
}

/// Question answering data: contexts naming one animal and one machine ("far away and long
/// ago" in front of every third, so that it takes two windows of `max_length` 16), each asked
/// "which animal ?" and "which machine ?". 48 contexts train (JSONL, Hugging Face datasets'
/// layout), 12 validate (an official SQuAD v1.1 .json file).
fn write_qa(root: &Path) {
    let (mut train, mut paragraphs) = (String::new(), Vec::new());
    for i in 0..60 {
        let (a, m) = (ANIMALS[i % 6], MACHINES[(i / 2 + i) % 6]);
        let verb = VERBS[i % VERBS.len()];
        let mut context = if i % 2 == 0 {
            format!("the {a} {verb} near the {m} today")
        } else {
            format!("the {m} {verb} near the {a} today")
        };
        if i % 3 == 0 {
            context = format!("far away and long ago {context}");
        }
        let qas: Vec<Value> = [("animal", a), ("machine", m)]
            .iter()
            .map(|(kind, answer)| {
                let start = context.find(&format!(" {answer} ")).unwrap() + 1;
                serde_json::json!({
                    "id": format!("q{i}-{kind}"),
                    "question": format!("which {kind} ?"),
                    "answers": [{"text": answer, "answer_start": start}],
                })
            })
            .collect();
        if i < 48 {
            for q in &qas {
                let rec = serde_json::json!({
                    "id": q["id"], "title": "fixture", "context": context,
                    "question": q["question"],
                    "answers": {"text": [q["answers"][0]["text"]],
                                "answer_start": [q["answers"][0]["answer_start"]]},
                });
                train += &format!("{rec}\n");
            }
        } else {
            paragraphs.push(serde_json::json!({"context": context, "qas": qas}));
        }
    }
    std::fs::write(root.join("qa_train.jsonl"), train).unwrap();
    // A tokenizer that knows the questions' words too.
    let corpus = std::fs::read_to_string(root.join("corpus.txt")).unwrap();
    let questions = "which animal ?\nwhich machine ?\nfar away and long ago\n".repeat(20);
    std::fs::write(root.join("qa_corpus.txt"), corpus + &questions).unwrap();
    lantern_ok(&[
        "wordpiece",
        "--input",
        p(&root.join("qa_corpus.txt")),
        "--out",
        p(&root.join("qa_tokenizer.json")),
        "--vocab-size",
        "100",
    ]);
    let squad = serde_json::json!({"version": "1.1",
        "data": [{"title": "fixture", "paragraphs": paragraphs}]});
    std::fs::write(root.join("qa_val.json"), squad.to_string()).unwrap();
}

#[test]
fn question_answering_learns_resumes_evaluates_and_predicts_answers() {
    let f = Fixture::new();
    write_qa(&f.root);
    let data = (
        "qa_train.jsonl",
        "qa_val.json",
        "problem_type = \"question_answering\"\ndoc_stride = 4",
    );
    let train = "epochs = 12\nlr = 3e-3";
    let es = "metric = \"f1\"";
    let tokenizer = format!("model.tokenizer={:?}", p(&f.root.join("qa_tokenizer.json")));
    let mut opts = NO_DROPOUT.to_vec();
    opts.extend(["--set", tokenizer.as_str()]);
    let whole = f.config_on("qa-whole", data, train, es);
    finetune_quiet(&whole, &opts);
    let run = f.root.join("qa-whole");
    let f1 = best_of(&run, "f1");
    let evals = metrics_of(&run, "eval");
    assert!(f1 >= 90.0, "best F1 {f1} (percent): {evals:?}");
    let eval = &evals[0];
    for k in ["eval_loss", "exact_match"] {
        assert!(eval[k].is_f64(), "{k} in {eval}");
    }
    // Exported as transformers' BertForQuestionAnswering: two outputs, no labels.
    let cfg = exported_config(&run);
    assert_eq!(cfg["architectures"][0], "BertForQuestionAnswering");
    assert!(cfg.get("problem_type").is_none(), "{cfg}");

    // Cut short mid-epoch and resumed: the same run.
    let cut = f.config_on("qa-cut", data, train, es);
    let mut args = opts.clone();
    args.extend(["--stop-after", "17"]);
    finetune_quiet(&cut, &args);
    let mut args = opts.clone();
    args.push("--resume");
    finetune_quiet(&cut, &args);
    assert_same_run(&run, &f.root.join("qa-cut"));

    // eval on the SQuAD file reproduces the best evaluation.
    let metrics = f.root.join("qa-eval.json");
    let (_, m) = eval_json(&run, &f.root.join("qa_val.json"), &metrics, &[]);
    assert_eq!(m["f1"].as_f64().unwrap(), f1);

    // predict answers questions without answers, long contexts included.
    let input = f.root.join("questions.jsonl");
    let mut text = String::new();
    for (q, context) in [
        ("which machine ?", "the horse waits near the printer today"),
        (
            "which animal ?",
            "far away and long ago the laptop runs near the goat today",
        ),
    ] {
        let rec = serde_json::json!({"id": q, "question": q, "context": context});
        text += &format!("{rec}\n");
    }
    std::fs::write(&input, text).unwrap();
    let preds = f.root.join("qa-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&input),
        "--out",
        p(&preds),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["answer"], "printer", "{}", lines[0]);
    assert_eq!(lines[0]["answer_start"], 25, "{}", lines[0]);
    assert_eq!(lines[1]["answer"], "goat", "{}", lines[1]);
    let p0 = lines[0]["probability"].as_f64().unwrap();
    assert!(p0 > 0.5 && p0 <= 1.0, "{}", lines[0]);
    assert!(!lines[0]["n_best"].as_array().unwrap().is_empty());

    // Bad data is a clear error naming the file and the line.
    let bad = f.root.join("qa_bad.jsonl");
    let mut rec: Value = serde_json::from_str(
        std::fs::read_to_string(f.root.join("qa_train.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    rec["answers"]["answer_start"][0] = serde_json::json!(0);
    std::fs::write(&bad, format!("{rec}\n")).unwrap();
    let cfg = f.config_on("qa-bad", ("qa_bad.jsonl", "qa_val.json", data.2), train, es);
    let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(e.contains("qa_bad.jsonl") && e.contains("line 1"), "{e}");
    // Classification data given as question answering.
    let cfg = f.config_on("qa-cls", ("train.jsonl", "qa_val.json", data.2), train, es);
    let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(e.contains("train.jsonl") && e.contains("line 1"), "{e}");

    // Two ranks evaluate windows of different lengths each and gather them: the losses and
    // evaluations of one process with twice the batch.
    let mut runs = Vec::new();
    for (ranks, batch) in [(2, 4), (1, 8)] {
        let name = format!("qa-ddp-{ranks}");
        let cfg = f.config_on(&name, data, "epochs = 2\nlr = 3e-3", es);
        let batch_set = format!("train.batch_size={batch}");
        let mut args = vec![];
        if ranks == 2 {
            args.extend(["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"]);
        }
        args.extend(["finetune", "--config", p(&cfg), "--quiet"]);
        args.extend(opts.iter().copied());
        args.extend(["--set", batch_set.as_str()]);
        lantern_ok(&args);
        runs.push(f.root.join(name));
    }
    let (l2, l1) = (train_losses(&runs[0]), train_losses(&runs[1]));
    assert_eq!(l2.len(), l1.len());
    for (a, b) in l2.iter().zip(&l1) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "loss {a} vs {b}");
    }
    let (e2, e1) = (metrics_of(&runs[0], "eval"), metrics_of(&runs[1], "eval"));
    assert_eq!(e2.len(), e1.len());
    for (a, b) in e2.iter().zip(&e1) {
        let (x, y) = (
            a["eval_loss"].as_f64().unwrap(),
            b["eval_loss"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 1e-5 * y, "eval loss {x} vs {y}");
        assert_eq!((&a["f1"], &a["exact_match"]), (&b["f1"], &b["exact_match"]));
    }
}

/// SQuAD 2.0 data beside write_qa's (whose tokenizer it uses): contexts that name an animal and
/// a machine, or only one of them, so that "which machine ?" of a context without a machine has
/// no answer. Training is HF datasets' `squad_v2` JSONL (an empty answer list), validation an
/// official v2.0 `.json` (`"answers": []`, `"is_impossible": true`, `plausible_answers`).
/// Returns the validation questions' (id, whether it has an answer).
fn write_qa_v2(root: &Path) -> Vec<(String, bool)> {
    write_qa(root);
    let (mut train, mut paragraphs, mut val) = (String::new(), Vec::new(), Vec::new());
    for i in 0..60 {
        let (a, m) = (ANIMALS[i % 6], MACHINES[(i / 2 + i) % 6]);
        let verb = VERBS[(i / 4) % VERBS.len()];
        let mut context = match i % 4 {
            0 => format!("the {a} {verb} near the {m} today"),
            1 => format!("the {m} {verb} near the {a} today"),
            2 => format!("the {a} {verb} today"),
            _ => format!("the {m} {verb} today"),
        };
        if i % 3 == 0 {
            // Two or three windows of 16 tokens.
            context = format!("far away and long ago {context}");
        }
        let mut qas = Vec::new();
        for (kind, answer) in [("animal", a), ("machine", m)] {
            let id = format!("q{i}-{kind}");
            let start = context.find(&format!(" {answer} ")).map(|s| s + 1);
            qas.push((id, format!("which {kind} ?"), start.map(|s| (answer, s))));
        }
        if i < 48 {
            for (id, question, answer) in &qas {
                let (text, starts) = match answer {
                    Some((t, s)) => (vec![*t], vec![*s]),
                    None => (vec![], vec![]),
                };
                let rec = serde_json::json!({
                    "id": id, "title": "fixture", "context": context, "question": question,
                    "answers": {"text": text, "answer_start": starts},
                });
                train += &format!("{rec}\n");
            }
        } else {
            let qas: Vec<Value> = qas
                .iter()
                .map(|(id, question, answer)| {
                    val.push((id.clone(), answer.is_some()));
                    match answer {
                        Some((t, s)) => serde_json::json!({"id": id, "question": question,
                            "answers": [{"text": t, "answer_start": s}], "is_impossible": false}),
                        // What an annotator might have marked: the other kind of thing.
                        None => serde_json::json!({"id": id, "question": question,
                            "answers": [], "is_impossible": true,
                            "plausible_answers": [{"text": "the", "answer_start": 0}]}),
                    }
                })
                .collect();
            paragraphs.push(serde_json::json!({"context": context, "qas": qas}));
        }
    }
    std::fs::write(root.join("qa2_train.jsonl"), train).unwrap();
    let squad = serde_json::json!({"version": "v2.0",
        "data": [{"title": "fixture", "paragraphs": paragraphs}]});
    std::fs::write(root.join("qa2_val.json"), squad.to_string()).unwrap();
    val
}

#[test]
fn squad_2_learns_unanswerable_questions_and_predicts_no_answer() {
    let f = Fixture::new();
    let val = write_qa_v2(&f.root);
    let (has, no) = (
        val.iter().filter(|(_, h)| *h).count(),
        val.iter().filter(|(_, h)| !*h).count(),
    );
    assert!(has >= 12 && no >= 6, "{has} {no}");
    let data = (
        "qa2_train.jsonl",
        "qa2_val.json",
        "problem_type = \"question_answering\"\ndoc_stride = 4\nversion_2_with_negative = true",
    );
    let train = "epochs = 20\nlr = 3e-3";
    let tokenizer = format!("model.tokenizer={:?}", p(&f.root.join("qa_tokenizer.json")));
    let mut opts = NO_DROPOUT.to_vec();
    opts.extend(["--set", tokenizer.as_str()]);
    let cfg = f.config_on("qa2", data, train, "metric = \"f1\"");
    finetune_quiet(&cfg, &opts);
    let run = f.root.join("qa2");
    let evals = metrics_of(&run, "eval");
    let f1 = best_of(&run, "f1");
    assert!(f1 >= 90.0, "best F1 {f1} (percent): {evals:?}");
    let best = evals.iter().find(|e| e["f1"].as_f64() == Some(f1)).unwrap();
    // The squad_v2 metric's figures, both parts evaluated (and learnt).
    assert_eq!(best["total"], val.len(), "{best}");
    assert_eq!(
        (&best["HasAns_total"], &best["NoAns_total"]),
        (&has.into(), &no.into())
    );
    for k in ["HasAns_f1", "NoAns_f1"] {
        assert!(best[k].as_f64().unwrap() >= 80.0, "{k}: {best}");
    }
    assert_eq!(best["exact"], best["exact_match"]);
    assert_eq!(
        (&best["best_f1_thresh"], &best["best_exact_thresh"]),
        (&0.0.into(), &0.0.into())
    );
    assert!(
        best["best_f1"].is_f64() && best["best_exact"].is_f64(),
        "{best}"
    );

    // Cut short after the first evaluation and resumed (its best squad_v2 report read back
    // from the checkpoint): the same run.
    let cut = f.config_on("qa2-cut", data, train, "metric = \"f1\"");
    let mut args = opts.clone();
    args.extend(["--stop-after", "50"]);
    finetune_quiet(&cut, &args);
    assert_eq!(metrics_of(&f.root.join("qa2-cut"), "eval").len(), 1);
    let mut args = opts.clone();
    args.push("--resume");
    finetune_quiet(&cut, &args);
    assert_same_run(&run, &f.root.join("qa2-cut"));

    // eval on the v2.0 file reproduces the best evaluation, every figure.
    let metrics = f.root.join("qa2-eval.json");
    let (_, m) = eval_json(&run, &f.root.join("qa2_val.json"), &metrics, &[]);
    for k in [
        "eval_loss",
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "best_exact",
        "best_f1",
    ] {
        assert_eq!(m[k], best[k], "{k}");
    }
    // A threshold no null score can beat: every answer is a span, every unanswerable
    // question wrong.
    let never = f.root.join("qa2-never.json");
    let (_, n) = eval_json(
        &run,
        &f.root.join("qa2_val.json"),
        &never,
        &["--null-score-diff-threshold", "1e9"],
    );
    assert_eq!(n["NoAns_exact"], 0.0, "{n}");
    let has_exact = |r: &Value| r["HasAns_exact"].as_f64().unwrap();
    assert!(has_exact(&n) >= has_exact(&m), "{n}");

    // predict on the same questions: "" (no position) where eval counted an unanswerable
    // question right (or "the", which normalises to nothing too), the null score beating the
    // best span's by more than the threshold 0.
    let preds = f.root.join("qa2-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&f.root.join("qa2_val.json")),
        "--out",
        p(&preds),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), val.len());
    let mut right_null = 0;
    for (rec, (id, answerable)) in lines.iter().zip(&val) {
        assert_eq!(rec["id"], id.as_str());
        let diff = rec["null_score_diff"].as_f64().unwrap();
        assert!(rec["null_score"].is_f64(), "{rec}");
        if rec["answer"] == "" {
            assert!(rec["answer_start"].is_null() && diff > 0.0, "{rec}");
            assert!(rec["n_best"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["text"] == ""));
            right_null += usize::from(!answerable);
        } else {
            right_null += usize::from(!answerable && rec["answer"] == "the");
            assert!(rec["answer_start"].is_u64() && diff <= 0.0, "{rec}");
        }
    }
    let no_exact = m["NoAns_exact"].as_f64().unwrap();
    assert_eq!(100.0 * right_null as f64 / no as f64, no_exact);
    assert!(right_null > 0);

    // The v2.0 file read as SQuAD v1.1 (no flag): a clear error naming the file, the question
    // and the key to set.
    let cfg = f.config_on(
        "qa2-v1",
        (
            "qa2_val.json",
            "qa2_val.json",
            "problem_type = \"question_answering\"\ndoc_stride = 4",
        ),
        train,
        "metric = \"f1\"",
    );
    let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
    let (first, _) = val.iter().find(|(_, h)| !h).unwrap();
    for want in [
        "qa2_val.json",
        &format!("(id {first:?})"),
        "has no answer",
        "data.version_2_with_negative = true",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // Early stopping on a part the validation questions lack fails before training.
    let cfg = f.config_on(
        "qa2-noans",
        ("qa2_train.jsonl", "qa_val.json", data.2),
        train,
        "metric = \"NoAns_f1\"",
    );
    let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
    assert!(e.contains("NoAns_f1") && e.contains("qa_val.json"), "{e}");
}

/// RoBERTa (the byte-level BPE tokenizer of its golden files: `<s>`, `<pad>`, `</s>`, its
/// post-processor), DistilBERT, ELECTRA and ModernBERT (the fixture's WordPiece) folders
/// fine-tune through the binary and export as their own family's classes.
#[test]
fn roberta_distilbert_electra_and_modernbert_folders_fine_tune_and_export_as_their_family() {
    let f = Fixture::new();
    write_tagged(&f.root);
    write_qa(&f.root);
    let golden = common::workspace_root().join("tests/golden/roberta_tiny/tokenizer");
    let rob = common::family_folder(
        &f.root,
        "roberta",
        Family::Roberta,
        &golden.join("tokenizer.json"),
    );
    // transformers' own tokenizer settings (save_pretrained's), which the runs keep.
    let rob_tok_cfg = std::fs::read(golden.join("tokenizer_config.json")).unwrap();
    std::fs::write(rob.join("tokenizer_config.json"), &rob_tok_cfg).unwrap();
    let wp = f.root.join("tokenizer.json");
    let distil = common::family_folder(&f.root, "distil", Family::DistilBert, &wp);
    let qa_wp = f.root.join("qa_tokenizer.json");
    let distil_qa = common::family_folder(&f.root, "distil-qa-base", Family::DistilBert, &qa_wp);
    let electra = common::family_folder(&f.root, "electra", Family::Electra, &wp);
    let modern = common::family_folder(&f.root, "modern", Family::ModernBert, &wp);
    let modern_qa = common::family_folder(&f.root, "modern-qa-base", Family::ModernBert, &qa_wp);
    let plain = ("train.jsonl", "val.jsonl", "");
    let tagged = (
        "tok_train.jsonl",
        "tok_val.conll",
        "problem_type = \"token_classification\"",
    );
    // RoBERTa: contexts of up to ~60 byte-level tokens in windows of 40 (two windows for the
    // longest); DistilBERT: WordPiece windows of 16, as the BERT test.
    let rob_qa = (
        "qa_train.jsonl",
        "qa_val.json",
        "problem_type = \"question_answering\"\ndoc_stride = 16",
    );
    let wp_qa = (
        "qa_train.jsonl",
        "qa_val.json",
        "problem_type = \"question_answering\"\ndoc_stride = 4",
    );
    // Words in byte-level pieces of a 300-token vocabulary take the tagger longer.
    for (name, folder, data, (epochs, max_length), metric, class) in [
        (
            "rob-cls",
            &rob,
            plain,
            (15, 64),
            "accuracy",
            "RobertaForSequenceClassification",
        ),
        (
            "rob-tok",
            &rob,
            tagged,
            (40, 64),
            "f1",
            "RobertaForTokenClassification",
        ),
        (
            "rob-qa",
            &rob,
            rob_qa,
            (40, 40),
            "f1",
            "RobertaForQuestionAnswering",
        ),
        (
            "dis-cls",
            &distil,
            plain,
            (12, 16),
            "accuracy",
            "DistilBertForSequenceClassification",
        ),
        (
            "dis-tok",
            &distil,
            tagged,
            (15, 16),
            "f1",
            "DistilBertForTokenClassification",
        ),
        (
            "dis-qa",
            &distil_qa,
            wp_qa,
            (12, 16),
            "f1",
            "DistilBertForQuestionAnswering",
        ),
        (
            "ele-cls",
            &electra,
            plain,
            (12, 16),
            "accuracy",
            "ElectraForSequenceClassification",
        ),
        (
            "ele-tok",
            &electra,
            tagged,
            (15, 16),
            "f1",
            "ElectraForTokenClassification",
        ),
        (
            "mod-cls",
            &modern,
            plain,
            (12, 16),
            "accuracy",
            "ModernBertForSequenceClassification",
        ),
        (
            "mod-tok",
            &modern,
            tagged,
            (15, 16),
            "f1",
            "ModernBertForTokenClassification",
        ),
        (
            "mod-qa",
            &modern_qa,
            wp_qa,
            (12, 16),
            "f1",
            "ModernBertForQuestionAnswering",
        ),
    ] {
        let model = format!("init_from = {folder:?}");
        let cfg = f.config_with(
            name,
            (&model, max_length),
            data,
            &format!("epochs = {epochs}\nlr = 3e-3"),
            &format!("metric = \"{metric}\""),
        );
        let out = lantern_ok(&["finetune", "--config", p(&cfg), "--quiet"]);
        let run = f.root.join(name);
        let best = best_of(&run, metric);
        assert!(best >= 0.9, "{name}: best {metric} {best}\n{out}");
        // Exported as transformers' class of the family, with its own config keys.
        let c = exported_config(&run);
        assert_eq!(c["architectures"][0], class);
        let (family, prefix, keys) = match &name[..3] {
            "rob" => ("roberta", "roberta.", ["pad_token_id", "type_vocab_size"]),
            "dis" => ("distilbert", "distilbert.", ["dim", "seq_classif_dropout"]),
            "mod" => ("modernbert", "model.", ["layer_types", "local_attention"]),
            _ => ("electra", "electra.", ["embedding_size", "hidden_size"]),
        };
        assert_eq!(c["model_type"], family);
        assert!(keys.iter().all(|k| c.get(k).is_some()), "{c}");
        let names = common::read_f32_tensors(&run.join("model/model.safetensors"));
        let head = ["pre_classifier.", "classifier.", "qa_outputs.", "head."];
        for (n, _) in &names {
            let ours = n.starts_with(prefix) || head.iter().any(|h| n.starts_with(h));
            assert!(ours && !n.contains("pooler"), "{name}: {n}");
        }
        // The RoBERTa folder's tokenizer_config.json is copied as it is; the others (only a
        // tokenizer.json) get BERT's, built from the WordPiece tokenizer.
        let t = std::fs::read(run.join("model/tokenizer_config.json")).unwrap();
        if family == "roberta" {
            assert!(t == rob_tok_cfg, "{name}");
        } else {
            let t: Value = serde_json::from_slice(&t).unwrap();
            assert_eq!(t["tokenizer_class"], "BertTokenizer", "{name}");
            assert_eq!(
                (&t["pad_token"], &t["cls_token"]),
                (&"[PAD]".into(), &"[CLS]".into())
            );
            assert_eq!(
                t["model_max_length"], c["max_position_embeddings"],
                "{name}"
            );
        }
        // eval on the validation file reproduces the best evaluation.
        let metrics = f.root.join(format!("{name}-eval.json"));
        let (_, m) = eval_json(&run, &f.root.join(data.1), &metrics, &[]);
        assert_eq!(m[metric].as_f64().unwrap(), best, "{name}");
    }
}

/// GLUE's own files: a `.tsv` (no quoting) whose columns are `sentence1`, `sentence2` and
/// `label`, named by `data.*_column`; `lantern eval` and `predict` read the same columns from
/// the run.
#[test]
fn glue_tsv_files_with_their_own_column_names() {
    let f = Fixture::new();
    let (mut train, mut val) = (String::new(), String::new());
    let head = "index\tsentence1\tsentence2\tlabel\n";
    for i in 0..30 {
        for (words, label) in [(&ANIMALS, 0), (&MACHINES, 1)] {
            // A quote at the start of a field is text in GLUE's TSVs, not a quoted field.
            let line = format!(
                "{i}\t\"{}\tsaid {}\t{label}\n",
                sentence(words, i),
                VERBS[i % 4]
            );
            if i < 24 {
                train += &line;
            } else {
                val += &line;
            }
        }
    }
    std::fs::write(f.root.join("train.tsv"), format!("{head}{train}")).unwrap();
    std::fs::write(f.root.join("dev.tsv"), format!("{head}{val}")).unwrap();
    let columns = "text_column = \"sentence1\"\ntext_pair_column = \"sentence2\"";
    let cfg = f.config_on(
        "glue",
        ("train.tsv", "dev.tsv", columns),
        "epochs = 12\nlr = 3e-3",
        "metric = \"matthews_correlation\"",
    );
    lantern_ok(&["finetune", "--config", p(&cfg), "--quiet"]);
    let run = f.root.join("glue");
    let best = best_of(&run, "matthews_correlation");
    assert!(best >= 0.8, "MCC {best}");
    let metrics = f.root.join("glue-eval.json");
    let dev = f.root.join("dev.tsv");
    let (_, m) = eval_json(&run, &dev, &metrics, &[]);
    assert_eq!(m["matthews_correlation"].as_f64().unwrap(), best);
    let preds = f.root.join("glue-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&dev),
        "--out",
        p(&preds),
    ]);
    assert_eq!(std::fs::read_to_string(&preds).unwrap().lines().count(), 12);
    // Without the column keys the header is named in the error, with the key to set.
    let plain = f.config_on("glue-plain", ("train.tsv", "dev.tsv", ""), "epochs = 1", "");
    let e = lantern_err(&["finetune", "--config", p(&plain), "--quiet"]);
    assert!(
        e.contains("train.tsv") && e.contains("data.text_column"),
        "{e}"
    );
}

/// Multiple choice (run_swag): training data in SWAG's layout (JSONL), validation in the
/// generic one (CSV: `text`, `choice0` …, `label`). Each example's context is about animals or
/// machines and the right choice is the one sentence of the same kind among three, so a choice
/// can only be scored against its context.
#[test]
fn multiple_choice_learns_from_swag_and_generic_files_evaluates_and_predicts() {
    let f = Fixture::new();
    let mut train = String::new();
    let mut val = "text,choice0,choice1,choice2,label\n".to_string();
    for i in 0..96 {
        let (same, other) = match i % 2 {
            0 => (&ANIMALS, &MACHINES),
            _ => (&MACHINES, &ANIMALS),
        };
        let right = (i / 2) % 3;
        let choices: Vec<String> = (0..3)
            .map(|k| match k == right {
                true => sentence(same, i + 1),
                false => sentence(other, i + 2 + k),
            })
            .collect();
        let context = sentence(same, i);
        if i < 72 {
            // SWAG: choice k is `sent2 + " " + ending{k}`.
            let endings: Vec<String> = choices
                .iter()
                .map(|c| c.strip_prefix("the ").unwrap().to_string())
                .collect();
            train += &serde_json::json!({
                "sent1": context, "sent2": "the", "ending0": endings[0],
                "ending1": endings[1], "ending2": endings[2], "label": right,
            })
            .to_string();
            train.push('\n');
        } else {
            val += &format!(
                "{context},{},{},{},{right}\n",
                choices[0], choices[1], choices[2]
            );
        }
    }
    std::fs::write(f.root.join("mc_train.jsonl"), train).unwrap();
    std::fs::write(f.root.join("mc_val.csv"), &val).unwrap();
    let data = (
        "mc_train.jsonl",
        "mc_val.csv",
        "problem_type = \"multiple_choice\"",
    );
    let model = format!(
        "tokenizer = {:?}\nhidden_size = 32\nnum_hidden_layers = 2\n\
         num_attention_heads = 2\nintermediate_size = 64",
        f.root.join("tokenizer.json")
    );
    let cfg = f.config_with(
        "mc",
        (&model, 24),
        data,
        "epochs = 40\nlr = 3e-3",
        "metric = \"accuracy\"",
    );
    let out = lantern_ok(&["finetune", "--config", p(&cfg)]);
    assert!(
        out.contains("multiple choice of 3: 72 train / 24 validation"),
        "{out}"
    );
    let run = f.root.join("mc");
    // Chance is 1/3. 20 or 21 of the 24 right, as the machine's float rounding falls: 21 on
    // the machines this was written on, 20 on a 2-core EPYC with AVX2 only (the same commit).
    let best = best_of(&run, "accuracy");
    assert!(best >= 0.8, "best accuracy {best}\n{out}");
    let c = exported_config(&run);
    assert_eq!(c["architectures"][0], "BertForMultipleChoice");
    assert!(
        c.get("id2label").is_none() && c.get("problem_type").is_none(),
        "{c}"
    );
    let names = common::read_f32_tensors(&run.join("model/model.safetensors"));
    let classifier = names
        .iter()
        .find(|(n, _)| n == "classifier.weight")
        .unwrap();
    assert_eq!(classifier.1.len(), 32, "one score per choice: (1, hidden)");
    // eval reproduces the best evaluation; predict gives each example its choice.
    let dev = f.root.join("mc_val.csv");
    let metrics = f.root.join("mc-eval.json");
    let (_, m) = eval_json(&run, &dev, &metrics, &[]);
    assert_eq!(m["accuracy"].as_f64().unwrap(), best);
    assert_eq!(m["choices"], 3);
    let preds = f.root.join("mc-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&dev),
        "--out",
        p(&preds),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
    let (mut right, mut n) = (0, 0);
    for (line, want) in text.lines().zip(val.lines().skip(1)) {
        let r: Value = serde_json::from_str(line).unwrap();
        let probs: Vec<f64> = r["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 3);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        let label = r["label"].as_u64().unwrap();
        right += u64::from(want.ends_with(&format!(",{label}")));
        n += 1;
    }
    assert_eq!(n, 24);
    assert_eq!(right as f64 / n as f64, best, "predict agrees with eval");
    // Two ranks train as one process with twice the batch (the choices of an example stay on
    // one rank; evaluation splits the examples), and activation checkpointing changes nothing
    // but the memory.
    let short = |name: &str, ranks: usize, batch: usize, extra: &str| -> PathBuf {
        let cfg = f.config_with(
            name,
            (&model, 24),
            data,
            &format!("epochs = 2\nlr = 2e-3\n{extra}"),
            "metric = \"accuracy\"",
        );
        let mut args = vec![];
        if ranks == 2 {
            args.extend(["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"]);
        }
        let batch = format!("train.batch_size={batch}");
        args.extend(["finetune", "--config", p(&cfg), "--quiet", "--set", &batch]);
        args.extend(NO_DROPOUT);
        lantern_ok(&args);
        f.root.join(name)
    };
    let one = short("mc-1", 1, 8, "");
    for other in [
        short("mc-2", 2, 4, ""),
        short("mc-ckpt", 1, 8, "activation_checkpointing = true"),
    ] {
        let (a, b) = (train_losses(&other), train_losses(&one));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs(),
                "{}: loss {x} vs {y}",
                other.display()
            );
        }
        let (ea, eb) = (metrics_of(&other, "eval"), metrics_of(&one, "eval"));
        assert_eq!(ea.len(), 2);
        for (x, y) in ea.iter().zip(&eb) {
            assert!(x["correct"].is_u64(), "{x}");
            assert_eq!(x["correct"], y["correct"], "{}", other.display());
            assert_eq!(x["examples"], 24);
            let (lx, ly) = (
                x["eval_loss"].as_f64().unwrap(),
                y["eval_loss"].as_f64().unwrap(),
            );
            assert!((lx - ly).abs() <= 1e-5 * ly, "{lx} vs {ly}");
        }
    }
    // Bad input: a label past the choices, and class names, which multiple choice has none of.
    std::fs::write(
        f.root.join("mc_bad.csv"),
        val.replacen(",0\n", ",3\n", 1).replacen(",1\n", ",3\n", 1),
    )
    .unwrap();
    let bad = f.config_with(
        "mc-bad",
        (&model, 24),
        ("mc_train.jsonl", "mc_bad.csv", data.2),
        "epochs = 1",
        "",
    );
    let e = lantern_err(&["finetune", "--config", p(&bad), "--quiet"]);
    assert!(
        e.contains("mc_bad.csv") && e.contains("label 3 is not a choice"),
        "{e}"
    );
    let named = f.config_with(
        "mc-named",
        (&model, 24),
        (
            "mc_train.jsonl",
            "mc_val.csv",
            &format!("{}\nlabels = [\"a\", \"b\"]", data.2),
        ),
        "epochs = 1",
        "",
    );
    let e = lantern_err(&["finetune", "--config", p(&named), "--quiet"]);
    assert!(
        e.contains("data.labels") && e.contains("multiple_choice"),
        "{e}"
    );
}

/// A GPT-2 pretrained with `lantern train` on real text (fortunes), fine-tuned from its run
/// folder to classify sentences (`GPT2ForSequenceClassification`): it learns, pads with the
/// end-of-text id as transformers users do, exports as transformers' class, evaluates and
/// predicts from the export, resumes byte-identical, recomputes activations to the same
/// losses, trains in bf16; it also learns to tag words (`GPT2ForTokenClassification`), and
/// refuses what GPT-2 has no head or setting for.
#[test]
fn a_pretrained_gpt2_fine_tunes_for_sequence_and_token_classification() {
    let f = Fixture::new();
    let gpt_run = f.root.join("gpt");
    common::train_ok(&common::tiny_config(&f.root, &gpt_run, ""), &[]);
    let model = format!("init_from = {gpt_run:?}");
    let plain = ("train.jsonl", "val.jsonl", "");
    // The whole context (n_positions 32): a folder without our state is read with it too, and
    // the pooled last token is the same only if no text was cut.
    let cls = |name: &str, train: &str| f.config_with(name, (&model, 32), plain, train, PATIENT);
    const GPT_RUN: &str = "epochs = 10\nlr = 3e-3\neval_every_steps = 4";
    let out = lantern_ok(&["finetune", "--config", p(&cls("gpt-cls", GPT_RUN))]);
    assert!(
        out.contains("newly initialised") && out.contains("score.weight"),
        "{out}"
    );
    let run = f.root.join("gpt-cls");
    let best = best_of(&run, "accuracy");
    assert!(best >= 0.9, "best accuracy {best}\n{out}");

    // transformers' class and names; the padding id is the tokenizer's end-of-text.
    let c = exported_config(&run);
    assert_eq!(c["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(c["model_type"], "gpt2");
    assert_eq!(c["id2label"]["0"], "animal");
    assert_eq!(c["problem_type"], "single_label_classification");
    let tok = lantern_data::tokenizer::load_tokenizer(&run.join("model/tokenizer.json")).unwrap();
    let eot = tok.token_to_id(lantern_data::tokenizer::EOT).unwrap();
    assert_eq!(c["pad_token_id"], eot);
    // transformers' tokenizer settings: GPT2Tokenizer, the end-of-text token as every special
    // token, padding included (the pretraining checkpoint's has no padding), the context.
    let eot_s = lantern_data::tokenizer::EOT;
    let lm_tokens = serde_json::json!({
        "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": false, "bos_token": eot_s,
        "eos_token": eot_s, "unk_token": eot_s, "model_max_length": 32,
    });
    let pretrained = gpt_run.join("checkpoints/step-00000020");
    assert_eq!(tokenizer_config(&pretrained), lm_tokens);
    let mut cls_tokens = lm_tokens.clone();
    cls_tokens["pad_token"] = eot_s.into();
    assert_eq!(tokenizer_config(&run.join("model")), cls_tokens);
    let names = common::read_f32_tensors(&run.join("model/model.safetensors"));
    assert!(names.iter().any(|(n, _)| n == "score.weight"));
    for (n, _) in &names {
        assert!(n.starts_with("transformer.") || n == "score.weight", "{n}");
    }

    // eval reproduces the best evaluation; predict names a label per sentence.
    let metrics = f.root.join("gpt-eval.json");
    let (_, m) = eval_json(&run, &f.root.join("val.jsonl"), &metrics, &[]);
    assert_eq!(m["accuracy"].as_f64().unwrap(), best);
    let preds = f.root.join("gpt-preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        p(&run),
        "--input",
        p(&f.root.join("val.jsonl")),
        "--out",
        p(&preds),
    ]);
    let lines = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(lines.lines().count(), 12);
    assert!(lines
        .lines()
        .all(|l| l.contains("\"animal\"") || l.contains("\"machine\"")));
    // `lantern export` of the best checkpoint writes the same model.
    let hf = f.root.join("gpt-hf");
    lantern_ok(&["export", "--model", p(&run.join("best")), "--out", p(&hf)]);
    assert_eq!(
        common::read_f32_tensors(&hf.join("model.safetensors")),
        names
    );
    assert_eq!(
        std::fs::read(hf.join("tokenizer_config.json")).unwrap(),
        std::fs::read(run.join("model/tokenizer_config.json")).unwrap()
    );

    // A transformers folder saved without a padding id pads with the end-of-text id, as its
    // trainer did: the same evaluation.
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    c["pad_token_id"] = Value::Null;
    std::fs::write(hf.join("config.json"), c.to_string()).unwrap();
    let (_, m) = eval_json(&hf, &f.root.join("val.jsonl"), &metrics, &[]);
    assert_eq!(m["accuracy"].as_f64().unwrap(), best);

    // A classifier is not a language model to sample from.
    let e = lantern_err(&["generate", "--model", p(&hf), "--prompt", "the"]);
    assert!(
        e.contains("GPT2ForSequenceClassification") && e.contains("predict"),
        "{e}"
    );

    // Cut short and resumed: the same run, byte for byte.
    let cut = cls("gpt-cut", GPT_RUN);
    finetune_quiet(&cut, &["--stop-after", "7"]);
    finetune_quiet(&cut, &["--resume"]);
    assert_same_run(&run, &f.root.join("gpt-cut"));

    // Activation checkpointing recomputes the blocks: the same losses.
    let short = "max_steps = 4\nlr = 3e-3";
    finetune_quiet(&cls("gpt-keep", short), &[]);
    let ac = format!("{short}\nactivation_checkpointing = true");
    finetune_quiet(&cls("gpt-recompute", &ac), &[]);
    let (a, b) = (
        train_losses(&f.root.join("gpt-keep")),
        train_losses(&f.root.join("gpt-recompute")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{a:?} vs {b:?}");
    }
    // bf16 working weights (fp32 masters): the losses of fp32 to bf16's precision.
    finetune_quiet(
        &cls("gpt-bf16", &format!("{short}\nprecision = \"bf16\"")),
        &[],
    );
    let c = train_losses(&f.root.join("gpt-bf16"));
    assert_eq!(a.len(), c.len());
    for (x, y) in a.iter().zip(&c) {
        assert!((x - y).abs() <= 0.02 * x.abs(), "{a:?} vs bf16 {c:?}");
    }

    // Token classification: GPT2ForTokenClassification, words tokenised with a prefix space.
    // A causal model tags a word from the words before it: "old" is B-ANI or B-MAC by the
    // word after it, which it cannot see, so the entities starting with it are half guesses.
    write_tagged(&f.root);
    let tagged = (
        "tok_train.jsonl",
        "tok_val.conll",
        "problem_type = \"token_classification\"",
    );
    let tag_cfg = f.config_with(
        "gpt-tok",
        (&model, 32),
        tagged,
        "epochs = 30\nlr = 3e-3",
        "metric = \"f1\"",
    );
    let out = lantern_ok(&["finetune", "--config", p(&tag_cfg)]);
    assert!(
        out.contains("classifier.weight") && out.contains("classifier.bias"),
        "{out}"
    );
    let tag_run = f.root.join("gpt-tok");
    let best_f1 = best_of(&tag_run, "f1");
    assert!(best_f1 >= 0.8, "best entity F1 {best_f1}\n{out}");
    let c = exported_config(&tag_run);
    assert_eq!(c["architectures"][0], "GPT2ForTokenClassification");
    assert_eq!(c["id2label"]["0"], "B-ANI");
    let metrics = f.root.join("gpt-tok-eval.json");
    let (_, m) = eval_json(&tag_run, &f.root.join("tok_val.conll"), &metrics, &[]);
    assert_eq!(m["f1"].as_f64().unwrap(), best_f1);

    // GPT-2 has sequence and token classifiers only, and one dropout rate for the transformer.
    let qa = f.config_with(
        "gpt-qa",
        (&model, 16),
        (
            "train.jsonl",
            "val.jsonl",
            "problem_type = \"question_answering\"\ndoc_stride = 4",
        ),
        short,
        "",
    );
    let e = lantern_err(&["finetune", "--config", p(&qa), "--quiet"]);
    assert!(
        e.contains("config.json") && e.contains("token classification only"),
        "{e}"
    );
    let model_drop = format!("{model}\nclassifier_dropout = 0.2");
    let dropped = f.config_with("gpt-drop", (&model_drop, 16), plain, short, "");
    let e = lantern_err(&["finetune", "--config", p(&dropped), "--quiet"]);
    assert!(
        e.contains("model.classifier_dropout") && e.contains("hidden_dropout_prob"),
        "{e}"
    );
}

/// A Llama pretrained with `lantern train` on real text (fortunes), fine-tuned from its run
/// folder: `LlamaForSequenceClassification` learns the classes, pads with the end-of-text id,
/// exports as transformers' class and names (no `lm_head`), evaluates from the export as it did
/// in training, recomputes activations to the same losses; `LlamaForTokenClassification` learns
/// the tags; the settings Llama has no place for are refused by name.
#[test]
fn a_pretrained_llama_fine_tunes_for_sequence_and_token_classification() {
    let f = Fixture::new();
    let llama_run = f.root.join("llama");
    let pretrain = f.root.join("llama-pretrain.toml");
    std::fs::write(
        &pretrain,
        format!(
            "[model]\npreset = \"llama-tiny\"\nn_layer = 2\nn_embd = 32\nn_head = 4\n\
             n_kv_head = 2\nintermediate_size = 64\nn_positions = 32\n\
             [data]\ndir = {:?}\n\
             [train]\nbatch_size = 4\nseq_len = 32\nmax_steps = 40\nlr = 1e-2\nwarmup_steps = 5\n\
             eval_every = 20\neval_batches = 2\nlog_every = 10\n\
             [checkpoint]\nevery = 20\nkeep = 5\n[run]\ndir = {:?}\n",
            common::prepared_data(),
            llama_run
        ),
    )
    .unwrap();
    common::train_ok(&pretrain, &[]);
    let model = format!("init_from = {llama_run:?}");
    let plain = ("train.jsonl", "val.jsonl", "");
    let cls = |name: &str, train: &str| f.config_with(name, (&model, 32), plain, train, PATIENT);
    let out = lantern_ok(&[
        "finetune",
        "--config",
        p(&cls(
            "llama-cls",
            "epochs = 10\nlr = 3e-3\neval_every_steps = 4",
        )),
    ]);
    assert!(
        out.contains("newly initialised")
            && out.contains("score.weight")
            && out.contains("unused tensors")
            && out.contains("lm_head.weight"),
        "{out}"
    );
    let run = f.root.join("llama-cls");
    let best = best_of(&run, "accuracy");
    assert!(best >= 0.9, "best accuracy {best}\n{out}");

    let c = exported_config(&run);
    assert_eq!(c["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["problem_type"], "single_label_classification");
    let tok = lantern_data::tokenizer::load_tokenizer(&run.join("model/tokenizer.json")).unwrap();
    let eot = tok.token_to_id(lantern_data::tokenizer::EOT).unwrap();
    assert_eq!(c["pad_token_id"], eot);
    // transformers' tokenizer settings: the generic class (LlamaTokenizer would rebuild a
    // SentencePiece pipeline), the end-of-text token as BOS, EOS and padding, the context.
    let eot_s = lantern_data::tokenizer::EOT;
    let lm_tokens = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eot_s, "eos_token": eot_s,
        "model_max_length": 32,
    });
    let pretrained = llama_run.join("checkpoints/step-00000040");
    assert_eq!(tokenizer_config(&pretrained), lm_tokens);
    let mut cls_tokens = lm_tokens.clone();
    cls_tokens["pad_token"] = eot_s.into();
    assert_eq!(tokenizer_config(&run.join("model")), cls_tokens);
    let names = common::read_f32_tensors(&run.join("model/model.safetensors"));
    assert!(names.iter().any(|(n, _)| n == "score.weight"));
    for (n, _) in &names {
        assert!(n.starts_with("model.") || n == "score.weight", "{n}");
    }
    // `lantern export` of the best checkpoint writes the same model.
    let hf = f.root.join("llama-hf");
    lantern_ok(&["export", "--model", p(&run.join("best")), "--out", p(&hf)]);
    assert_eq!(
        common::read_f32_tensors(&hf.join("model.safetensors")),
        names
    );
    assert_eq!(
        std::fs::read(hf.join("tokenizer_config.json")).unwrap(),
        std::fs::read(run.join("model/tokenizer_config.json")).unwrap()
    );
    // eval of the export reproduces the best evaluation.
    let metrics = f.root.join("llama-eval.json");
    let (_, m) = eval_json(&run.join("model"), &f.root.join("val.jsonl"), &metrics, &[]);
    assert_eq!(m["accuracy"].as_f64().unwrap(), best);
    // A classifier is not a language model to sample from.
    let e = lantern_err(&[
        "generate",
        "--model",
        p(&run.join("model")),
        "--prompt",
        "the",
    ]);
    assert!(
        e.contains("LlamaForSequenceClassification") && e.contains("predict"),
        "{e}"
    );

    // Activation checkpointing recomputes the blocks: the same losses.
    let short = "max_steps = 4\nlr = 3e-3";
    finetune_quiet(&cls("llama-keep", short), &[]);
    let ac = format!("{short}\nactivation_checkpointing = true");
    finetune_quiet(&cls("llama-recompute", &ac), &[]);
    let (a, b) = (
        train_losses(&f.root.join("llama-keep")),
        train_losses(&f.root.join("llama-recompute")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{a:?} vs {b:?}");
    }

    // Token classification: LlamaForTokenClassification, the head `score` with a bias.
    write_tagged(&f.root);
    let tagged = (
        "tok_train.jsonl",
        "tok_val.conll",
        "problem_type = \"token_classification\"",
    );
    let tag_cfg = f.config_with(
        "llama-tok",
        (&model, 32),
        tagged,
        "epochs = 30\nlr = 3e-3",
        "metric = \"f1\"",
    );
    let out = lantern_ok(&["finetune", "--config", p(&tag_cfg)]);
    assert!(
        out.contains("score.weight") && out.contains("score.bias"),
        "{out}"
    );
    let tag_run = f.root.join("llama-tok");
    let best_f1 = best_of(&tag_run, "f1");
    assert!(best_f1 >= 0.8, "best entity F1 {best_f1}\n{out}");
    let c = exported_config(&tag_run);
    assert_eq!(c["architectures"][0], "LlamaForTokenClassification");
    assert_eq!(c["classifier_dropout"], Value::Null);
    let metrics = f.root.join("llama-tok-eval.json");
    let (_, m) = eval_json(&tag_run, &f.root.join("tok_val.conll"), &metrics, &[]);
    assert_eq!(m["f1"].as_f64().unwrap(), best_f1);

    // Llama has no dropout in its transformer, and its sequence classifier none of its own.
    for (key, wants) in [
        ("hidden_dropout_prob = 0.1", "model.hidden_dropout_prob"),
        ("attention_probs_dropout_prob = 0.1", "no dropout"),
        ("classifier_dropout = 0.2", "model.classifier_dropout"),
    ] {
        let m = format!("{model}\n{key}");
        let cfg = f.config_with("llama-drop", (&m, 16), plain, short, "");
        let e = lantern_err(&["finetune", "--config", p(&cfg), "--quiet"]);
        assert!(e.contains(wants) && e.contains("Llama"), "{key}: {e}");
    }
}

/// LoRA on a GPT-2 pretrained by `lantern train`: only the adapters and the head train (every
/// other pretrained tensor keeps its bits), the model folder holds the merged weights
/// W0 + s·(B·A)ᵀ (GPT-2's `Conv1D`) and peft's adapter files, `eval` and `export` read it as
/// any classifier, a run cut short resumes byte-identical in fp16, and bad settings are
/// refused naming the key.
#[test]
fn lora_fine_tunes_a_pretrained_gpt2_and_resumes_byte_identical() {
    let f = Fixture::new();
    let gpt_run = f.root.join("gpt");
    common::train_ok(&common::tiny_config(&f.root, &gpt_run, ""), &[]);
    let model = format!("init_from = {gpt_run:?}");
    let plain = ("train.jsonl", "val.jsonl", "");
    let lora = "[lora]\nr = 4\nalpha = 8\ntarget_modules = [\"c_attn\", \"c_fc\"]";
    let cfg = |name: &str, train: &str| {
        f.config_with(
            name,
            (&model, 32),
            plain,
            train,
            &format!("{PATIENT}\n{lora}"),
        )
    };
    let learn = cfg("lora", "epochs = 10\nlr = 1e-2\neval_every_steps = 4");
    let out = lantern_ok(&["finetune", "--config", p(&learn)]);
    // r·(in + out) per adapted layer: c_attn 4·(32 + 96), c_fc 4·(32 + 128), two layers; the
    // head 2·32.
    let trained = 2 * (4 * (32 + 96) + 4 * (32 + 128)) + 2 * 32;
    assert!(
        out.contains("LoRA r=4 alpha=8 (scale 2) on c_attn, c_fc")
            && out.contains(&format!("{trained} of ")),
        "{out}"
    );
    let run = f.root.join("lora");
    let best = best_of(&run, "accuracy");
    assert!(best >= 0.9, "best accuracy {best}\n{out}");

    // peft's files: its names, its settings, the pretrained folder as the base.
    let adapter = run.join("model/adapter");
    let c: Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    let pretrained = gpt_run.join("checkpoints/step-00000040");
    assert_eq!(c["peft_type"], "LORA");
    assert_eq!(c["task_type"], "SEQ_CLS");
    assert_eq!(c["target_modules"], serde_json::json!(["c_attn", "c_fc"]));
    assert_eq!(c["fan_in_fan_out"], true);
    assert_eq!(c["modules_to_save"], serde_json::json!(["score"]));
    assert_eq!(
        (c["r"].as_u64(), c["lora_alpha"].as_f64()),
        (Some(4), Some(8.0))
    );
    assert_eq!(c["base_model_name_or_path"], p(&pretrained));
    let adapters: std::collections::BTreeMap<String, Vec<f32>> =
        common::read_f32_tensors(&adapter.join("adapter_model.safetensors"))
            .into_iter()
            .collect();
    assert_eq!(adapters.len(), 2 * 2 * 2 + 1, "{:?}", adapters.keys());
    assert!(adapters.contains_key("base_model.model.score.weight"));

    // The merged model: the frozen tensors are the pretrained ones to the bit, each adapted
    // weight is W0 + 2·(B·A)ᵀ.
    let base: std::collections::BTreeMap<String, Vec<f32>> =
        common::read_f32_tensors(&pretrained.join("model.safetensors"))
            .into_iter()
            .collect();
    let merged = common::read_f32_tensors(&run.join("model/model.safetensors"));
    let adapted =
        common::assert_lora_merge(&merged, &base, &adapters, (4, 2.0, true), &["score.weight"]);
    assert_eq!(adapted.len(), 2 * 2, "{adapted:?}");

    // The merged model evaluates as any classifier; export carries the adapter along.
    let metrics = f.root.join("lora-eval.json");
    let (_, m) = eval_json(&run, &f.root.join("val.jsonl"), &metrics, &[]);
    assert_eq!(m["accuracy"].as_f64().unwrap(), best);
    let hf = f.root.join("lora-hf");
    lantern_ok(&["export", "--model", p(&run.join("best")), "--out", p(&hf)]);
    for file in [
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ] {
        assert_eq!(
            std::fs::read(hf.join(file)).unwrap(),
            std::fs::read(run.join("model").join(file)).unwrap(),
            "{file}"
        );
    }

    // Started from the exported (best) adapter (`lora.adapter`: its A, B and head) with a
    // learning rate of 0, a run evaluates as the best evaluation did.
    let again = f.config_with(
        "again",
        (&model, 32),
        plain,
        "epochs = 1\nlr = 0.0\neval_every_steps = 4",
        &format!(
            "{PATIENT}\n{lora}\nadapter = {:?}",
            p(&run.join("model/adapter"))
        ),
    );
    finetune_quiet(&again, &[]);
    assert_eq!(best_of(&f.root.join("again"), "accuracy"), best);

    // Cut short and resumed, in fp16 (the working copy and the loss scale), as one run.
    const RUN: &str = "epochs = 2\nlr = 1e-2\neval_every_steps = 4\nprecision = \"fp16\"";
    finetune_quiet(&cfg("whole", RUN), &[]);
    let cut = cfg("cut", RUN);
    finetune_quiet(&cut, &["--stop-after", "5"]);
    finetune_quiet(&cut, &["--resume"]);
    assert_same_run(&f.root.join("whole"), &f.root.join("cut"));
    // A resume over another pretrained model (the checkpoint holds only the adapters and the
    // head), with other LoRA settings, or without LoRA, is refused.
    let other = gpt_run.join("checkpoints/step-00000020");
    let e = resume_err(&cut, &format!("model.init_from={:?}", p(&other)));
    assert!(e.contains("another pretrained model"), "{e}");
    let e = resume_err(&cut, "lora.r=8");
    assert!(
        e.contains("finetune_state.json") && e.contains("LoRA"),
        "{e}"
    );
    let e = lantern_err(&[
        "finetune",
        "--config",
        p(&f.config_with("full", (&model, 32), plain, RUN, PATIENT)),
        "--quiet",
        "--set",
        &format!("run.dir={}", p(&f.root.join("cut"))),
        "--resume",
    ]);
    assert!(e.contains("full training (no [lora])"), "{e}");

    // Settings LoRA cannot take, each named.
    for (set, want) in [
        ("lora.dropout=1.0", "lora.dropout"),
        ("lora.r=0", "lora.r"),
        ("lora.target_modules=[\"c_atn\"]", "c_attn, c_fc, c_proj"),
        ("lora.target_modules=[\"wte\"]", "not a linear layer"),
        ("lora.target_modules=[\"score\"]", "task head"),
    ] {
        let e = lantern_err(&[
            "finetune",
            "--config",
            p(&cfg("bad", RUN)),
            "--quiet",
            "--set",
            set,
        ]);
        assert!(e.contains(want), "{set}: {e}");
    }
    let fresh = f.config("fresh", "epochs = 1", &format!("{PATIENT}\n{lora}"));
    let e = lantern_err(&["finetune", "--config", p(&fresh), "--quiet"]);
    assert!(e.contains("model.init_from"), "{e}");
}

/// LoRA with a token classifier (peft's TOKEN_CLS; the pretrained folder a tagger trained in
/// full for one epoch, its head trained on in full), and with activation checkpointing: the
/// same steps as without.
#[test]
fn lora_trains_a_token_classifier_and_recomputes_the_same_steps() {
    let f = Fixture::new();
    write_tagged(&f.root);
    let data = TAGGED;
    let base = f.config_on("base", data, "epochs = 1\nlr = 3e-3", "metric = \"f1\"");
    finetune_quiet(&base, &NO_DROPOUT);
    let model = format!("init_from = {:?}", f.root.join("base/model"));
    let es = "metric = \"f1\"\n[lora]\nr = 4\nalpha = 8";
    let cfg = |name: &str, train: &str| f.config_with(name, (&model, 16), data, train, es);
    finetune_quiet(&cfg("tok", "epochs = 15\nlr = 1e-2"), &NO_DROPOUT);
    let run = f.root.join("tok");
    let f1 = best_of(&run, "f1");
    assert!(f1 >= 0.8, "best entity F1 {f1}");
    assert_eq!(
        exported_config(&run)["architectures"][0],
        "BertForTokenClassification"
    );
    let c: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("model/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(c["task_type"], "TOKEN_CLS");
    assert_eq!(c["target_modules"], serde_json::json!(["query", "value"]));

    let plain = cfg("tok-plain", "epochs = 2\nlr = 1e-2");
    let recomputed = cfg(
        "tok-rc",
        "epochs = 2\nlr = 1e-2\nactivation_checkpointing = true",
    );
    finetune_quiet(&plain, &NO_DROPOUT);
    finetune_quiet(&recomputed, &NO_DROPOUT);
    let (a, b) = (
        train_losses(&f.root.join("tok-plain")),
        train_losses(&f.root.join("tok-rc")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * y.abs(), "loss {x} recomputed {y}");
    }
}

/// A Parquet file `datasets` wrote (scripts/make_record_parquet_fixtures.py) trains with the
/// class names its `ClassLabel` features declare, in their order, as the model's labels
/// (conll2003-style `ner_tags`: `O`, `B-PER`, `I-PER`), and its errors name the row.
#[test]
fn parquet_class_labels_become_the_models_labels() {
    let f = Fixture::new();
    let golden = common::workspace_root().join("tests/golden/parquet/records");
    for name in ["tokens.parquet", "classification.parquet"] {
        std::fs::copy(golden.join(name), f.root.join(name)).unwrap();
    }
    let data = (
        "tokens.parquet",
        "tokens.parquet",
        "problem_type = \"token_classification\"",
    );
    let cfg = f.config_on("pq-tokens", data, "epochs = 1", "");
    finetune_quiet(&cfg, &NO_DROPOUT);
    let config = exported_config(&f.root.join("pq-tokens"));
    assert_eq!(
        config["id2label"],
        serde_json::json!({"0": "O", "1": "B-PER", "2": "I-PER"}),
        "{config}"
    );
    // ClassLabel's -1 (no label) in a training file.
    std::fs::write(
        f.root.join("named.jsonl"),
        "{\"text\": \"the cat\", \"label\": \"negative\"}\n{\"text\": \"a car\", \"label\": \"positive\"}\n",
    )
    .unwrap();
    let data = ("classification.parquet", "named.jsonl", "");
    let cfg = f.config_on("pq-cls", data, "epochs = 1", "");
    let e = lantern_err(&["finetune", "--config", p(&cfg)]);
    assert!(
        e.contains("classification.parquet: row 4: training examples need a \"label\""),
        "{e}"
    );
}

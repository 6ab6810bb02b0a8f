//! Reward modeling through the binary (`lantern finetune` with `data.problem_type =
//! "reward_modeling"` on preference records, TRL's `RewardTrainer`): it learns, reports
//! accuracy and margin, exports a one-output sequence classifier that `lantern predict` scores
//! texts with, resumes byte for byte, and bad input fails naming the file, line or key.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A reward-model config on the golden's text preferences (10 train / 5 validation kept).
fn reward_config(dir: &Path, run: &Path, layout: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
init_from = "{model}"
tokenizer = "{tokenizer}"
[data]
train = "{data}/train.jsonl"
validation = "{data}/validation.jsonl"
problem_type = "reward_modeling"
max_length = 64
{extra}
[train]
device = "cpu"
batch_size = 2
grad_accum = 2
epochs = 3
lr = 3e-2
eval_every_steps = 2
seed = 5
[early_stopping]
metric = "accuracy"
[run]
dir = "{run}"
"#,
        model = s(&golden("reward/model")),
        tokenizer = s(&golden("sft/model/tokenizer.json")),
        data = s(&golden(&format!("reward/{layout}"))),
        run = s(run),
    );
    let path = dir.join(format!(
        "{}.toml",
        run.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_reward_model_learns_exports_and_scores_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("rm");
    let cfg = reward_config(tmp.path(), &run, "text-margin", "");
    let out = lantern_ok(&["finetune", "--config", &s(&cfg)]);
    assert!(
        out.contains("reward model: 10 train / 5 validation preferences"),
        "{out}"
    );
    let evals = metrics_of(&run, "eval");
    assert!(!evals.is_empty());
    for key in ["eval_loss", "accuracy", "margin", "mean_reward"] {
        assert!(evals.iter().all(|r| r[key].is_f64()), "{key}: {evals:?}");
    }
    // Three steps an epoch: the last epoch's mean training loss is below the first's.
    let loss = metric_values(&run, "train", "loss");
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    assert!(mean(&loss[loss.len() - 3..]) < mean(&loss[..3]), "{loss:?}");
    // The export: a LlamaForSequenceClassification with one output and no problem_type
    // (transformers reads one label as a score), as TRL saves a reward model.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"][0], "LlamaForSequenceClassification",
        "{config}"
    );
    assert_eq!(config["id2label"].as_object().unwrap().len(), 1, "{config}");
    assert!(
        config.get("problem_type").is_none_or(|p| p.is_null()),
        "{config}"
    );
    // `lantern eval` on preference records reproduces the best evaluation.
    eval_reproduces_best(&run, &golden("reward/text-margin/validation.jsonl"));
    // `lantern predict` reads it as one number per text: the reward.
    let texts = tmp.path().join("texts.jsonl");
    std::fs::write(
        &texts,
        "{\"text\": \"Who said this? A fortune.\"}\n{\"text\": \"Another one\"}\n",
    )
    .unwrap();
    let preds = tmp.path().join("preds.jsonl");
    lantern_ok(&[
        "predict",
        "--checkpoint",
        &s(&run.join("model")),
        "--input",
        &s(&texts),
        "--out",
        &s(&preds),
    ]);
    let preds = std::fs::read_to_string(&preds).unwrap();
    let scores: Vec<f64> = preds
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["score"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(scores.len(), 2, "{preds}");
    assert!(scores[0] != scores[1], "{scores:?}");
}

/// `lantern eval` of a reward-model run on its validation file `val` reports the figures of
/// its best evaluation (by accuracy), the loss's centering term included.
fn eval_reproduces_best(run: &Path, val: &Path) {
    let report = run.with_extension("eval.json");
    let out = lantern_ok(&[
        "eval",
        "--checkpoint",
        &s(run),
        "--data",
        &s(val),
        "--out",
        &s(&report),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let best = best_eval(run, "accuracy");
    for key in ["eval_loss", "accuracy", "margin", "mean_reward"] {
        let (x, y) = (report[key].as_f64().unwrap(), best[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6, "{key}: {x} vs {y}\n{out}");
    }
}

#[test]
fn a_reward_model_run_resumes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    let extra = "center_rewards_coefficient = 0.01";
    let cfg = reward_config(tmp.path(), &whole, "conversational", extra);
    lantern_ok(&["finetune", "--config", &s(&cfg), "--quiet"]);
    let cfg = reward_config(tmp.path(), &cut, "conversational", extra);
    lantern_ok(&[
        "finetune",
        "--config",
        &s(&cfg),
        "--quiet",
        "--stop-after",
        "3",
    ]);
    lantern_ok(&["finetune", "--config", &s(&cfg), "--quiet", "--resume"]);
    assert_eq!(metrics(&whole), metrics(&cut));
    let model = |r: &Path| std::fs::read(r.join("model/model.safetensors")).unwrap();
    assert!(model(&whole) == model(&cut), "the exported model differs");
    // The centering term is part of the loss `lantern eval` reports, as in training.
    eval_reproduces_best(&whole, &golden("reward/conversational/validation.jsonl"));
}

#[test]
fn bad_reward_input_names_the_file_line_or_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad");
    std::fs::create_dir_all(&data).unwrap();
    let file = |name: &str, text: &str| data_train_file(&data, name, text);
    let missing = file(
        "missing.jsonl",
        "{\"chosen\": \"a b\", \"rejected\": \"a c\"}\n{\"chosen\": \"a b\"}\n",
    );
    let some_margins = file(
        "margins.jsonl",
        "{\"chosen\": \"a b\", \"rejected\": \"a c\", \"margin\": 1}\n{\"chosen\": \"a b\", \"rejected\": \"a c\"}\n",
    );
    let long = file(
        "long.jsonl",
        "{\"chosen\": \"a b c d e f g h i j k l m n o p q r s t u v w x y z\", \"rejected\": \"a\"}\n",
    );
    let run = tmp.path().join("run");
    let cfg = reward_config(tmp.path(), &run, "text", "");
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &[&missing],
            &["missing.jsonl: line 2", "\"rejected\" is missing"],
        ),
        (
            &[&some_margins],
            &[
                "margins.jsonl: line 2",
                "\"margin\" is in some records only",
            ],
        ),
        (
            &[&long, "data.max_length=8"],
            &[
                "long.jsonl",
                "all 1 records were dropped",
                "data.max_length 8",
            ],
        ),
        (
            &["data.labels=[\"a\", \"b\"]"],
            &["reward_modeling has one output"],
        ),
        (
            &[
                "data.problem_type=\"single_label_classification\"",
                "data.center_rewards_coefficient=0.1",
            ],
            &["data.center_rewards_coefficient applies to reward_modeling"],
        ),
        (
            &["data.center_rewards_coefficient=-1"],
            &["data.center_rewards_coefficient must be a number of 0 or more"],
        ),
    ];
    for (sets, want) in cases {
        let e = lantern_err(&strs(&command_args("finetune", &cfg, sets, &[])));
        assert!(want.iter().all(|w| e.contains(w)), "{sets:?}: {e}");
    }
    assert!(!run.join("last").exists() && !run.join("model").exists());
}

/// Two ranks under the launcher train a reward model as one process with twice the batch:
/// each rank its share of the preferences (two rows each), the validation split between them
/// and its figures combined; and LoRA (peft's adapters, the head in full) learns too.
#[test]
fn two_ranks_and_lora_train_reward_models() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, batch: usize, ranks: bool, extra: &str| {
        let dir = tmp.path().join(name);
        let cfg = s(&reward_config(tmp.path(), &dir, "text", extra));
        let batch = format!("train.batch_size={batch}");
        let mut args: Vec<&str> = Vec::new();
        if ranks {
            args.extend(["launch", "--nproc-per-node", "2", "--backend", "mpi", "--"]);
        }
        args.extend(["finetune", "--config", &cfg, "--quiet", "--set", &batch]);
        args.extend(["--set", "train.grad_accum=1"]);
        lantern_ok(&args);
        dir
    };
    let (two, one) = (run("two", 2, true, ""), run("one", 4, false, ""));
    let (e2, e1) = (metrics_of(&two, "eval"), metrics_of(&one, "eval"));
    assert_eq!(e2.len(), e1.len());
    for (a, b) in e2.iter().zip(&e1) {
        assert_eq!(a["examples"], 5);
        assert_eq!(a["accuracy"], b["accuracy"]);
        for key in ["eval_loss", "margin"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                "{key}: {x} vs {y}"
            );
        }
    }
    let w = |d: &Path| read_f32_tensors(&d.join("model/model.safetensors"));
    for ((n, a), (_, b)) in w(&two).iter().zip(&w(&one)) {
        let r = rel_l2(a, b);
        assert!(r < 1e-5, "{n} differs by {r}");
    }
    let lora = run("lora", 4, false, "[lora]\nr = 4\nalpha = 8");
    let loss = metric_values(&lora, "train", "loss");
    assert!(loss.iter().all(|l| l.is_finite()), "{loss:?}");
    assert!(lora.join("model/adapter/adapter_config.json").is_file());
}

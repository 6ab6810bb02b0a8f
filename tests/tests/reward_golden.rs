//! Parity with TRL's `RewardTrainer` on golden files it wrote (`scripts/make_reward_golden.py`):
//! the SFT golden's tiny Llama as a `LlamaForSequenceClassification` with one output (its head
//! drawn once and saved, so both sides start alike) and the DPO golden's preference records in
//! its four layouts (text and conversational, with an explicit or implicit prompt), with a
//! `margin` column, with TRL's `center_rewards_coefficient`, with a `max_length` that drops
//! conversations (TRL filters long examples rather than cutting them), and a GPT-2 whose config
//! has dropout 0.1 (`GPT2ForSequenceClassification`, trained without it: TRL's
//! `disable_dropout`).
//!
//! The sequences `lantern finetune` builds (`data.problem_type = "reward_modeling"`) must be
//! TRL's token for token, and six optimizer steps over all preferences as one batch must give
//! the loss TRL logged at each step and the validation loss, accuracy and mean margin of its
//! evaluation after each.

use lantern_train::finetune::{finetune, FinetuneOptions};
use lantern_train::finetune_config::FinetuneConfig;
use lantern_train::finetune_reward::RewardReader;
use serde_json::Value;
use std::path::Path;

mod common;
use common::{assert_series, floats, golden_dir, read_json, run_records, series, u32s};

const LAYOUTS: [&str; 8] = [
    "text",
    "text-implicit",
    "conversational",
    "implicit",
    "text-margin",
    "text-center",
    "conversational-short",
    "text-gpt2",
];

fn config(layout: &str, batch: usize, run: &Path, expected: &Value) -> FinetuneConfig {
    let g = golden_dir("reward");
    let center = match expected["reward_args"]["center_rewards_coefficient"].as_f64() {
        Some(c) => format!("center_rewards_coefficient = {c}"),
        None => String::new(),
    };
    let text = format!(
        r#"
[model]
init_from = "{model}"
tokenizer = "{tokenizer}"
[data]
train = "{dir}/train.jsonl"
validation = "{dir}/validation.jsonl"
problem_type = "reward_modeling"
max_length = {max_length}
{center}
[train]
device = "cpu"
batch_size = {batch}
eval_batch_size = {batch}
max_steps = {steps}
lr = {lr}
schedule = "constant"
warmup_steps = 0
weight_decay = 0.0
beta2 = 0.999
grad_clip = 1.0
eval_every_steps = 1
[run]
dir = "{run}"
"#,
        // A model beside the layouts (the GPT-2), else the Llama.
        model = g
            .join(expected["reward_args"]["model"].as_str().unwrap_or("model"))
            .display(),
        tokenizer = golden_dir("sft").join("model/tokenizer.json").display(),
        dir = g.join(layout).display(),
        max_length = expected["max_length"],
        steps = expected["steps"],
        lr = expected["lr"],
        run = run.display(),
    );
    FinetuneConfig::parse(&text, layout, &[]).unwrap()
}

#[test]
fn preferences_are_trls_token_for_token() {
    let tok_path = golden_dir("sft").join("model/tokenizer.json");
    let tok = lantern_data::tokenizer::load_tokenizer(&tok_path).unwrap();
    for layout in LAYOUTS {
        let dir = golden_dir("reward").join(layout);
        let expected = read_json(&dir.join("expected.json"));
        let max_length = expected["max_length"].as_u64().unwrap() as usize;
        let reader = RewardReader::new(&tok, &tok_path, None, (max_length, 4098)).unwrap();
        for split in ["train", "validation"] {
            let (got, _) = reader
                .read(&dir.join(format!("{split}.jsonl")), &tok)
                .unwrap();
            let want = expected[split].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{layout} {split}: examples kept");
            for (i, (e, w)) in got.iter().zip(want).enumerate() {
                let (c, r) = (u32s(&w["chosen_ids"]), u32s(&w["rejected_ids"]));
                assert_eq!(e.choice_lens, [c.len(), r.len()], "{layout} {split} {i}");
                assert_eq!(e.ids, [c, r].concat(), "{layout} {split} {i}: ids");
                let margin = w["margin"].as_f64().unwrap_or(0.0) as f32;
                assert_eq!(
                    e.label,
                    Some(lantern_data::labelled::Target::Preference(margin)),
                    "{layout} {split} {i}: margin"
                );
            }
        }
    }
}

#[test]
fn full_batch_steps_give_trls_losses_accuracy_and_margin() {
    for layout in LAYOUTS {
        let expected = read_json(&golden_dir("reward").join(layout).join("expected.json"));
        let n = expected["train"].as_array().unwrap().len();
        let run = tempfile::tempdir().unwrap();
        let cfg = config(
            layout,
            n.max(expected["validation"].as_array().unwrap().len()),
            run.path(),
            &expected,
        );
        finetune(
            cfg,
            FinetuneOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        let recs = run_records(run.path());
        let of = |kind: &str, key: &str| series(&recs, kind, key);
        // TRL evaluates before training too; ours are the six after each step.
        let after = |k: &str| floats(&expected[k])[1..].to_vec();
        for (what, got, want, tol) in [
            (
                "training loss",
                of("train", "loss"),
                floats(&expected["train_loss"]),
                2e-5,
            ),
            (
                "validation loss",
                of("eval", "eval_loss"),
                after("eval_loss"),
                2e-5,
            ),
            (
                "accuracy",
                of("eval", "accuracy"),
                after("eval_accuracy"),
                1e-6,
            ),
            ("margin", of("eval", "margin"), after("eval_margin"), 2e-5),
        ] {
            assert_series(&format!("{layout}: {what}"), &got, &want, tol);
        }
        // Training moved the loss far more than the tolerance.
        let t = floats(&expected["train_loss"]);
        assert!(t[0] - t[t.len() - 1] > 5e-3, "{layout}: {t:?}");
    }
}

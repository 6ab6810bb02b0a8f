//! Parity with TRL's `DPOTrainer` on golden files it wrote (`scripts/make_dpo_golden.py`): the
//! SFT golden's tiny Llama (a BPE tokenizer that adds a BOS, a ChatML-style chat template) and
//! preferences from the fortunes' "who said it" records (the chosen completion is the
//! record's author, the rejected one another record's), in four layouts: text and
//! conversational, each with an explicit and an implicit prompt.
//!
//! The preferences `lantern train` builds must be TRL's token for token (EOS appended to text
//! completions, the template's text, where the completions start, the examples dropped for a
//! prompt that fills `max_length`). Then six optimizer steps over all preferences as one
//! batch must give the loss TRL logged at each step, and the validation loss and reward
//! accuracy its evaluations gave before and after each step. More layouts train with TRL's
//! other settings (`dpo_args` in their `expected.json`): its other losses (`loss_type`,
//! weighted sums with `loss_weights`, `label_smoothing`, every loss in some layout), the
//! f-divergences, LD-DPO's `ld_alpha`, WPO's `use_weighting`, a reference model other than
//! the initial one (`ref_model`), TR-DPO's reference moved toward the policy
//! (`sync_ref_model`, from the initial model and from one of its own), rows that keep their
//! end (`truncation_mode = "keep_end"`, none of whose examples are dropped), and a GPT-2 whose
//! config has dropout 0.1, trained without it (TRL's `disable_dropout`, on by default).

use lantern_train::config::RunConfig;
use lantern_train::dpo::DpoSet;
use lantern_train::trainer::{train, TrainOptions};
use serde_json::Value;
use std::path::Path;

mod common;
use common::{assert_series, floats, golden_dir, read_json, run_records, series, trl_recipe, u32s};

const LAYOUTS: [&str; 19] = [
    "text",
    "text-implicit",
    "conversational",
    "implicit",
    "text-ipo",
    "text-mix-a",
    "text-mix-b",
    "text-js",
    "text-alpha",
    "text-fkl-ld",
    "conversational-ld0",
    "text-aot",
    "conversational-rpo",
    "text-wpo",
    "text-ref",
    "conversational-keep-end",
    "text-sync",
    "text-ref-sync",
    "text-gpt2",
];

/// The run config of `layout`'s golden: its records, `batch` preferences a step, TRL's recipe.
fn config(layout: &str, batch: usize, run: &Path, expected: &Value) -> RunConfig {
    // DPOConfig's settings beyond the recipe, under the same names (JSON strings, numbers and
    // arrays are TOML).
    let loss: String = expected["dpo_args"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| match k.as_str() {
            // Written below with the recipe's.
            "max_length" => String::new(),
            // A model beside the layouts, with the SFT golden's tokenizer.
            "model" => format!(
                "tokenizer = \"{}\"\n",
                golden_dir("sft").join("model/tokenizer.json").display()
            ),
            // A folder beside the layouts.
            "ref_model" => format!(
                "{k} = \"{}\"\n",
                golden_dir("dpo").join(v.as_str().unwrap()).display()
            ),
            _ => format!("{k} = {v}\n"),
        })
        .collect();
    let text = format!(
        r#"
[model]
init_from = "{model}"
[data]
train = "{dir}/train.jsonl"
validation = "{dir}/validation.jsonl"
max_length = {max_length}
beta = {beta}
{loss}
{recipe}"#,
        recipe = trl_recipe(batch, &expected["steps"], &expected["lr"], run),
        // A GPT-2 beside the layouts, else the SFT golden's Llama.
        model = match expected["dpo_args"]["model"].as_str() {
            Some(m) => golden_dir("dpo").join(m),
            None => golden_dir("sft").join("model"),
        }
        .display(),
        dir = golden_dir("dpo").join(layout).display(),
        max_length = expected["max_length"],
        beta = expected["beta"],
    );
    RunConfig::parse(&text, layout, &[]).unwrap()
}

#[test]
fn preferences_are_trls_token_for_token() {
    let g = golden_dir("sft");
    let tok_path = g.join("model/tokenizer.json");
    let tok = lantern_data::tokenizer::load_tokenizer(&tok_path).unwrap();
    for layout in LAYOUTS {
        let expected = read_json(&golden_dir("dpo").join(layout).join("expected.json"));
        let run = tempfile::tempdir().unwrap();
        let cfg = config(layout, 1, run.path(), &expected);
        let set = DpoSet::load(&cfg, (&tok, &tok_path), None, (128, 4098), 1).unwrap();
        for (split, got) in [("train", &set.train), ("validation", &set.val)] {
            let want = expected[split].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{layout} {split}: examples kept");
            for (i, (e, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(
                    e.prompt,
                    u32s(&w["prompt_ids"]),
                    "{layout} {split} {i}: prompt"
                );
                assert_eq!(
                    e.chosen,
                    u32s(&w["chosen_ids"]),
                    "{layout} {split} {i}: chosen"
                );
                assert_eq!(
                    e.rejected,
                    u32s(&w["rejected_ids"]),
                    "{layout} {split} {i}: rejected"
                );
            }
        }
    }
}

#[test]
fn full_batch_steps_give_trls_losses_and_reward_accuracy() {
    for layout in LAYOUTS {
        let expected = read_json(&golden_dir("dpo").join(layout).join("expected.json"));
        let n = expected["train"].as_array().unwrap().len();
        let run = tempfile::tempdir().unwrap();
        let cfg = config(layout, n, run.path(), &expected);
        let summary = train(
            cfg,
            TrainOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(summary.steps, expected["steps"].as_u64().unwrap());
        let recs = run_records(run.path());
        let of = |kind: &str, key: &str| series(&recs, kind, key);
        // The forward KL scores a log-ratio u as 1 − e^(−u): as u falls during training, e^(−u)
        // multiplies the f32 rounding of u (a sum of tens of log-probabilities, ulp ~8e-6 at
        // 100), so both sides' last steps part by up to 6.2e-5 there (earlier steps within
        // 3e-6).
        let loose = match expected["dpo_args"]["f_divergence_type"] == "forward_kl" {
            true => 5.0,
            false => 1.0,
        };
        for (what, got, want, tol) in [
            (
                "validation loss",
                of("val", "val_loss"),
                &expected["eval_loss"],
                2e-5 * loose,
            ),
            (
                "reward accuracy",
                of("val", "val_accuracy"),
                &expected["eval_reward_accuracy"],
                1e-6,
            ),
            (
                "training loss",
                of("train", "loss"),
                &expected["train_loss"],
                2e-5 * loose,
            ),
        ] {
            let want = floats(want);
            assert_series(&format!("{layout}: {what}"), &got, &want, tol);
        }
        // Training moved the loss far more than the tolerance.
        let t = floats(&expected["train_loss"]);
        assert!(t[0] - t[t.len() - 1] > 0.1, "{layout}: {t:?}");
    }
}

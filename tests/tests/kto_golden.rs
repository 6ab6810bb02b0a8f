//! Parity with TRL's `KTOTrainer` on golden files it wrote (`scripts/make_kto_golden.py`): the
//! SFT golden's tiny Llama and the DPO golden's preferences, as unpaired records (`prompt`,
//! `completion`, `label`) and as pairs TRL unpairs, text and conversational, with an implicit
//! prompt, with `desirable_weight`/`undesirable_weight`, and with the `apo_zero_unpaired` loss.
//!
//! The examples `lantern train` builds must be TRL's token for token (prompt and completion
//! ids, labels, the order pairs are unpaired in, each example's KL completion), and six
//! optimizer steps over all examples as one batch (or, `conversational-batches`, over batches
//! of 4 drawn in file order, TRL's sequential sampling, into a second epoch;
//! `conversational-short-batches`, batches of 3, the epoch's seventh step short) must give the
//! loss TRL logged at each step and its validation loss and KL estimate before and after every
//! step.

use lantern_train::config::RunConfig;
use lantern_train::kto::KtoSet;
use lantern_train::trainer::{train, TrainOptions};
use serde_json::Value;
use std::path::Path;

mod common;
use common::{assert_series, floats, golden_dir, read_json, run_records, series, trl_recipe, u32s};

const LAYOUTS: [&str; 9] = [
    "text",
    "text-paired",
    "implicit-paired",
    "conversational",
    "conversational-paired",
    "text-weights",
    "text-apo",
    "conversational-batches",
    "conversational-short-batches",
];

/// TRL's per-device batch, at most the examples kept (TRL's batches never repeat one).
fn batch(expected: &Value) -> usize {
    let kept = expected["train"].as_array().unwrap().len();
    kept.min(expected["batch"].as_u64().unwrap() as usize)
}

fn config(layout: &str, run: &Path, expected: &Value) -> RunConfig {
    let args: String = expected["kto_args"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    // Pairs become KTO's with its loss named; unpaired records are KTO's anyway.
    let loss = match args.contains("loss_type") {
        true => String::new(),
        false => "loss_type = \"kto\"\n".into(),
    };
    let text = format!(
        r#"
[model]
init_from = "{model}"
[data]
train = "{dir}/train.jsonl"
validation = "{dir}/validation.jsonl"
max_length = {max_length}
beta = {beta}
{args}{loss}
{recipe}"#,
        // TRL's batch: every kept example in the one batch of a step, or (a layout's `batch`)
        // runs of examples in file order.
        recipe = trl_recipe(batch(expected), &expected["steps"], &expected["lr"], run),
        model = golden_dir("sft").join("model").display(),
        dir = golden_dir("kto").join(layout).display(),
        max_length = expected["max_length"],
        beta = expected["beta"],
    );
    RunConfig::parse(&text, layout, &[]).unwrap()
}

#[test]
fn examples_are_trls_token_for_token() {
    let g = golden_dir("sft");
    let tok_path = g.join("model/tokenizer.json");
    let tok = lantern_data::tokenizer::load_tokenizer(&tok_path).unwrap();
    for layout in LAYOUTS {
        let expected = read_json(&golden_dir("kto").join(layout).join("expected.json"));
        let run = tempfile::tempdir().unwrap();
        let cfg = config(layout, run.path(), &expected);
        let b = batch(&expected);
        let set = KtoSet::load(&cfg, (&tok, &tok_path), None, (128, 4098), (b, b)).unwrap();
        for (split, got) in [("train", &set.train), ("validation", &set.val)] {
            let want = expected[split].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{layout} {split}: examples kept");
            for (i, (e, w)) in got.iter().zip(want).enumerate() {
                let at = format!("{layout} {split} {i}");
                assert_eq!(e.prompt, u32s(&w["prompt_ids"]), "{at}: prompt");
                assert_eq!(e.completion, u32s(&w["completion_ids"]), "{at}: completion");
                assert_eq!(e.label, w["label"].as_bool().unwrap(), "{at}: label");
                if let Some(kl) = w.get("KL_completion_ids") {
                    let j = set.kl_source(split == "validation", i);
                    assert_eq!(got[j].completion, u32s(kl), "{at}: KL completion");
                }
            }
        }
    }
}

#[test]
fn full_batch_steps_give_trls_losses() {
    for layout in LAYOUTS {
        let expected = read_json(&golden_dir("kto").join(layout).join("expected.json"));
        let run = tempfile::tempdir().unwrap();
        let cfg = config(layout, run.path(), &expected);
        train(
            cfg,
            TrainOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        let recs = run_records(run.path());
        let of = |kind: &str, key: &str| series(&recs, kind, key);
        for (what, got, want) in [
            (
                "validation loss",
                of("val", "val_loss"),
                &expected["eval_loss"],
            ),
            (
                "training loss",
                of("train", "loss"),
                &expected["train_loss"],
            ),
        ] {
            let want = floats(want);
            assert_series(&format!("{layout}: {what}"), &got, &want, 2e-5);
        }
        // TRL's eval_kl: the validation batch's KL estimate (none for apo_zero_unpaired).
        let kl: Vec<f64> = recs
            .iter()
            .filter(|r| r["kind"] == "val")
            .map(|r| r["val_kl"].as_f64().unwrap_or(0.0))
            .collect();
        let want = floats(&expected["eval_kl"]);
        assert_series(&format!("{layout}: KL estimate"), &kl, &want, 1e-4);
        // Full-batch steps learn (each step of a layout in batches reads other examples).
        let t = floats(&expected["train_loss"]);
        let full = batch(&expected) == expected["train"].as_array().unwrap().len();
        assert!(!full || t[0] - t[t.len() - 1] > 0.05, "{layout}: {t:?}");
    }
}

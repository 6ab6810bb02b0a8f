//! Multiple-choice parity with Hugging Face transformers on golden files it wrote itself
//! (`scripts/make_multiple_choice_golden.py`): a tiny BertForMultipleChoice,
//! RobertaForMultipleChoice, DistilBertForMultipleChoice and ElectraForMultipleChoice, a batch
//! of 2 examples × 3 choices (padded rows, pairs), and the logits and losses transformers
//! computed in eval mode.
//!
//! Tolerance 1e-5 max abs: the random heads give an example's choices logits only 1e-3 apart,
//! and ELECTRA's tanh-approximated GELU in place of the exact one would move them by 5.7e-5.

use candle_core::{DType, Device, Tensor};
use lantern_kernels::cross_entropy_sum;
use lantern_models::bert::{
    hf, BertClassifier, BertConfig, BertForMultipleChoice, BertHead, BertInput, Family,
};
use lantern_models::Mode;
use std::path::PathBuf;

mod common;

const FAMILIES: [(&str, Family); 4] = [
    ("bert", Family::Bert),
    ("roberta", Family::Roberta),
    ("distilbert", Family::DistilBert),
    ("electra", Family::Electra),
];

fn golden() -> PathBuf {
    common::golden_dir("multiple_choice")
}

/// A (B, C, T) list of lists of lists as (B·C, T) u32, and B.
fn rows(v: &serde_json::Value) -> (Tensor, usize) {
    let b = v.as_array().unwrap();
    let flat: Vec<Vec<i64>> = b
        .iter()
        .flat_map(|ex| ex.as_array().unwrap().iter().map(common::ints))
        .collect();
    let (n, t) = (flat.len(), flat[0].len());
    let ids: Vec<u32> = flat.concat().into_iter().map(|x| x as u32).collect();
    (
        Tensor::from_vec(ids, (n, t), &Device::Cpu).unwrap(),
        b.len(),
    )
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let d = common::max_abs(got, want);
    assert!(d <= 1e-5, "{what} differ from transformers by {d}");
}

/// The model of `family`'s folder, its config and the logits (B, C) of `input`.
fn logits_of(name: &str, first_only: bool) -> (BertConfig, Tensor) {
    let dir = golden().join(name);
    let (cfg, params, report) = common::load_in(&dir, BertHead::MultipleChoice);
    assert!(
        report.newly_initialised.is_empty() && report.unused.is_empty(),
        "{name}: {report:?}"
    );
    let v = &common::read_json(&golden().join("inputs.json"))[name];
    let (mut ids, mut b) = rows(&v["input_ids"]);
    let (mut mask, _) = rows(&v["attention_mask"]);
    let mut types = v.get("token_type_ids").map(|t| rows(t).0);
    if first_only {
        let c = ids.dim(0).unwrap() / b;
        ids = ids.narrow(0, 0, c).unwrap();
        mask = mask.narrow(0, 0, c).unwrap();
        types = types.map(|t| t.narrow(0, 0, c).unwrap());
        b = 1;
    }
    let model = BertClassifier::new(&cfg, &params, BertHead::MultipleChoice).unwrap();
    let scores = model
        .forward(
            &BertInput {
                ids: &ids,
                token_type_ids: types.as_ref(),
                attention_mask: Some(&mask),
            },
            Mode::Eval,
        )
        .unwrap();
    assert_eq!(scores.dims(), &[ids.dim(0).unwrap(), 1], "{name}");
    (cfg, BertForMultipleChoice::by_example(&scores, b).unwrap())
}

#[test]
fn every_family_scores_choices_as_transformers() {
    let want = common::expected_in(&golden());
    let inputs = common::read_json(&golden().join("inputs.json"));
    for (name, family) in FAMILIES {
        let (cfg, logits) = logits_of(name, false);
        assert_eq!(cfg.model_type, family);
        check(
            &format!("{name} logits"),
            &logits,
            &want[&format!("{name}_logits")],
        );
        // transformers' loss: the mean cross-entropy over the examples' choices.
        let labels: Vec<u32> = common::ints(&inputs[name]["labels"])
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let n = labels.len();
        let targets = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
        let loss = (cross_entropy_sum(&logits, &targets, None).unwrap() / n as f64).unwrap();
        let want_loss = want[&format!("{name}_loss")].to_scalar::<f32>().unwrap();
        common::assert_close(
            &format!("{name} loss"),
            loss.to_scalar::<f32>().unwrap(),
            want_loss,
            1e-5,
        );
        // One example alone: its choices' padding no longer set by the other example's.
        let (_, single) = logits_of(name, true);
        check(
            &format!("{name} first example alone"),
            &single,
            &want[&format!("{name}_logits_single")],
        );
    }
}

#[test]
fn configs_and_exports_round_trip_as_transformers_wrote_them() {
    for (name, _) in FAMILIES {
        let v = common::assert_export_round_trips(&golden(), name, BertHead::MultipleChoice);
        let class = format!(
            "{}ForMultipleChoice",
            Family::from_model_type(v["model_type"].as_str().unwrap())
                .unwrap()
                .class_prefix()
        );
        assert_eq!(v["architectures"][0], class.as_str(), "{name}");
        // A multiple-choice model has no label set: its classifier has one output.
        assert!(v.get("id2label").is_none(), "{name}");
    }
    let (cfg, _) = hf::config_from_hf(&golden().join("electra/config.json")).unwrap();
    assert_eq!(cfg.summary_last_dropout, Some(0.1));
}

#[test]
fn electra_summaries_other_than_the_defaults_are_refused() {
    let text = std::fs::read_to_string(golden().join("electra/config.json")).unwrap();
    for (key, value) in [
        ("summary_type", serde_json::json!("mean")),
        ("summary_activation", serde_json::json!("tanh")),
        ("summary_use_proj", serde_json::json!(false)),
        ("summary_proj_to_labels", serde_json::json!(true)),
        ("summary_first_dropout", serde_json::json!(0.1)),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[key] = value;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let e = hf::config_from_hf(&path).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("config.json"), "{e}");
    }
}

#[test]
fn a_pretrained_encoder_gets_a_fresh_choice_head() {
    // The MLM (ELECTRA: discriminator) checkpoints of the family goldens.
    for (dir, sub, fresh) in [
        (
            "bert_tiny",
            "mlm",
            &["classifier.weight", "classifier.bias"][..],
        ),
        (
            "distilbert_tiny",
            "mlm",
            &[
                "pre_classifier.weight",
                "pre_classifier.bias",
                "classifier.weight",
                "classifier.bias",
            ][..],
        ),
        (
            "electra_tiny",
            "pre",
            &[
                "sequence_summary.summary.weight",
                "sequence_summary.summary.bias",
                "classifier.weight",
                "classifier.bias",
            ][..],
        ),
    ] {
        let d = common::golden_dir(dir).join(sub);
        let (cfg, _) = hf::config_from_hf(&d.join("config.json")).unwrap();
        let (params, report) = hf::load_params(
            &d.join("model.safetensors"),
            &cfg,
            BertHead::MultipleChoice,
            &mut lantern_kernels::Rng::new(0),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        // BertForMaskedLM has no pooler: transformers initialises it too.
        let mut got = report.newly_initialised.clone();
        got.retain(|n| !n.contains("pooler."));
        assert_eq!(got, fresh, "{dir}");
        assert_eq!(params.get("classifier.weight").unwrap().dims(), &[1, 32]);
    }
}

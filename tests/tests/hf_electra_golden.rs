//! ELECTRA parity with Hugging Face transformers on golden files transformers itself wrote
//! (`scripts/make_electra_golden.py`): an ElectraForPreTraining (the discriminator, as released
//! checkpoints are), ElectraForSequenceClassification, ElectraForTokenClassification,
//! ElectraForQuestionAnswering and a bare ElectraModel, with embeddings narrower than the
//! layers (`embeddings_project`), saved with `save_pretrained`; a padded batch with a pair and
//! token types, and the logits, hidden states and losses transformers computed in eval mode.
//! Tolerance 1e-4 max abs (fp32).

use lantern_models::bert::{hf, BertHead, BertInput, BertModel, Family};
use lantern_models::Mode;
use std::path::PathBuf;

mod common;

fn golden() -> PathBuf {
    common::golden_dir("electra_tiny")
}

#[test]
fn every_head_and_the_encoders_match_transformers() {
    let v = common::read_json(&golden().join("inputs.json"));
    let (ids, types, mask) = (
        common::u32_matrix(&v, "input_ids"),
        common::u32_matrix(&v, "token_type_ids"),
        common::u32_matrix(&v, "attention_mask"),
    );
    let input = BertInput {
        ids: &ids,
        token_type_ids: Some(&types),
        attention_mask: Some(&mask),
    };
    common::assert_heads_match(&golden(), &input, &common::GoldenLabels::of(&v));
    let want = common::expected_in(&golden());
    // ELECTRA's classification head has the exact (erf) GELU whatever hidden_act says; the
    // tanh form would differ by up to 5.6e-5 here, so this one is held to 1e-5.
    let head = BertHead::SequenceClassification;
    let (cfg, params, _) = common::load_in(&golden().join("cls"), head);
    let cls = lantern_models::bert::BertClassifier::new(&cfg, &params, head).unwrap();
    let logits = cls.forward(&input, Mode::Eval).unwrap();
    let d = common::max_abs(&logits, &want["cls_logits"]);
    assert!(
        d <= 1e-5,
        "classification logits differ from transformers by {d}"
    );
    // The bare encoder, and the discriminator checkpoint's encoder (its
    // `discriminator_predictions` head is no head of ours: reported unused).
    for (sub, key) in [("enc", "enc_hidden"), ("pre", "hidden")] {
        let dir = golden().join(sub);
        let (cfg, head) = hf::config_from_hf(&dir.join("config.json")).unwrap();
        assert_eq!(
            (cfg.model_type, cfg.embedding_size),
            (Family::Electra, Some(16))
        );
        assert_eq!(head, (sub == "enc").then_some(BertHead::Encoder));
        let (params, report) = hf::load_params(
            &dir.join("model.safetensors"),
            &cfg,
            BertHead::Encoder,
            &mut lantern_kernels::Rng::new(0),
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
        )
        .unwrap();
        assert!(report.newly_initialised.is_empty(), "{report:?}");
        let unused_ok = report
            .unused
            .iter()
            .all(|n| n.starts_with("discriminator_predictions."));
        assert!(
            unused_ok && report.unused.is_empty() == (sub == "enc"),
            "{report:?}"
        );
        let enc = BertModel::new(&cfg, &params, BertHead::Encoder).unwrap();
        let hidden = enc.forward(&input, &mut Mode::Eval).unwrap();
        common::check(&format!("{sub} hidden states"), &hidden, &want[key]);
    }
}

#[test]
fn the_discriminator_loads_into_every_head_with_a_fresh_one() {
    let seq: &[&str] = &[
        "classifier.dense.weight",
        "classifier.dense.bias",
        "classifier.out_proj.weight",
        "classifier.out_proj.bias",
    ];
    // The "mlm" of the shared check is the discriminator here.
    let tmp = tempfile::tempdir().unwrap();
    let mlm = tmp.path().join("mlm");
    std::fs::create_dir(&mlm).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden().join("pre").join(f), mlm.join(f)).unwrap();
    }
    common::assert_fresh_heads(
        tmp.path(),
        &[
            (BertHead::SequenceClassification, seq),
            (
                BertHead::TokenClassification,
                &["classifier.weight", "classifier.bias"],
            ),
            (
                BertHead::QuestionAnswering,
                &["qa_outputs.weight", "qa_outputs.bias"],
            ),
        ],
        &["discriminator_predictions."],
    );
}

#[test]
fn export_writes_transformers_names_and_config() {
    for (sub, head, class) in [
        (
            "cls",
            BertHead::SequenceClassification,
            "ElectraForSequenceClassification",
        ),
        (
            "tok",
            BertHead::TokenClassification,
            "ElectraForTokenClassification",
        ),
        (
            "qa",
            BertHead::QuestionAnswering,
            "ElectraForQuestionAnswering",
        ),
    ] {
        let v = common::assert_export_round_trips(&golden(), sub, head);
        assert_eq!(v["model_type"], "electra");
        assert_eq!(v["architectures"][0], class);
        assert_eq!(
            (v["embedding_size"].as_u64(), v["hidden_size"].as_u64()),
            (Some(16), Some(32))
        );
    }
}

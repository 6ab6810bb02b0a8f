//! DistilBERT parity with Hugging Face transformers on golden files transformers itself wrote
//! (`scripts/make_distilbert_golden.py`): a DistilBertForMaskedLM,
//! DistilBertForSequenceClassification, DistilBertForTokenClassification,
//! DistilBertForQuestionAnswering and a bare DistilBertModel saved with `save_pretrained`, a
//! padded batch with a pair (no token types: DistilBERT has none), and the logits, hidden
//! states and losses transformers computed in eval mode. Tolerance 1e-4 max abs (fp32).

use lantern_models::bert::{BertHead, BertInput, BertModel, Family};
use lantern_models::Mode;
use std::path::PathBuf;

mod common;

fn golden() -> PathBuf {
    common::golden_dir("distilbert_tiny")
}

/// The golden batch: ids and mask, and the labels.
fn inputs() -> (
    candle_core::Tensor,
    candle_core::Tensor,
    common::GoldenLabels,
) {
    let v = common::read_json(&golden().join("inputs.json"));
    let ids = common::u32_matrix(&v, "input_ids");
    let mask = common::u32_matrix(&v, "attention_mask");
    (ids, mask, common::GoldenLabels::of(&v))
}

#[test]
fn the_config_reads_distilbert_names() {
    let (cfg, head) =
        lantern_models::bert::hf::config_from_hf(&golden().join("cls/config.json")).unwrap();
    assert_eq!(head, Some(BertHead::SequenceClassification));
    assert_eq!(cfg.model_type, Family::DistilBert);
    let sizes = (
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.intermediate_size,
    );
    assert_eq!(sizes, (32, 2, 4, 48));
    assert_eq!(
        (cfg.classifier_dropout, cfg.qa_dropout),
        (Some(0.2), Some(0.1))
    );
    assert_eq!((cfg.layer_norm_eps, cfg.type_vocab_size), (1e-12, 0));
}

#[test]
fn every_head_matches_transformers() {
    let (ids, mask, labels) = inputs();
    // The collator's token types are ignored: DistilBERT has no table for them.
    let types = ids.ones_like().unwrap();
    let input = BertInput {
        ids: &ids,
        token_type_ids: Some(&types),
        attention_mask: Some(&mask),
    };
    common::assert_masked_lm_matches(&golden(), &input, &labels);
    common::assert_heads_match(&golden(), &input, &labels);
    let (cfg, params, report) = common::load_in(&golden().join("enc"), BertHead::Encoder);
    assert!(report.newly_initialised.is_empty() && report.unused.is_empty());
    let enc = BertModel::new(&cfg, &params, BertHead::Encoder).unwrap();
    let hidden = enc.forward(&input, &mut Mode::Eval).unwrap();
    let want = common::expected_in(&golden());
    common::check("bare encoder hidden states", &hidden, &want["enc_hidden"]);
    assert!(
        enc.pool(&hidden, &mut Mode::Eval).is_err(),
        "DistilBERT has no pooler"
    );
}

#[test]
fn the_pretrained_encoder_loads_into_every_head_with_a_fresh_one() {
    let seq: &[&str] = &[
        "pre_classifier.weight",
        "pre_classifier.bias",
        "classifier.weight",
        "classifier.bias",
    ];
    common::assert_fresh_heads(
        &golden(),
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
        &["vocab_"],
    );
}

#[test]
fn export_writes_transformers_names_and_config() {
    for (sub, head, class) in [
        (
            "cls",
            BertHead::SequenceClassification,
            "DistilBertForSequenceClassification",
        ),
        (
            "qa",
            BertHead::QuestionAnswering,
            "DistilBertForQuestionAnswering",
        ),
        ("mlm", BertHead::MaskedLm, "DistilBertForMaskedLM"),
    ] {
        let v = common::assert_export_round_trips(&golden(), sub, head);
        assert_eq!(v["model_type"], "distilbert");
        assert_eq!(v["architectures"][0], class);
        // DistilBertConfig's own keys, none of BertConfig's (transformers would ignore them
        // and keep its defaults: hidden_dim 3072 for a model of any width).
        for k in [
            "dim",
            "n_layers",
            "n_heads",
            "hidden_dim",
            "seq_classif_dropout",
            "qa_dropout",
        ] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
        for k in [
            "hidden_size",
            "intermediate_size",
            "type_vocab_size",
            "layer_norm_eps",
        ] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
    }
}

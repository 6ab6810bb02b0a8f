//! RoBERTa parity with Hugging Face transformers on golden files transformers itself wrote
//! (`scripts/make_roberta_golden.py`): a RobertaForMaskedLM, RobertaForSequenceClassification,
//! RobertaForTokenClassification, RobertaForQuestionAnswering and a bare RobertaModel with its
//! pooler, saved with `save_pretrained`; a padded batch with a pair (`<s> A </s></s> B </s>`),
//! no token_type_ids (RoBERTa's tokenizer passes none), and the logits, hidden states and
//! losses transformers computed in eval mode. Tolerance 1e-4 max abs (fp32).

use candle_core::Tensor;
use lantern_models::bert::{hf, BertForMaskedLM, BertHead, BertInput, BertModel, Family};
use lantern_models::Mode;
use std::path::PathBuf;

mod common;
use common::{check, ints, matrix};

fn golden() -> PathBuf {
    common::golden_dir("roberta_tiny")
}

struct Inputs {
    ids: Tensor,
    attention_mask: Tensor,
    position_ids: Vec<Vec<i64>>,
}

fn inputs() -> Inputs {
    let v = common::read_json(&golden().join("inputs.json"));
    Inputs {
        ids: common::u32_matrix(&v, "input_ids"),
        attention_mask: common::u32_matrix(&v, "attention_mask"),
        position_ids: matrix(&v, "position_ids"),
    }
}

fn labels() -> common::GoldenLabels {
    common::GoldenLabels::of(&common::read_json(&golden().join("inputs.json")))
}

fn batch(inp: &Inputs) -> BertInput<'_> {
    BertInput {
        ids: &inp.ids,
        token_type_ids: None,
        attention_mask: Some(&inp.attention_mask),
    }
}

#[test]
fn masked_lm_matches_transformers_positions_logits_hidden_and_loss() {
    let (cfg, params, report) = common::load_in(&golden().join("mlm"), BertHead::MaskedLm);
    assert_eq!(cfg.model_type, Family::Roberta);
    assert_eq!((cfg.pad_token_id, cfg.max_tokens()), (1, 14));
    assert!(report.newly_initialised.is_empty() && report.unused.is_empty());
    let model = BertForMaskedLM::new(&cfg, &params).unwrap();
    let inp = inputs();
    let pos = model
        .bert
        .position_ids(&inp.ids)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let pos: Vec<Vec<i64>> = pos
        .into_iter()
        .map(|r| r.into_iter().map(i64::from).collect())
        .collect();
    assert_eq!(pos, inp.position_ids, "create_position_ids_from_input_ids");
    common::assert_masked_lm_matches(&golden(), &batch(&inp), &labels());
}

#[test]
fn classifiers_and_question_answering_match_transformers() {
    common::assert_heads_match(&golden(), &batch(&inputs()), &labels());
}

#[test]
fn a_bare_encoder_keeps_its_pooler_and_has_no_prefix() {
    let (cfg, params, report) = common::load_in(&golden().join("enc"), BertHead::Encoder);
    assert!(report.newly_initialised.is_empty() && report.unused.is_empty());
    assert!(params.get("pooler.dense.weight").is_ok());
    let model = BertModel::new(&cfg, &params, BertHead::Encoder).unwrap();
    let inp = inputs();
    let want = common::expected_in(&golden());
    let hidden = model.forward(&batch(&inp), &mut Mode::Eval).unwrap();
    check("encoder hidden states", &hidden, &want["enc_hidden"]);
    check(
        "pooled output",
        &model.pool(&hidden, &mut Mode::Eval).unwrap(),
        &want["enc_pooled"],
    );
}

#[test]
fn the_pretrained_encoder_loads_into_every_head_with_a_fresh_one() {
    // As transformers: the MLM checkpoint's encoder is kept, the task head is new and
    // reported, `lm_head` is reported unused; a RoBERTa classifier needs no pooler.
    let seq: &[&str] = &[
        "classifier.dense.weight",
        "classifier.dense.bias",
        "classifier.out_proj.weight",
        "classifier.out_proj.bias",
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
        &["lm_head."],
    );
}

#[test]
fn export_writes_transformers_names_and_config() {
    let v = common::assert_export_round_trips(&golden(), "cls", BertHead::SequenceClassification);
    assert_eq!(v["model_type"], "roberta");
    assert_eq!(v["architectures"][0], "RobertaForSequenceClassification");
    let ids = ["pad_token_id", "bos_token_id", "eos_token_id"].map(|k| v[k].as_u64());
    assert_eq!(ids, [Some(1), Some(0), Some(2)]);
    assert_eq!(v["type_vocab_size"], 1);
}

#[test]
fn configs_whose_family_and_architecture_disagree_are_errors() {
    let text = std::fs::read_to_string(golden().join("cls/config.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    for (from, to, says) in [
        ("\"roberta\"", "\"bert\"", "model_type is \"bert\""),
        ("\"roberta\"", "\"deberta\"", "\"deberta\""),
    ] {
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let err = hf::config_from_hf(&path).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("config.json"), "{err}");
    }
    // XLM-RoBERTa is the same network under its own names.
    let xlmr = text.replacen("\"roberta\"", "\"xlm-roberta\"", 1).replace(
        "RobertaForSequenceClassification",
        "XLMRobertaForSequenceClassification",
    );
    std::fs::write(&path, xlmr).unwrap();
    let (cfg, head) = hf::config_from_hf(&path).unwrap();
    assert_eq!(cfg.model_type, Family::XlmRoberta);
    assert_eq!(
        cfg.architecture(head.unwrap()),
        "XLMRobertaForSequenceClassification"
    );
}

/// RoBERTa's byte-level BPE through our data pipeline, against what transformers'
/// RobertaTokenizerFast gave on the same tokenizer.json: a text, a pair, words given already
/// split (run_ner's `is_split_into_words`, which needs `add_prefix_space`), and run_qa's
/// windows over a question and its context.
#[test]
fn the_tokenizer_encodes_as_transformers_does() {
    let words = tokenizer_matches_transformers(&golden().join("tokenizer"));
    // The tokenizer itself is left without the prefix space for running text.
    let path = golden().join("tokenizer/tokenizer.json");
    let tok = lantern_data::tokenizer::load_tokenizer(&path).unwrap();
    let plain = tok.encode(words.join(" ").as_str(), true).unwrap();
    assert_ne!(
        plain.get_ids()[1],
        225,
        "no lone Ġ before the first word of a text"
    );
}

/// XLM-RoBERTa's SentencePiece-style Unigram tokenizer (Metaspace pre-tokenizer, its
/// template), as transformers' XLMRobertaTokenizerFast saves and reads it, the same way.
#[test]
fn the_xlm_roberta_tokenizer_encodes_as_transformers_does() {
    tokenizer_matches_transformers(&common::golden_dir("xlmr_tokenizer"));
}

/// Our encoding of `dir/expected.json`'s text, pair, split words and QA windows with
/// `dir/tokenizer.json` equals transformers'; returns the split words.
fn tokenizer_matches_transformers(dir: &std::path::Path) -> Vec<String> {
    use lantern_data::labelled::{self, ProblemType, RawExample};
    use lantern_data::qa::{qa_features, QaExample};
    let path = dir.join("tokenizer.json");
    let want = common::read_json(&dir.join("expected.json"));
    let tok = lantern_data::tokenizer::load_tokenizer(&path).unwrap();
    let tok = labelled::for_classification(&tok, 512, &path).unwrap();
    let str_of = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    let raw = |text: &str, pair: Option<String>, words: Option<Vec<String>>| RawExample {
        text: text.into(),
        text_pair: pair,
        label: None,
        line: 1,
        words,
        choices: None,
    };
    let single = &want["single"];
    let pair = &want["pair"];
    let words: Vec<String> = want["split_words"]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    for (case, ex, problem) in [
        (
            single,
            raw(&str_of(&single["text"]), None, None),
            ProblemType::SingleLabelClassification,
        ),
        (
            pair,
            raw(
                &str_of(&pair["text"]),
                Some(str_of(&pair["text_pair"])),
                None,
            ),
            ProblemType::SingleLabelClassification,
        ),
        (
            &want["split_words"],
            raw("", None, Some(words.clone())),
            ProblemType::TokenClassification,
        ),
    ] {
        let enc = labelled::encode(&tok, &[ex], (problem, &[]), &path).unwrap();
        let ids: Vec<i64> = enc[0].ids.iter().map(|&i| i64::from(i)).collect();
        assert_eq!(ids, ints(&case["input_ids"]), "{case}");
        if problem == ProblemType::TokenClassification {
            let word_ids: Vec<Option<u32>> = case["word_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_u64().map(|w| w as u32))
                .collect();
            assert_eq!(enc[0].word_ids, word_ids);
        }
    }
    let qa = &want["qa_windows"];
    let ex = QaExample {
        id: "q".into(),
        question: str_of(&qa["question"]),
        context: str_of(&qa["context"]),
        answers: vec![],
        unanswerable: false,
        line: 1,
    };
    let max_length = qa["max_length"].as_u64().unwrap() as usize;
    let stride = qa["stride"].as_u64().unwrap() as usize;
    let features = qa_features(&tok, &[ex], max_length, stride, &path).unwrap();
    let windows = qa["windows"].as_array().unwrap();
    assert_eq!(features.len(), windows.len());
    for (f, w) in features.iter().zip(windows) {
        let ids: Vec<i64> = f.ids.iter().map(|&i| i64::from(i)).collect();
        assert_eq!(ids, ints(&w["input_ids"]));
        // Context offsets where the sequence id is 1, nothing elsewhere.
        let offsets: Vec<Option<(usize, usize)>> = w["offset_mapping"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["sequence_ids"].as_array().unwrap())
            .map(|(o, s)| {
                let o = ints(o);
                (s.as_u64() == Some(1)).then_some((o[0] as usize, o[1] as usize))
            })
            .collect();
        assert_eq!(f.offsets, offsets);
    }
    words
}

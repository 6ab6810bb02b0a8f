//! BERT parity with Hugging Face transformers on golden files transformers itself wrote
//! (`scripts/make_bert_golden.py`): a BertForMaskedLM, a BertForSequenceClassification, a
//! BertForTokenClassification and a BertForQuestionAnswering saved with `save_pretrained`, a
//! padded batch with a sentence pair, and the logits, hidden states and losses transformers
//! computed in eval mode.
//! Tolerance 1e-4 max abs (fp32).

use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use lantern_models::bert::{
    hf, BertClassifier, BertConfig, BertForMaskedLM, BertForQuestionAnswering,
    BertForSequenceClassification, BertHead, BertInput,
};
use lantern_models::{safetensors_io, Mode, Params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{ints, matrix, max_abs};

fn golden() -> PathBuf {
    common::golden_dir("bert_tiny")
}

struct Inputs {
    ids: Tensor,
    token_type_ids: Tensor,
    attention_mask: Tensor,
    mlm_labels: Vec<i64>,
    cls_labels: Vec<u32>,
    tok_labels: Vec<i64>,
    qa_start: Vec<i64>,
    qa_end: Vec<i64>,
}

fn inputs() -> Inputs {
    let v = common::read_json(&golden().join("inputs.json"));
    Inputs {
        ids: common::u32_matrix(&v, "input_ids"),
        token_type_ids: common::u32_matrix(&v, "token_type_ids"),
        attention_mask: common::u32_matrix(&v, "attention_mask"),
        mlm_labels: matrix(&v, "mlm_labels").concat(),
        cls_labels: v["cls_labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect(),
        tok_labels: matrix(&v, "tok_labels").concat(),
        qa_start: ints(&v["qa_start_positions"]),
        qa_end: ints(&v["qa_end_positions"]),
    }
}

fn expected() -> BTreeMap<String, Tensor> {
    common::expected_in(&golden())
}

fn load(sub: &str, want_head: BertHead) -> (BertConfig, Params, hf::LoadReport) {
    common::load_in(&golden().join(sub), want_head)
}

fn batch(inp: &Inputs) -> BertInput<'_> {
    BertInput {
        ids: &inp.ids,
        token_type_ids: Some(&inp.token_type_ids),
        attention_mask: Some(&inp.attention_mask),
    }
}

#[test]
fn masked_lm_matches_transformers_logits_hidden_and_loss() {
    let (cfg, params, report) = load("mlm", BertHead::MaskedLm);
    assert_eq!(
        report,
        hf::LoadReport::default(),
        "nothing new, nothing unused"
    );
    let model = BertForMaskedLM::new(&cfg, &params).unwrap();
    let inp = inputs();
    let want = expected();

    let hidden = model.bert.forward(&batch(&inp), &mut Mode::Eval).unwrap();
    let d = max_abs(&hidden, &want["hidden"]);
    assert!(
        d <= 1e-4,
        "last hidden state differs from transformers by {d}"
    );

    let logits = model.forward(&batch(&inp), Mode::Eval).unwrap();
    let d = max_abs(&logits, &want["mlm_logits"]);
    assert!(d <= 1e-4, "MLM logits differ from transformers by {d}");

    // transformers' label -100 = weight 0.
    let targets: Vec<u32> = inp.mlm_labels.iter().map(|&l| l.max(0) as u32).collect();
    let weights: Vec<f32> = inp
        .mlm_labels
        .iter()
        .map(|&l| if l >= 0 { 1.0 } else { 0.0 })
        .collect();
    let n_masked: f32 = weights.iter().sum();
    let n = targets.len();
    let loss = BertForMaskedLM::loss_sum(
        &logits,
        &Tensor::from_vec(targets, n, &Device::Cpu).unwrap(),
        &Tensor::from_vec(weights, n, &Device::Cpu).unwrap(),
    )
    .unwrap()
    .to_scalar::<f32>()
    .unwrap()
        / n_masked;
    let want_loss = want["mlm_loss"].to_scalar::<f32>().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-4,
        "MLM loss {loss} vs transformers {want_loss}"
    );
}

#[test]
fn sequence_classification_matches_transformers_logits_and_loss() {
    let (cfg, params, report) = load("cls", BertHead::SequenceClassification);
    assert!(report.newly_initialised.is_empty() && report.unused.is_empty());
    assert_eq!(cfg.label_names(), ["negative", "neutral", "positive"]);
    let model = BertForSequenceClassification::new(&cfg, &params).unwrap();
    let inp = inputs();
    let want = expected();
    let logits = model.forward(&batch(&inp), Mode::Eval).unwrap();
    let d = max_abs(&logits, &want["cls_logits"]);
    assert!(
        d <= 1e-4,
        "classification logits differ from transformers by {d}"
    );
    let y = Tensor::new(inp.cls_labels.as_slice(), &Device::Cpu).unwrap();
    let loss = lantern_kernels::cross_entropy_sum(&logits, &y, None)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        / inp.cls_labels.len() as f32;
    let want_loss = want["cls_loss"].to_scalar::<f32>().unwrap();
    assert!((loss - want_loss).abs() <= 1e-4, "{loss} vs {want_loss}");
}

#[test]
fn token_classification_matches_transformers_logits_and_loss() {
    let (cfg, params, report) = load("tok", BertHead::TokenClassification);
    // transformers builds it without a pooler: nothing missing, nothing left over.
    assert!(report.newly_initialised.is_empty() && report.unused.is_empty());
    assert_eq!(cfg.label_names(), ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]);
    let model = BertClassifier::new(&cfg, &params, BertHead::TokenClassification).unwrap();
    let inp = inputs();
    let want = expected();
    let logits = model.forward(&batch(&inp), Mode::Eval).unwrap(); // (B, T, 5)
    let d = max_abs(&logits, &want["tok_logits"]);
    assert!(d <= 1e-4, "token logits differ from transformers by {d}");
    // transformers' loss: the mean cross-entropy over the positions whose label is not -100.
    let (b, t, l) = logits.dims3().unwrap();
    let targets: Vec<u32> = inp.tok_labels.iter().map(|&y| y.max(0) as u32).collect();
    let weights: Vec<f32> = inp.tok_labels.iter().map(|&y| f32::from(y >= 0)).collect();
    let labelled = weights.iter().sum::<f32>();
    let loss = lantern_kernels::cross_entropy_sum(
        &logits.reshape((b * t, l)).unwrap(),
        &Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
        Some(&Tensor::new(weights.as_slice(), &Device::Cpu).unwrap()),
    )
    .unwrap()
    .to_scalar::<f32>()
    .unwrap()
        / labelled;
    let want_loss = want["tok_loss"].to_scalar::<f32>().unwrap();
    assert!((loss - want_loss).abs() <= 1e-4, "{loss} vs {want_loss}");
}

#[test]
fn padding_does_not_change_the_unpadded_positions() {
    // Row 2 alone, cut to its 5 real tokens, gives the same hidden states as inside the padded
    // batch: padded keys get exactly zero attention.
    let (cfg, params, _) = load("mlm", BertHead::MaskedLm);
    let model = BertForMaskedLM::new(&cfg, &params).unwrap();
    let inp = inputs();
    let full = model.bert.forward(&batch(&inp), &mut Mode::Eval).unwrap();
    let ids = inp.ids.narrow(0, 2, 1).unwrap().narrow(1, 0, 5).unwrap();
    let alone = model
        .bert
        .forward(
            &BertInput {
                ids: &ids,
                token_type_ids: None,
                attention_mask: None,
            },
            &mut Mode::Eval,
        )
        .unwrap();
    let d = max_abs(
        &alone,
        &full.narrow(0, 2, 1).unwrap().narrow(1, 0, 5).unwrap(),
    );
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn an_mlm_checkpoint_loads_into_a_classifier_with_a_fresh_head() {
    // As transformers: the encoder is kept, the pooler and classifier are new and reported,
    // the MLM head is reported unused.
    let dir = golden().join("mlm");
    let (cfg, _) = hf::config_from_hf(&dir.join("config.json")).unwrap();
    let labels = ["a".to_string(), "b".to_string()];
    let cfg = cfg.with_labels(&labels);
    let (params, report) = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        BertHead::SequenceClassification,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(
        report.newly_initialised,
        [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias"
        ]
    );
    assert!(
        !report.unused.is_empty() && report.unused.iter().all(|n| n.starts_with("cls.")),
        "{:?}",
        report.unused
    );
    // The encoder's tensors are the checkpoint's.
    let mlm =
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let name = "bert.encoder.layer.0.attention.self.query.weight";
    let (a, b) = (
        params.get(name).unwrap().flatten_all().unwrap(),
        mlm[name].flatten_all().unwrap(),
    );
    assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
    // The classifier checkpoint into a classifier with other labels count: shape error naming
    // the tensor.
    let cls_dir = golden().join("cls");
    let err = hf::load_params(
        &cls_dir.join("model.safetensors"),
        &cfg,
        BertHead::SequenceClassification,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .expect("loading should fail");
    assert!(err.to_string().contains("classifier.weight"), "{err}");
    // The classifier checkpoint into an MLM: cls.* new, pooler and classifier unused.
    let (mcfg, _) = hf::config_from_hf(&dir.join("config.json")).unwrap();
    let (_, report) = hf::load_params(
        &cls_dir.join("model.safetensors"),
        &mcfg,
        BertHead::MaskedLm,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(report.newly_initialised.len(), 5, "{report:?}");
    assert!(report.unused.contains(&"classifier.weight".to_string()));
    assert!(report
        .unused
        .contains(&"bert.pooler.dense.weight".to_string()));
}

#[test]
fn export_round_trips_and_checks_shapes_against_the_config() {
    let (cfg, params, _) = load("cls", BertHead::SequenceClassification);
    let tensors = hf::export_tensors(&params, DType::F32).unwrap();
    let hf_cfg = hf::to_hf_config(&cfg, BertHead::SequenceClassification, DType::F32);
    assert_eq!(hf_cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(hf_cfg["id2label"]["2"], "positive");
    assert_eq!(hf_cfg["label2id"]["neutral"], 1);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("config.json"),
        serde_json::to_string(&hf_cfg).unwrap(),
    )
    .unwrap();
    let (cfg2, head) = hf::config_from_hf(&d.path().join("config.json")).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(head, Some(BertHead::SequenceClassification));
    let (p2, _) = hf::params_from_tensors(
        tensors,
        &cfg2,
        BertHead::SequenceClassification,
        Path::new("x"),
        &mut Rng::new(0),
        DType::F32,
    )
    .unwrap();
    assert_eq!(p2.names(), params.names());

    // A config whose hidden size disagrees with the tensors: error naming the first tensor.
    let mut wrong = cfg.clone();
    wrong.intermediate_size = 64;
    let err = hf::params_from_tensors(
        hf::export_tensors(&params, DType::F32).unwrap(),
        &wrong,
        BertHead::SequenceClassification,
        Path::new("ckpt/model.safetensors"),
        &mut Rng::new(0),
        DType::F32,
    )
    .err()
    .expect("loading should fail")
    .to_string();
    assert!(
        err.contains("ckpt/model.safetensors")
            && err.contains("bert.encoder.layer.0.intermediate.dense.weight"),
        "{err}"
    );
}

#[test]
fn a_bare_encoder_without_prefix_loads_like_minilm() {
    // A `BertModel` checkpoint as all-MiniLM-L6-v2 ships it: no `bert.` prefix, a
    // `embeddings.position_ids` buffer, no task head.
    let dir = golden().join("cls");
    let (cfg, _) = hf::config_from_hf(&dir.join("config.json")).unwrap();
    let mut bare: BTreeMap<String, Tensor> = BTreeMap::new();
    for (n, t) in
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap()
    {
        if let Some(b) = n.strip_prefix("bert.") {
            bare.insert(b.to_string(), t);
        }
    }
    bare.insert(
        "embeddings.position_ids".into(),
        Tensor::arange(0i64, 24, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    );
    let encoder_cfg = BertConfig {
        id2label: BTreeMap::new(),
        ..cfg.clone()
    };
    let (enc, report) = hf::params_from_tensors(
        bare.clone(),
        &encoder_cfg,
        BertHead::Encoder,
        Path::new("minilm-like"),
        &mut Rng::new(0),
        DType::F32,
    )
    .unwrap();
    assert_eq!(report, hf::LoadReport::default());
    assert!(enc.names().iter().all(|n| !n.starts_with("bert.")));
    // Into a classifier: the encoder is kept, only the classifier is new.
    let (p, report) = hf::params_from_tensors(
        bare,
        &cfg,
        BertHead::SequenceClassification,
        Path::new("minilm-like"),
        &mut Rng::new(0),
        DType::F32,
    )
    .unwrap();
    assert_eq!(
        report.newly_initialised,
        ["classifier.weight", "classifier.bias"]
    );
    assert!(report.unused.is_empty(), "{report:?}");
    // The bare encoder computes what the classifier's encoder computes.
    let inp = inputs();
    let a = lantern_models::bert::BertModel::new(&encoder_cfg, &enc, BertHead::Encoder)
        .unwrap()
        .forward(&batch(&inp), &mut Mode::Eval)
        .unwrap();
    let b = lantern_models::bert::BertModel::new(&cfg, &p, BertHead::SequenceClassification)
        .unwrap()
        .forward(&batch(&inp), &mut Mode::Eval)
        .unwrap();
    assert_eq!(max_abs(&a, &b), 0.0);
}

/// transformers' `BertForQuestionAnswering` loss, written out in f64 loops from the logits:
/// each position clamped to [0, T], T ignored, the mean cross-entropy over the kept rows of
/// the start logits and of the end logits, averaged.
fn reference_qa_loss(start: &[Vec<f32>], end: &[Vec<f32>], sp: &[i64], ep: &[i64]) -> f64 {
    let mean_nll = |logits: &[Vec<f32>], pos: &[i64]| -> f64 {
        let t = logits[0].len() as i64;
        let kept: Vec<f64> = logits
            .iter()
            .zip(pos)
            .map(|(row, &p)| (row, p.clamp(0, t)))
            .filter(|&(_, p)| p != t)
            .map(|(row, p)| {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
                m + z.ln() - row[p as usize] as f64
            })
            .collect();
        assert!(!kept.is_empty(), "every position ignored");
        kept.iter().sum::<f64>() / kept.len() as f64
    };
    (mean_nll(start, sp) + mean_nll(end, ep)) / 2.0
}

#[test]
fn question_answering_matches_transformers_logits_and_loss() {
    let (cfg, params, report) = load("qa", BertHead::QuestionAnswering);
    // Built without a pooler, as transformers: nothing missing, nothing left over.
    assert_eq!(report, hf::LoadReport::default());
    assert!(cfg.label_names().is_empty(), "a QA config has no labels");
    let model = BertClassifier::new(&cfg, &params, BertHead::QuestionAnswering).unwrap();
    let inp = inputs();
    let want = expected();
    let logits = model.forward(&batch(&inp), Mode::Eval).unwrap(); // (B, T, 2)
    assert_eq!(logits.dims(), &[3, 12, 2]);
    let (start, end) = BertForQuestionAnswering::start_end(&logits).unwrap(); // (B, T) each
    let d = max_abs(&start, &want["qa_start_logits"]);
    assert!(d <= 1e-4, "start logits differ from transformers by {d}");
    let d = max_abs(&end, &want["qa_end_logits"]);
    assert!(d <= 1e-4, "end logits differ from transformers by {d}");

    // The golden positions ignore one start (at T) and one end (beyond T, clamped to T).
    let t = 12;
    assert!(inp.qa_start.contains(&t) && inp.qa_end.iter().any(|&p| p > t));
    let want_loss = want["qa_loss"].to_scalar::<f32>().unwrap();
    let reference = reference_qa_loss(
        &start.to_vec2::<f32>().unwrap(),
        &end.to_vec2::<f32>().unwrap(),
        &inp.qa_start,
        &inp.qa_end,
    );
    assert!(
        (reference - want_loss as f64).abs() <= 1e-4,
        "reference loss {reference} vs transformers {want_loss}"
    );
    let loss = BertForQuestionAnswering::loss(&logits, &inp.qa_start, &inp.qa_end)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-4,
        "QA loss {loss} vs transformers {want_loss}"
    );
}

#[test]
fn question_answering_export_is_transformers_files() {
    let dir = golden().join("qa");
    let (cfg, params, _) = load("qa", BertHead::QuestionAnswering);
    // The tensors: transformers' names, shapes and values, nothing more.
    let ours = hf::export_tensors(&params, DType::F32).unwrap();
    let theirs =
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, t) in &ours {
        assert_eq!(t.dims(), theirs[name].dims(), "{name}");
        assert_eq!(max_abs(t, &theirs[name]), 0.0, "{name}");
    }
    assert_eq!(ours["qa_outputs.weight"].dims(), &[2, 32]);
    // The config: every key we write that transformers wrote has its value; no labels and no
    // problem type (transformers' default num_labels, 2, is what qa_outputs needs).
    let hf_cfg = hf::to_hf_config(&cfg, BertHead::QuestionAnswering, DType::F32);
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(hf_cfg["architectures"], want["architectures"]);
    for (k, v) in hf_cfg.as_object().unwrap() {
        if let Some(w) = want.get(k) {
            assert_eq!(v, w, "config.json key {k}");
        }
    }
    for k in ["id2label", "label2id", "problem_type", "num_labels"] {
        assert!(hf_cfg.get(k).is_none() && want.get(k).is_none(), "{k}");
    }
    // Round trip through the files.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("config.json"),
        serde_json::to_string(&hf_cfg).unwrap(),
    )
    .unwrap();
    let (cfg2, head) = hf::config_from_hf(&d.path().join("config.json")).unwrap();
    assert_eq!(
        (cfg2.clone(), head),
        (cfg, Some(BertHead::QuestionAnswering))
    );
    let (p2, report) = hf::params_from_tensors(
        ours,
        &cfg2,
        BertHead::QuestionAnswering,
        Path::new("x"),
        &mut Rng::new(0),
        DType::F32,
    )
    .unwrap();
    assert_eq!(report, hf::LoadReport::default());
    assert_eq!(p2.names(), params.names());
}

#[test]
fn question_answering_configs_have_two_outputs_whatever_their_labels() {
    let text = std::fs::read_to_string(golden().join("qa/config.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let d = tempfile::tempdir().unwrap();
    let read = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        edit(&mut v);
        let path = d.path().join("config.json");
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        hf::config_from_hf(&path)
    };
    // transformers' default two labels (what older versions wrote into every config): ignored.
    let (cfg, head) = read(&|v| {
        v["id2label"] = serde_json::json!({"0": "LABEL_0", "1": "LABEL_1"});
        v["label2id"] = serde_json::json!({"LABEL_0": 0, "LABEL_1": 1});
    })
    .unwrap();
    assert_eq!(head, Some(BertHead::QuestionAnswering));
    assert!(cfg.label_names().is_empty());
    // Any other count would give qa_outputs that many outputs in transformers: refused.
    let err = read(&|v| v["id2label"] = serde_json::json!({"0": "a", "1": "b", "2": "c"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("num_labels 3"),
        "{err}"
    );
    let err = read(&|v| v["num_labels"] = serde_json::json!(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("num_labels 1"),
        "{err}"
    );
    assert!(read(&|v| v["num_labels"] = serde_json::json!(2)).is_ok());
}

#[test]
fn pretrained_checkpoints_load_into_question_answering_with_a_fresh_head() {
    let load_into = |sub: &str, head: BertHead| {
        let dir = golden().join(sub);
        let (cfg, _) = hf::config_from_hf(&golden().join("mlm/config.json")).unwrap();
        let cfg = match head {
            BertHead::SequenceClassification => cfg.with_labels(&["a".into(), "b".into()]),
            _ => cfg,
        };
        hf::load_params(
            &dir.join("model.safetensors"),
            &cfg,
            head,
            &mut Rng::new(0),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap()
    };
    let qa_head = ["qa_outputs.weight", "qa_outputs.bias"];
    // The pretrained MLM: the encoder is kept, qa_outputs is new, the MLM head unused.
    let (params, report) = load_into("mlm", BertHead::QuestionAnswering);
    assert_eq!(report.newly_initialised, qa_head);
    assert!(
        !report.unused.is_empty() && report.unused.iter().all(|n| n.starts_with("cls.")),
        "{:?}",
        report.unused
    );
    let mlm = safetensors_io::load(
        &golden().join("mlm/model.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let name = "bert.encoder.layer.1.output.dense.weight";
    assert_eq!(max_abs(&params.get(name).unwrap(), &mlm[name]), 0.0);
    // A fresh head as transformers draws it: N(0, 0.02) weights, zero bias.
    let w = params.get("qa_outputs.weight").unwrap();
    let std = w
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    assert!((0.01..0.04).contains(&std), "qa_outputs.weight std {std}");
    let b = params
        .get("qa_outputs.bias")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(b, [0.0, 0.0]);
    // A sequence classifier: its pooler (QA has none) and classifier are unused.
    let (_, report) = load_into("cls", BertHead::QuestionAnswering);
    assert_eq!(report.newly_initialised, qa_head);
    let mut unused = report.unused.clone();
    unused.sort();
    assert_eq!(
        unused,
        [
            "bert.pooler.dense.bias",
            "bert.pooler.dense.weight",
            "classifier.bias",
            "classifier.weight"
        ]
    );
    // And back: a QA checkpoint into a classifier drops qa_outputs, draws pooler and
    // classifier.
    let (_, report) = load_into("qa", BertHead::SequenceClassification);
    assert_eq!(
        report.newly_initialised,
        [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias"
        ]
    );
    assert_eq!(report.unused, ["qa_outputs.bias", "qa_outputs.weight"]);
}

//! BERT parity with Hugging Face transformers on golden files transformers itself wrote
//! (`scripts/make_bert_golden.py`): a BertForMaskedLM, a BertForSequenceClassification and a
//! BertForTokenClassification saved with `save_pretrained`, a padded batch with a sentence
//! pair, and the logits, hidden states and losses transformers computed in eval mode.
//! Tolerance 1e-4 max abs (fp32).

use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use lantern_models::bert::{
    hf, BertClassifier, BertConfig, BertForMaskedLM, BertForSequenceClassification, BertHead,
    BertInput,
};
use lantern_models::{safetensors_io, Mode, Params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/bert_tiny")
}

fn matrix(v: &serde_json::Value, key: &str) -> Vec<Vec<i64>> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

struct Inputs {
    ids: Tensor,
    token_type_ids: Tensor,
    attention_mask: Tensor,
    mlm_labels: Vec<i64>,
    cls_labels: Vec<u32>,
    tok_labels: Vec<i64>,
}

fn inputs() -> Inputs {
    let text = std::fs::read_to_string(golden().join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let u32s = |key: &str| {
        let m = matrix(&v, key);
        let (b, t) = (m.len(), m[0].len());
        let flat: Vec<u32> = m.concat().into_iter().map(|x| x as u32).collect();
        Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap()
    };
    Inputs {
        ids: u32s("input_ids"),
        token_type_ids: u32s("token_type_ids"),
        attention_mask: u32s("attention_mask"),
        mlm_labels: matrix(&v, "mlm_labels").concat(),
        cls_labels: v["cls_labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect(),
        tok_labels: matrix(&v, "tok_labels").concat(),
    }
}

fn expected() -> BTreeMap<String, Tensor> {
    safetensors_io::load(
        &golden().join("expected.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap()
}

fn load(sub: &str, want_head: BertHead) -> (BertConfig, Params, hf::LoadReport) {
    let dir = golden().join(sub);
    let (cfg, head) = hf::config_from_hf(&dir.join("config.json")).unwrap();
    assert_eq!(head, Some(want_head));
    let (params, report) = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        want_head,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    (cfg, params, report)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
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

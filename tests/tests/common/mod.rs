//! Readers of the golden files transformers wrote (tests/golden), shared by the parity tests.
#![allow(dead_code)] // each test file uses its own subset

use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use lantern_models::bert::{hf, BertConfig, BertHead};
use lantern_models::{safetensors_io, Params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `tests/golden/<name>`.
pub fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `v[key]`, a list of lists of integers.
pub fn matrix(v: &serde_json::Value, key: &str) -> Vec<Vec<i64>> {
    v[key].as_array().unwrap().iter().map(ints).collect()
}

/// A list of integers.
pub fn ints(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// A list of token ids.
pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    ints(v).into_iter().map(|x| x as u32).collect()
}

/// A list of numbers (a metric's series).
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The records of `<run>/metrics.jsonl`.
pub fn run_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `key` of every record of `kind` (`"train"`, `"val"`), in order.
pub fn series(recs: &[serde_json::Value], kind: &str, key: &str) -> Vec<f64> {
    recs.iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r[key].as_f64().unwrap())
        .collect()
}

/// The `[train]`, `[checkpoint]` and `[run]` sections of `lantern train` that TRL's golden
/// recipe makes (`scripts/make_sft_golden.py` and its kin): `batch` examples a step, `steps`
/// steps at the constant learning rate `lr`, AdamW β2 0.999 without weight decay, clipping at
/// 1, an evaluation and a log line every step, no checkpoints.
pub fn trl_recipe(
    batch: usize,
    steps: &serde_json::Value,
    lr: &serde_json::Value,
    run: &Path,
) -> String {
    format!(
        r#"[train]
device = "cpu"
batch_size = {batch}
max_steps = {steps}
lr = {lr}
schedule = "constant"
warmup_steps = 0
beta2 = 0.999
weight_decay = 0.0
grad_clip = 1.0
eval_every = 1
log_every = 1
[checkpoint]
every = 0
[run]
dir = "{run}"
"#,
        run = run.display()
    )
}

/// `got` against the reference's `want`, value by value: within `tol`, relative where a value
/// is above 1 (IPO's losses are tens). Prints the largest difference, for the record.
pub fn assert_series(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{label}: records");
    let scale = |w: f64| w.abs().max(1.0);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale(*w))
        .fold(0f64, f64::max);
    eprintln!("{label}: largest difference {worst:.2e}");
    for (s, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < tol * scale(*w), "{label} {s}: {g} vs {w}");
    }
}

/// `v[key]`, a (B, T) list of lists, as a u32 tensor.
pub fn u32_matrix(v: &serde_json::Value, key: &str) -> Tensor {
    let m = matrix(v, key);
    let (b, t) = (m.len(), m[0].len());
    let flat: Vec<u32> = m.concat().into_iter().map(|x| x as u32).collect();
    Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap()
}

/// `dir/expected.safetensors`, as f32.
pub fn expected_in(dir: &Path) -> BTreeMap<String, Tensor> {
    safetensors_io::load(&dir.join("expected.safetensors"), &Device::Cpu, DType::F32).unwrap()
}

/// The model in `dir`, whose config must name `want_head`, loaded as that head (f32, CPU).
pub fn load_in(dir: &Path, want_head: BertHead) -> (BertConfig, Params, hf::LoadReport) {
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

pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
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

/// transformers' mean cross-entropy over the rows whose label is not -100. logits: (N, V),
/// labels: N.
pub fn mean_ce_ignoring(logits: &Tensor, labels: &[i64]) -> f32 {
    mean_ce_tensor(logits, labels).to_scalar::<f32>().unwrap()
}

/// [`mean_ce_ignoring`] as a scalar tensor on the logits' device, to differentiate.
pub fn mean_ce_tensor(logits: &Tensor, labels: &[i64]) -> Tensor {
    let dev = logits.device();
    let targets: Vec<u32> = labels.iter().map(|&y| y.max(0) as u32).collect();
    let weights: Vec<f32> = labels.iter().map(|&y| f32::from(y >= 0)).collect();
    let n = weights.iter().sum::<f32>() as f64;
    let sum = lantern_kernels::cross_entropy_sum(
        logits,
        &Tensor::new(targets.as_slice(), dev).unwrap(),
        Some(&Tensor::new(weights.as_slice(), dev).unwrap()),
    )
    .unwrap();
    (sum / n).unwrap()
}

/// Asserts |got - want| <= tol, naming `what`.
pub fn assert_close(what: &str, got: f32, want: f32, tol: f32) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: {got} vs transformers {want}"
    );
}

/// Asserts `got` has `want`'s shape and is within 1e-4 of it.
pub fn check(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let d = max_abs(got, want);
    assert!(d <= 1e-4, "{what} differ from transformers by {d}");
}

/// The labels of a golden `inputs.json` (transformers' -100 where unlabelled).
pub struct GoldenLabels {
    pub mlm: Vec<i64>,
    pub cls: Vec<i64>,
    pub tok: Vec<i64>,
    pub qa_start: Vec<i64>,
    pub qa_end: Vec<i64>,
}

impl GoldenLabels {
    pub fn of(v: &serde_json::Value) -> Self {
        Self {
            // ELECTRA's discriminators have no masked-LM labels.
            mlm: match v.get("mlm_labels") {
                Some(_) => matrix(v, "mlm_labels").concat(),
                None => Vec::new(),
            },
            cls: ints(&v["cls_labels"]),
            tok: matrix(v, "tok_labels").concat(),
            qa_start: ints(&v["qa_start_positions"]),
            qa_end: ints(&v["qa_end_positions"]),
        }
    }
}

/// The masked LM in `dir/mlm` against `expected.safetensors`: the encoder's last hidden state,
/// the logits and the loss over the masked positions; nothing missing or unused on loading.
pub fn assert_masked_lm_matches(
    dir: &Path,
    input: &lantern_models::bert::BertInput<'_>,
    labels: &GoldenLabels,
) {
    use lantern_models::bert::BertForMaskedLM;
    use lantern_models::Mode;
    let (cfg, params, report) = load_in(&dir.join("mlm"), BertHead::MaskedLm);
    assert!(
        report.newly_initialised.is_empty() && report.unused.is_empty(),
        "{report:?}"
    );
    let want = expected_in(dir);
    let model = BertForMaskedLM::new(&cfg, &params).unwrap();
    let hidden = model.bert.forward(input, &mut Mode::Eval).unwrap();
    check("hidden states", &hidden, &want["hidden"]);
    let logits = model.forward(input, Mode::Eval).unwrap();
    check("MLM logits", &logits, &want["mlm_logits"]);
    let (b, t, v) = logits.dims3().unwrap();
    let loss = mean_ce_ignoring(&logits.reshape((b * t, v)).unwrap(), &labels.mlm);
    assert_close(
        "MLM loss",
        loss,
        want["mlm_loss"].to_scalar().unwrap(),
        1e-4,
    );
}

/// The sequence classifier (`dir/cls`, labels negative/neutral/positive), token classifier
/// (`dir/tok`) and question-answering model (`dir/qa`) against `expected.safetensors`: logits
/// and transformers' losses; nothing missing or unused on loading.
pub fn assert_heads_match(
    dir: &Path,
    input: &lantern_models::bert::BertInput<'_>,
    labels: &GoldenLabels,
) {
    use lantern_models::bert::{BertClassifier, BertForQuestionAnswering};
    use lantern_models::Mode;
    let want = expected_in(dir);
    let loss_of = |key: &str| want[key].to_scalar::<f32>().unwrap();
    for (sub, head) in [
        ("cls", BertHead::SequenceClassification),
        ("tok", BertHead::TokenClassification),
        ("qa", BertHead::QuestionAnswering),
    ] {
        let (cfg, params, report) = load_in(&dir.join(sub), head);
        assert!(
            report.newly_initialised.is_empty() && report.unused.is_empty(),
            "{sub}: {report:?}"
        );
        let model = BertClassifier::new(&cfg, &params, head).unwrap();
        let logits = model.forward(input, Mode::Eval).unwrap();
        match head {
            BertHead::SequenceClassification => {
                assert_eq!(cfg.label_names(), ["negative", "neutral", "positive"]);
                check("sequence logits", &logits, &want["cls_logits"]);
                let loss = mean_ce_ignoring(&logits, &labels.cls);
                assert_close("cls loss", loss, loss_of("cls_loss"), 1e-4);
            }
            BertHead::TokenClassification => {
                check("token logits", &logits, &want["tok_logits"]);
                let (b, t, l) = logits.dims3().unwrap();
                let loss = mean_ce_ignoring(&logits.reshape((b * t, l)).unwrap(), &labels.tok);
                assert_close("tok loss", loss, loss_of("tok_loss"), 1e-4);
            }
            _ => {
                let (start, end) = BertForQuestionAnswering::start_end(&logits).unwrap();
                check("start logits", &start, &want["qa_start_logits"]);
                check("end logits", &end, &want["qa_end_logits"]);
                let loss =
                    BertForQuestionAnswering::loss(&logits, &labels.qa_start, &labels.qa_end)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                assert_close("QA loss", loss, loss_of("qa_loss"), 1e-4);
            }
        }
    }
}

/// Loads `dir/mlm` into each task head: the encoder is kept, the head is `fresh` (listed as
/// newly initialised, in order, its biases zero) and the checkpoint's MLM head, whose names
/// all start with `mlm_prefixes`, is reported unused.
pub fn assert_fresh_heads(dir: &Path, fresh: &[(BertHead, &[&str])], mlm_prefixes: &[&str]) {
    let dir = dir.join("mlm");
    let (cfg, _) = hf::config_from_hf(&dir.join("config.json")).unwrap();
    let cfg = cfg.with_labels(&["a".to_string(), "b".to_string()]);
    for &(head, names) in fresh {
        let (params, report) = hf::load_params(
            &dir.join("model.safetensors"),
            &cfg,
            head,
            &mut Rng::new(0),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        assert_eq!(report.newly_initialised, names, "{head:?}");
        let unused_ok = |n: &String| mlm_prefixes.iter().any(|p| n.starts_with(p));
        assert!(
            !report.unused.is_empty() && report.unused.iter().all(unused_ok),
            "{:?}",
            report.unused
        );
        let bias = params.get(names[names.len() - 1]).unwrap();
        let sum = bias
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(sum, 0.0, "a fresh bias is zero");
    }
}

/// The exported tensors of the model in `dir/sub` are the file transformers wrote, name for
/// name and bit for bit, and the config.json we write reads back as the same config. Returns
/// that config.json.
pub fn assert_export_round_trips(dir: &Path, sub: &str, head: BertHead) -> serde_json::Value {
    let dir = dir.join(sub);
    let (cfg, params, _) = load_in(&dir, head);
    let v = hf::to_hf_config(&cfg, head, DType::F32);
    let theirs =
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let ours = hf::export_tensors(&params, DType::F32).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, t) in &ours {
        assert_eq!(max_abs(t, &theirs[name]), 0.0, "{name}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let (back, back_head) = hf::config_from_hf(&path).unwrap();
    assert_eq!((back, back_head), (cfg, Some(head)));
    v
}

/// Every gradient of a LoRA run's trained store (`names`, `grads`: adapters and head, in
/// order) against peft's `grad.base_model.model.<name>` in `want`, within 1e-4 of the
/// tensor's largest entry (some are tiny: BERT's second-layer query reaches the loss only
/// through [CLS]) plus 1e-6, and as many as peft computed. Returns the worst difference
/// relative to that largest entry.
pub fn assert_peft_grads(
    golden: &str,
    (names, grads): (&[String], &[Option<Tensor>]),
    want: &BTreeMap<String, Tensor>,
) -> f32 {
    assert_eq!(names.len(), grads.len());
    let mut worst = 0f32;
    for (name, g) in names.iter().zip(grads) {
        let key = format!("grad.base_model.model.{name}");
        let theirs = want
            .get(&key)
            .unwrap_or_else(|| panic!("{golden}: peft has no {key}"));
        let g = g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(g.dims(), theirs.dims(), "{name}");
        let scale: f32 = theirs
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let d = max_abs(g, theirs);
        worst = worst.max(d / scale);
        assert!(
            d <= 1e-4 * scale + 1e-6,
            "{golden}: gradient of {name} differs from peft's by {d} (largest {scale})"
        );
    }
    let n_grads = want.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        n_grads,
        names.len(),
        "{golden}: every peft gradient checked"
    );
    worst
}

/// Our `adapter_config.json` (`ours`) carries the settings peft reads back as peft's own
/// (`peft`): the keys both write alike (and `extra`), `lora_alpha` as a number, and the same
/// set of target modules.
pub fn assert_peft_settings(
    golden: &str,
    ours: &serde_json::Value,
    peft: &serde_json::Value,
    extra: &[&str],
) {
    let keys = [
        "r",
        "use_rslora",
        "fan_in_fan_out",
        "task_type",
        "bias",
        "peft_type",
    ];
    for key in keys.iter().chain(extra) {
        assert_eq!(ours[*key], peft[*key], "{golden}: {key}");
    }
    assert_eq!(ours["lora_alpha"].as_f64(), peft["lora_alpha"].as_f64());
    let set = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        serde_json::from_value(v.clone()).unwrap()
    };
    assert_eq!(
        set(&ours["target_modules"]),
        set(&peft["target_modules"]),
        "{golden}"
    );
}

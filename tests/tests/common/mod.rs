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
    let targets: Vec<u32> = labels.iter().map(|&y| y.max(0) as u32).collect();
    let weights: Vec<f32> = labels.iter().map(|&y| f32::from(y >= 0)).collect();
    let n = weights.iter().sum::<f32>();
    lantern_kernels::cross_entropy_sum(
        logits,
        &Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
        Some(&Tensor::new(weights.as_slice(), &Device::Cpu).unwrap()),
    )
    .unwrap()
    .to_scalar::<f32>()
    .unwrap()
        / n
}

/// Asserts |got - want| <= tol, naming `what`.
pub fn assert_close(what: &str, got: f32, want: f32, tol: f32) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: {got} vs transformers {want}"
    );
}

//! Parity with Hugging Face transformers on golden files that transformers itself wrote
//! (`scripts/make_golden.py`): a GPT2LMHeadModel saved with `save_pretrained`, token ids, and
//! the logits and loss transformers computed on them. Tolerance 1e-4 max abs (fp32).

use candle_core::{DType, Device, Tensor};
use lantern_models::gpt::{hf, Gpt, GptConfig};
use lantern_models::{safetensors_io, Mode, Params};
use std::path::{Path, PathBuf};

mod common;
use common::max_abs;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/gpt2_tiny")
}

fn inputs(dir: &Path) -> Tensor {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    let rows: Vec<Vec<u32>> = v["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
}

fn load_golden(dir: &Path) -> (GptConfig, Params) {
    let cfg = hf::config_from_hf(&dir.join("config.json")).unwrap();
    let params = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    (cfg, params)
}

#[test]
fn transformers_checkpoint_loads_with_the_same_logits_and_loss() {
    let dir = golden();
    let (cfg, params) = load_golden(&dir);
    let model = Gpt::new(&cfg, &params).unwrap();
    let ids = inputs(&dir);
    let logits = model.forward(&ids, Mode::Eval).unwrap();
    let want =
        safetensors_io::load(&dir.join("expected.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let d = max_abs(&logits, &want["logits"]);
    assert!(d <= 1e-4, "logits differ from transformers by {d}");
    let loss = Gpt::shifted_loss(&logits, &ids)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want_loss = want["loss"].to_scalar::<f32>().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-4,
        "loss {loss} vs transformers {want_loss}"
    );
}

#[test]
fn export_round_trips_bit_exactly_with_an_equivalent_config() {
    let dir = golden();
    let (cfg, params) = load_golden(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let bytes =
        safetensors_io::serialize(&hf::export_tensors(&params, DType::F32).unwrap()).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), &bytes).unwrap();
    let hf_cfg = hf::to_hf_config(&cfg, None, DType::F32);
    std::fs::write(tmp.path().join("config.json"), hf_cfg.to_string()).unwrap();
    // The metadata transformers' loader wants is there.
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );

    let cfg2 = hf::config_from_hf(&tmp.path().join("config.json")).unwrap();
    assert_eq!(cfg, cfg2);
    let p2 = hf::load_params(
        &tmp.path().join("model.safetensors"),
        &cfg2,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let ids = inputs(&dir);
    let a = Gpt::new(&cfg, &params)
        .unwrap()
        .forward(&ids, Mode::Eval)
        .unwrap();
    let b = Gpt::new(&cfg2, &p2)
        .unwrap()
        .forward(&ids, Mode::Eval)
        .unwrap();
    assert_eq!(max_abs(&a, &b), 0.0);
    // Conv1D layout: c_attn is [in, 3*in] as in transformers.
    let orig =
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let ours = safetensors_io::load(
        &tmp.path().join("model.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    for (name, t) in &ours {
        let theirs = orig
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in the transformers file"));
        assert_eq!(t.dims(), theirs.dims(), "{name}");
        assert_eq!(max_abs(t, theirs), 0.0, "{name}");
    }
}

#[test]
fn shape_mismatch_and_missing_tensors_are_named() {
    let dir = golden();
    let mut cfg = hf::config_from_hf(&dir.join("config.json")).unwrap();
    cfg.n_layer += 1;
    let e = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("missing") && e.contains(&format!("transformer.h.{}.", cfg.n_layer - 1)),
        "{e}"
    );
    let mut cfg = hf::config_from_hf(&dir.join("config.json")).unwrap();
    cfg.n_positions *= 2;
    let e = hf::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("transformer.wpe.weight") && e.contains("shape"),
        "{e}"
    );
}

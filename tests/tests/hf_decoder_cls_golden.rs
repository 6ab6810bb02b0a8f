//! Parity with transformers' `GPT2ForSequenceClassification`, `GPT2ForTokenClassification`,
//! `LlamaForSequenceClassification` and `LlamaForTokenClassification` on golden files it wrote
//! (`scripts/make_gpt2_cls_golden.py`, `scripts/make_llama_cls_golden.py`): a right-padded
//! batch whose first row holds the padding id inside its text, the logits, the loss, and the
//! gradient of every parameter (Llama's embedding row of the padding id gets none).

use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use lantern_models::decoder::classifier::{
    self, DecoderClsConfig, DecoderForSequenceClassification, DecoderForTokenClassification,
    DecoderHead,
};
use lantern_models::{safetensors_io, Mode, Params};
use std::path::Path;

mod common;

const SEQ: DecoderHead = DecoderHead::SequenceClassification;
const TOK: DecoderHead = DecoderHead::TokenClassification;
use common::{check, golden_dir, ints, matrix, max_abs, mean_ce_ignoring, read_json, u32_matrix};

/// The golden folder's config (whose architecture must be `head`'s) and weights, every one of
/// them in the file.
fn load(dir: &Path, head: DecoderHead) -> (DecoderClsConfig, Params) {
    let (cfg, found) = classifier::config_from_hf(&dir.join("config.json")).unwrap();
    assert_eq!(found, Some(head));
    let (params, report) = classifier::load_params(
        &dir.join("model.safetensors"),
        &cfg,
        head,
        &mut Rng::new(0),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        report,
        Default::default(),
        "a trained classifier loads whole"
    );
    (cfg, params)
}

/// Every gradient against transformers'; Llama's embedding row of the padding id (95) is
/// exactly zero. Returns how many were checked.
fn check_gradients(
    params: &Params,
    grads: &candle_core::backprop::GradStore,
    want: &std::collections::BTreeMap<String, Tensor>,
) -> usize {
    for (name, v) in params.iter() {
        let theirs = &want[&format!("grad.{name}")];
        let ours = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(ours.dims(), theirs.dims(), "{name}");
        let d = max_abs(ours, theirs);
        assert!(
            d <= 1e-5,
            "gradient of {name} differs from transformers by {d}"
        );
        if name == lantern_models::llama::EMBED_TOKENS {
            let row = ours.get(95).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(row.to_scalar::<f32>().unwrap(), 0.0, "padding row");
        }
    }
    params.len()
}

#[test]
fn transformers_classifier_gives_the_same_logits_loss_and_gradients() {
    for (golden, n_params) in [("gpt2_cls", 29), ("llama_cls", 21)] {
        sequence_classifier_parity(golden, n_params);
    }
}

fn sequence_classifier_parity(golden: &str, n_params: usize) {
    let dir = golden_dir(golden);
    let (cfg, params) = load(&dir, SEQ);
    assert_eq!(cfg.pad_token_id, Some(95));
    assert_eq!(cfg.label_names(), ["negative", "neutral", "positive"]);
    let model = DecoderForSequenceClassification::new(&cfg, &params).unwrap();
    let inputs = read_json(&dir.join("inputs.json"));
    let ids = u32_matrix(&inputs, "input_ids");
    let want_last: Vec<u32> = inputs["last_token"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(model.last_tokens(&ids).unwrap(), want_last);

    let want =
        safetensors_io::load(&dir.join("expected.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let logits = model.forward(&ids, Mode::Eval).unwrap();
    check("pooled logits", &logits, &want["cls_logits"]);
    let labels = ints(&inputs["cls_labels"]);
    let loss = mean_ce_ignoring(&logits, &labels);
    let want_loss = want["cls_loss"].to_scalar::<f32>().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-5,
        "loss {loss} vs {want_loss}"
    );

    // The hidden states at the real tokens (transformers masks padded keys, so padded
    // positions differ; no pooled token is one).
    let g = model.decoder();
    let x = g.last_block_output(&ids, &mut Mode::Eval).unwrap();
    let hidden = g.final_norm(&x).unwrap();
    for (row, &last) in want_last.iter().enumerate() {
        let n = last as usize + 1;
        let ours = hidden.get(row).unwrap().narrow(0, 0, n).unwrap();
        let theirs = want["hidden"].get(row).unwrap().narrow(0, 0, n).unwrap();
        check(&format!("hidden states of row {row}"), &ours, &theirs);
    }

    // Gradients of transformers' mean cross-entropy.
    let targets: Vec<u32> = labels.iter().map(|&y| y as u32).collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let loss_t = (lantern_kernels::cross_entropy_sum(&logits, &targets, None).unwrap()
        / labels.len() as f64)
        .unwrap();
    let grads = loss_t.backward().unwrap();
    assert_eq!(
        check_gradients(&params, &grads, &want),
        n_params,
        "{golden}"
    );
}

#[test]
fn export_is_transformers_layout_and_reloads_bit_exactly() {
    for golden in ["gpt2_cls", "llama_cls", "gpt2_tok", "llama_tok"] {
        export_reloads(golden);
    }
}

fn export_reloads(golden: &str) {
    let dir = golden_dir(golden);
    let head = match golden.ends_with("_tok") {
        true => TOK,
        false => SEQ,
    };
    let (cfg, params) = load(&dir, head);
    let tmp = tempfile::tempdir().unwrap();
    let tensors: std::collections::BTreeMap<String, Tensor> = params
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
        .collect();
    let out = tmp.path().join("model.safetensors");
    std::fs::write(&out, safetensors_io::serialize(&tensors).unwrap()).unwrap();
    let cfg_path = tmp.path().join("config.json");
    std::fs::write(
        &cfg_path,
        classifier::to_hf_config(&cfg, head, DType::F32).to_string(),
    )
    .unwrap();
    let (cfg2, p2) = load(tmp.path(), head);
    assert_eq!(cfg2, cfg);
    // transformers' own names, bit for bit.
    let orig =
        safetensors_io::load(&dir.join("model.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let ours = safetensors_io::load(&out, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        orig.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>()
    );
    for (name, t) in &ours {
        assert_eq!(max_abs(t, &orig[name]), 0.0, "{name}");
    }
    let ids = u32_matrix(&read_json(&dir.join("inputs.json")), "input_ids");
    let forward = |cfg: &DecoderClsConfig, params: &Params| match head {
        SEQ => DecoderForSequenceClassification::new(cfg, params)
            .unwrap()
            .forward(&ids, Mode::Eval)
            .unwrap(),
        TOK => DecoderForTokenClassification::new(cfg, params)
            .unwrap()
            .forward(&ids, Mode::Eval)
            .unwrap(),
    };
    assert_eq!(max_abs(&forward(&cfg, &params), &forward(&cfg2, &p2)), 0.0);
}

/// transformers' `GPT2ForTokenClassification` and `LlamaForTokenClassification` on the same
/// batch: the logits at every real token (padded positions attend differently under
/// transformers' mask and are never scored), the loss over the labelled ones, and every
/// gradient.
#[test]
fn transformers_token_classifier_gives_the_same_logits_loss_and_gradients() {
    for (golden, n_params) in [("gpt2_tok", 30), ("llama_tok", 22)] {
        token_classifier_parity(golden, n_params);
    }
}

fn token_classifier_parity(golden: &str, n_params: usize) {
    let dir = golden_dir(golden);
    let (cfg, params) = load(&dir, TOK);
    assert_eq!(cfg.classifier_dropout, Some(0.1));
    let model = DecoderForTokenClassification::new(&cfg, &params).unwrap();
    let inputs = read_json(&dir.join("inputs.json"));
    let ids = u32_matrix(&inputs, "input_ids");
    let want =
        safetensors_io::load(&dir.join("expected.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let logits = model.forward(&ids, Mode::Eval).unwrap(); // (B, T, 5)
    let mask = matrix(&inputs, "attention_mask");
    for (row, m) in mask.iter().enumerate() {
        let n = m.iter().filter(|&&x| x == 1).count();
        let ours = logits.get(row).unwrap().narrow(0, 0, n).unwrap();
        let theirs = want["tok_logits"]
            .get(row)
            .unwrap()
            .narrow(0, 0, n)
            .unwrap();
        check(&format!("token logits of row {row}"), &ours, &theirs);
    }
    let labels: Vec<i64> = matrix(&inputs, "tok_labels").concat();
    let flat = logits.reshape((labels.len(), 5)).unwrap();
    let loss = mean_ce_ignoring(&flat, &labels);
    let want_loss = want["tok_loss"].to_scalar::<f32>().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-5,
        "loss {loss} vs {want_loss}"
    );

    let targets: Vec<u32> = labels.iter().map(|&y| y.max(0) as u32).collect();
    let weights: Vec<f32> = labels.iter().map(|&y| f32::from(y >= 0)).collect();
    let n = weights.iter().sum::<f32>() as f64;
    let loss_t = (lantern_kernels::cross_entropy_sum(
        &flat,
        &Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
        Some(&Tensor::new(weights.as_slice(), &Device::Cpu).unwrap()),
    )
    .unwrap()
        / n)
        .unwrap();
    let grads = loss_t.backward().unwrap();
    assert_eq!(
        check_gradients(&params, &grads, &want),
        n_params,
        "{golden}"
    );
}

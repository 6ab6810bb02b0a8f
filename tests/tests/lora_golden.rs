//! Parity with peft's LoRA on golden files it wrote (`scripts/make_lora_golden.py`): a BERT,
//! a GPT-2 (`Conv1D` weights, peft's `fan_in_fan_out`) and a Llama (rsLoRA, an MLP target)
//! sequence classifier, each with non-zero adapters and head. Loading peft's
//! `adapter_model.safetensors` over the base model must give peft's logits and loss, the merged
//! weights of `merge_and_unload`, and, through the low-rank side path, peft's gradients of
//! every A, B and head tensor; and our adapter files must name everything as peft's.

use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use lantern_models::bert::{BertHead, BertInput};
use lantern_models::task::{TaskConfig, TaskModel};
use lantern_models::{safetensors_io, Mode, Params};
use lantern_train::grads::StepGrads;
use lantern_train::lora::{Base, Lora, LoraSection};
use std::collections::BTreeMap;

mod common;
use common::{
    assert_peft_grads, assert_peft_settings, golden_dir, ints, max_abs, mean_ce_ignoring,
    read_json, u32_matrix,
};

const HEAD: BertHead = BertHead::SequenceClassification;

fn load_all(path: &std::path::Path) -> BTreeMap<String, Tensor> {
    safetensors_io::load(path, &Device::Cpu, DType::F32).unwrap()
}

fn parity(golden: &str, base: &str, inputs_of: &str) {
    let dir = golden_dir(golden);
    let base = golden_dir(base);
    let (cfg, head) = TaskConfig::from_hf(&base.join("config.json")).unwrap();
    assert_eq!(head, Some(HEAD));
    let (params, report) = cfg
        .load_params(
            &base.join("model.safetensors"),
            HEAD,
            &mut Rng::new(0),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
    assert!(report.newly_initialised.is_empty());

    let peft = read_json(&dir.join("adapter/adapter_config.json"));
    let spec = LoraSection::from_peft(&peft).unwrap();
    let lora = Lora::new(
        &spec,
        Base::Task(&cfg, HEAD),
        (&params, None),
        &[],
        &mut Rng::new(5),
    )
    .unwrap();
    lora.load_adapter(&dir.join("adapter/adapter_model.safetensors"))
        .unwrap();

    // Our adapter under peft's names and shapes, with the values just read.
    let theirs = load_all(&dir.join("adapter/adapter_model.safetensors"));
    let ours = lora.adapter_tensors().unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{golden}"
    );
    for (k, t) in &ours {
        assert_eq!(max_abs(t, &theirs[k]), 0.0, "{k}");
    }
    // The settings peft reads back.
    let c = lora.adapter_config(None);
    assert_peft_settings(golden, &c, &peft, &[]);

    // The merged weights are merge_and_unload's.
    let merged = load_all(&dir.join("merged.safetensors"));
    let exported = cfg
        .export_tensors(&lora.merged().unwrap(), DType::F32)
        .unwrap();
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        merged.keys().collect::<Vec<_>>()
    );
    for (k, t) in &exported {
        let d = max_abs(t, &merged[k]);
        assert!(d <= 1e-6, "{golden}: merged {k} differs from peft's by {d}");
    }

    // Logits and loss through the view the fine-tuning loop builds the model from.
    let view = lora.view();
    let model = TaskModel::new(&cfg, &view, HEAD).unwrap();
    let inputs = read_json(&golden_dir(inputs_of).join("inputs.json"));
    let ids = u32_matrix(&inputs, "input_ids");
    let (types, mask) = match inputs.get("token_type_ids") {
        Some(_) => (
            Some(u32_matrix(&inputs, "token_type_ids")),
            Some(u32_matrix(&inputs, "attention_mask")),
        ),
        None => (None, None),
    };
    let input = BertInput {
        ids: &ids,
        token_type_ids: types.as_ref(),
        attention_mask: mask.as_ref(),
    };
    let want = load_all(&dir.join("expected.safetensors"));
    let logits = model.forward(&input, Mode::Eval).unwrap();
    let d = max_abs(&logits, &want["logits"]);
    assert!(d <= 1e-5, "{golden}: logits differ from peft's by {d}");
    let labels = ints(&inputs["cls_labels"]);
    let loss = mean_ce_ignoring(&logits, &labels);
    let want_loss = want["loss"].to_scalar::<f32>().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-5,
        "{golden}: loss {loss} vs {want_loss}"
    );

    // Gradients: the adapters' and the head's (the frozen weights get none).
    let targets: Vec<u32> = labels.iter().map(|&y| y as u32).collect();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let loss_t = (lantern_kernels::cross_entropy_sum(&logits, &targets, None).unwrap()
        / labels.len() as f64)
        .unwrap();
    let store = loss_t.backward().unwrap();
    let mut grads = StepGrads::new(view.len());
    grads.accumulate(&view, &store).unwrap();
    let ours = lora.master_grads(&grads).unwrap();
    let master: &Params = lora.master();
    assert_peft_grads(golden, (master.names(), &ours.grads), &want);
}

#[test]
fn bert_adapter_matches_peft() {
    parity("lora_bert", "bert_tiny/cls", "bert_tiny");
}

#[test]
fn gpt2_conv1d_adapter_matches_peft() {
    parity("lora_gpt2", "gpt2_cls", "gpt2_cls");
}

#[test]
fn llama_rslora_adapter_with_an_mlp_target_matches_peft() {
    parity("lora_llama", "llama_cls", "llama_cls");
}

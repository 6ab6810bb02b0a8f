//! Parity with peft's LoRA over causal language models (`task_type` CAUSAL_LM), on golden files
//! it wrote (`scripts/make_lora_golden.py`): a GPT-2 with its head tied to the embedding and
//! `Conv1D` targets (`c_attn`, `c_fc`: peft's `fan_in_fan_out`), and a Llama with grouped-query
//! attention, an untied `lm_head` and rsLoRA on `"all-linear"`, each with non-zero adapters.
//! Loading peft's adapter over the base model must give peft's logits and next-token loss, the
//! merged weights of `merge_and_unload`, and, through the low-rank side path, peft's gradient
//! of every A and B; only the adapters train (no head, the output
//! layer frozen); our adapter files name everything as peft's, and our `"all-linear"` adapts
//! the layers peft's does.

use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use lantern_models::decoder::{Decoder, DecoderConfig};
use lantern_models::gpt::Gpt;
use lantern_models::{safetensors_io, Mode, Params};
use lantern_train::grads::StepGrads;
use lantern_train::lora::{Base, Lora, LoraSection, ALL_LINEAR};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod common;
use common::{assert_peft_grads, assert_peft_settings, golden_dir, max_abs, read_json, u32_matrix};

fn load_all(path: &Path) -> BTreeMap<String, Tensor> {
    safetensors_io::load(path, &Device::Cpu, DType::F32).unwrap()
}

/// The base language model in `tests/golden/<base>`, loaded as the trainer loads a pretrained
/// causal LM (`ModelConfig::load_params`: fp32, HF names).
fn load_base(base: &str) -> (DecoderConfig, Params) {
    let dir = golden_dir(base);
    let cfg = DecoderConfig::from_hf(&dir.join("config.json")).unwrap();
    let params = cfg
        .load_params(&dir.join("model.safetensors"), &Device::Cpu, DType::F32)
        .unwrap();
    (cfg, params)
}

/// A list of names in a JSON value, as a set.
fn name_set(v: &Value) -> BTreeSet<String> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The modules (weight names less `.weight`) of `params` that peft's `target_modules` matching
/// selects for `targets`: a module whose path is a target or ends with `.` and a target.
fn selected(targets: &BTreeSet<String>, params: &Params) -> BTreeSet<String> {
    params
        .names()
        .iter()
        .filter_map(|n| n.strip_suffix(".weight"))
        .filter(|m| {
            targets
                .iter()
                .any(|t| m == t || m.ends_with(&format!(".{t}")))
        })
        .map(str::to_string)
        .collect()
}

/// The modules an adapter file adapts: those of its `lora_A` tensors.
fn adapted(tensors: &BTreeMap<String, Tensor>) -> BTreeSet<String> {
    tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".lora_A.weight"))
        .map(|m| m.strip_prefix("base_model.model.").unwrap().to_string())
        .collect()
}

/// `spec` over the base's fp32 store, as a language model: only the adapters train.
fn lora_over(spec: &LoraSection, cfg: &DecoderConfig, params: &Params) -> Lora {
    Lora::new(
        spec,
        Base::CausalLm(cfg),
        (params, None),
        &[],
        &mut Rng::new(5),
    )
    .unwrap()
}

/// `golden`'s adapter over `base`, whose `inputs.json` has the ids; `requested` is the
/// `target_modules` the script gave peft (before peft expanded `"all-linear"`).
fn parity(golden: &str, base: &str, requested: &[&str]) {
    let dir = golden_dir(golden);
    let (cfg, params) = load_base(base);
    let adapter_file = dir.join("adapter/adapter_model.safetensors");

    let peft = read_json(&dir.join("adapter/adapter_config.json"));
    let spec = LoraSection::from_peft(&peft).unwrap();
    let lora = lora_over(&spec, &cfg, &params);
    lora.load_adapter(&adapter_file).unwrap();

    // Our adapter under peft's names and shapes, with the values just read: the A and B
    // matrices alone (a language model has no head in it).
    let theirs = load_all(&adapter_file);
    let ours = lora.adapter_tensors().unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{golden}"
    );
    for (k, t) in &ours {
        assert_eq!(t.dims(), theirs[k].dims(), "{golden}: {k}");
        assert_eq!(max_abs(t, &theirs[k]), 0.0, "{golden}: {k}");
    }
    assert_eq!(
        ours.len(),
        2 * adapted(&theirs).len(),
        "{golden}: only A and B"
    );

    // The settings peft reads back.
    let c = lora.adapter_config(None);
    assert_peft_settings(golden, &c, &peft, &["modules_to_save"]);
    assert_eq!(c["task_type"], "CAUSAL_LM");
    assert_eq!(c["modules_to_save"], Value::Null);

    // The merged weights are merge_and_unload's; the output layer (a Llama's lm_head, a
    // GPT-2's tied wte) is among the unchanged ones.
    let merged = load_all(&dir.join("merged.safetensors"));
    let exported = cfg
        .export_tensors(&lora.merged().unwrap(), DType::F32)
        .unwrap();
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        merged.keys().collect::<Vec<_>>(),
        "{golden}"
    );
    for (k, t) in &exported {
        let d = max_abs(t, &merged[k]);
        assert!(d <= 1e-6, "{golden}: merged {k} differs from peft's by {d}");
    }

    // Logits and the next-token loss through the view the training loop builds the model from.
    let view = lora.view();
    let model = Decoder::new(&cfg, &view).unwrap();
    let ids = u32_matrix(
        &read_json(&golden_dir(base).join("inputs.json")),
        "input_ids",
    );
    let want = load_all(&dir.join("expected.safetensors"));
    let logits = model.forward(&ids, Mode::Eval).unwrap();
    assert_eq!(logits.dims(), want["logits"].dims(), "{golden}");
    let d = max_abs(&logits, &want["logits"]);
    eprintln!("{golden}: logits differ from peft's by {d:.2e}");
    assert!(d <= 1e-5, "{golden}: logits differ from peft's by {d}");
    let loss = Gpt::shifted_loss(&logits, &ids)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want_loss = want["loss"].to_scalar::<f32>().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-5,
        "{golden}: loss {loss} vs peft {want_loss}"
    );

    // Gradients, from a training-mode forward as the loop's (no dropout in these models: the
    // same graph): the adapters' A and B get them, no weight of the model does.
    let logits = model.forward(&ids, Mode::Train(&mut Rng::new(0))).unwrap();
    let store = Gpt::shifted_loss(&logits, &ids)
        .unwrap()
        .backward()
        .unwrap();
    let mut grads = StepGrads::new(view.len());
    grads.accumulate(&view, &store).unwrap();
    let with_grad: BTreeSet<String> = view
        .names()
        .iter()
        .zip(&grads.grads)
        .filter(|(_, g)| g.is_some())
        .map(|(n, _)| {
            let module = n.strip_suffix(".lora_A.weight");
            module.or(n.strip_suffix(".lora_B.weight")).unwrap_or(n)
        })
        .map(str::to_string)
        .collect();
    assert_eq!(
        with_grad,
        adapted(&theirs),
        "{golden}: only the targets' adapters get a gradient"
    );
    let ours = lora.master_grads(&grads).unwrap();
    let master: &Params = lora.master();
    let worst = assert_peft_grads(golden, (master.names(), &ours.grads), &want);
    eprintln!(
        "{golden}: {} gradients, worst difference {worst:.2e} of the tensor's largest",
        master.len()
    );

    // The targets as the script asked peft for them (for the Llama, "all-linear" before peft
    // expanded it): the same layers adapted, so peft's adapter loads and merges the same, and
    // the target list we write is peft's (for "all-linear", the full path of every adapted
    // module, as peft 0.21.2 writes its expansion).
    let requested = LoraSection {
        target_modules: Some(requested.iter().map(|s| s.to_string()).collect()),
        ..spec
    };
    let (_, fresh) = load_base(base);
    let ours = lora_over(&requested, &cfg, &fresh);
    let names = ours.adapter_tensors().unwrap();
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{golden}: {requested:?} adapts peft's layers"
    );
    let our_targets = name_set(&ours.adapter_config(None)["target_modules"]);
    let peft_targets = name_set(&peft["target_modules"]);
    assert_eq!(
        our_targets, peft_targets,
        "{golden}: our target_modules against peft's"
    );
    assert_eq!(selected(&peft_targets, &fresh), adapted(&theirs));
    ours.load_adapter(&adapter_file).unwrap();
    let exported = cfg
        .export_tensors(&ours.merged().unwrap(), DType::F32)
        .unwrap();
    for (k, t) in &exported {
        let d = max_abs(t, &merged[k]);
        assert!(d <= 1e-6, "{golden}: merged {k} differs from peft's by {d}");
    }
}

#[test]
fn gpt2_tied_lm_conv1d_adapter_matches_peft() {
    parity("lora_gpt2_lm", "gpt2_tiny", &["c_attn", "c_fc"]);
}

#[test]
fn llama_untied_lm_rslora_all_linear_adapter_matches_peft() {
    parity("lora_llama_lm", "llama_tiny", &[ALL_LINEAR]);
}

/// The output layer is never a target: `lm_head` is refused, naming it, for an untied Llama
/// (whose `lm_head.weight` is a linear layer of the store) and a GPT-2 (whose head is its
/// embedding `wte`), from our settings and from a peft config.
#[test]
fn an_output_layer_target_is_refused() {
    let refusal = |spec: &LoraSection, base: &str| -> String {
        let (cfg, params) = load_base(base);
        let lora = Lora::new(
            spec,
            Base::CausalLm(&cfg),
            (&params, None),
            &[],
            &mut Rng::new(5),
        );
        match lora {
            Ok(_) => panic!("{base}: lm_head accepted as a LoRA target"),
            Err(e) => e.to_string(),
        }
    };
    for base in ["llama_tiny", "gpt2_tiny"] {
        let spec = LoraSection {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: Some(vec!["lm_head".into()]),
            use_rslora: false,
            adapter: None,
        };
        let e = refusal(&spec, base);
        assert!(e.contains("lm_head"), "{base}: {e}");
    }
    // From a peft config too.
    let mut peft = read_json(&golden_dir("lora_llama_lm/adapter/adapter_config.json"));
    peft["target_modules"] = json!(["q_proj", "lm_head"]);
    let e = refusal(&LoraSection::from_peft(&peft).unwrap(), "llama_tiny");
    assert!(e.contains("lm_head"), "{e}");
}

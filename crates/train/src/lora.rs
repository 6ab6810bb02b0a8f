//! LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as peft builds
//! it: each targeted linear layer keeps its pretrained weight W0 fixed and computes with
//! W0 + s·B·A, where A (r, in) starts uniform in ±1/√in (torch's `kaiming_uniform_` with
//! a = √5, peft's default), B (out, r) starts at zero (so the model starts as the pretrained
//! one) and s = alpha / r (rsLoRA: alpha / √r). The task head (peft's `modules_to_save`:
//! `classifier`, `score`, `qa_outputs`, DistilBERT's `pre_classifier`) is trained in full;
//! every other weight is frozen.
//!
//! How it runs here: as peft, unmerged. The model is built from a view of its store
//! ([`Lora::view`]) that holds each target's A and B beside its weight, and the models run
//! every such layer as `x·W0ᵀ + s·(drop(x)·Aᵀ)·Bᵀ` (`lantern_models::lowrank`, with
//! `lora_dropout` on the side path's input, in training only). The pretrained weights are
//! constants there ([`Params::train_only`]): the backward pass computes the gradients of A, B
//! and the head, and no (out, in) weight gradient for a target. In mixed precision the view
//! holds bf16/fp16 working copies of A and B, refreshed from the fp32 masters after every
//! optimizer step, as the head's. Checkpoints write the merged model ([`Lora::merged`]).
//!
//! The same adapters serve `lantern train` over a causal language model ([`Base::CausalLm`],
//! peft's `CAUSAL_LM`: nothing trains in full, the output layer stays frozen) or a BERT's
//! masked LM (a [`Base::Task`] whose head, the MLM head, trains in full), start from a
//! peft adapter folder with `lora.adapter` ([`fill_from_adapter`]), and are merged into a
//! model by `lantern generate`, `score` and `export --adapter`.
//!
//! Files: `adapter/adapter_model.safetensors` and `adapter/adapter_config.json` are what peft's
//! `save_pretrained` writes (`PeftModel.from_pretrained(base, "<checkpoint>/adapter")` loads
//! them); the checkpoint's `model.safetensors` is the merged model (peft's
//! `merge_and_unload`), which transformers, `lantern eval` and `lantern predict` load as an
//! ordinary model. The adapter lives in a subfolder because transformers' `from_pretrained`
//! treats a folder holding `adapter_config.json` as an adapter to apply to its base model.

use crate::grads::StepGrads;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use lantern_kernels::Rng;
use lantern_models::bert::BertHead;
use lantern_models::decoder::DecoderConfig;
use lantern_models::lowrank::LowRankSpec;
use lantern_models::task::TaskConfig;
use lantern_models::{safetensors_io, Params};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The checkpoint subfolder holding the adapter.
pub const ADAPTER_DIR: &str = "adapter";
/// peft's file names in it.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// peft's prefix of every tensor name in `adapter_model.safetensors` (the `PeftModel`'s
/// `base_model.model`).
const PREFIX: &str = "base_model.model.";

/// The `[lora]` section of a fine-tuning config: present = LoRA, absent = full fine-tuning.
/// Names and defaults are peft's `LoraConfig`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// The rank of the update (`r`).
    #[serde(default = "d_r")]
    pub r: usize,
    /// `lora_alpha`: the update B·A is scaled by alpha / r (alpha / √r with `use_rslora`).
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// `lora_dropout`: the probability of zeroing an input element of the low-rank path, in
    /// training (peft's default 0).
    #[serde(default)]
    pub dropout: f64,
    /// The linear layers to adapt: a layer is adapted when its name is one of these or ends
    /// with `.` and one of these (peft's `target_modules` matching); `"all-linear"` (alone,
    /// or as a one-name list) adapts every linear layer but the head, as peft. Default:
    /// peft's for the family (the attention's query and value projections).
    #[serde(default, deserialize_with = "one_or_many")]
    pub target_modules: Option<Vec<String>>,
    /// rsLoRA's scale alpha / √r.
    #[serde(default)]
    pub use_rslora: bool,
    /// Start from a peft adapter folder (`adapter_config.json` and `adapter_model.safetensors`:
    /// a checkpoint's `adapter/`, or what peft's `save_pretrained` wrote) instead of B = 0:
    /// peft's `PeftModel.from_pretrained(model, adapter, is_trainable=True)`. Its settings
    /// fill this section ([`fill_from_adapter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
}

/// peft's shortcut for every linear layer but the head.
pub const ALL_LINEAR: &str = "all-linear";

/// `target_modules` as a list of names or one name (`"all-linear"`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        Some(OneOrMany::One(s)) => Some(vec![s]),
        Some(OneOrMany::Many(v)) => Some(v),
        None => None,
    })
}

fn d_r() -> usize {
    8
}
fn d_alpha() -> f64 {
    8.0
}

impl LoraSection {
    /// The section's own checks; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.r == 0 {
            return Err("lora.r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("lora.alpha must be positive, not {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "lora.dropout must be in [0, 1), not {}",
                self.dropout
            ));
        }
        if self.target_modules.as_ref().is_some_and(|t| t.is_empty()) {
            return Err("lora.target_modules is empty: name at least one linear layer".into());
        }
        Ok(())
    }

    /// The settings of a peft `adapter_config.json`, refusing what this implementation does
    /// not do (DoRA, trained biases, per-layer ranks, a regular expression as targets, ...);
    /// the message names the key.
    pub fn from_peft(v: &Value) -> std::result::Result<LoraSection, String> {
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        if get("peft_type").and_then(Value::as_str) != Some("LORA") {
            return Err(format!("peft_type {:?}: only LORA", v.get("peft_type")));
        }
        let unsupported = [
            ("use_dora", json!(false)),
            ("lora_bias", json!(false)),
            ("bias", json!("none")),
            ("rank_pattern", json!({})),
            ("alpha_pattern", json!({})),
        ];
        for (k, default) in unsupported {
            if get(k).is_some_and(|x| *x != default) {
                return Err(format!("{k} = {}: not supported (only {default})", v[k]));
            }
        }
        for k in [
            "layers_to_transform",
            "target_parameters",
            "exclude_modules",
        ] {
            if get(k).is_some() {
                return Err(format!("{k} = {}: not supported", v[k]));
            }
        }
        let r = get("r")
            .and_then(Value::as_u64)
            .ok_or("r: not a whole number")?;
        let targets = match get("target_modules") {
            Some(Value::String(s)) if s == ALL_LINEAR => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("target_modules: not a list of names")?,
            Some(x) => {
                return Err(format!(
                    "target_modules = {x}: only a list of names or \"{ALL_LINEAR}\""
                ))
            }
            None => return Err("target_modules: missing".into()),
        };
        let spec = LoraSection {
            r: r as usize,
            alpha: get("lora_alpha")
                .and_then(Value::as_f64)
                .ok_or("lora_alpha: not a number")?,
            dropout: get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            target_modules: Some(targets),
            use_rslora: get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            adapter: None,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The factor of B·A.
    pub fn scale(&self) -> f64 {
        match self.use_rslora {
            true => self.alpha / (self.r as f64).sqrt(),
            false => self.alpha / self.r as f64,
        }
    }
}

/// Refuses to apply the adapter in `adapter` over the model in `model`, a LoRA checkpoint or
/// export, when that folder's own `adapter/` is the same adapter (the same weights file): its
/// `model.safetensors` already holds it merged, and applying it again would add it twice.
pub fn check_not_merged(model: &Path, adapter: &Path) -> Result<()> {
    let own = model.join(ADAPTER_DIR).join(ADAPTER_WEIGHTS);
    let given = adapter.join(ADAPTER_WEIGHTS);
    let same = match (std::fs::read(&own), std::fs::read(&given)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match same {
        false => Ok(()),
        true => Err(Error::Config(format!(
            "{} already holds the adapter {} merged into its weights (it is that LoRA \
             checkpoint's own): start from its pretrained model (the adapter's \
             base_model_name_or_path), or use the checkpoint without the adapter",
            model.display(),
            adapter.display()
        ))),
    }
}

/// Copies peft's two adapter files from the folder `from` into the folder `to` (created).
pub fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(crate::error::io(to))?;
    for f in [ADAPTER_WEIGHTS, ADAPTER_CONFIG] {
        std::fs::copy(from.join(f), to.join(f)).map_err(crate::error::io(from.join(f)))?;
    }
    Ok(())
}

/// The settings of the peft adapter folder `dir` (its `adapter_config.json`,
/// [`LoraSection::from_peft`]); errors name the file.
pub fn read_adapter_settings(dir: &Path) -> std::result::Result<LoraSection, String> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    LoraSection::from_peft(&v).map_err(|e| format!("{}: {e}", path.display()))
}

/// With `lora.adapter` set in a config's raw table, the adapter's `adapter_config.json` gives
/// the rest of the section: a key the config also gives must have the adapter's value, except
/// `dropout`, a setting of the training rather than of the adapter, which the config may
/// change (peft's `lora_dropout` when it is left out). Errors name the key and the file.
pub fn fill_from_adapter(table: &mut toml::Table) -> std::result::Result<(), String> {
    let Some(toml::Value::Table(section)) = table.get_mut("lora") else {
        return Ok(());
    };
    let Some(adapter) = section.get("adapter") else {
        return Ok(());
    };
    let dir = PathBuf::from(
        adapter
            .as_str()
            .ok_or("lora.adapter must be a folder's path")?,
    );
    let path = dir.join(ADAPTER_CONFIG);
    let spec = read_adapter_settings(&dir).map_err(|e| format!("lora.adapter: {e}"))?;
    let targets = spec.target_modules.clone().unwrap_or_default();
    let theirs: [(&str, toml::Value); 5] = [
        ("r", toml::Value::Integer(spec.r as i64)),
        ("alpha", toml::Value::Float(spec.alpha)),
        ("dropout", toml::Value::Float(spec.dropout)),
        ("use_rslora", toml::Value::Boolean(spec.use_rslora)),
        (
            "target_modules",
            toml::Value::Array(targets.into_iter().map(toml::Value::String).collect()),
        ),
    ];
    for (key, value) in theirs {
        if key == "dropout" && section.contains_key(key) {
            continue;
        }
        if let Some(given) = section.get(key) {
            let same = match (given, &value) {
                (toml::Value::Integer(i), toml::Value::Float(f)) => *i as f64 == *f,
                (toml::Value::String(s), toml::Value::Array(a)) => {
                    a.len() == 1 && a[0].as_str() == Some(s.as_str())
                }
                (g, v) => g == v,
            };
            if !same {
                return Err(format!(
                    "lora.{key} = {given}, but the adapter ({}) has {value}; leave lora.{key} \
                     out to take the adapter's",
                    path.display()
                ));
            }
        }
        section.insert(key.to_string(), value);
    }
    Ok(())
}

/// Refuses to resume a run (whose state file is `state`) with other LoRA settings than it was
/// trained with, or LoRA for a run trained in full and the other way round.
pub fn check_same_settings(
    was: &Option<LoraSection>,
    is: &Option<LoraSection>,
    state: &Path,
) -> Result<()> {
    if was == is {
        return Ok(());
    }
    let describe = |l: &Option<LoraSection>| match l {
        Some(l) => format!("LoRA {}", serde_json::to_string(l).expect("serialises")),
        None => "full training (no [lora])".to_string(),
    };
    Err(Error::Checkpoint {
        path: state.to_path_buf(),
        msg: format!(
            "the run was trained with {}, the config now asks for {}",
            describe(was),
            describe(is)
        ),
    })
}

/// The model the adapters go into.
#[derive(Clone, Copy)]
pub enum Base<'a> {
    /// A model with a head that trains in full (peft's `modules_to_save`): a task model being
    /// fine-tuned (`lantern finetune`), or a BERT's masked LM trained on text (`lantern
    /// train`; its MLM head, whose tied output layer [`Lora::adapter_tensors`] writes as
    /// copies).
    Task(&'a TaskConfig, BertHead),
    /// A causal language model trained on text (`lantern train`; peft's `CAUSAL_LM`): only
    /// the adapters train. The output layer (an untied Llama's `lm_head`) stays frozen and is
    /// never a target, as peft leaves it out of `"all-linear"`.
    CausalLm(&'a DecoderConfig),
}

/// The store a run keeps of the pretrained model: `params` without LoRA; with it the
/// adapters' ([`Lora::model`]: in mixed precision without fp32 copies of the weights the
/// working copy holds exactly), and `params` is dropped, freeing those copies (a binding merely
/// shadowed would keep them to the end of the caller).
pub fn pretrained_store(lora: Option<&Lora>, params: Params) -> Params {
    match lora {
        Some(l) => l.model().clone(),
        None => params,
    }
}

/// `model` (fp32) with each frozen weight the working copy `work` holds exactly replaced by
/// that copy's variable: a pretrained model published in bf16 or fp16 (most are) is then held
/// once, in the working dtype, instead of in fp32 beside it (4 bytes per parameter more, and
/// nothing gained). Weights the working dtype rounds (an fp32 checkpoint's) keep their fp32
/// variables, which the checkpoints' merged model reads; so do those not `frozen` (the head,
/// which the optimizer updates in fp32).
fn keep_once(model: &Params, work: &Params, frozen: &[bool]) -> Result<Params> {
    let mut out = Params::new();
    for (i, ((name, v32), w)) in model.iter().zip(work.vars()).enumerate() {
        let exact = frozen[i]
            && w.dtype() != DType::F32
            && (w.as_tensor().to_dtype(DType::F32)? - v32.as_tensor())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?
                == 0.0;
        out.insert_shared(name, if exact { w.clone() } else { v32.clone() });
    }
    Ok(out)
}

impl Base<'_> {
    fn family(&self) -> &'static str {
        match self {
            Base::Task(t, _) => t.family(),
            Base::CausalLm(c) => c.model_type(),
        }
    }

    fn default_targets(&self) -> &'static [&'static str] {
        match self {
            Base::Task(t, _) => t.default_lora_targets(),
            Base::CausalLm(c) => c.default_lora_targets(),
        }
    }

    fn weights_in_out(&self) -> bool {
        match self {
            Base::Task(t, _) => t.weights_in_out(),
            Base::CausalLm(c) => c.weights_in_out(),
        }
    }

    /// Trained in full: the task head.
    fn is_head(&self, name: &str) -> bool {
        match self {
            Base::Task(t, head) => t.is_head_param(*head, name),
            Base::CausalLm(_) => false,
        }
    }

    /// A weight that is neither adapted nor trained: embeddings, and the language model's
    /// output layer.
    fn never_target(&self, name: &str) -> bool {
        lantern_models::task::is_embedding(name)
            || matches!(self, Base::CausalLm(_)) && name == lantern_models::llama::LM_HEAD
    }

    /// peft's `task_type`.
    fn task_type(&self) -> Option<&'static str> {
        match self {
            Base::Task(_, BertHead::SequenceClassification) => Some("SEQ_CLS"),
            Base::Task(_, BertHead::TokenClassification) => Some("TOKEN_CLS"),
            Base::Task(_, BertHead::QuestionAnswering) => Some("QUESTION_ANS"),
            Base::Task(..) => None,
            Base::CausalLm(_) => Some("CAUSAL_LM"),
        }
    }
}

/// One adapted weight.
struct Target {
    /// Its index in the model's stores (which keep its pretrained value W0), and the indices
    /// of its A and B in the master store.
    index: usize,
    a: usize,
    b: usize,
}

/// The adapters of one fine-tuning run, over the model's stores.
pub struct Lora {
    spec: LoraSection,
    targets: Vec<Target>,
    /// (index in the master store, index in the model's stores) of each tensor trained in
    /// full: the head's, and those the pretrained folder lacked.
    head: Vec<(usize, usize)>,
    /// What the optimizer trains, in the model's order: each target's `<module>.lora_A.weight`
    /// and `<module>.lora_B.weight` (fp32), and the head's parameters (the model store's own
    /// variables: the optimizer updates them in place).
    master: Params,
    /// The model's store (the pretrained weights and the head; merged with the adapters,
    /// what checkpoints export): fp32, except in mixed precision the frozen weights the
    /// working copy holds exactly ([`keep_once`]: they are that copy's variables).
    model: Params,
    /// In mixed precision: the model's working copy (bf16/fp16), which the model reads.
    work: Option<Params>,
    /// In mixed precision: the working copies of A and B, target by target (A then B), which
    /// the model reads.
    work_adapters: Option<Params>,
    /// GPT-2's `Conv1D` stores weights (in, out): the update is (B·A)ᵀ (peft's
    /// `fan_in_fan_out`).
    in_out: bool,
    task_type: Option<&'static str>,
    modules_to_save: Vec<String>,
    /// `adapter_config.json`'s `target_modules`.
    config_targets: Vec<String>,
    /// A masked LM's output-layer tensors that are ties to parameters (the index in the
    /// model's stores): peft's adapter holds every tensor of a `modules_to_save` module, so
    /// copies of these.
    tied: Vec<(&'static str, usize)>,
    /// [`Lora::base_fingerprint`].
    fingerprint: [f64; 2],
}

impl Lora {
    /// Adapters for `spec`'s targets among the linear layers of `base`, A drawn from `rng`
    /// and B zero, over `model` (the fp32 store: the pretrained weights, with a task's head)
    /// and `work` (its working copy in mixed precision). A task's head is trained in full, and
    /// so is every tensor of `fresh` (what the pretrained folder lacked and was drawn at
    /// random, a BERT's pooler: frozen at random it would be noise, and peft's adapter would
    /// not hold it). Fails, naming the layer, on a target that matches no linear layer (the
    /// head's, the fresh tensors' and a language model's output layer are not candidates) or
    /// names an embedding.
    pub fn new(
        spec: &LoraSection,
        base: Base<'_>,
        (model, work): (&Params, Option<&Params>),
        fresh: &[String],
        rng: &mut Rng,
    ) -> Result<Lora> {
        spec.validate().map_err(Error::Config)?;
        let wanted: Vec<String> = match &spec.target_modules {
            Some(t) => t.clone(),
            None => base
                .default_targets()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        // The distinct names of the linear layers that may be adapted (not the head, not a
        // tensor drawn fresh, not an output layer): what "all-linear" means, and the list a
        // bad name is shown.
        let trained_in_full = |n: &str| base.is_head(n) || fresh.iter().any(|f| f == n);
        let mut layers: Vec<&str> = model
            .iter()
            .filter(|(n, v)| v.rank() == 2 && !base.never_target(n) && !trained_in_full(n))
            .filter_map(|(n, _)| n.strip_suffix(".weight")?.rsplit('.').next())
            .collect();
        layers.sort_unstable();
        layers.dedup();
        let all_linear = matches!(wanted.as_slice(), [one] if one == ALL_LINEAR);
        let wanted = match all_linear {
            true => layers.iter().map(|s| s.to_string()).collect(),
            false => wanted,
        };
        let matches = |module: &str, t: &str| module == t || module.ends_with(&format!(".{t}"));
        let mut used = vec![false; wanted.len()];
        let (mut targets, mut head_idx) = (Vec::new(), Vec::new());
        let mut master = Params::new();
        let in_out = base.weights_in_out();
        for (index, (name, var)) in model.iter().enumerate() {
            let module = name.strip_suffix(".weight");
            let hit = module.and_then(|m| wanted.iter().position(|t| matches(m, t)));
            // The head and the tensors drawn fresh train in full, and are never targets
            // (peft leaves its `modules_to_save` out of the matching the same way).
            if trained_in_full(name) {
                head_idx.push((master.len(), index));
                master.insert_shared(name, var.clone());
                continue;
            }
            let (Some(module), Some(i)) = (module, hit) else {
                continue;
            };
            if base.never_target(name) || var.rank() != 2 {
                return Err(Error::Config(format!(
                    "lora.target_modules: {:?} names {name}, which is not a linear layer LoRA \
                     adapts here (embeddings and a language model's output layer stay frozen)",
                    wanted[i]
                )));
            }
            used[i] = true;
            let (d0, d1) = var.as_tensor().dims2()?;
            let (fan_out, fan_in) = if in_out { (d1, d0) } else { (d0, d1) };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let a: Vec<f32> = (0..spec.r * fan_in)
                .map(|_| (bound * (2.0 * rng.next_f64() - 1.0)) as f32)
                .collect();
            let device = var.device();
            let a = Tensor::from_vec(a, (spec.r, fan_in), device)?;
            let b = Tensor::zeros((fan_out, spec.r), DType::F32, device)?;
            let (ai, bi) = (master.len(), master.len() + 1);
            master.insert(format!("{module}.lora_A.weight"), a)?;
            master.insert(format!("{module}.lora_B.weight"), b)?;
            targets.push(Target {
                index,
                a: ai,
                b: bi,
            });
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(Error::Config(format!(
                "lora.target_modules: no linear layer of this {} model is named {:?}; its \
                 linear layers{}: {}",
                base.family(),
                wanted[i],
                match base {
                    Base::Task(..) => " (the task head aside, which trains in full)",
                    Base::CausalLm(_) => " (the output layer aside, which stays frozen)",
                },
                layers.join(", ")
            )));
        }
        // The frozen pretrained weights (the targets' W0 included), before any update.
        let mut fingerprint = [0f64; 2];
        for (i, var) in model.vars().iter().enumerate() {
            if !head_idx.iter().any(|&(_, w)| w == i) {
                let t = var.as_tensor().to_dtype(DType::F64)?;
                fingerprint[0] += t.sum_all()?.to_scalar::<f64>()?;
                fingerprint[1] += t.sqr()?.sum_all()?.to_scalar::<f64>()?;
            }
        }
        // peft's `modules_to_save`: the head's top module (`classifier`, `score`, ...), and
        // the module of each other tensor trained in full (`bert.pooler.dense`).
        let mut modules_to_save: Vec<String> = head_idx
            .iter()
            .map(|&(m, _)| {
                let name = &master.names()[m];
                match base.is_head(name) {
                    true => name.split('.').next().unwrap_or(name).to_string(),
                    false => name
                        .rsplit_once('.')
                        .map_or(name.as_str(), |(m, _)| m)
                        .to_string(),
                }
            })
            .collect();
        modules_to_save.dedup();
        // peft writes "all-linear" out as the full name of every module it adapted (a set:
        // here sorted), and a list of names as given.
        let config_targets = match all_linear {
            true => {
                let names = model.names();
                let mut full: Vec<String> = targets
                    .iter()
                    .filter_map(|t| names[t.index].strip_suffix(".weight"))
                    .map(str::to_string)
                    .collect();
                full.sort();
                full
            }
            false => wanted.clone(),
        };
        let tied = match base {
            Base::Task(TaskConfig::Bert(c), BertHead::MaskedLm) => {
                let names = model.names();
                lantern_models::bert::mlm_tied_copies(c.model_type, names)
                    .into_iter()
                    .filter_map(|(t, of)| Some((t, names.iter().position(|n| *n == of)?)))
                    .collect()
            }
            _ => Vec::new(),
        };
        let work_adapters = match work {
            Some(w) => {
                let dtype = w.vars().first().map_or(DType::F32, |v| v.dtype());
                let mut p = Params::new();
                for t in &targets {
                    for i in [t.a, t.b] {
                        let v = &master.vars()[i];
                        p.insert(&master.names()[i], v.as_tensor().to_dtype(dtype)?)?;
                    }
                }
                Some(p)
            }
            None => None,
        };
        let frozen: Vec<bool> = (0..model.len())
            .map(|i| !head_idx.iter().any(|&(_, w)| w == i))
            .collect();
        let model = match work {
            Some(w) => keep_once(model, w, &frozen)?,
            None => model.clone(),
        };
        let lora = Lora {
            spec: LoraSection {
                target_modules: Some(wanted),
                ..spec.clone()
            },
            targets,
            head: head_idx,
            master,
            model,
            work: work.cloned(),
            work_adapters,
            in_out,
            task_type: base.task_type(),
            modules_to_save,
            config_targets,
            tied,
            fingerprint,
        };
        if let Some(dir) = &spec.adapter {
            lora.load_adapter(&dir.join(ADAPTER_WEIGHTS))?;
        }
        Ok(lora)
    }

    /// The sum and the sum of squares of the frozen pretrained weights: a checkpoint holds
    /// only the adapters and the head, so a resume checks that it adapts the same model.
    pub fn base_fingerprint(&self) -> [f64; 2] {
        self.fingerprint
    }

    /// Refuses to resume a run whose checkpoint (`state`, the file that recorded `was`, the
    /// [`Lora::base_fingerprint`] it was trained over) adapted another pretrained model than
    /// the one just loaded from `init_from`.
    fn check_same_base(
        &self,
        was: Option<[f64; 2]>,
        state: &Path,
        init_from: Option<&Path>,
    ) -> Result<()> {
        let is = self.fingerprint;
        let same = was.is_some_and(|w| {
            w.iter()
                .zip(is)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0))
        });
        match same {
            true => Ok(()),
            false => Err(Error::Checkpoint {
                path: state.to_path_buf(),
                msg: format!(
                    "the LoRA run was trained over another pretrained model than {} holds now \
                     (weight sum and sum of squares {was:?}, now {is:?})",
                    init_from.unwrap_or(Path::new("?")).display()
                ),
            }),
        }
    }

    /// Continues from a checkpoint folder: refuses another pretrained model than the one its
    /// state file `state` recorded (`was`, [`Lora::base_fingerprint`]), then loads the
    /// checkpoint's adapters.
    pub fn resume(
        &self,
        checkpoint: &Path,
        (state, was): (&Path, Option<[f64; 2]>),
        init_from: Option<&Path>,
    ) -> Result<()> {
        self.check_same_base(was, state, init_from)?;
        self.load_adapter(&checkpoint.join(ADAPTER_DIR).join(ADAPTER_WEIGHTS))
    }

    /// Rank 0's adapters and head on every rank, and the model refreshed from them.
    pub fn broadcast(&self, comm: &lantern_comm::Communicator) -> Result<()> {
        for v in self.master.vars() {
            comm.broadcast(v.as_tensor(), 0)?;
        }
        self.refresh()
    }

    /// The settings and what they train, for the run's first lines: peft's
    /// `print_trainable_parameters`.
    pub fn describe(&self) -> String {
        let (n, total) = self.counts();
        let s = &self.spec;
        let once = match self.kept_once() {
            0 => String::new(),
            k => format!(
                "; {k} of {} frozen tensors held only in the working dtype, which holds them \
                 exactly",
                self.model.len() - self.head.len()
            ),
        };
        format!(
            "LoRA r={} alpha={} (scale {}) on {}: {n} of {total} parameters trained ({:.2} \
             %){once}",
            s.r,
            s.alpha,
            s.scale(),
            s.target_modules.as_deref().unwrap_or_default().join(", "),
            100.0 * n as f64 / total as f64
        )
    }

    /// The store the optimizer trains (the adapters and the head).
    pub fn master(&self) -> &Params {
        &self.master
    }

    /// The settings, with the targets resolved.
    pub fn spec(&self) -> &LoraSection {
        &self.spec
    }

    /// The store to build the model from: the working store (the fp32 one, or its copy in
    /// mixed precision) with each target's A and B (working copies in mixed precision) after
    /// the model's own variables, the target's index t at model.len() + 2t and + 2t + 1, and
    /// the low-rank settings; only A, B and the head are recorded for backward.
    pub fn view(&self) -> Params {
        let model = self.model.names();
        let ab: Vec<(String, Var)> = self
            .adapter_pairs()
            .map(|(m, work)| (self.master.names()[m].clone(), work.clone()))
            .collect();
        let head = self.head.iter().map(|&(_, w)| model[w].as_str());
        let store = self.work.as_ref().unwrap_or(&self.model);
        let mut view = store.train_only(head.chain(ab.iter().map(|(n, _)| n.as_str())));
        for (name, var) in ab {
            view.insert_shared(name, var);
        }
        view.with_low_rank(LowRankSpec {
            scale: self.spec.scale(),
            dropout: self.spec.dropout,
        })
    }

    /// Whether `name` (of the master store) is an A matrix: its gradient is zero while B is
    /// (on the first step), which the gradient-integrity guard must not mistake for a
    /// parameter cut off from the loss.
    pub fn is_a(name: &str) -> bool {
        name.ends_with(".lora_A.weight")
    }

    /// Trainable and total parameter counts (peft's `print_trainable_parameters`: the total
    /// counts the frozen model, the adapters and the head once).
    pub fn counts(&self) -> (usize, usize) {
        let trainable = self.master.num_elements();
        let head: usize = self
            .head
            .iter()
            .map(|&(m, _)| self.master.vars()[m].elem_count())
            .sum();
        (trainable, self.model.num_elements() + trainable - head)
    }

    /// s·B·A (or its transpose, for (in, out) weights): the target's update, f32.
    fn delta(&self, t: &Target) -> Result<Tensor> {
        let v = self.master.vars();
        let ba = v[t.b].as_tensor().matmul(v[t.a].as_tensor())?; // (out, in)
        let ba = match self.in_out {
            true => ba.t()?.contiguous()?,
            false => ba,
        };
        Ok((ba * self.spec.scale())?)
    }

    /// Each A and B: its index in the master store and the variable the model reads (its
    /// working copy in mixed precision, else the master itself), in [`Lora::view`]'s order.
    fn adapter_pairs(&self) -> impl Iterator<Item = (usize, &Var)> {
        self.targets
            .iter()
            .enumerate()
            .flat_map(|(k, t)| [(t.a, 2 * k), (t.b, 2 * k + 1)])
            .map(|(m, w)| match &self.work_adapters {
                Some(work) => (m, &work.vars()[w]),
                None => (m, &self.master.vars()[m]),
            })
    }

    /// Copies the fp32 masters of A, B and the head into their working copies (mixed
    /// precision; the fp32 store shares the head's variables with the optimizer): after every
    /// optimizer step, and after loading adapters.
    pub fn refresh(&self) -> Result<()> {
        let copy = |from: &Var, to: &Var| -> Result<()> {
            Ok(to.set(&from.as_tensor().to_dtype(to.dtype())?)?)
        };
        if self.work_adapters.is_some() {
            for (m, work) in self.adapter_pairs() {
                copy(&self.master.vars()[m], work)?;
            }
        }
        if let Some(work) = &self.work {
            for &(m, w) in &self.head {
                copy(&self.master.vars()[m], &work.vars()[w])?;
            }
        }
        Ok(())
    }

    /// The model's store in fp32 with each target's weight W0 + s·B·A (peft's
    /// `merge_and_unload`): what checkpoints write as `model.safetensors`. The targets' merged
    /// weights and the fp32 values of weights kept in the working dtype are new tensors; the
    /// store itself is left as it is.
    pub fn merged(&self) -> Result<Params> {
        let mut out = self.model.clone();
        for (name, v) in self.model.iter().filter(|(_, v)| v.dtype() != DType::F32) {
            out.insert(name, v.as_tensor().to_dtype(DType::F32)?)?;
        }
        for t in &self.targets {
            // W0 in fp32: widened above where it is held in the working dtype.
            let name = &self.model.names()[t.index];
            let w0 = out.get(name)?;
            out.insert(name, (w0 + self.delta(t)?)?)?;
        }
        Ok(out)
    }

    /// The model's store ([`Lora::merged`] without the adapters): what the run keeps of the
    /// pretrained model, so that the caller need not keep an fp32 copy of its own.
    pub fn model(&self) -> &Params {
        &self.model
    }

    /// How many frozen weights are kept in the working dtype only ([`keep_once`]).
    pub fn kept_once(&self) -> usize {
        self.model
            .vars()
            .iter()
            .filter(|v| v.dtype() != DType::F32)
            .count()
    }

    /// The master store's gradients from those of the view's variables (`grads`, in
    /// [`Lora::view`]'s order, f32): each target's A and B, and the head's.
    pub fn master_grads(&self, grads: &StepGrads) -> Result<StepGrads> {
        let mut out = StepGrads::new(self.master.len());
        let n = self.model.len();
        for (k, t) in self.targets.iter().enumerate() {
            out.grads[t.a] = grads.grads.get(n + 2 * k).cloned().flatten();
            out.grads[t.b] = grads.grads.get(n + 2 * k + 1).cloned().flatten();
        }
        for &(m, w) in &self.head {
            out.grads[m] = grads.grads[w].clone();
        }
        Ok(out)
    }

    /// `adapter_model.safetensors`'s tensors: every master variable under peft's name, and a
    /// masked LM's tied output-layer tensors as the copies peft writes.
    pub fn adapter_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let model = self.model.vars();
        self.master
            .iter()
            .map(|(n, v)| (format!("{PREFIX}{n}"), v.as_tensor().clone()))
            .chain(
                self.tied
                    .iter()
                    .map(|&(n, i)| (format!("{PREFIX}{n}"), model[i].as_tensor().clone())),
            )
            .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()
    }

    /// `adapter_config.json`, as peft writes it for these settings; `base` is the pretrained
    /// model's folder (peft's `base_model_name_or_path`).
    pub fn adapter_config(&self, base: Option<&Path>) -> Value {
        let s = &self.spec;
        json!({
            "peft_type": "LORA",
            "task_type": self.task_type,
            "base_model_name_or_path": base.map(|p| p.display().to_string()),
            "r": s.r,
            "lora_alpha": s.alpha,
            "lora_dropout": s.dropout,
            "use_rslora": s.use_rslora,
            "target_modules": self.config_targets,
            "fan_in_fan_out": self.in_out,
            "bias": "none",
            "lora_bias": false,
            "use_dora": false,
            // None (peft's default, a language model's) is null, not an empty list.
            "modules_to_save": (!self.modules_to_save.is_empty()).then_some(&self.modules_to_save),
            "init_lora_weights": true,
            "inference_mode": true,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "exclude_modules": null,
            "target_parameters": null,
            "revision": null,
        })
    }

    /// Sets the master variables from an `adapter_model.safetensors` (every one must be there,
    /// with its shape, and nothing else), then [`Lora::refresh`]es the model.
    pub fn load_adapter(&self, path: &Path) -> Result<()> {
        let device = self.master.vars().first().map(|v| v.device().clone());
        let device = device.unwrap_or(candle_core::Device::Cpu);
        let mut tensors = safetensors_io::load_float(path, &device, DType::F32)?;
        for (name, var) in self.master.iter() {
            let key = format!("{PREFIX}{name}");
            let t = safetensors_io::take_shaped(&mut tensors, &key, &[&key], var.dims(), path)?
                .ok_or_else(|| Error::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!("has no tensor {key} (the adapter of another model or config?)"),
                })?;
            var.set(&t)?;
        }
        // Copies of tied tensors must be what they copy: Lantern keeps the tie.
        for &(name, i) in &self.tied {
            let key = format!("{PREFIX}{name}");
            if let Some(t) = tensors.remove(&key) {
                let ours = self.model.vars()[i].as_tensor();
                let same = t.dims() == ours.dims()
                    && (t.to_dtype(DType::F32)? - ours.to_dtype(DType::F32)?)?
                        .abs()?
                        .max_all()?
                        .to_scalar::<f32>()?
                        <= 1e-6;
                if !same {
                    return Err(Error::Checkpoint {
                        path: path.to_path_buf(),
                        msg: format!(
                            "{key} is not the tensor it is tied to ({}): an adapter that \
                             trained its own copy of a tied tensor cannot be loaded here",
                            self.model.names()[i]
                        ),
                    });
                }
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: format!(
                    "holds {extra}, which these settings have no place for (lora.target_modules \
                     changed?)"
                ),
            });
        }
        self.refresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use lantern_models::bert::BertInput;
    use lantern_models::bert::{init_params, BertConfig};
    use lantern_models::task::TaskModel;
    use lantern_models::Mode;

    fn bert() -> (TaskConfig, Params) {
        let c = BertConfig::new(40, 16, 2, 2, 32, 16).with_labels(&["a".into(), "b".into()]);
        let p = init_params(
            &c,
            BertHead::SequenceClassification,
            &mut Rng::new(3),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        (TaskConfig::Bert(c), p)
    }

    fn spec() -> LoraSection {
        LoraSection {
            r: 3,
            alpha: 6.0,
            dropout: 0.0,
            target_modules: None,
            use_rslora: false,
            adapter: None,
        }
    }

    /// `spec`'s adapters of a sequence classifier.
    fn lora_with(spec: &LoraSection, cfg: &TaskConfig, p: &Params) -> Lora {
        let head = BertHead::SequenceClassification;
        Lora::new(
            spec,
            Base::Task(cfg, head),
            (p, None),
            &[],
            &mut Rng::new(1),
        )
        .unwrap()
    }

    /// [`spec`]'s adapters of a sequence classifier.
    fn lora_of(cfg: &TaskConfig, p: &Params) -> Lora {
        lora_with(&spec(), cfg, p)
    }

    /// The largest |a - b|.
    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap()
    }

    fn ids() -> Tensor {
        Tensor::new(&[[2u32, 7, 9, 11, 3], [2, 5, 6, 3, 0]], &Device::Cpu).unwrap()
    }

    fn loss(cfg: &TaskConfig, p: &Params) -> Tensor {
        let m = TaskModel::new(cfg, p, BertHead::SequenceClassification).unwrap();
        let ids = ids();
        let input = BertInput {
            ids: &ids,
            token_type_ids: None,
            attention_mask: None,
        };
        let logits = m.forward(&input, Mode::Eval).unwrap();
        (logits.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
    }

    /// Targets, head and order as peft's: query and value of each layer, A then B, then the
    /// classifier; the model unchanged while B is zero.
    #[test]
    fn adapts_query_and_value_and_trains_the_head() {
        let (cfg, p) = bert();
        let before = loss(&cfg, &p).to_scalar::<f32>().unwrap();
        let lora = lora_of(&cfg, &p);
        let names = lora.master().names();
        assert_eq!(names.len(), 2 * 2 * 2 + 2, "{names:?}");
        assert_eq!(
            names[0],
            "bert.encoder.layer.0.attention.self.query.lora_A.weight"
        );
        assert_eq!(
            names[3],
            "bert.encoder.layer.0.attention.self.value.lora_B.weight"
        );
        assert_eq!(&names[8..], ["classifier.weight", "classifier.bias"]);
        assert_eq!(lora.master().var(&names[0]).unwrap().dims(), [3, 16]);
        assert_eq!(lora.master().var(&names[1]).unwrap().dims(), [16, 3]);
        assert_eq!(loss(&cfg, &lora.view()).to_scalar::<f32>().unwrap(), before);
        let cfgj = lora.adapter_config(None);
        assert_eq!(cfgj["task_type"], "SEQ_CLS");
        assert_eq!(cfgj["target_modules"], json!(["query", "value"]));
        assert_eq!(cfgj["modules_to_save"], json!(["classifier"]));
    }

    /// A tensor the pretrained folder lacked (a pooler drawn at random) is trained in full
    /// with the head and saved in the adapter, as peft's `modules_to_save`, and is no target.
    #[test]
    fn tensors_drawn_fresh_are_trained_in_full() {
        let (cfg, p) = bert();
        let fresh = [
            "bert.pooler.dense.weight".to_string(),
            "bert.pooler.dense.bias".to_string(),
        ];
        assert!(p.var(&fresh[0]).is_ok());
        let head = BertHead::SequenceClassification;
        let lora = Lora::new(
            &spec(),
            Base::Task(&cfg, head),
            (&p, None),
            &fresh,
            &mut Rng::new(1),
        )
        .unwrap();
        let names = lora.master().names();
        assert!(fresh.iter().all(|f| names.contains(f)), "{names:?}");
        let c = lora.adapter_config(None);
        assert_eq!(
            c["modules_to_save"],
            json!(["bert.pooler.dense", "classifier"])
        );
        assert!(lora
            .adapter_tensors()
            .unwrap()
            .contains_key("base_model.model.bert.pooler.dense.bias"));
        // "dense" adapts the layers' dense projections, not the pooler's trained in full.
        let mut s = spec();
        s.target_modules = Some(vec!["dense".into()]);
        let lora = Lora::new(
            &s,
            Base::Task(&cfg, head),
            (&p, None),
            &fresh,
            &mut Rng::new(1),
        )
        .unwrap();
        assert_eq!(lora.targets.len(), 2 * 3);
        assert!(lora
            .targets
            .iter()
            .all(|t| !lora.model.names()[t.index].contains("pooler")));
    }

    /// "all-linear" adapts every linear layer but the head (the pooler included), and the
    /// adapter config lists each by its full name, as peft writes it; a string parses as a
    /// list.
    #[test]
    fn all_linear_adapts_every_linear_layer_but_the_head() {
        let (cfg, p) = bert();
        let spec: LoraSection = toml::from_str("target_modules = \"all-linear\"").unwrap();
        assert_eq!(spec.target_modules, Some(vec![ALL_LINEAR.to_string()]));
        let head = BertHead::SequenceClassification;
        let lora = Lora::new(
            &spec,
            Base::Task(&cfg, head),
            (&p, None),
            &[],
            &mut Rng::new(1),
        )
        .unwrap();
        // peft writes the expansion out as full module names.
        let written = lora.adapter_config(None)["target_modules"].clone();
        let written: Vec<String> = serde_json::from_value(written).unwrap();
        assert_eq!(written.len(), 2 * 6 + 1, "{written:?}");
        assert!(written.contains(&"bert.pooler.dense".to_string()));
        assert!(written.contains(&"bert.encoder.layer.1.attention.self.query".to_string()));
        let mut sorted = written.clone();
        sorted.sort();
        assert_eq!(written, sorted);
        // Two layers of query, key, value and three dense layers each, and the pooler's.
        assert_eq!(lora.targets.len(), 2 * 6 + 1);
        assert!(lora
            .targets
            .iter()
            .all(|t| !lora.model.names()[t.index].starts_with("classifier")));
    }

    /// In mixed precision a pretrained model published in bf16 is held once: its frozen
    /// weights are the working copy's variables (no fp32 copy), the head keeps its fp32
    /// master, and the merged model is the same as over the fp32 store, bit for bit. An fp32
    /// model's weights, which bf16 rounds, keep their fp32 values.
    #[test]
    fn a_model_published_in_bf16_is_held_once() {
        let (cfg, p) = bert();
        let head = BertHead::SequenceClassification;
        // The same weights as bf16 would have stored them, in fp32.
        let mut published = Params::new();
        for (n, v) in p.iter() {
            let t = v.as_tensor().to_dtype(DType::BF16).unwrap();
            published
                .insert(n, t.to_dtype(DType::F32).unwrap())
                .unwrap();
        }
        let spec = LoraSection {
            target_modules: Some(vec![ALL_LINEAR.into()]),
            ..spec()
        };
        let new = |model: &Params, work: Option<&Params>| {
            let base = Base::Task(&cfg, head);
            Lora::new(&spec, base, (model, work), &[], &mut Rng::new(1)).unwrap()
        };
        let work = published.to(&Device::Cpu, DType::BF16).unwrap();
        let (mixed, plain) = (new(&published, Some(&work)), new(&published, None));
        let head_names = ["classifier.weight", "classifier.bias"];
        let frozen = p.len() - head_names.len();
        assert_eq!(mixed.kept_once(), frozen);
        assert!(mixed
            .describe()
            .contains(&format!("{frozen} of {frozen} frozen tensors")));
        for (name, v) in mixed.model().iter() {
            let w = work.var(name).unwrap();
            let is_head = head_names.contains(&name);
            assert_eq!(v.dtype(), if is_head { DType::F32 } else { DType::BF16 });
            // The working copy's own variable: the same storage, not a copy.
            assert_eq!(v.as_tensor().id() == w.as_tensor().id(), !is_head, "{name}");
        }
        perturb(&mixed);
        perturb(&plain);
        let (a, b) = (mixed.merged().unwrap(), plain.merged().unwrap());
        assert_eq!(a.names(), b.names());
        for ((n, x), y) in a.iter().zip(b.vars()) {
            assert_eq!(x.dtype(), DType::F32, "{n}");
            let d = max_abs(x.as_tensor(), y.as_tensor());
            assert_eq!(d, 0.0, "{n}");
        }
        // The tied copies peft writes are fp32 too.
        let tensors = mixed.adapter_tensors().unwrap();
        assert!(tensors.values().all(|t| t.dtype() == DType::F32));
        // fp32 weights that bf16 rounds (the drawn matrices) stay fp32; the exact ones (the
        // LayerNorms' ones, the zero biases) are held once.
        let rounded = p.to(&Device::Cpu, DType::BF16).unwrap();
        let fp32 = new(&p, Some(&rounded));
        for (name, v) in fp32.model().iter() {
            let exact = v.rank() == 1 && !head_names.contains(&name);
            let want = if exact { DType::BF16 } else { DType::F32 };
            assert_eq!(v.dtype(), want, "{name}");
        }
    }

    /// Draws every B at random (A is already): adapters that change the model.
    fn perturb(lora: &Lora) {
        let mut rng = Rng::new(9);
        for (n, v) in lora.master().iter() {
            if n.contains("lora_B") {
                let t =
                    Tensor::from_vec(rng.normal_vec(v.elem_count(), 0.3), v.dims(), &Device::Cpu)
                        .unwrap();
                v.set(&t).unwrap();
            }
        }
        lora.refresh().unwrap();
    }

    /// The side path of every target against the merged model: the same loss, and the
    /// gradients of A and B those of the merged weight through the chain rule
    /// (dA = s·Bᵀ·dW, dB = s·dW·Aᵀ). The pretrained weights get none.
    #[test]
    fn the_side_path_is_the_merged_model_and_its_chain_rule() {
        let (cfg, p) = bert();
        let spec = LoraSection {
            target_modules: Some(vec![ALL_LINEAR.into()]),
            ..spec()
        };
        let lora = lora_with(&spec, &cfg, &p);
        perturb(&lora);
        let view = lora.view();
        let ours = loss(&cfg, &view);
        let merged = lora.merged().unwrap();
        let reference = loss(&cfg, &merged);
        let (a, b) = (
            ours.to_scalar::<f32>().unwrap(),
            reference.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs merged {b}");
        assert_ne!(
            a,
            loss(&cfg, &p).to_scalar::<f32>().unwrap(),
            "B changes the model"
        );

        let mut g = StepGrads::new(view.len());
        g.accumulate(&view, &ours.backward().unwrap()).unwrap();
        let tracked = g.grads.iter().filter(|g| g.is_some()).count();
        assert_eq!(
            tracked,
            2 * lora.targets.len() + 2,
            "A, B and the head only"
        );
        let got = lora.master_grads(&g).unwrap();
        let mut gm = StepGrads::new(merged.len());
        gm.accumulate(&merged, &reference.backward().unwrap())
            .unwrap();
        let scale = spec.scale();
        let v = lora.master().vars();
        for t in &lora.targets {
            let dw = (gm.grads[t.index].as_ref().unwrap() * scale).unwrap(); // (out, in)
            let (a, b) = (v[t.a].as_tensor(), v[t.b].as_tensor());
            let want_b = dw.matmul(&a.t().unwrap()).unwrap();
            let want_a = b.t().unwrap().matmul(&dw).unwrap();
            for (want, idx) in [(want_a, t.a), (want_b, t.b)] {
                let got = got.grads[idx].as_ref().unwrap();
                let top = max_abs(&want, &want.zeros_like().unwrap());
                let d = max_abs(&want, got);
                assert!(
                    d <= 1e-4 * top.max(1e-3),
                    "{}: {d}",
                    lora.master().names()[idx]
                );
            }
        }
        for &(m, _) in &lora.head {
            assert!(got.grads[m].is_some());
        }
    }

    /// Every linear layer of every BERT family takes its side path: with `"all-linear"` and
    /// random B, the view's loss is the merged model's (RoBERTa, DistilBERT's own layer names,
    /// ELECTRA's `embeddings_project`, ModernBERT's fused `Wqkv`, `Wi` and `head.dense`), and
    /// differs from the base model's.
    #[test]
    fn every_family_runs_every_adapted_layer() {
        use lantern_models::bert::Family;
        for family in [
            Family::Roberta,
            Family::DistilBert,
            Family::Electra,
            Family::ModernBert,
        ] {
            let mut c =
                BertConfig::new(40, 16, 2, 2, 32, 16).with_labels(&["a".into(), "b".into()]);
            c.model_type = family;
            if family == Family::Electra {
                c.embedding_size = Some(8);
            }
            if family == Family::ModernBert {
                // A bias on every layer, so that the adapter's sum goes before it.
                let mut m = lantern_models::bert::ModernSettings::new(2);
                (m.attention_bias, m.mlp_bias, m.local_attention) = (true, true, 4);
                (c.modern, c.type_vocab_size) = (Some(m), 0);
            }
            let head = BertHead::SequenceClassification;
            let p = init_params(&c, head, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
            let cfg = TaskConfig::Bert(c);
            let spec = LoraSection {
                target_modules: Some(vec![ALL_LINEAR.into()]),
                ..spec()
            };
            let lora = lora_with(&spec, &cfg, &p);
            perturb(&lora);
            let ours = loss(&cfg, &lora.view()).to_scalar::<f32>().unwrap();
            let merged = loss(&cfg, &lora.merged().unwrap())
                .to_scalar::<f32>()
                .unwrap();
            let base = loss(&cfg, &p).to_scalar::<f32>().unwrap();
            assert!(
                (ours - merged).abs() <= 1e-5 * merged.abs(),
                "{family:?}: {ours} vs {merged}"
            );
            assert!(
                (ours - base).abs() > 1e-3 * base.abs(),
                "{family:?}: B changes the model"
            );
            let written = lora.adapter_config(None)["target_modules"].clone();
            if family == Family::Electra {
                assert!(
                    written.to_string().contains("embeddings_project"),
                    "{written}"
                );
            }
        }
    }

    /// The same for the causal LMs: GPT-2's four `Conv1D`s (c_attn's three parts in the
    /// composite attention), Llama's seven projections and Phi-3's four (two fused),
    /// `"all-linear"`, random B: the view's logits are the merged model's.
    #[test]
    fn every_decoder_layer_runs_its_side_path() {
        use lantern_models::decoder::Decoder;
        use lantern_models::gpt::GptConfig;
        use lantern_models::llama::{LlamaConfig, LlamaFamily};
        let llama = LlamaConfig::preset("llama-tiny", 64).unwrap();
        let decoders = [
            DecoderConfig::Gpt(GptConfig::preset("gpt-tiny", 64).unwrap()),
            DecoderConfig::Llama(llama.clone()),
            // Biased layers: Llama's attention_bias and mlp_bias, Qwen2's q/k/v biases.
            DecoderConfig::Llama(LlamaConfig {
                attention_bias: true,
                mlp_bias: true,
                ..llama.clone()
            }),
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Qwen2,
                ..llama.clone()
            }),
            // Qwen3: heads of 48 under a width of 128 and 4 heads; q_norm and k_norm are not
            // linear layers.
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Qwen3,
                head_dim: Some(48),
                ..llama.clone()
            }),
            // Gemma 3: its four norms a block and head norms are not linear layers either.
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Gemma3,
                head_dim: Some(48),
                sliding_window: Some(8),
                sliding_layers: vec![true, false, true, false],
                rope_local_theta: Some(100.0),
                query_pre_attn_scalar: Some(40.0),
                ..llama.clone()
            }),
            // Gemma 2: Gemma 3's layout without head norms, soft-capped scores and logits.
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Gemma2,
                head_dim: Some(48),
                sliding_window: Some(8),
                sliding_layers: vec![true, false, true, false],
                query_pre_attn_scalar: Some(40.0),
                attn_logit_softcapping: Some(5.0),
                final_logit_softcapping: Some(4.0),
                ..llama.clone()
            }),
            // Gemma 1: Llama's layers with Gemma's norms, MLP and embeddings.
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Gemma,
                ..llama.clone()
            }),
            // SmolLM3: a layer without RoPE.
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::SmolLM3,
                nope_layers: vec![false, true, false, true],
                ..llama.clone()
            }),
            // Granite: Llama's seven layers under its multipliers.
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Granite,
                granite: Some(Box::new(lantern_models::llama::GraniteMultipliers {
                    embedding_multiplier: 12.0,
                    residual_multiplier: 0.22,
                    attention_multiplier: 0.05,
                    logits_scaling: 8.0,
                })),
                ..llama.clone()
            }),
            // OLMo 2: norms on the outputs only, q/k norms over all heads (not linear layers).
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Olmo2,
                ..llama.clone()
            }),
            // Phi-3: four linear layers a block, two of them fused (qkv_proj, gate_up_proj).
            DecoderConfig::Llama(LlamaConfig {
                model_type: LlamaFamily::Phi3,
                sliding_window: Some(8),
                ..llama
            }),
        ];
        for cfg in decoders {
            let p = cfg
                .init_params(&mut Rng::new(3), &Device::Cpu, DType::F32)
                .unwrap();
            // Biases start at 0: drawn here, so that the side path must add to the biased
            // output for the view to equal the merged model.
            let mut draw = Rng::new(5);
            for (name, v) in p.iter().filter(|(n, _)| n.ends_with(".bias")) {
                let t = v.as_tensor();
                let x = draw.normal_vec(t.elem_count(), 0.5);
                v.set(&Tensor::from_vec(x, t.dims(), &Device::Cpu).unwrap())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let spec = LoraSection {
                target_modules: Some(vec![ALL_LINEAR.into()]),
                ..spec()
            };
            let base = Base::CausalLm(&cfg);
            let lora = Lora::new(&spec, base, (&p, None), &[], &mut Rng::new(1)).unwrap();
            perturb(&lora);
            let logits = |store: &Params| {
                let m = Decoder::new(&cfg, store).unwrap();
                m.forward(&ids(), Mode::Eval).unwrap()
            };
            let (ours, merged) = (logits(&lora.view()), logits(&lora.merged().unwrap()));
            let top = max_abs(&merged, &merged.zeros_like().unwrap());
            let d = max_abs(&ours, &merged);
            assert!(d <= 1e-5 * top, "{}: {d} of {top}", base.family());
            assert!(
                max_abs(&ours, &logits(&p)) > 1e-3 * top,
                "B changes the model"
            );
            let per_model = match &cfg {
                DecoderConfig::Gpt(g) => 4 * g.n_layer,
                DecoderConfig::Llama(l) if l.fused_projections() => 4 * l.num_hidden_layers,
                DecoderConfig::Llama(l) => 7 * l.num_hidden_layers,
            };
            assert_eq!(lora.targets.len(), per_model);
        }
    }

    /// `lora.dropout` acts on the side path in training: the loss changes with the stream,
    /// the same stream gives the same loss, and evaluation has none.
    #[test]
    fn dropout_acts_on_the_side_path_in_training_only() {
        let (cfg, p) = bert();
        // The model's own dropout off: only the adapters' draws from the stream.
        let TaskConfig::Bert(c) = cfg else {
            unreachable!()
        };
        let cfg = TaskConfig::Bert(BertConfig {
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            ..c
        });
        let spec = LoraSection {
            dropout: 0.5,
            ..spec()
        };
        let lora = lora_with(&spec, &cfg, &p);
        perturb(&lora);
        let view = lora.view();
        let m = TaskModel::new(&cfg, &view, BertHead::SequenceClassification).unwrap();
        let ids = ids();
        let input = BertInput {
            ids: &ids,
            token_type_ids: None,
            attention_mask: None,
        };
        let run = |mode: Mode<'_>| m.forward(&input, mode).unwrap().to_vec2::<f32>().unwrap();
        let (s1, s1_again, s2) = (
            run(Mode::Train(&mut Rng::derive(4, 1))),
            run(Mode::Train(&mut Rng::derive(4, 1))),
            run(Mode::Train(&mut Rng::derive(4, 2))),
        );
        assert_eq!(s1, s1_again);
        assert_ne!(s1, s2);
        // Without the adapters' dropout the streams agree.
        let plain = lora_of(&cfg, &p);
        perturb(&plain);
        let pv = plain.view();
        let pm = TaskModel::new(&cfg, &pv, BertHead::SequenceClassification).unwrap();
        let prun = |mode: Mode<'_>| pm.forward(&input, mode).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            prun(Mode::Train(&mut Rng::derive(4, 1))),
            prun(Mode::Train(&mut Rng::derive(4, 2)))
        );
        assert_eq!(run(Mode::Eval), prun(Mode::Eval));
    }

    fn adapter_table(dir: &Path, extra: &str) -> std::result::Result<toml::Table, String> {
        let text = format!("[lora]\nadapter = {:?}\n{extra}", dir.display().to_string());
        let mut t: toml::Table = toml::from_str(&text).unwrap();
        fill_from_adapter(&mut t).map(|_| t)
    }

    /// `lora.adapter` takes peft's settings from its adapter_config.json; a key also given
    /// must agree, but for `dropout`, which the run may change.
    #[test]
    fn an_adapter_folder_fills_the_section_and_disagreements_are_named() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
        let dir = golden.join("lora_llama_lm/adapter");
        let t = adapter_table(&dir, "").unwrap();
        let spec: LoraSection = t["lora"].clone().try_into().unwrap();
        let peft: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap())
                .unwrap();
        let want = LoraSection {
            adapter: Some(dir.clone()),
            ..LoraSection::from_peft(&peft).unwrap()
        };
        assert_eq!(spec, want);
        assert_eq!((spec.r, spec.alpha, spec.use_rslora), (4, 8.0, true));
        // The same values given again (as the run's resolved config.toml has them) pass.
        assert!(adapter_table(&dir, "r = 4\nalpha = 8\nuse_rslora = true").is_ok());
        let e = adapter_table(&dir, "r = 8").unwrap_err();
        assert!(
            e.contains("lora.r = 8") && e.contains("adapter_config.json"),
            "{e}"
        );
        let e = adapter_table(&dir, "target_modules = [\"q_proj\"]").unwrap_err();
        assert!(e.contains("lora.target_modules"), "{e}");
        // An adapter trained with dropout: its dropout, unless the config gives another.
        let tmp = tempfile::tempdir().unwrap();
        let mut with_dropout = peft.clone();
        with_dropout["lora_dropout"] = json!(0.05);
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), with_dropout.to_string()).unwrap();
        let t = adapter_table(tmp.path(), "").unwrap();
        assert_eq!(t["lora"]["dropout"].as_float(), Some(0.05));
        let t = adapter_table(tmp.path(), "dropout = 0.0").unwrap();
        assert_eq!(t["lora"]["dropout"].as_float(), Some(0.0));
        with_dropout["lora_dropout"] = json!(1.0);
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), with_dropout.to_string()).unwrap();
        let e = adapter_table(tmp.path(), "").unwrap_err();
        assert!(
            e.contains("dropout") && e.contains("adapter_config.json"),
            "{e}"
        );
        let e = adapter_table(&tmp.path().join("nowhere"), "").unwrap_err();
        assert!(
            e.contains("nowhere") && e.contains("adapter_config.json"),
            "{e}"
        );
    }
}

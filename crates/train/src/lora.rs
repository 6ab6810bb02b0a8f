//! LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") as peft builds
//! it: each targeted linear layer keeps its pretrained weight W0 fixed and computes with
//! W0 + s·B·A, where A (r, in) starts uniform in ±1/√in (torch's `kaiming_uniform_` with
//! a = √5, peft's default), B (out, r) starts at zero (so the model starts as the pretrained
//! one) and s = alpha / r (rsLoRA: alpha / √r). The task head (peft's `modules_to_save`:
//! `classifier`, `score`, `qa_outputs`, DistilBERT's `pre_classifier`) is trained in full;
//! every other weight is frozen.
//!
//! How it runs here: the models read ordinary weights, so each target is kept *merged*: after
//! every optimizer step W = W0 + s·B·A is written into the model's store (fp32, and its
//! bf16/fp16 working copy). The model reads the frozen weights as constants
//! ([`Params::train_only`]), so the backward pass computes no gradient for them, and gives
//! dL/dW for each target; the chain rule through W = W0 + s·B·A turns it into
//! dL/dB = s·dW·Aᵀ and dL/dA = s·Bᵀ·dW, the gradients of peft's separate low-rank path.
//! Against peft's formulation this computes each target's full weight gradient (one product
//! per target, as full fine-tuning does for it) and one merge per target and step, and it
//! needs no change to the models. peft's `lora_dropout` (dropout on the low-rank path's input
//! alone) has no place in a merged weight: only 0, peft's default, is accepted.
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
use candle_core::{DType, Tensor};
use lantern_kernels::Rng;
use lantern_models::bert::BertHead;
use lantern_models::decoder::DecoderConfig;
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
    /// `lora_dropout`: only 0 (see the module's notes).
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
        if self.dropout != 0.0 {
            return Err(format!(
                "lora.dropout = {}: only 0 (peft's default) is supported: the adapted weights \
                 are merged into the layers, and peft's dropout applies to the low-rank path \
                 alone",
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

/// With `lora.adapter` set in a config's raw table, the adapter's `adapter_config.json` gives
/// the rest of the section: a key the config also gives must have the adapter's value, except
/// `dropout = 0`, which continues an adapter trained with peft's `lora_dropout` without it
/// (only 0 is implemented: [`LoraSection::validate`]). Errors name the key and the file.
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
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("lora.adapter: cannot read {}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("lora.adapter: {}: not JSON: {e}", path.display()))?;
    let dropout_given = section
        .get("dropout")
        .and_then(|d| d.as_float().or(d.as_integer().map(|i| i as f64)));
    let mut peft = v.clone();
    if dropout_given == Some(0.0) {
        peft["lora_dropout"] = json!(0.0);
    }
    let spec = LoraSection::from_peft(&peft).map_err(|e| {
        let hint = match e.contains("dropout") {
            true => "; set lora.dropout = 0 to continue it without dropout",
            false => "",
        };
        format!("lora.adapter: {}: {e}{hint}", path.display())
    })?;
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
    /// Its pretrained value W0 (fp32), never trained.
    base: Tensor,
    /// Its index in the model's stores, and the indices of its A and B in the master store.
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
    /// The model's fp32 store (the merged weights; what checkpoints export) and, in mixed
    /// precision, its working copy.
    model: Params,
    work: Option<Params>,
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
                base: var.as_tensor().to_dtype(DType::F32)?.copy()?,
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
        let lora = Lora {
            spec: LoraSection {
                target_modules: Some(wanted),
                ..spec.clone()
            },
            targets,
            head: head_idx,
            master,
            model: model.clone(),
            work: work.cloned(),
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
        format!(
            "LoRA r={} alpha={} (scale {}) on {}: {n} of {total} parameters trained ({:.2} %)",
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

    /// The view of `store` (the model's fp32 store or its working copy) to build the model
    /// from: only the targets and the head are recorded for backward.
    pub fn view(&self, store: &Params) -> Params {
        let model = self.model.names();
        let names = self.targets.iter().map(|t| model[t.index].as_str());
        store.train_only(names.chain(self.head.iter().map(|&(_, w)| model[w].as_str())))
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

    /// Writes each target's W0 + s·B·A into the model's store and its working copy, and the
    /// head into the working copy (the fp32 store shares the head's variables with the
    /// optimizer): after every optimizer step, and after loading adapters.
    pub fn refresh(&self) -> Result<()> {
        for t in &self.targets {
            let w = (&t.base + self.delta(t)?)?;
            if let Some(work) = &self.work {
                let v = &work.vars()[t.index];
                v.set(&w.to_dtype(v.dtype())?)?;
            }
            self.model.vars()[t.index].set(&w)?;
        }
        if let Some(work) = &self.work {
            for &(m, w) in &self.head {
                let v = &work.vars()[w];
                v.set(&self.master.vars()[m].as_tensor().to_dtype(v.dtype())?)?;
            }
        }
        Ok(())
    }

    /// The master store's gradients from the model store's (`grads`, one per variable of the
    /// model in its order, f32): the head's as they are, each target's dW through the chain
    /// rule to dB = s·G·Aᵀ and dA = s·Bᵀ·G, with G = dW (or dWᵀ for (in, out) weights).
    pub fn master_grads(&self, grads: &StepGrads) -> Result<StepGrads> {
        let mut out = StepGrads::new(self.master.len());
        let v = self.master.vars();
        for t in &self.targets {
            let Some(dw) = &grads.grads[t.index] else {
                continue;
            };
            let g = match self.in_out {
                true => dw.t()?,
                false => dw.clone(),
            };
            let g = (g * self.spec.scale())?; // (out, in)
            let (a, b) = (v[t.a].as_tensor(), v[t.b].as_tensor());
            out.grads[t.b] = Some(g.matmul(&a.t()?)?); // (out, r)
            out.grads[t.a] = Some(b.t()?.matmul(&g)?); // (r, in)
        }
        for &(m, w) in &self.head {
            out.grads[m] = grads.grads[w].clone();
        }
        Ok(out)
    }

    /// `adapter_model.safetensors`'s tensors: every master variable under peft's name, and a
    /// masked LM's tied output-layer tensors as the copies peft writes.
    pub fn adapter_tensors(&self) -> BTreeMap<String, Tensor> {
        let model = self.model.vars();
        self.master
            .iter()
            .map(|(n, v)| (format!("{PREFIX}{n}"), v.as_tensor().clone()))
            .chain(
                self.tied
                    .iter()
                    .map(|&(n, i)| (format!("{PREFIX}{n}"), model[i].as_tensor().clone())),
            )
            .collect()
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
    use candle_core::{Device, Var};
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

    /// [`spec`]'s adapters of a sequence classifier.
    fn lora_of(cfg: &TaskConfig, p: &Params) -> Lora {
        let head = BertHead::SequenceClassification;
        Lora::new(
            &spec(),
            Base::Task(cfg, head),
            (p, None),
            &[],
            &mut Rng::new(1),
        )
        .unwrap()
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
        lora.refresh().unwrap();
        assert_eq!(loss(&cfg, &p).to_scalar::<f32>().unwrap(), before);
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

    /// The chain rule of `master_grads` against candle's autograd through W0 + s·B·A built as
    /// a graph, with a non-zero B.
    #[test]
    fn master_gradients_are_those_of_the_low_rank_path() {
        let (cfg, p) = bert();
        let lora = lora_of(&cfg, &p);
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
        // Ours: the gradient of the merged weights through the view, then the chain rule.
        let view = lora.view(&p);
        let store = loss(&cfg, &view).backward().unwrap();
        let mut g = StepGrads::new(p.len());
        g.accumulate(&view, &store).unwrap();
        let frozen = p
            .names()
            .iter()
            .zip(&g.grads)
            .filter(|(_, g)| g.is_none())
            .count();
        assert_eq!(
            frozen,
            p.len() - 4 - 2,
            "only the targets and the head get gradients"
        );
        let ours = lora.master_grads(&g).unwrap();
        // Reference: with dW (the gradient of the merged weight) held fixed, candle's autograd
        // of sum(W(A, B) ⊙ dW), W = W0 + s·B·A built as a graph over fresh variables A and B,
        // is dL/dA and dL/dB by the chain rule.
        let scale = spec().scale();
        for t in &lora.targets {
            let dw = g.grads[t.index].as_ref().unwrap();
            let v = lora.master().vars();
            let a = Var::from_tensor(v[t.a].as_tensor()).unwrap();
            let b = Var::from_tensor(v[t.b].as_tensor()).unwrap();
            let ba = b.as_tensor().matmul(a.as_tensor()).unwrap();
            let w = (&t.base + (ba * scale).unwrap()).unwrap();
            let gs = (w * dw).unwrap().sum_all().unwrap().backward().unwrap();
            for (var, idx) in [(&a, t.a), (&b, t.b)] {
                let want = gs.get(var.as_tensor()).unwrap();
                let got = ours.grads[idx].as_ref().unwrap();
                let d = (want - got).unwrap().abs().unwrap().max_all().unwrap();
                let d = d.to_scalar::<f32>().unwrap();
                assert!(d < 1e-6, "{}: {d}", lora.master().names()[idx]);
            }
        }
        for &(m, w) in &lora.head {
            assert!(ours.grads[m].is_some() && g.grads[w].is_some());
        }
    }

    fn adapter_table(dir: &Path, extra: &str) -> std::result::Result<toml::Table, String> {
        let text = format!("[lora]\nadapter = {:?}\n{extra}", dir.display().to_string());
        let mut t: toml::Table = toml::from_str(&text).unwrap();
        fill_from_adapter(&mut t).map(|_| t)
    }

    /// `lora.adapter` takes peft's settings from its adapter_config.json; a key also given
    /// must agree, but for `dropout = 0`, which continues a peft adapter trained with dropout.
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
        // An adapter trained with dropout: refused, unless the config says dropout = 0.
        let tmp = tempfile::tempdir().unwrap();
        let mut with_dropout = peft.clone();
        with_dropout["lora_dropout"] = json!(0.05);
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), with_dropout.to_string()).unwrap();
        let e = adapter_table(tmp.path(), "").unwrap_err();
        assert!(e.contains("lora.dropout = 0"), "{e}");
        let t = adapter_table(tmp.path(), "dropout = 0.0").unwrap();
        assert_eq!(t["lora"]["dropout"].as_float(), Some(0.0));
        let e = adapter_table(&tmp.path().join("nowhere"), "").unwrap_err();
        assert!(
            e.contains("nowhere") && e.contains("adapter_config.json"),
            "{e}"
        );
    }
}

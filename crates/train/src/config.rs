//! The config of a training run: typed TOML, unknown keys and wrong types are errors that name
//! the key, `--set a.b=c` overrides go through the same checks, and the resolved config (every
//! default filled in) is written into the run folder.

use crate::dpo::DpoLoss;
use crate::{Error, Result};
use lantern_data::packing::PackingStrategy;
use lantern_data::sft::Truncation;
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub early_stopping: EarlyStopSection,
    #[serde(default)]
    pub run: RunSection,
    #[serde(default)]
    pub sample: SampleSection,
    /// LoRA (peft's `LoraConfig`, task type `CAUSAL_LM`): train low-rank adapters of some
    /// linear layers of the `model.init_from` GPT-2 or Llama, the rest frozen. Absent = every
    /// weight trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::lora::LoraSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `gpt` (causal-LM pretraining of GPT-2), `llama` (causal-LM pretraining of
    /// `LlamaForCausalLM` and its relatives Mistral and Qwen2) or `bert` (masked-LM pretraining
    /// of `BertForMaskedLM`); defaults to the `init_from` folder's family, else the preset's.
    pub arch: Option<ModelArch>,
    /// GPT: `gpt-tiny`, `gpt-small-cpu`, `gpt2-124m`, `gpt2-350m`; Llama: `llama-tiny`; BERT:
    /// `bert-tiny`, `bert-base`.
    #[serde(default = "d_preset")]
    pub preset: String,
    /// Start from a Hugging Face folder (config.json + model.safetensors: GPT-2, Llama, or any
    /// BERT, whose missing MLM head is initialised fresh) instead of a fresh initialisation; its
    /// config replaces the preset.
    pub init_from: Option<PathBuf>,
    /// Overrides of the preset; the vocabulary defaults to the tokenizer's. For BERT and Llama
    /// these are `max_position_embeddings`, `hidden_size`, `num_hidden_layers`,
    /// `num_attention_heads` (and BERT's two dropout rates; Llama has no dropout).
    pub vocab_size: Option<usize>,
    pub n_positions: Option<usize>,
    pub n_embd: Option<usize>,
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub dropout: Option<f64>,
    /// BERT and Llama: the feed-forward width (BERT's presets use 4 × hidden).
    pub intermediate_size: Option<usize>,
    /// Llama only: the key/value heads (`num_key_value_heads`; fewer than `n_head` is
    /// grouped-query attention, and `n_head` must be a multiple of it).
    pub n_kv_head: Option<usize>,
    /// Llama only: which member of the Llama family to build (transformers' `model_type`:
    /// `llama`, `mistral`, `qwen2` with q/k/v biases, `qwen3` with per-head query and key
    /// norms, `olmo2` with norms after attention and the MLP only, `phi3` with fused q/k/v and
    /// gate/up layers; `gemma3_text` and `gemma2` only with `init_from`); default the
    /// preset's (`llama`) or the `init_from` folder's.
    pub family: Option<lantern_models::llama::LlamaFamily>,
    /// Llama only: the width of an attention head when it is not `n_embd / n_head` (Qwen3's
    /// `head_dim`).
    pub head_dim: Option<usize>,
    /// Llama only (families `mistral`, `phi3`): each token attends to this many positions,
    /// itself included (Mistral's `sliding_window`).
    pub sliding_window: Option<usize>,
    /// Llama only: biases on q/k/v/o_proj (families `llama` and `qwen3`: `attention_bias`).
    pub attention_bias: Option<bool>,
    /// Llama only: biases on gate/up/down_proj (family `llama`: `mlp_bias`).
    pub mlp_bias: Option<bool>,
    /// BERT only: the share of non-special tokens chosen for prediction (default 0.15, of
    /// which 80% become [MASK], 10% a random token, 10% stay).
    pub mlm_probability: Option<f64>,
    /// GPT and Llama: `auto` (fused on CUDA, composite on the CPU), `fused` (one
    /// causal-attention op, no (B, H, T, T) scores) or `composite` (matmuls around the
    /// softmax kernel). The
    /// fused op has no attention dropout: while dropout is active, training runs composite.
    #[serde(default)]
    pub attention: lantern_models::gpt::AttentionImpl,
}

/// `model.arch`: what a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelArch {
    Gpt,
    Bert,
    Llama,
}

impl ModelSection {
    /// `model.arch`; else the family of the `init_from` folder's `config.json` (its
    /// `model_type`, as transformers' `AutoModel` picks the class); else the preset's
    /// (`bert-*` presets are BERT, `llama-*` Llama).
    pub fn arch(&self) -> ModelArch {
        if let Some(a) = self
            .arch
            .or_else(|| self.init_from.as_deref().and_then(folder_arch))
        {
            return a;
        }
        if self.preset.starts_with("bert") {
            ModelArch::Bert
        } else if self.preset.starts_with("llama") {
            ModelArch::Llama
        } else {
            ModelArch::Gpt
        }
    }
}

/// The family of a Hugging Face folder by its `config.json`'s `model_type`: GPT-2, the Llama
/// family (Llama, Mistral, Qwen2, Qwen3, Gemma 3 and the multimodal Gemma 3's language model)
/// or the BERT family. `None` when the file cannot be read or
/// names no family: reading the folder's config later reports the problem with the file.
/// A run folder stands for the checkpoint [`crate::finetune::resolve_checkpoint`] finds in it.
fn folder_arch(dir: &Path) -> Option<ModelArch> {
    // A run folder or `best/`: the checkpoint the run will read.
    let dir = crate::finetune::resolve_checkpoint(dir).ok()?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match v.get("model_type")?.as_str()? {
        "gpt2" => Some(ModelArch::Gpt),
        mt if lantern_models::decoder::is_model_type(mt) => Some(ModelArch::Llama),
        mt => lantern_models::bert::Family::from_model_type(mt).map(|_| ModelArch::Bert),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Pretraining: a folder written by `lantern prepare` (train.bin, val.bin, tokenizer.json,
    /// meta.json). Either this or `train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Supervised fine-tuning of a causal LM (TRL's `SFTTrainer`): a JSONL file of `text`,
    /// `prompt`/`completion` or `messages` records (`lantern_data::sft`). Either this or `dir`;
    /// the keys below are its settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// SFT: a validation file of the same layout; without it `val_fraction` of `train` is held
    /// out (seeded by train.seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PathBuf>,
    /// A causal LM's zero-shot multiple-choice evaluation at every validation (llm.c's
    /// HellaSwag during training): a file of SWAG, HellaSwag or text + choices records, every
    /// one labelled, scored as `lantern score --choices` scores it
    /// (`crate::lm_choice`); `choice_acc`, `choice_acc_norm` and `choice_acc_per_token` in
    /// the validation records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_choices: Option<PathBuf>,
    /// How `eval_choices` reads HellaSwag's records: `"raw"` (default, llm.c's) or
    /// `"lm-eval"` (lm-evaluation-harness's `hellaswag` task; `lantern score --hellaswag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_choices_hellaswag: Option<lantern_data::choice::HellaSwagText>,
    /// SFT: the share of `train` held out when there is no `validation` file (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// SFT and DPO: truncation length in tokens (TRL's `max_length`; default 1024, or the
    /// model's context if shorter). Batches are padded to their longest example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// SFT and DPO: which end of a longer sequence is kept, `keep_start` (default) or
    /// `keep_end` (TRL's `truncation_mode`). Not with packing, which cuts rows itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation_mode: Option<Truncation>,
    /// SFT: the field of language-modeling records (TRL's `dataset_text_field`; default
    /// `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_field: Option<String>,
    /// SFT: train on the completion of prompt-completion records only (TRL's
    /// `completion_only_loss`; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_only_loss: Option<bool>,
    /// SFT: train on the assistant's turns only, the text the chat template's
    /// `{% generation %}` blocks write (TRL's `assistant_only_loss`; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_only_loss: Option<bool>,
    /// SFT: the tokenizer.json; default `<model.init_from>/tokenizer.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// SFT: the token appended to plain text and completions (TRL's `eos_token`); default the
    /// tokenizer's own (`tokenizer_config.json`'s `eos_token`, else the model's
    /// `eos_token_id`, else its end-of-text token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<String>,
    /// SFT: a Jinja chat template file for `messages` records, in place of the model folder's
    /// (TRL's `chat_template_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<PathBuf>,
    /// SFT: pack examples into rows of `max_length` tokens (TRL's `packing`; default false),
    /// training and validation alike (TRL's `eval_packing` default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<bool>,
    /// SFT: how packing fills rows (TRL's `packing_strategy`): `bfd` (default), `bfd_split` or
    /// `wrapped` (`lantern_data::packing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing_strategy: Option<PackingStrategy>,
    /// TRL's `loss_type`. SFT: `nll` (default) or `dft` ([`TokenLoss`]). DPO: one of its
    /// preference losses or a list of them (default `sigmoid`; [`crate::dpo::DpoLoss`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_type: Option<LossTypes>,
    /// DPO (preference records in `train`): the strength β of the preference loss
    /// `−log σ(β·margin)` (TRL's `beta`; default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// DPO: the weight of each of `loss_type`'s losses in their sum (TRL's `loss_weights`;
    /// default 1 each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_weights: Option<Vec<f64>>,
    /// DPO: the assumed share ε of flipped preferences of the `robust`, `exo_pair` losses
    /// (TRL's `label_smoothing`; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// DPO: the temperature of the `discopop` loss's blend (TRL's `discopop_tau`; default
    /// 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discopop_tau: Option<f64>,
    /// DPO: the f-divergence whose derivative scores each log-ratio (TRL's
    /// `f_divergence_type`; default `reverse_kl`, standard DPO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_divergence_type: Option<FDivergence>,
    /// DPO: α of `alpha_divergence` (TRL's `f_alpha_divergence_coef`; default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_alpha_divergence_coef: Option<f64>,
    /// DPO: LD-DPO's weight in [0, 1] of the completion tokens past the shorter of a
    /// preference's two completions (TRL's `ld_alpha`; default none: weight 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ld_alpha: Option<f64>,
    /// DPO: WPO's weighting of each preference by its completions' probabilities under the
    /// policy (TRL's `use_weighting`; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_weighting: Option<bool>,
    /// DPO: the reference model's folder (a Hugging Face or Lantern causal LM, GPT-2 or of the
    /// Llama family, of the same vocabulary; TRL's `ref_model`); default `model.init_from` as
    /// loaded (with `[lora]`: the base the adapters start from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_model: Option<PathBuf>,
    /// DPO: TR-DPO, the reference moved toward the policy every `ref_model_sync_steps` steps
    /// (TRL's `sync_ref_model`; default false; not with LoRA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ref_model: Option<bool>,
    /// DPO: train without dropout, the model's and LoRA's (TRL's `disable_dropout`; default
    /// true). The reference never uses dropout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_dropout: Option<bool>,
    /// KTO: the order examples are drawn in (TRL's `train_sampling_strategy`): `sequential`
    /// (default: file order every epoch, which the `kto` loss requires, its KL rows being
    /// paired within runs of `train.batch_size` examples in that order), `random` (a seeded
    /// permutation each epoch) or `group_by_length` (as `train.group_by_length`), the last two
    /// for `apo_zero_unpaired` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_sampling_strategy: Option<SamplingStrategy>,
    /// KTO: the weight of the desirable examples' losses (TRL's `desirable_weight`; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desirable_weight: Option<f64>,
    /// KTO: the weight of the undesirable examples' losses (TRL's `undesirable_weight`;
    /// default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undesirable_weight: Option<f64>,
    /// DPO with `sync_ref_model`: the policy's share α of the new reference,
    /// α·policy + (1 − α)·reference (TRL's `ref_model_mixup_alpha`; default 0.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_model_mixup_alpha: Option<f64>,
    /// DPO with `sync_ref_model`: optimizer steps between two moves of the reference (TRL's
    /// `ref_model_sync_steps`; default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_model_sync_steps: Option<u64>,
}

/// `data.f_divergence_type`: how DPO scores a log-ratio u = π − ref (f-DPO, Wang et al.
/// 2023): by f′ of the divergence, `u` itself for the reverse KL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FDivergence {
    /// `u` (standard DPO).
    #[default]
    ReverseKl,
    /// `1 − e^(−u)`.
    ForwardKl,
    /// `ln 2 + log σ(u)`.
    JsDivergence,
    /// `(e^((α−1)u) − 1) / (α − 1)`, the exponent clamped at 80 (`u` itself for α = 1).
    AlphaDivergence,
}

/// `data.train_sampling_strategy` (KTO): the order of the training examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingStrategy {
    Sequential,
    Random,
    GroupByLength,
}

/// `data.loss_type`: one loss by name, or (DPO) a list of them, as TRL's `loss_type` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LossTypes {
    One(String),
    Many(Vec<String>),
}

impl LossTypes {
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// How a causal LM's loss weighs each target token (TRL's `loss_type` for SFT, read from
/// `data.loss_type` by [`TokenLoss::of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenLoss {
    /// The negative log-likelihood of every target.
    #[default]
    Nll,
    /// Dynamic Fine-Tuning (Wu et al. 2025, arXiv 2508.05629): each target's negative
    /// log-likelihood weighted by its probability, taken as a constant (no gradient through
    /// the weight): `-p·log p` with `p` detached.
    Dft,
}

impl TokenLoss {
    /// SFT's `data.loss_type`: one of `nll` and `dft` (default `nll`).
    pub fn of(setting: Option<&LossTypes>) -> std::result::Result<Self, String> {
        let Some(setting) = setting else {
            return Ok(Self::Nll);
        };
        match setting.names()[..] {
            ["nll"] => Ok(Self::Nll),
            ["dft"] => Ok(Self::Dft),
            _ => Err(format!(
                "data.loss_type {setting:?}: SFT records train with one of nll, dft (the other \
                 losses are DPO's, for preference records)"
            )),
        }
    }
}

impl DataSection {
    /// The SFT keys that are set, by name (all must be absent for pretraining data).
    fn sft_keys(&self) -> Vec<&'static str> {
        [
            ("validation", self.validation.is_some()),
            ("val_fraction", self.val_fraction.is_some()),
            ("max_length", self.max_length.is_some()),
            ("truncation_mode", self.truncation_mode.is_some()),
            ("text_field", self.text_field.is_some()),
            ("completion_only_loss", self.completion_only_loss.is_some()),
            ("assistant_only_loss", self.assistant_only_loss.is_some()),
            ("tokenizer", self.tokenizer.is_some()),
            ("eos_token", self.eos_token.is_some()),
            ("chat_template", self.chat_template.is_some()),
            ("packing", self.packing.is_some()),
            ("packing_strategy", self.packing_strategy.is_some()),
            ("loss_type", self.loss_type.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .chain(self.dpo_keys())
        .collect()
    }

    /// The keys only preference records (DPO) and unpaired ones (KTO) read that are set, by
    /// name.
    pub fn dpo_keys(&self) -> Vec<&'static str> {
        [
            ("beta", self.beta.is_some()),
            ("loss_weights", self.loss_weights.is_some()),
            ("label_smoothing", self.label_smoothing.is_some()),
            ("discopop_tau", self.discopop_tau.is_some()),
            ("f_divergence_type", self.f_divergence_type.is_some()),
            (
                "f_alpha_divergence_coef",
                self.f_alpha_divergence_coef.is_some(),
            ),
            ("ld_alpha", self.ld_alpha.is_some()),
            ("use_weighting", self.use_weighting.is_some()),
            ("ref_model", self.ref_model.is_some()),
            ("sync_ref_model", self.sync_ref_model.is_some()),
            ("disable_dropout", self.disable_dropout.is_some()),
            ("desirable_weight", self.desirable_weight.is_some()),
            ("undesirable_weight", self.undesirable_weight.is_some()),
            (
                "train_sampling_strategy",
                self.train_sampling_strategy.is_some(),
            ),
            (
                "ref_model_mixup_alpha",
                self.ref_model_mixup_alpha.is_some(),
            ),
            ("ref_model_sync_steps", self.ref_model_sync_steps.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// The prepared folder of a pretraining run (`None`: SFT data).
    pub fn shards(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
    /// Warmup-stable-decay: constant after warmup, then a cosine decay to min_lr over the last
    /// `train.decay_steps` steps.
    Wsd,
    /// Polynomial decay to the end LR (`min_lr`) with exponent `train.poly_power`
    /// (transformers' `polynomial`; BERT's and fairseq's with power 1).
    Polynomial,
    /// Cosine to 0 restarted `train.num_cycles` times (`cosine_with_restarts`).
    CosineWithRestarts,
    /// 1/√(step) decay after warmup, over `train.timescale` steps (`inverse_sqrt`).
    InverseSqrt,
}

/// `train.optimizer`: which `torch.optim` update to use (see crates/train/src/optim/).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    #[serde(rename = "adamw")]
    AdamW,
    Sgd,
    Adagrad,
    Rmsprop,
}

impl OptimizerKind {
    /// The config value, also the kind saved in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdamW => "adamw",
            Self::Sgd => "sgd",
            Self::Adagrad => "adagrad",
            Self::Rmsprop => "rmsprop",
        }
    }
}

/// The defaults of the two keys on which the recipes' AdamW differ: pretraining follows
/// nanoGPT (β2 0.95, weight decay 0.1), fine-tuning transformers' Trainer with BERT's usual
/// weight decay (β2 0.999, 0.01). Every other optimizer key means and defaults the same in both.
pub trait AdamWDefaults {
    fn beta2() -> f64;
    fn weight_decay() -> f64;
}

/// `lantern train`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pretraining;

impl AdamWDefaults for Pretraining {
    fn beta2() -> f64 {
        0.95
    }
    fn weight_decay() -> f64 {
        0.1
    }
}

/// The optimizer keys of a `[train]` section, pretraining's and fine-tuning's alike: which
/// `torch.optim` update, and its hyper-parameters (the learning rate is `train.lr` through the
/// schedule). Flattened into the section, whose `deny_unknown_fields` still refuses unknown
/// keys; [`deserialize_config`] keeps the messages naming the key. Keys the chosen optimizer
/// does not read are accepted and checked all the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerKeys<D: AdamWDefaults> {
    /// adamw | sgd | adagrad | rmsprop, each with torch.optim's exact update.
    #[serde(default, rename = "optimizer")]
    pub kind: OptimizerKind,
    /// Decay-group parameters only (rank ≥ 2). AdamW: decoupled (p ← p·(1 − lr·wd)); SGD,
    /// AdaGrad, RMSprop: torch's L2 form (g ← g + wd·p).
    #[serde(default = "D::weight_decay")]
    pub weight_decay: f64,
    /// AdamW.
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "D::beta2")]
    pub beta2: f64,
    /// AdamW, AdaGrad, RMSprop (torch's AdaGrad default is 1e-10; set it to match).
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// SGD and RMSprop momentum; 0 = none.
    #[serde(default)]
    pub momentum: f64,
    /// SGD: the momentum buffer takes (1 − dampening)·g (not at a parameter's first step).
    #[serde(default)]
    pub dampening: f64,
    /// SGD: Nesterov momentum; needs momentum > 0 and dampening 0.
    #[serde(default)]
    pub nesterov: bool,
    /// RMSprop smoothing constant of the squared-gradient average.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// RMSprop: normalise by the estimated variance instead of the second moment.
    #[serde(default)]
    pub centered: bool,
    /// AdaGrad: the step size is lr / (1 + (t − 1)·lr_decay).
    #[serde(default)]
    pub lr_decay: f64,
    /// AdaGrad: the starting value of the sum of squared gradients.
    #[serde(default)]
    pub initial_accumulator_value: f64,
    #[serde(skip)]
    defaults: PhantomData<D>,
}

impl<D: AdamWDefaults> OptimizerKeys<D> {
    /// The checks of both commands; the message names the key (`train.…`).
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err("train.beta1 and train.beta2 must be in [0, 1)".into());
        }
        // TOML has `nan` and `inf`, which these refuse too: a NaN weight decay would silently
        // turn every weight into NaN after the first step.
        let non_negative = [
            ("weight_decay", self.weight_decay),
            ("eps", self.eps),
            ("momentum", self.momentum),
            ("lr_decay", self.lr_decay),
            ("initial_accumulator_value", self.initial_accumulator_value),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "train.{key} must be a finite, non-negative number, got {v}"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.dampening) {
            return Err("train.dampening must be in [0, 1]".into());
        }
        if !(0.0..1.0).contains(&self.alpha) {
            return Err("train.alpha must be in [0, 1)".into());
        }
        // torch.optim.SGD refuses the same combination.
        if self.kind == OptimizerKind::Sgd
            && self.nesterov
            && (self.momentum <= 0.0 || self.dampening != 0.0)
        {
            return Err(format!(
                "train.nesterov = true needs train.momentum > 0 and train.dampening = 0 (got \
                 momentum {}, dampening {})",
                self.momentum, self.dampening
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// "auto" (default: the GPU when this build has CUDA and the driver sees one, else the
    /// CPU), "cpu", "cuda" (each rank's own GPU under the launcher) or "cuda:N".
    #[serde(default = "d_device")]
    pub device: String,
    /// fp32 | bf16 | fp16: the dtype forward and backward run in. Master weights and optimizer
    /// state stay fp32; fp16 adds dynamic loss scaling.
    #[serde(default)]
    pub precision: crate::precision::Precision,
    /// Keep only each block's input in the forward pass and recompute the block in the
    /// backward (transformers' `gradient_checkpointing`): far less activation memory, about a
    /// third more compute, the same gradients (`crate::recompute`).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// NEFTune (transformers' and TRL's `neftune_noise_alpha`): while training, noise uniform
    /// in ±α/√(T·C) added to the token embeddings (T the batch's padded length, C the
    /// embedding width), where transformers' hook adds it; evaluation sees none. Off (unset or
    /// 0) by default; the NEFTune paper fine-tunes with α = 5.
    pub neftune_noise_alpha: Option<f64>,
    /// fp16 loss scaler (PyTorch GradScaler defaults).
    #[serde(default = "d_scale_init")]
    pub loss_scale_init: f64,
    #[serde(default = "d_scale_growth")]
    pub loss_scale_growth: f64,
    #[serde(default = "d_scale_backoff")]
    pub loss_scale_backoff: f64,
    #[serde(default = "d_scale_interval")]
    pub loss_scale_interval: u64,
    /// Sequences per micro-batch (per process).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "d_one")]
    pub grad_accum: usize,
    /// Tokens per sequence; defaults to the model's n_positions.
    pub seq_len: Option<usize>,
    #[serde(default = "d_max_steps")]
    pub max_steps: u64,
    /// SFT: passes over the training records (TRL's `num_train_epochs`, fractions allowed);
    /// takes the place of `max_steps` (the steps they make, rounded up). Not skipped when
    /// unset: the list of known keys is what the default serialises to.
    #[serde(default)]
    pub epochs: Option<f64>,
    /// SFT: transformers' `group_by_length`: each epoch's shuffled order regrouped so that the
    /// examples of an optimizer step have similar lengths, and padding each micro-batch to its
    /// longest costs less.
    #[serde(default)]
    pub group_by_length: bool,
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Floor of the cosine schedule; defaults to lr / 10 (nanoGPT, Chinchilla).
    pub min_lr: Option<f64>,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "d_schedule")]
    pub schedule: ScheduleKind,
    /// Length of the final decay of the `wsd` schedule; defaults to a tenth of max_steps.
    pub decay_steps: Option<u64>,
    /// Exponent of the `polynomial` schedule (transformers' `power`, default 1: linear).
    #[serde(default = "d_poly_power")]
    pub poly_power: f64,
    /// Hard restarts of the `cosine_with_restarts` schedule (transformers' `num_cycles`).
    #[serde(default = "d_num_cycles")]
    pub num_cycles: u64,
    /// Time scale of the `inverse_sqrt` schedule; defaults to warmup_steps, or 10,000 without
    /// warmup (transformers').
    pub timescale: Option<u64>,
    /// `optimizer` (adamw | sgd | adagrad | rmsprop) and its keys, shared with fine-tuning.
    #[serde(flatten)]
    pub optim: OptimizerKeys<Pretraining>,
    /// Global-norm clipping threshold; 0 turns clipping off.
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Validate every N optimizer steps (and at the start and the end); 0 = only start and end.
    #[serde(default = "d_eval_every")]
    pub eval_every: u64,
    /// Validation batches (of `batch_size` sequences) per evaluation.
    #[serde(default = "d_eval_batches")]
    pub eval_batches: usize,
    /// Print a progress line every N steps when the output is not a terminal.
    #[serde(default = "d_log_every")]
    pub log_every: u64,
    /// NaN guard: a step with a non-finite loss or gradient is skipped; after this many such
    /// steps in a row the run stops with a checkpoint of the last good state. 0 = never stop.
    /// (fp16 overflows at a loss scale above 1 are the scaler's and do not count.)
    #[serde(default = "d_max_skips")]
    pub max_consecutive_skips: u64,
    /// On CUDA, let f32 matmuls run on TF32 tensor cores (inputs rounded to a 10-bit mantissa,
    /// f32 accumulation), as `torch.backends.cuda.matmul.allow_tf32`. Off: exact f32.
    #[serde(default)]
    pub tf32: bool,
    /// Peak FLOP/s of one device, in TFLOP/s, for the MFU of the progress line and
    /// `metrics.jsonl` (nanoGPT's `mfu`). Unset: the data-sheet dense peak of a known GPU
    /// (H100, H200, A100; `bench::known_peak_flops`) in bf16/fp16, else no MFU.
    pub peak_tflops: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Save every N optimizer steps (and at the end); 0 = only at the end.
    #[serde(default = "d_ckpt_every")]
    pub every: u64,
    /// Keep the newest N checkpoints.
    #[serde(default = "d_keep")]
    pub keep: usize,
    /// Also keep the checkpoint of the lowest validation loss so far (or the best value of
    /// `early_stopping.metric`) in `checkpoints/best` (nanoGPT's best-validation checkpoint,
    /// transformers' `load_best_model_at_end` with `metric_for_best_model`), rewritten at each
    /// evaluation that improves on it and never pruned by `keep`.
    #[serde(default)]
    pub save_best: bool,
}

/// Stopping when the validation loss (or `metric`) stops improving (transformers'
/// `EarlyStoppingCallback`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopSection {
    /// Stop after this many evaluations in a row that did not improve on the best value of
    /// `metric` (`early_stopping_patience`); none = never stop early. Needs
    /// `train.eval_every`.
    pub patience: Option<usize>,
    /// An evaluation improves only if it beats the best value of `metric` by more than this
    /// (`early_stopping_threshold`; default 0).
    #[serde(default)]
    pub threshold: f64,
    /// The validation figure that early stopping watches and `checkpoint.save_best` keeps the
    /// best of (transformers' `metric_for_best_model`): `val_loss` (default; lower is better),
    /// or, higher being better, `val_accuracy` (the next-token accuracy; DPO's reward
    /// accuracy) and, with `data.eval_choices`, `choice_acc`, `choice_acc_norm`,
    /// `choice_acc_per_token`.
    #[serde(default)]
    pub metric: BestMetric,
}

/// `early_stopping.metric`: which figure of a validation record picks the best checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestMetric {
    #[default]
    ValLoss,
    ValAccuracy,
    ChoiceAcc,
    ChoiceAccNorm,
    ChoiceAccPerToken,
}

impl BestMetric {
    /// Its key in the validation records of metrics.jsonl.
    pub fn key(self) -> &'static str {
        match self {
            Self::ValLoss => "val_loss",
            Self::ValAccuracy => "val_accuracy",
            Self::ChoiceAcc => "choice_acc",
            Self::ChoiceAccNorm => "choice_acc_norm",
            Self::ChoiceAccPerToken => "choice_acc_per_token",
        }
    }

    /// How the progress lines name it (`val loss` for the loss, as they always have).
    pub fn label(self) -> &'static str {
        match self {
            Self::ValLoss => "val loss",
            other => other.key(),
        }
    }

    pub fn higher_is_better(self) -> bool {
        self != Self::ValLoss
    }

    /// Whether it is one of `data.eval_choices`' accuracies.
    pub fn needs_choices(self) -> bool {
        matches!(
            self,
            Self::ChoiceAcc | Self::ChoiceAccNorm | Self::ChoiceAccPerToken
        )
    }
}

/// Text sampled from a causal LM while it trains (llm.c's `sample_every`): rank 0 continues
/// `prompt` at step 0, every `every` steps and after the last, with the sampling rules of
/// `lantern generate`, each sample's randomness fixed by `train.seed` and the step (a resumed
/// run samples what the uninterrupted one does). Printed and written to metrics.jsonl as
/// `"sample"` records (`crate::samples`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSection {
    /// Sample every N optimizer steps; 0 (the default) = never.
    #[serde(default)]
    pub every: u64,
    /// The text continued (tokenized without special tokens); unset or empty: the end-of-text
    /// token alone (llm.c's), else the model's `bos_token_id`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Tokens generated at most (fewer when an end-of-text or end-of-sequence token comes).
    #[serde(default = "d_sample_tokens")]
    pub max_new_tokens: usize,
    /// As `lantern generate`'s flags: 0 = greedy.
    #[serde(default = "d_unit")]
    pub temperature: f64,
    /// 0 = every token.
    #[serde(default)]
    pub top_k: usize,
    /// In (0, 1]; 1 = off.
    #[serde(default = "d_unit")]
    pub top_p: f64,
    /// > 0; 1 = off.
    #[serde(default = "d_unit")]
    pub repetition_penalty: f64,
}

impl Default for SampleSection {
    fn default() -> Self {
        Self {
            every: 0,
            prompt: None,
            max_new_tokens: d_sample_tokens(),
            temperature: d_unit(),
            top_k: 0,
            top_p: d_unit(),
            repetition_penalty: d_unit(),
        }
    }
}

impl SampleSection {
    /// The sampling rules, checked; errors name the key.
    pub fn sampling(&self) -> std::result::Result<lantern_models::sampling::Sampling, String> {
        lantern_models::sampling::Sampling::new(
            self.temperature,
            self.top_k,
            self.top_p,
            self.repetition_penalty,
        )
        .map_err(|e| e.key("sample"))
    }
}

fn d_sample_tokens() -> usize {
    64
}
fn d_unit() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Where metrics, the resolved config, checkpoints and plots go.
    #[serde(default = "d_run_dir")]
    pub dir: PathBuf,
    /// Also write the metrics as TensorBoard event files in `<dir>/tensorboard`
    /// (`tensorboard --logdir <dir>`; transformers' `report_to="tensorboard"`).
    #[serde(default)]
    pub tensorboard: bool,
}

fn d_preset() -> String {
    "gpt-tiny".into()
}
fn d_device() -> String {
    "auto".into()
}
fn d_scale_init() -> f64 {
    65536.0
}
fn d_scale_growth() -> f64 {
    2.0
}
fn d_scale_backoff() -> f64 {
    0.5
}
fn d_scale_interval() -> u64 {
    2000
}
fn d_batch() -> usize {
    8
}
fn d_one() -> usize {
    1
}
fn d_max_steps() -> u64 {
    1000
}
fn d_lr() -> f64 {
    1e-3
}
fn d_schedule() -> ScheduleKind {
    ScheduleKind::Cosine
}
pub(crate) fn d_poly_power() -> f64 {
    1.0
}
pub(crate) fn d_num_cycles() -> u64 {
    1
}
fn d_beta1() -> f64 {
    0.9
}
fn d_eps() -> f64 {
    1e-8
}
fn d_alpha() -> f64 {
    0.99
}
fn d_clip() -> f64 {
    1.0
}
fn d_seed() -> u64 {
    1337
}
fn d_eval_every() -> u64 {
    100
}
fn d_eval_batches() -> usize {
    8
}
fn d_log_every() -> u64 {
    10
}
fn d_max_skips() -> u64 {
    // A lone NaN batch is survivable; five in a row means the run has diverged, and stopping
    // with the last good state beats burning compute on skipped steps.
    5
}
fn d_ckpt_every() -> u64 {
    200
}
fn d_keep() -> usize {
    3
}
fn d_run_dir() -> PathBuf {
    "runs/default".into()
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            preset: d_preset(),
            init_from: None,
            vocab_size: None,
            n_positions: None,
            n_embd: None,
            n_layer: None,
            n_head: None,
            dropout: None,
            arch: None,
            intermediate_size: None,
            n_kv_head: None,
            family: None,
            head_dim: None,
            sliding_window: None,
            attention_bias: None,
            mlp_bias: None,
            mlm_probability: None,
            attention: Default::default(),
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::from_str("").expect("every train key has a default")
    }
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every: d_ckpt_every(),
            keep: d_keep(),
            save_best: false,
        }
    }
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            dir: d_run_dir(),
            tensorboard: false,
        }
    }
}

impl RunConfig {
    /// Parses TOML text (from `origin`, used in messages) and applies `key=value` overrides.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        crate::lora::fill_from_adapter(&mut table)
            .map_err(|m| Error::Config(format!("{origin}: {m}")))?;
        let cfg: RunConfig = deserialize_config::<_, TrainSection>(table, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads a config file; a missing or non-UTF-8 file is an error naming it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io(path))?;
        Self::from_bytes(&bytes, &path.display().to_string(), overrides)
    }

    /// [`RunConfig::parse`] of raw file bytes, which must be UTF-8.
    pub fn from_bytes(bytes: &[u8], origin: &str, overrides: &[String]) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::Config(format!("{origin}: not UTF-8 text ({e})")))?;
        Self::parse(text, origin, overrides)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let t = &self.train;
        let bad = |m: &str| Err(Error::Config(format!("{origin}: {m}")));
        if t.batch_size == 0 || t.grad_accum == 0 {
            return bad("train.batch_size and train.grad_accum must be at least 1");
        }
        if !(t.lr.is_finite() && t.lr >= 0.0) {
            return bad("train.lr must be a finite, non-negative number");
        }
        if t.eval_batches == 0 {
            return bad("train.eval_batches must be at least 1");
        }
        let m = &self.model;
        let arch = m.arch();
        let name = format!("{arch:?}").to_lowercase();
        let d = &self.data;
        if d.eval_choices_hellaswag.is_some() && d.eval_choices.is_none() {
            return bad(
                "data.eval_choices_hellaswag says how data.eval_choices reads HellaSwag's \
                 records: set data.eval_choices too",
            );
        }
        if d.eval_choices.is_some() && arch == ModelArch::Bert {
            return bad(
                "data.eval_choices scores choices as a causal LM's continuations; model.arch is \
                 bert (a BERT answers multiple choice once fine-tuned: `lantern finetune` with \
                 data.problem_type = \"multiple_choice\")",
            );
        }
        match (&d.dir, &d.train) {
            (Some(_), Some(_)) => {
                return bad(
                    "data.dir (prepared pretraining shards) and data.train (SFT records) are two \
                     kinds of data: set one",
                )
            }
            (None, None) => {
                return bad(
                    "[data] needs dir (a folder from `lantern prepare`) or train (a JSONL file of \
                     SFT records)",
                )
            }
            (Some(_), None) => {
                if let Some(k) = d.sft_keys().first() {
                    return bad(&format!(
                        "data.{k} is a setting of SFT data (data.train), not of prepared shards \
                         (data.dir)"
                    ));
                }
                if t.epochs.is_some() {
                    return bad(
                        "train.epochs counts passes over SFT records (data.train); pretraining \
                         counts train.max_steps",
                    );
                }
                if t.group_by_length {
                    return bad(
                        "train.group_by_length orders SFT records (data.train); the windows of \
                         prepared shards are all one length",
                    );
                }
            }
            (None, Some(_)) => {
                if arch == ModelArch::Bert {
                    return bad(
                        "SFT data (data.train) trains a causal LM; model.arch is bert (masked-LM \
                         pretraining reads data.dir, classifiers `lantern finetune`)",
                    );
                }
                if t.seq_len.is_some() {
                    return bad(
                        "train.seq_len is the window of prepared shards; SFT batches are padded \
                         to their longest example, cut at data.max_length",
                    );
                }
                if d.max_length.is_some_and(|m| m < 2) {
                    return bad("data.max_length must be at least 2");
                }
                if let Some(unknown) = d.loss_type.as_ref().and_then(|l| {
                    l.names().into_iter().find(|n| {
                        !["nll", "dft"].contains(n)
                            && DpoLoss::from_name(n).is_none()
                            && crate::kto::KtoKind::from_name(n).is_none()
                    })
                }) {
                    return bad(&format!(
                        "data.loss_type: unknown loss `{unknown}` (SFT: nll, dft; DPO: {}; KTO: \
                         {})",
                        DpoLoss::NAMES.join(", "),
                        crate::kto::KtoKind::NAMES.join(", ")
                    ));
                }
                if d.packing_strategy.is_some() && d.packing != Some(true) {
                    return bad(
                        "data.packing_strategy is how packing fills rows: set data.packing = true",
                    );
                }
                if let Some(f) = d.val_fraction.filter(|f| !(*f > 0.0 && *f < 1.0)) {
                    return bad(&format!("data.val_fraction must be in (0, 1), got {f}"));
                }
                if d.validation.is_some() && d.val_fraction.is_some() {
                    return bad(
                        "data.val_fraction holds out part of data.train when there is no \
                         data.validation file; set one of them",
                    );
                }
                if d.tokenizer.is_none() && m.init_from.is_none() {
                    return bad(
                        "SFT data needs a tokenizer: set model.init_from (a pretrained folder) or \
                         data.tokenizer",
                    );
                }
                if let Some(e) = t.epochs.filter(|e| !(e.is_finite() && *e > 0.0)) {
                    return bad(&format!("train.epochs must be a positive number, got {e}"));
                }
            }
        }
        for (key, set, archs) in [
            (
                "intermediate_size",
                m.intermediate_size.is_some(),
                &[ModelArch::Bert, ModelArch::Llama][..],
            ),
            (
                "mlm_probability",
                m.mlm_probability.is_some(),
                &[ModelArch::Bert],
            ),
            ("n_kv_head", m.n_kv_head.is_some(), &[ModelArch::Llama]),
            ("family", m.family.is_some(), &[ModelArch::Llama]),
            ("head_dim", m.head_dim.is_some(), &[ModelArch::Llama]),
            (
                "sliding_window",
                m.sliding_window.is_some(),
                &[ModelArch::Llama],
            ),
            (
                "attention_bias",
                m.attention_bias.is_some(),
                &[ModelArch::Llama],
            ),
            ("mlp_bias", m.mlp_bias.is_some(), &[ModelArch::Llama]),
            (
                "dropout",
                m.dropout.is_some(),
                &[ModelArch::Gpt, ModelArch::Bert],
            ),
            (
                "attention",
                m.attention != Default::default(),
                &[ModelArch::Gpt, ModelArch::Llama],
            ),
        ] {
            if set && !archs.contains(&arch) {
                let owners: Vec<String> = archs
                    .iter()
                    .map(|a| format!("{a:?}").to_lowercase())
                    .collect();
                return bad(&format!(
                    "model.{key} is a setting of {}, but model.arch is {name} (preset {:?})",
                    owners.join(" and "),
                    m.preset
                ));
            }
        }
        if let Some(p) = m.mlm_probability {
            if !(p > 0.0 && p < 1.0) {
                return bad(&format!("model.mlm_probability must be in (0, 1), got {p}"));
            }
        }
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep must be at least 1");
        }
        let es = &self.early_stopping;
        if es.patience == Some(0) {
            return bad("early_stopping.patience must be at least 1");
        }
        if es.patience.is_some() && t.eval_every == 0 {
            return bad(
                "early_stopping.patience needs evaluations during the run: set train.eval_every",
            );
        }
        let sm = &self.sample;
        if sm.every > 0 {
            if arch == ModelArch::Bert {
                return bad(
                    "sample.every: a BERT masked LM does not generate text (sampling is for GPT-2 \
                     and the Llama family)",
                );
            }
            if sm.max_new_tokens == 0 {
                return bad("sample.max_new_tokens must be at least 1");
            }
            if let Err(m) = sm.sampling() {
                return bad(&m);
            }
        }
        if es.metric.needs_choices() && d.eval_choices.is_none() {
            return bad(&format!(
                "early_stopping.metric {} is an accuracy of data.eval_choices: set it (a \
                 multiple-choice file)",
                es.metric.key()
            ));
        }
        if es.metric == BestMetric::ValAccuracy && arch == ModelArch::Bert {
            return bad(
                "early_stopping.metric val_accuracy is a causal LM's next-token accuracy; a \
                 masked LM's evaluation reports its loss (val_loss)",
            );
        }
        if !(es.threshold.is_finite() && es.threshold >= 0.0) {
            return bad(&format!(
                "early_stopping.threshold must be a finite, non-negative number, got {}",
                es.threshold
            ));
        }
        if let Err(m) = t.optim.check() {
            return bad(&m);
        }
        if let Some(l) = &self.lora {
            l.validate().or_else(|m| bad(&m))?;
            if m.init_from.is_none() {
                return bad(
                    "[lora] adapts a pretrained model: set model.init_from (a fresh model is \
                     trained in full)",
                );
            }
        }
        // TOML has `nan` and `inf`: none of these may be either (the optimizer's keys are
        // checked above).
        let floats = [
            ("train.min_lr", t.min_lr),
            ("train.grad_clip", Some(t.grad_clip)),
            ("train.loss_scale_init", Some(t.loss_scale_init)),
            ("train.loss_scale_growth", Some(t.loss_scale_growth)),
            ("train.loss_scale_backoff", Some(t.loss_scale_backoff)),
            ("model.dropout", self.model.dropout),
            ("train.neftune_noise_alpha", t.neftune_noise_alpha),
        ];
        for (key, v) in floats {
            if let Some(v) = v {
                if !v.is_finite() {
                    return bad(&format!("{key} must be a finite number, got {v}"));
                }
            }
        }
        if t.neftune_noise_alpha.is_some_and(|a| a < 0.0) {
            return bad("train.neftune_noise_alpha must be at least 0");
        }
        if let Err(m) = crate::schedule::check_shape(
            t.schedule,
            (t.lr, self.min_lr()),
            (t.poly_power, t.num_cycles, t.timescale),
            "train",
        ) {
            return bad(&m);
        }
        if let Some(p) = t.peak_tflops.filter(|p| !(p.is_finite() && *p > 0.0)) {
            return bad(&format!(
                "train.peak_tflops must be a positive number of TFLOP/s, got {p}"
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// The LR the schedule ends at: `train.min_lr`, else lr / 10 (nanoGPT's cosine floor), or
    /// transformers' 1e-7 for `polynomial`.
    pub fn min_lr(&self) -> f64 {
        let default = match self.train.schedule {
            ScheduleKind::Polynomial => crate::schedule::POLYNOMIAL_LR_END,
            _ => self.train.lr / 10.0,
        };
        self.train.min_lr.unwrap_or(default)
    }
}

/// Deserialises a config table (after its overrides) whose `[train]` section is `S`; errors
/// name `origin` and the key.
pub(crate) fn deserialize_config<T, S>(table: toml::Table, origin: &str) -> Result<T>
where
    T: serde::de::DeserializeOwned,
    S: Serialize + Default,
{
    // Through `#[serde(flatten)]` serde reports an unknown key of the section, or a bad value of
    // an optimizer key, at `train` rather than at the key, and without the list of keys. Both
    // are checked here first, with the messages serde gives without flatten.
    if let Some(toml::Value::Table(train)) = table.get("train") {
        // JSON keeps the unset optional keys (as null), so this lists them all.
        let known: Vec<String> = match serde_json::to_value(S::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => unreachable!("a config section serialises to a map"),
        };
        if let Some(key) = train.keys().find(|k| !known.contains(k)) {
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            return Err(Error::Config(format!(
                "{origin}: key `train.{key}`: unknown field `{key}`, expected one of {}",
                expected.join(", ")
            )));
        }
        let optim = toml::Value::Table(train.clone());
        // The defaults do not matter for the types.
        deserialize_at::<OptimizerKeys<Pretraining>>(optim, origin, "train.")?;
    }
    deserialize_at(toml::Value::Table(table), origin, "")
}

fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    origin: &str,
    prefix: &str,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            Error::Config(format!("{origin}: {inner}"))
        } else {
            Error::Config(format!("{origin}: key `{prefix}{path}`: {inner}"))
        }
    })
}

/// `a.b.c=value`: the value is parsed as a TOML value (number, bool, string in quotes, array),
/// falling back to a bare string. Unknown keys are caught by deserialisation afterwards.
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set {spec:?}: expected section.key=value")))?;
    let key = key.trim();
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!(
            "--set {spec:?}: malformed key {key:?}"
        )));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(Error::Config(format!(
                    "--set {spec:?}: `{p}` is not a section"
                )))
            }
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[data]\ndir = \"d\"\n";

    #[test]
    fn defaults_fill_in() {
        let c = RunConfig::parse(MIN, "t.toml", &[]).unwrap();
        assert_eq!(c.model.preset, "gpt-tiny");
        assert_eq!(c.train.batch_size, 8);
        assert_eq!(c.checkpoint.keep, 3);
    }

    #[test]
    fn arch_follows_the_preset_and_bert_keys_need_bert() {
        let c = RunConfig::parse(MIN, "t", &["model.preset=bert-tiny".into()]).unwrap();
        assert_eq!(c.model.arch(), ModelArch::Bert);
        assert_eq!(
            RunConfig::parse(MIN, "t", &[]).unwrap().model.arch(),
            ModelArch::Gpt
        );
        let c = RunConfig::parse(
            MIN,
            "t",
            &[
                "model.arch=\"bert\"".into(),
                "model.mlm_probability=0.2".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.model.arch(), ModelArch::Bert);
        let e = RunConfig::parse(MIN, "t", &["model.mlm_probability=0.2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.mlm_probability") && e.contains("gpt"),
            "{e}"
        );
        let e = RunConfig::parse(
            MIN,
            "t",
            &[
                "model.preset=bert-tiny".into(),
                "model.mlm_probability=1.5".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("(0, 1)"), "{e}");
        assert!(RunConfig::parse(MIN, "t", &["model.arch=roberta".into()]).is_err());
    }

    #[test]
    fn arch_follows_the_init_from_folders_model_type() {
        let tmp = tempfile::tempdir().unwrap();
        let arch = |model_type: &str, extra: &[&str]| {
            let json = format!("{{\"model_type\": \"{model_type}\"}}");
            std::fs::write(tmp.path().join("config.json"), json).unwrap();
            let mut set = vec![format!("model.init_from=\"{}\"", tmp.path().display())];
            set.extend(extra.iter().map(|s| s.to_string()));
            RunConfig::parse(MIN, "t", &set).map(|c| c.model.arch())
        };
        assert_eq!(arch("qwen2", &[]).unwrap(), ModelArch::Llama);
        assert_eq!(arch("mistral", &[]).unwrap(), ModelArch::Llama);
        // A multimodal Gemma 3 folder is read as its language model.
        assert_eq!(arch("gemma3", &[]).unwrap(), ModelArch::Llama);
        assert_eq!(
            arch("llama", &["model.n_kv_head=2"]).unwrap(),
            ModelArch::Llama
        );
        assert_eq!(arch("gpt2", &[]).unwrap(), ModelArch::Gpt);
        assert_eq!(arch("roberta", &[]).unwrap(), ModelArch::Bert);
        // An explicit arch wins; a family we do not know leaves the preset's.
        let bert = arch("qwen2", &["model.arch=\"bert\""]).unwrap();
        assert_eq!(bert, ModelArch::Bert);
        assert_eq!(arch("t5", &[]).unwrap(), ModelArch::Gpt);
    }

    #[test]
    fn schedule_shapes_parse_default_and_are_checked() {
        let set = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            RunConfig::parse(MIN, "t.toml", &o)
        };
        let c = set(&["train.schedule=cosine_with_restarts", "train.num_cycles=3"]).unwrap();
        assert_eq!(c.train.schedule, ScheduleKind::CosineWithRestarts);
        assert_eq!((c.train.num_cycles, c.train.poly_power), (3, 1.0));
        // transformers' polynomial ends at 1e-7 unless min_lr says otherwise.
        let c = set(&["train.schedule=polynomial"]).unwrap();
        assert_eq!(c.min_lr(), crate::schedule::POLYNOMIAL_LR_END);
        assert_eq!(
            set(&["train.schedule=inverse_sqrt"])
                .unwrap()
                .train
                .timescale,
            None
        );
        for (o, says) in [
            (&["train.poly_power=0"][..], "train.poly_power"),
            (&["train.num_cycles=0"][..], "train.num_cycles"),
            (&["train.timescale=0"][..], "train.timescale"),
            (
                &[
                    "train.schedule=polynomial",
                    "train.min_lr=0.01",
                    "train.lr=0.001",
                ][..],
                "train.min_lr",
            ),
            (&["train.schedule=cosine_restarts"][..], "cosine_restarts"),
        ] {
            let e = set(o).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("t.toml"), "{o:?}: {e}");
        }
    }

    #[test]
    fn early_stopping_needs_evaluations_and_sane_values() {
        let c = RunConfig::parse(MIN, "t", &[]).unwrap();
        assert_eq!(c.early_stopping, EarlyStopSection::default());
        assert!(!c.checkpoint.save_best);
        let c = RunConfig::parse(
            MIN,
            "t",
            &[
                "early_stopping.patience=3".into(),
                "early_stopping.threshold=0.01".into(),
                "checkpoint.save_best=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.early_stopping.patience, Some(3));
        assert_eq!(c.early_stopping.metric, BestMetric::ValLoss);
        assert!(c.checkpoint.save_best);
        let c = RunConfig::parse(
            MIN,
            "t",
            &[
                "early_stopping.metric=\"choice_acc_per_token\"".into(),
                "data.eval_choices=\"q.jsonl\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.data.eval_choices_hellaswag, None);
        let lm_eval = RunConfig::parse(
            MIN,
            "t",
            &[
                "data.eval_choices=\"q.jsonl\"".into(),
                "data.eval_choices_hellaswag=\"lm-eval\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            lm_eval.data.eval_choices_hellaswag,
            Some(lantern_data::choice::HellaSwagText::LmEval)
        );
        let m = c.early_stopping.metric;
        assert_eq!(
            (m, m.key()),
            (BestMetric::ChoiceAccPerToken, "choice_acc_per_token")
        );
        assert!(m.higher_is_better() && !BestMetric::ValLoss.higher_is_better());
        for (sets, says) in [
            (vec!["early_stopping.patience=0"], "early_stopping.patience"),
            (
                vec!["early_stopping.patience=2", "train.eval_every=0"],
                "train.eval_every",
            ),
            (
                vec!["early_stopping.threshold=-1"],
                "early_stopping.threshold",
            ),
            (
                vec!["early_stopping.threshold=nan"],
                "early_stopping.threshold",
            ),
            (
                vec!["early_stopping.metric=\"f1\""],
                "early_stopping.metric",
            ),
            (
                vec!["sample.every=5", "model.arch=\"bert\""],
                "a BERT masked LM does not generate text",
            ),
            (
                vec!["sample.every=5", "sample.repetition_penalty=0"],
                "sample.repetition_penalty 0: expected a finite number > 0",
            ),
            (
                vec!["early_stopping.metric=\"choice_acc_norm\""],
                "early_stopping.metric choice_acc_norm is an accuracy of data.eval_choices",
            ),
            (
                vec!["data.eval_choices_hellaswag=\"lm-eval\""],
                "set data.eval_choices too",
            ),
            (
                vec![
                    "data.eval_choices=\"q.jsonl\"",
                    "data.eval_choices_hellaswag=\"harness\"",
                ],
                "eval_choices_hellaswag",
            ),
            (
                vec![
                    "early_stopping.metric=\"val_accuracy\"",
                    "model.arch=\"bert\"",
                ],
                "a masked LM's evaluation reports its loss",
            ),
        ] {
            let sets: Vec<String> = sets.into_iter().map(String::from).collect();
            let e = RunConfig::parse(MIN, "t.toml", &sets)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{sets:?}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = RunConfig::parse("[data]\ndir = \"d\"\n[train]\nlrr = 1.0\n", "t.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("key `train.lrr`"), "{e}");
        // Every key of the section is listed, the optimizer's (flattened into it) included.
        for key in [
            "`lr`",
            "`seq_len`",
            "`optimizer`",
            "`momentum`",
            "`grad_clip`",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let e = RunConfig::parse(MIN, "t.toml", &["train.lr=fast".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.lr") && e.contains("string"), "{e}");
        let e = RunConfig::parse("[data]\ndir = 3\n", "t.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.dir"), "{e}");
    }

    #[test]
    fn overrides_apply_and_unknown_ones_fail() {
        let c = RunConfig::parse(MIN, "t", &["train.lr=0.5".into(), "run.dir=x/y".into()]).unwrap();
        assert_eq!(c.train.lr, 0.5);
        assert_eq!(c.run.dir, PathBuf::from("x/y"));
        let e = RunConfig::parse(MIN, "t", &["train.nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        let e = RunConfig::parse(MIN, "t", &["novalue".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("novalue"), "{e}");
    }

    #[test]
    fn optimizer_keys_parse_and_are_checked() {
        let c = RunConfig::parse(MIN, "t", &[]).unwrap();
        assert_eq!(c.train.optim.kind, OptimizerKind::AdamW);
        // nanoGPT's AdamW.
        let o = &c.train.optim;
        assert_eq!(
            (o.beta1, o.beta2, o.eps, o.weight_decay),
            (0.9, 0.95, 1e-8, 0.1)
        );
        let c = RunConfig::parse(
            MIN,
            "t",
            &[
                "train.optimizer=\"sgd\"".into(),
                "train.momentum=0.9".into(),
                "train.nesterov=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.optim.kind, OptimizerKind::Sgd);
        assert_eq!(c.train.optim.kind.name(), "sgd");
        let e = RunConfig::parse(MIN, "t.toml", &["train.optimizer=\"adam\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml") && e.contains("train.optimizer") && e.contains("adam"),
            "{e}"
        );
        for bad in [
            &["train.optimizer=\"sgd\"", "train.nesterov=true"][..],
            &[
                "train.optimizer=\"sgd\"",
                "train.nesterov=true",
                "train.momentum=0.9",
                "train.dampening=0.1",
            ],
        ] {
            let o: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let e = RunConfig::parse(MIN, "t.toml", &o).unwrap_err().to_string();
            assert!(
                e.contains("train.nesterov") && e.contains("dampening"),
                "{e}"
            );
        }
        for (key, value) in [
            ("momentum", "-0.5"),
            ("alpha", "1.5"),
            ("lr_decay", "-1"),
            ("initial_accumulator_value", "-0.1"),
            ("dampening", "2"),
            ("momentum", "fast"),
            ("centered", "1"),
        ] {
            let e = RunConfig::parse(MIN, "t.toml", &[format!("train.{key}={value}")])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("train.{key}")), "{key}: {e}");
        }
    }

    #[test]
    fn attention_key_parses_and_is_checked() {
        use lantern_models::gpt::AttentionImpl;
        let c = RunConfig::parse(MIN, "t", &[]).unwrap();
        assert_eq!(c.model.attention, AttentionImpl::Auto);
        let c = RunConfig::parse(MIN, "t", &["model.attention=\"fused\"".into()]).unwrap();
        assert_eq!(c.model.attention, AttentionImpl::Fused);
        let c = RunConfig::parse(MIN, "t", &["model.attention=\"composite\"".into()]).unwrap();
        assert_eq!(c.model.attention, AttentionImpl::Composite);
        let e = RunConfig::parse(MIN, "t.toml", &["model.attention=\"flash\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml") && e.contains("model.attention") && e.contains("flash"),
            "{e}"
        );
        let e = RunConfig::parse(
            MIN,
            "t",
            &[
                "model.preset=bert-tiny".into(),
                "model.attention=\"fused\"".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.attention") && e.contains("bert"), "{e}");
    }

    #[test]
    fn activation_checkpointing_parses_for_both_models() {
        let on = "train.activation_checkpointing=true".to_string();
        let c = RunConfig::parse(MIN, "t", std::slice::from_ref(&on)).unwrap();
        assert!(c.train.activation_checkpointing);
        assert!(
            !RunConfig::parse(MIN, "t", &[])
                .unwrap()
                .train
                .activation_checkpointing
        );
        let c = RunConfig::parse(MIN, "t", &["model.preset=bert-tiny".into(), on]).unwrap();
        assert!(c.train.activation_checkpointing);
    }

    #[test]
    fn non_utf8_is_named() {
        let e = RunConfig::from_bytes(b"[data]\ndir = \"\xff\"\n", "bad.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml") && e.contains("UTF-8"), "{e}");
        let c = RunConfig::from_bytes(MIN.as_bytes(), "ok.toml", &[]).unwrap();
        assert_eq!(c.train.max_consecutive_skips, 5);
    }

    #[test]
    fn non_finite_floats_are_refused() {
        for kv in [
            "train.weight_decay=nan",
            "train.eps=inf",
            "model.dropout=-inf",
        ] {
            let e = RunConfig::parse(MIN, "t.toml", &[kv.into()])
                .unwrap_err()
                .to_string();
            let key = kv.split('=').next().unwrap();
            assert!(e.contains(key) && e.contains("finite"), "{e}");
        }
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = RunConfig::parse(MIN, "t", &["train.seq_len=64".into()]).unwrap();
        let again = RunConfig::parse(&c.to_toml(), "t", &[]).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn sft_data_keys_are_checked() {
        let sft = "[model]\ninit_from = \"m\"\n[data]\ntrain = \"t.jsonl\"\n";
        // A folder without config.json reads as GPT-2 for the checks.
        let c = RunConfig::parse(
            sft,
            "t",
            &[
                "train.epochs=2.5".into(),
                "data.packing=true".into(),
                "data.packing_strategy=\"bfd_split\"".into(),
                "data.loss_type=\"dft\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.data.packing_strategy, Some(PackingStrategy::BfdSplit));
        assert_eq!(TokenLoss::of(c.data.loss_type.as_ref()), Ok(TokenLoss::Dft));
        assert_eq!(c.data.shards(), None);
        assert_eq!(c.train.epochs, Some(2.5));
        let again = RunConfig::parse(&c.to_toml(), "t", &[]).unwrap();
        assert_eq!(c, again);
        // Old records (no SFT keys) still read, and write no SFT key.
        let p = RunConfig::parse(MIN, "t", &[]).unwrap();
        assert!(!p.to_toml().contains("max_length"), "{}", p.to_toml());
        for (text, sets, want) in [
            (MIN, vec!["data.train=\"x\""], "set one"),
            ("[data]\n", vec![], "needs dir"),
            (
                MIN,
                vec!["data.max_length=12"],
                "data.max_length is a setting of SFT data",
            ),
            (MIN, vec!["train.epochs=1"], "train.epochs counts passes"),
            (
                MIN,
                vec!["train.group_by_length=true"],
                "train.group_by_length orders",
            ),
            (sft, vec!["train.seq_len=64"], "train.seq_len is the window"),
            (
                sft,
                vec!["data.packing_strategy=\"wrapped\""],
                "set data.packing = true",
            ),
            (
                sft,
                vec!["data.packing=true", "data.packing_strategy=\"first_fit\""],
                "unknown variant `first_fit`",
            ),
            (
                MIN,
                vec!["data.packing=true"],
                "data.packing is a setting of SFT data",
            ),
            (
                sft,
                vec!["data.loss_type=\"chunked_nll\""],
                "data.loss_type: unknown loss `chunked_nll` (SFT: nll, dft; DPO: sigmoid,",
            ),
            (
                sft,
                vec!["data.val_fraction=1.5"],
                "data.val_fraction must be in (0, 1)",
            ),
            (
                sft,
                vec!["data.val_fraction=0.2", "data.validation=\"v\""],
                "set one of them",
            ),
            (
                sft,
                vec!["train.epochs=0"],
                "train.epochs must be a positive",
            ),
            (sft, vec!["data.max_length=0"], "at least 2"),
            (sft, vec!["model.arch=\"bert\""], "trains a causal LM"),
            ("[data]\ntrain = \"t.jsonl\"\n", vec![], "needs a tokenizer"),
        ] {
            let sets: Vec<String> = sets.into_iter().map(String::from).collect();
            let e = RunConfig::parse(text, "t.toml", &sets)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{sets:?}: {e}");
        }
    }
}

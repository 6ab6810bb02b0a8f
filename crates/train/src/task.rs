//! What a pretraining run trains, and everything in the loop that depends on it:
//!
//! | | causal LM (GPT-2, Llama) | masked LM (BERT, `BertForMaskedLM`) |
//! |---|---|---|
//! | model config | [`GptConfig`], [`LlamaConfig`] | [`BertConfig`] |
//! | sample | a window of T + 1 tokens: inputs and next tokens | a window of T − 2 tokens wrapped as `[CLS] … [SEP]`, masked by the collator |
//! | loss | summed next-token cross-entropy over B·T positions | summed cross-entropy over the chosen positions only |
//! | checkpoint | `GPT2LMHeadModel` (`Conv1D` layout) or `LlamaForCausalLM` HF names + `config.json` | `BertForMaskedLM` HF names + `config.json` |
//!
//! Both draw windows from the same pure sampler (crates/data/src/sampler.rs), so the data
//! position of a run is still one number, the global sample index. Masking is a pure function
//! of `(seed, global sample index)` ([`MlmCollator`]), so resume, accumulation and any split of
//! a step over processes mask every sample the same way. The loop (crates/train/src/trainer.rs)
//! normalises a step's summed loss by [`Batch::n_targets`] of the whole step, which makes the
//! masked-LM loss the mean over the step's chosen tokens and accumulation exact for both.

use crate::config::{ModelArch, RunConfig, TokenLoss};
use crate::dpo::{DpoSet, Logps};
use crate::grads::{scaled_backward, StepGrads};
use crate::kto::KtoSet;
use crate::model_tokens;
use crate::recompute::Recomputed;
use crate::sft::SftSet;
use crate::trainer::Batch;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use lantern_data::sampler::{lm_batch, lm_val_batch};
use lantern_data::sft::SftExample;
use lantern_data::shard::Shard;
use lantern_data::{MlmCollator, ModelTokens};
use lantern_kernels::{cross_entropy_rows, cross_entropy_sum, Rng};
use lantern_models::bert::{self, BertConfig, BertForMaskedLM, BertHead, BertInput};
use lantern_models::decoder::{Decoder, DecoderConfig};
use lantern_models::gpt::{self, AttentionImpl, Gpt, GptConfig};
use lantern_models::llama::{self, Llama, LlamaConfig};
use lantern_models::{Mode, Params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Seeds of the masked-LM collator, apart from the run's other streams: training samples are
/// masked from `(seed ^ MASK_STREAM, sample index)`, validation windows from
/// `(seed ^ VAL_MASK_STREAM, window index)`, so every evaluation scores the same positions.
const MASK_STREAM: u64 = 0x6d61_736b; // "mask"
const VAL_MASK_STREAM: u64 = 0x7661_6c6d_736b; // "valmsk"

/// The model of a run; the record `trainer_state.json` keeps as `model`. A GPT record is a
/// [`GptConfig`] (as in checkpoints written before BERT pretraining existed), a BERT record a
/// [`BertConfig`], a Llama record a [`LlamaConfig`]: they are told apart by Llama's
/// `rms_norm_eps` key, then BERT's `hidden_size`, and each parses with its own type's checks,
/// so an error names the bad field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelConfig {
    Gpt(GptConfig),
    Bert(BertConfig),
    Llama(LlamaConfig),
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        if v.get("rms_norm_eps").is_some() {
            serde_json::from_value(v)
                .map(Self::Llama)
                .map_err(|e| D::Error::custom(format!("Llama model config: {e}")))
        } else if v.get("hidden_size").is_some() {
            serde_json::from_value(v)
                .map(Self::Bert)
                .map_err(|e| D::Error::custom(format!("BERT model config: {e}")))
        } else {
            serde_json::from_value(v)
                .map(Self::Gpt)
                .map_err(|e| D::Error::custom(format!("GPT model config: {e}")))
        }
    }
}

/// Bounds that keep a corrupted record from asking for an absurd allocation.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_PARAMS: u128 = 1 << 40;

impl ModelConfig {
    /// The model a run config asks for: the preset (or the `init_from` folder's config) with
    /// the explicit overrides applied; the vocabulary defaults to the tokenizer's.
    pub fn resolve(cfg: &RunConfig, data_vocab: usize) -> Result<Self> {
        let m = &cfg.model;
        let set = |dst: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *dst = v
            }
        };
        let resolved = match m.arch() {
            ModelArch::Gpt => {
                let mut g = match &m.init_from {
                    Some(dir) => gpt::hf::config_from_hf(&dir.join("config.json"))?,
                    None => GptConfig::preset(&m.preset, m.vocab_size.unwrap_or(data_vocab))?,
                };
                set(&mut g.vocab_size, m.vocab_size);
                set(&mut g.n_positions, m.n_positions);
                set(&mut g.n_embd, m.n_embd);
                set(&mut g.n_layer, m.n_layer);
                set(&mut g.n_head, m.n_head);
                if let Some(d) = m.dropout {
                    g.dropout = d;
                }
                g.validate()?;
                Self::Gpt(g)
            }
            ModelArch::Llama => {
                let mut c = match &m.init_from {
                    Some(dir) => llama::hf::config_from_hf(&dir.join("config.json"))?,
                    None => LlamaConfig::preset(&m.preset, m.vocab_size.unwrap_or(data_vocab))?,
                };
                set(&mut c.vocab_size, m.vocab_size);
                set(&mut c.max_position_embeddings, m.n_positions);
                set(&mut c.hidden_size, m.n_embd);
                set(&mut c.num_hidden_layers, m.n_layer);
                set(&mut c.num_attention_heads, m.n_head);
                set(&mut c.intermediate_size, m.intermediate_size);
                match (m.n_kv_head, m.n_head) {
                    (Some(kv), _) => c.num_key_value_heads = kv,
                    // A new head count without a key/value count keeps the preset's grouping
                    // when it divides, else falls back to one key/value head per head.
                    (None, Some(h)) if h % c.num_key_value_heads != 0 => c.num_key_value_heads = h,
                    _ => {}
                }
                if let Some(f) = m.family {
                    use lantern_models::llama::LlamaFamily;
                    if matches!(f, LlamaFamily::Gemma3 | LlamaFamily::Gemma2)
                        && m.init_from.is_none()
                    {
                        return Err(Error::Config(format!(
                            "model.family = \"{}\" from scratch is not supported (its layer \
                             kinds, RoPE bases and soft caps have no keys here): start from a \
                             Gemma folder with model.init_from",
                            f.model_type()
                        )));
                    }
                    c.model_type = f;
                    // Granite's multipliers: the folder's, else GraniteConfig's (all 1).
                    c.granite =
                        (f == LlamaFamily::Granite).then(|| c.granite.take().unwrap_or_default());
                    // SmolLM3's NoPE layers: the folder's, else SmolLM3Config's every fourth.
                    if f != LlamaFamily::SmolLM3 {
                        c.nope_layers.clear();
                    } else if c.nope_layers.is_empty() {
                        c.nope_layers = LlamaConfig::nope_every(c.num_hidden_layers, 4);
                    }
                }
                // Kept apart only where it differs from the width / heads, as config.json reads.
                c.head_dim = m
                    .head_dim
                    .or(c.head_dim)
                    .filter(|&hd| hd * c.num_attention_heads != c.hidden_size);
                c.sliding_window = m.sliding_window.or(c.sliding_window);
                c.attention_bias = m.attention_bias.unwrap_or(c.attention_bias);
                c.mlp_bias = m.mlp_bias.unwrap_or(c.mlp_bias);
                c.validate()?;
                Self::Llama(c)
            }
            ModelArch::Bert => {
                let mut c = match &m.init_from {
                    Some(dir) => bert::hf::config_from_hf(&dir.join("config.json"))?.0,
                    None => BertConfig::preset(&m.preset, m.vocab_size.unwrap_or(data_vocab))?,
                };
                if !c.model_type.has_masked_lm() {
                    return Err(Error::Config(format!(
                        "model.init_from is an {} model, whose masked-LM generator is not \
                         implemented: fine-tune it with `lantern finetune`",
                        c.model_type.model_type()
                    )));
                }
                set(&mut c.vocab_size, m.vocab_size);
                set(&mut c.max_position_embeddings, m.n_positions);
                set(&mut c.hidden_size, m.n_embd);
                set(&mut c.num_hidden_layers, m.n_layer);
                set(&mut c.num_attention_heads, m.n_head);
                set(&mut c.intermediate_size, m.intermediate_size);
                if let Some(d) = m.dropout {
                    c.hidden_dropout_prob = d;
                    c.attention_probs_dropout_prob = d;
                }
                // A classifier's labels mean nothing to the masked-LM model.
                c.id2label.clear();
                c.validate()?;
                Self::Bert(c)
            }
        };
        if resolved.vocab_size() < data_vocab {
            let data = match (&cfg.data.dir, &cfg.data.tokenizer, &m.init_from) {
                (Some(d), _, _) => format!("data.dir {}", d.display()),
                (None, Some(t), _) => format!("data.tokenizer {}", t.display()),
                (None, None, Some(d)) => format!("{}", d.join("tokenizer.json").display()),
                (None, None, None) => "the data".into(),
            };
            return Err(Error::Config(format!(
                "model vocab_size {} is smaller than the tokenizer's {data_vocab} ({data})",
                resolved.vocab_size(),
            )));
        }
        Ok(resolved)
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Gpt(g) => g.vocab_size,
            Self::Bert(c) => c.vocab_size,
            Self::Llama(c) => c.vocab_size,
        }
    }

    /// The longest sequence the position table holds (RoBERTa's numbering skips
    /// `pad_token_id + 1` of its positions).
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Gpt(g) => g.n_positions,
            Self::Bert(c) => c.max_tokens(),
            Self::Llama(c) => c.max_position_embeddings,
        }
    }

    pub fn num_params(&self) -> usize {
        match self {
            Self::Gpt(g) => g.num_params(),
            Self::Bert(c) => c.num_params_mlm(),
            Self::Llama(c) => c.num_params(),
        }
    }

    /// Training FLOPs per token at sequence length `seq_len`: 6·N + 12·L·H·Q·T (PaLM,
    /// nanoGPT; N without the position table), for BERT as for GPT (its attention is not
    /// causal, but the convention counts the full score matrix for both).
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        match self {
            Self::Gpt(g) => g.flops_per_token(seq_len),
            Self::Llama(c) => c.flops_per_token(seq_len),
            Self::Bert(c) => {
                let n = c.num_params_mlm() - c.max_position_embeddings * c.hidden_size;
                6.0 * n as f64 + 12.0 * (c.num_hidden_layers * c.hidden_size * seq_len) as f64
            }
        }
    }

    /// The smallest sequence length a sample can have: a GPT window of one token, or
    /// `[CLS] x [SEP]`.
    pub fn min_seq_len(&self) -> usize {
        match self {
            Self::Gpt(_) | Self::Llama(_) => 1,
            Self::Bert(_) => 3,
        }
    }

    /// The model's own validation, and bounds on every size (a record read from a checkpoint
    /// must not be able to ask for terabytes). `path` names the file in errors.
    pub fn check(&self, path: &Path) -> Result<()> {
        let err = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        match self {
            Self::Gpt(g) => {
                g.validate()
                    .map_err(|e| err(format!("model config: {e}")))?;
                gpt::hf::check_plausible(g, path)?;
            }
            Self::Llama(c) => {
                c.validate()
                    .map_err(|e| err(format!("model config: {e}")))?;
                llama::hf::check_plausible(c, path)?;
            }
            Self::Bert(c) => {
                c.validate()
                    .map_err(|e| err(format!("model config: {e}")))?;
                for (k, v, max) in [
                    ("vocab_size", c.vocab_size, 1 << 24),
                    ("hidden_size", c.hidden_size, MAX_DIM),
                    ("intermediate_size", c.intermediate_size, 4 * MAX_DIM),
                    (
                        "max_position_embeddings",
                        c.max_position_embeddings,
                        MAX_DIM,
                    ),
                    ("type_vocab_size", c.type_vocab_size, MAX_DIM),
                    ("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS),
                ] {
                    if v > max {
                        return Err(err(format!("{k} {v} is implausibly large (limit {max})")));
                    }
                }
                // Within the bounds above this cannot overflow u128.
                let (h, f) = (c.hidden_size as u128, c.intermediate_size as u128);
                let n = (c.vocab_size as u128 + c.max_position_embeddings as u128) * h
                    + c.num_hidden_layers as u128 * (4 * h * h + 2 * h * f);
                if n > MAX_PARAMS {
                    return Err(err(format!(
                        "config describes about {n} parameters, more than the {MAX_PARAMS} this \
                         build accepts"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The same model with every dropout rate 0 (TRL's `disable_dropout`, for DPO).
    pub fn without_dropout(&self) -> Self {
        let mut c = self.clone();
        match &mut c {
            Self::Gpt(g) => g.dropout = 0.0,
            Self::Bert(b) => {
                b.hidden_dropout_prob = 0.0;
                b.attention_probs_dropout_prob = 0.0;
            }
            // The Llama family runs without dropout (its loader refuses a rate above 0).
            Self::Llama(_) => {}
        }
        c
    }

    /// A fresh initialisation (GPT-2's, or transformers' `BertPreTrainedModel` one) from `rng`.
    pub fn init_params(&self, rng: &mut Rng, device: &Device) -> Result<Params> {
        Ok(match self {
            Self::Gpt(g) => gpt::init_params(g, rng, device, DType::F32)?,
            Self::Llama(c) => llama::init_params(c, rng, device, DType::F32)?,
            Self::Bert(c) => bert::init_params(c, BertHead::MaskedLm, rng, device, DType::F32)?,
        })
    }

    /// Weights from a `model.safetensors` in HF names: a checkpoint of this run, or the
    /// `init_from` folder's. For BERT a missing MLM head (a bare `BertModel`) is initialised
    /// from `rng`, as transformers does; a missing encoder tensor is an error.
    pub fn load_params(&self, path: &Path, rng: &mut Rng, device: &Device) -> Result<Params> {
        Ok(match self {
            Self::Gpt(g) => gpt::hf::load_params(path, g, device, DType::F32)?,
            Self::Llama(c) => llama::hf::load_params(path, c, device, DType::F32)?,
            Self::Bert(c) => {
                bert::hf::load_params(path, c, BertHead::MaskedLm, rng, device, DType::F32)?.0
            }
        })
    }

    /// The model for the loop, reading `params` (kept, so optimizer updates are seen);
    /// `attention` is GPT's and Llama's (`model.attention`); `recompute` is
    /// `train.activation_checkpointing` (each block's activations are recomputed in the
    /// backward pass instead of kept); `neftune` is `train.neftune_noise_alpha` (0: none).
    pub fn build(
        &self,
        params: &Params,
        attention: AttentionImpl,
        recompute: bool,
        neftune: f64,
    ) -> Result<Box<dyn LossModel>> {
        Ok(match self {
            Self::Gpt(g) => {
                let gpt = Gpt::new(g, params)?
                    .with_attention(attention)
                    .with_neftune(neftune);
                match recompute {
                    true => Box::new(Recomputed(gpt)),
                    false => Box::new(gpt),
                }
            }
            Self::Llama(c) => {
                let model = Llama::new(c, params)?
                    .with_attention(attention)
                    .with_neftune(neftune);
                match recompute {
                    true => Box::new(Recomputed(model)),
                    false => Box::new(model),
                }
            }
            Self::Bert(c) => {
                let mut mlm = BertForMaskedLM::new(c, params)?;
                mlm.bert = mlm.bert.with_neftune(neftune);
                match recompute {
                    true => Box::new(Recomputed(mlm)),
                    false => Box::new(mlm),
                }
            }
        })
    }

    /// The checkpoint's `model.safetensors` tensors, in f32 and HF names.
    pub fn export_tensors(&self, params: &Params) -> Result<BTreeMap<String, Tensor>> {
        Ok(match self {
            Self::Gpt(_) => gpt::hf::export_tensors(params, DType::F32)?,
            Self::Llama(_) => llama::hf::export_tensors(params, DType::F32)?,
            Self::Bert(_) => bert::hf::export_tensors(params, DType::F32)?,
        })
    }

    /// Files a checkpoint holds besides weights, optimizer, tokenizer and trainer state: HF's
    /// `config.json`, so that every checkpoint is already a `GPT2LMHeadModel` or
    /// `LlamaForCausalLM` (with `eot_id` as its BOS/EOS) or `BertForMaskedLM` folder that `lantern export`, the fine-tuning
    /// commands and transformers read.
    pub fn checkpoint_files(&self, eot_id: Option<u32>) -> Vec<(&'static str, Vec<u8>)> {
        let v = match self {
            Self::Gpt(c) => gpt::hf::to_hf_config(c, eot_id, DType::F32),
            Self::Llama(c) => llama::hf::to_hf_config(c, eot_id, DType::F32),
            Self::Bert(c) => bert::hf::to_hf_config(c, BertHead::MaskedLm, DType::F32),
        };
        vec![(
            "config.json",
            serde_json::to_vec_pretty(&v).expect("config serialises"),
        )]
    }

    /// What the checkpoint's `tokenizer_config.json` takes from the model (`eot_id` as for
    /// [`ModelConfig::checkpoint_files`]).
    pub fn model_tokens(&self, eot_id: Option<u32>) -> ModelTokens {
        match self {
            Self::Gpt(c) => model_tokens::of_lm(&DecoderConfig::Gpt(c.clone()), eot_id),
            Self::Llama(c) => model_tokens::of_lm(&DecoderConfig::Llama(c.clone()), eot_id),
            Self::Bert(c) => model_tokens::of_encoder(c),
        }
    }

    /// The model as a [`Decoder`] reading `params` (for generation): `None` for a BERT.
    pub fn sampler_model(
        &self,
        params: &Params,
        attention: AttentionImpl,
    ) -> Result<Option<Decoder>> {
        Ok(match self {
            Self::Gpt(g) => Some(Decoder::Gpt(Gpt::new(g, params)?.with_attention(attention))),
            Self::Llama(c) => Some(Decoder::Llama(
                Llama::new(c, params)?.with_attention(attention),
            )),
            Self::Bert(_) => None,
        })
    }

    /// The language model of a record (GPT-2 or Llama), or an error saying what else it is
    /// (`path` for messages).
    pub fn decoder(self, path: &Path) -> Result<DecoderConfig> {
        match self {
            Self::Gpt(g) => Ok(DecoderConfig::Gpt(g)),
            Self::Llama(c) => Ok(DecoderConfig::Llama(c)),
            Self::Bert(_) => Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: "is a BERT masked-LM checkpoint, not a causal language model (its \
                      config.json is a BertForMaskedLM folder: use `lantern export` or the BERT \
                      commands)"
                    .into(),
            }),
        }
    }
}

/// A model the loop can train: the summed loss of a batch, to be divided by the step's
/// [`Batch::n_targets`].
pub trait LossModel {
    fn loss_sum(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor>;

    /// An evaluation's sums over `batch`: the summed loss and, for next-token models, how many
    /// of its targets are the most likely token (TRL's `mean_token_accuracy`, over the
    /// weighted targets).
    fn eval_sums(&self, batch: &Batch) -> Result<(f64, Option<usize>)> {
        let loss = self.loss_sum(batch, Mode::Eval)?.to_scalar::<f32>()?;
        Ok((f64::from(loss), None))
    }

    /// Each row's log-probability of its weighted targets ([`row_logps`]) by a forward in
    /// `mode`: a causal LM's, for DPO's reference (evaluation mode) and KTO's KL rows (in
    /// training mode when dropout trains).
    fn row_logps(&self, _batch: &Batch, _mode: Mode<'_>) -> Result<Tensor> {
        Err(Error::Config(
            "only a causal language model scores rows (DPO's reference)".into(),
        ))
    }

    /// One micro-batch's forward and backward: the summed loss divided by `divisor`, whose
    /// gradient (of the loss times `scale`, fp16's loss scale) is added to `grads`. Returns
    /// the divided loss. Models that recompute activations in the backward pass
    /// ([`crate::recompute`]) override it.
    fn loss_backward(
        &self,
        batch: &Batch,
        mode: Mode<'_>,
        (divisor, scale): (f64, f64),
        params: &Params,
        grads: &mut StepGrads,
    ) -> Result<f64> {
        let loss = (self.loss_sum(batch, mode)? / divisor)?;
        let store = scaled_backward(&loss, scale)?;
        grads.accumulate(params, &store)?;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    }
}

/// Summed next-token cross-entropy of GPT's logits (B, T, V) against the batch's targets
/// (B·T); with [`TokenLoss::Dft`] each target's term weighted by its probability.
pub fn causal_loss_sum(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    if let Some(p) = &batch.pairs {
        return dpo_loss_sum(logits, batch, p);
    }
    if let Some(u) = &batch.unpaired {
        return kto_loss_sum(logits, batch, u);
    }
    let (b, t, v) = logits.dims3()?;
    let logits = logits.reshape((b * t, v))?;
    let weights = match batch.loss {
        TokenLoss::Nll => batch.weights.clone(),
        TokenLoss::Dft => {
            let p = target_probs(&logits, &batch.targets, batch.weights.as_ref())?;
            Some(match &batch.weights {
                Some(w) => (p * w)?,
                None => p,
            })
        }
    };
    Ok(cross_entropy_sum(
        &logits,
        &batch.targets,
        weights.as_ref(),
    )?)
}

/// Each row's log-probability of its weighted targets: the sum over the row of
/// `weight · log p(target)` from logits (R, T, V) → (R) f32, with its gradient (the fused
/// cross-entropy's per-token terms, one pass over the logits each way); DPO rows with LD-DPO's
/// token weights take those too.
pub fn row_logps(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    row_logps_of(&token_nll(logits, batch)?, batch)
}

/// Each target's weighted negative log-likelihood from logits (R, T, V) → (R, T) f32.
fn token_nll(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let (r, t, v) = logits.dims3()?;
    let nll = cross_entropy_rows(
        &logits.reshape((r * t, v))?,
        &batch.targets,
        batch.weights.as_ref(),
    )?; // (R·T)
    Ok(nll.to_dtype(DType::F32)?.reshape((r, t))?)
}

/// [`row_logps`] from [`token_nll`]'s (R, T).
fn row_logps_of(nll: &Tensor, batch: &Batch) -> Result<Tensor> {
    let nll = match batch.pairs.as_ref().and_then(|p| p.ld.as_ref()) {
        Some(ld) => (nll * ld.reshape(nll.shape())?)?,
        None => nll.clone(),
    };
    Ok(nll.sum(1)?.neg()?)
}

/// DPO's summed loss over the batch's preferences ([`crate::dpo::PreferenceLoss`]).
/// KTO's summed loss of a batch whose rows are B examples' completions (the KL estimate made
/// beforehand: [`crate::kto::kl_estimate`]).
fn kto_loss_sum(logits: &Tensor, batch: &Batch, u: &crate::kto::Unpaired) -> Result<Tensor> {
    let reference = u.reference.as_ref().ok_or_else(|| {
        Error::Config("a KTO batch without the reference's log-probabilities".into())
    })?;
    let policy = row_logps_of(&token_nll(logits, batch)?, batch)?; // (B)
    u.loss.sum((&policy, reference), u.z, &u.labels)
}

fn dpo_loss_sum(logits: &Tensor, batch: &Batch, p: &crate::dpo::Pairs) -> Result<Tensor> {
    p.loss.sum(&dpo_logps(logits, batch, p)?)
}

/// What the preference losses read of a batch whose rows are the chosen completions, then the
/// rejected ones.
fn dpo_logps(logits: &Tensor, batch: &Batch, p: &crate::dpo::Pairs) -> Result<Logps> {
    let reference = p.reference.as_ref().ok_or_else(|| {
        Error::Config("a DPO batch without the reference's log-probabilities".into())
    })?;
    let nll = token_nll(logits, batch)?; // (2B, T)
    let lp = row_logps_of(&nll, batch)?; // (2B)
    let b = lp.dim(0)? / 2;
    let half = |x: &Tensor, i: usize| x.narrow(0, i * b, b);
    let lengths = match p.loss.per_token() {
        true => Some((half(&p.lengths, 0)?, half(&p.lengths, 1)?)),
        false => None,
    };
    // The sft loss: the chosen rows' completion tokens' mean NLL (TRL's, unweighted by LD).
    let chosen_nll = match (p.loss.reads_nll(), &batch.weights) {
        (true, Some(w)) => {
            let tokens = w.reshape(nll.shape())?.narrow(0, 0, b)?.sum_all()?;
            Some((half(&nll, 0)?.sum_all()? / tokens.clamp(1f32, f32::MAX)?)?)
        }
        _ => None,
    };
    let weights = match p.loss.use_weighting {
        true => {
            let w = wpo_weights(logits, batch, &nll.detach(), &p.lengths)?; // (2B)
            Some((half(&w, 0)? * half(&w, 1)?)?)
        }
        false => None,
    };
    Ok(Logps {
        chosen: half(&lp, 0)?,
        rejected: half(&lp, 1)?,
        ref_chosen: half(reference, 0)?,
        ref_rejected: half(reference, 1)?,
        lengths,
        chosen_nll,
        weights,
    })
}

/// WPO's weight of each row (R), without gradient: `exp` of the mean over its completion
/// tokens of `log p(t) − log Σ_v p_v²`. With `nll` = `lse(x) − x_t` (R, T) and the fused
/// cross-entropy of 2x, `lse(2x) − 2x_t`, that is `nll − ce(2x)` per token (the log Σ p²
/// being `lse(2x) − 2·lse(x)`): one more pass over the logits, no (R, T, V) softmax kept.
fn wpo_weights(logits: &Tensor, batch: &Batch, nll: &Tensor, lengths: &Tensor) -> Result<Tensor> {
    let (r, t, v) = logits.dims3()?;
    let doubled = logits.detach().reshape((r * t, v))?.affine(2.0, 0.0)?;
    let ce2 = cross_entropy_rows(&doubled, &batch.targets, batch.weights.as_ref())?
        .to_dtype(DType::F32)?
        .reshape((r, t))?;
    let aligned = (nll - ce2)?.sum(1)?; // (R)
    Ok((aligned / lengths)?.exp()?)
}

/// The probability of each target under logits (N, V), in f32 and detached from the graph
/// (DFT's weights are constants): `exp(x_t - logsumexp(x))` per row → (N). Rows of weight 0
/// are skipped and read 1: the caller multiplies by the weights.
fn target_probs(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    // The kernel weighs each row's term: a 0/1 mask keeps fractional weights out of the logs.
    let mask = weights
        .map(|w| w.ne(0.0)?.to_dtype(DType::F32))
        .transpose()?;
    let nll = cross_entropy_rows(&logits.detach(), targets, mask.as_ref())?;
    Ok(nll.to_dtype(DType::F32)?.neg()?.exp()?)
}

/// [`LossModel::eval_sums`] of next-token logits (B, T, V): the summed loss and the targets
/// (weighted ones, when the batch has weights) the argmax predicts.
pub fn causal_eval_sums(logits: &Tensor, batch: &Batch) -> Result<(f64, Option<usize>)> {
    if let Some(p) = &batch.pairs {
        // DPO: the loss and the preferences whose chosen reward beats the rejected one (TRL's
        // rewards/accuracies).
        let x = dpo_logps(logits, batch, p)?;
        let loss = p.loss.sum(&x)?.to_scalar::<f32>()?;
        let d = ((&x.chosen - &x.ref_chosen)? - (&x.rejected - &x.ref_rejected)?)?;
        let d = d.to_vec1::<f32>()?;
        return Ok((
            f64::from(loss),
            Some(d.iter().filter(|&&x| x > 0.0).count()),
        ));
    }
    let loss = causal_loss_sum(logits, batch)?.to_scalar::<f32>()?;
    if batch.unpaired.is_some() {
        // KTO: the loss alone (its examples are not pairs to rank).
        return Ok((f64::from(loss), None));
    }
    let (b, t, _) = logits.dims3()?;
    let hit = logits
        .argmax(candle_core::D::Minus1)?
        .reshape(b * t)?
        .eq(&batch.targets)?
        .to_dtype(DType::F32)?;
    let hit = match &batch.weights {
        Some(w) => (hit * w)?,
        None => hit,
    };
    let correct = hit.sum_all()?.to_scalar::<f32>()?;
    Ok((f64::from(loss), Some(correct as usize)))
}

/// GPT-2 and the Llama family: the same losses over their logits (both have
/// `forward_packed`, which the models crate keeps on each type).
macro_rules! causal_loss_model {
    ($($model:ty),*) => {$(
        impl LossModel for $model {
            fn loss_sum(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
                let logits = self.forward_packed(&batch.ids, batch.packing.as_ref(), mode)?;
                causal_loss_sum(&logits, batch)
            }

            fn eval_sums(&self, batch: &Batch) -> Result<(f64, Option<usize>)> {
                let logits =
                    self.forward_packed(&batch.ids, batch.packing.as_ref(), Mode::Eval)?;
                causal_eval_sums(&logits, batch)
            }

            fn row_logps(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
                row_logps(&self.forward(&batch.ids, mode)?, batch)
            }
        }
    )*};
}

causal_loss_model!(Gpt, Llama);

/// A masked-LM batch as BERT's input. Windows are full length, so there is no padding and no
/// attention mask; one segment, so token types are all 0.
pub fn mlm_input(batch: &Batch) -> BertInput<'_> {
    BertInput {
        ids: &batch.ids,
        token_type_ids: None,
        attention_mask: None,
    }
}

/// Summed cross-entropy of MLM logits (B, T, V) at the batch's chosen positions.
pub fn mlm_loss_sum(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let weights = batch.weights.as_ref().ok_or_else(|| {
        Error::Config("a masked-LM batch needs weights (the chosen positions)".into())
    })?;
    Ok(BertForMaskedLM::loss_sum(logits, &batch.targets, weights)?)
}

impl LossModel for BertForMaskedLM {
    fn loss_sum(&self, batch: &Batch, mode: Mode<'_>) -> Result<Tensor> {
        mlm_loss_sum(&self.forward(&mlm_input(batch), mode)?, batch)
    }
}

/// The prepared shards of a pretraining run.
pub struct Shards {
    pub train: Shard,
    pub val: Shard,
}

/// How a run makes its batches, and from what.
pub enum Task {
    /// Next-token prediction over windows of T + 1 tokens.
    CausalLm(Shards),
    /// BERT's masked LM: windows of T − 2 tokens as `[CLS] … [SEP]`, masked 15% / 80-10-10.
    MaskedLm {
        shards: Shards,
        train: MlmCollator,
        val: MlmCollator,
        cls: u32,
        sep: u32,
    },
    /// Supervised fine-tuning of a causal LM on examples of their own lengths
    /// ([`crate::sft`]).
    Sft(SftSet),
    /// Direct Preference Optimization of a causal LM on preferences ([`crate::dpo`]).
    Dpo(DpoSet),
    /// Kahneman-Tversky Optimization of a causal LM on unpaired examples ([`crate::kto`]).
    Kto(KtoSet),
}

/// Host-side buffers reused from batch to batch.
#[derive(Default)]
pub struct Scratch {
    inputs: Vec<u32>,
    targets: Vec<u32>,
    rows: Vec<Vec<u32>>,
    /// SFT: the shuffled order of the epoch last drawn from.
    pub(crate) order: Option<(u64, Vec<usize>)>,
}

impl Task {
    /// The pretraining task of `model` on `shards`, with the data's tokenizer
    /// (`tokenizer_path` for messages): masked LM needs `[CLS]`, `[SEP]` and `[MASK]`
    /// (RoBERTa's `<s>`, `</s>`, `<mask>`), and never chooses any special token.
    pub fn new(
        model: &ModelConfig,
        cfg: &RunConfig,
        (tokenizer, tokenizer_path): (&tokenizers::Tokenizer, &Path),
        shards: Shards,
    ) -> Result<Self> {
        let ModelConfig::Bert(c) = model else {
            return Ok(Self::CausalLm(shards));
        };
        // BERT's and DistilBERT's names, or RoBERTa's.
        let id = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|t| tokenizer.token_to_id(t))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{}: the tokenizer has no {} (or {}) token, which masked-LM \
                         pretraining needs; prepare the data with `lantern prepare --tokenizer \
                         wordpiece` (or the model's own tokenizer.json)",
                        tokenizer_path.display(),
                        names[0],
                        names[1]
                    ))
                })
        };
        let cls = id(["[CLS]", "<s>"])?;
        let sep = id(["[SEP]", "</s>"])?;
        id(MlmCollator::MASK_TOKENS)?;
        let p = cfg.model.mlm_probability.unwrap_or(0.15);
        let collator = |seed: u64| {
            MlmCollator::for_tokenizer(tokenizer, c.vocab_size as u32, p, seed)
                .map_err(|e| Error::Config(format!("{}: {e}", tokenizer_path.display())))
        };
        Ok(Self::MaskedLm {
            shards,
            train: collator(cfg.train.seed ^ MASK_STREAM)?,
            val: collator(cfg.train.seed ^ VAL_MASK_STREAM)?,
            cls,
            sep,
        })
    }

    /// How many samples from global index `seen` on the next step takes: the global batch,
    /// or, for examples (SFT, DPO, KTO), at most what is left of the epoch `seen` is in, so
    /// that a step never spans two epochs and an epoch's last step is short (transformers'
    /// data loader without `drop_last`). Epoch e's examples are global indices e·N .. (e+1)·N.
    pub fn step_samples(&self, seen: u64, global_batch: usize) -> usize {
        let Some(n) = self.epoch_len() else {
            return global_batch;
        };
        // At least one: n ≥ 1 and seen mod n < n.
        global_batch.min((n - seen % n) as usize)
    }

    /// The training examples of an epoch (SFT, DPO, KTO; at least 1); `None` for windows of
    /// shards, which have no epochs.
    fn epoch_len(&self) -> Option<u64> {
        let n = match self {
            Self::CausalLm(_) | Self::MaskedLm { .. } => return None,
            Self::Sft(set) => set.train.len(),
            Self::Dpo(set) => set.train.len(),
            Self::Kto(set) => set.train.len(),
        };
        Some(n.max(1) as u64)
    }

    /// The epoch a run of examples has reached after `seen` global samples, counted as
    /// transformers' `state.epoch` counts it: whole epochs plus the share of the current
    /// epoch's steps made (3 steps of 4 over 9 examples: 1/3, 2/3, 1).
    pub fn epoch_after(&self, seen: u64, global_batch: usize) -> Option<f64> {
        let n = self.epoch_len()?;
        let g = global_batch.max(1) as u64;
        let steps = n.div_ceil(g);
        Some((seen / n) as f64 + (seen % n).div_ceil(g) as f64 / steps as f64)
    }

    /// Training samples `first .. first + b` (global indices) as one batch of `t` tokens each
    /// (SFT: padded to the longest of them).
    #[allow(clippy::too_many_arguments)]
    pub fn train_batch(
        &self,
        seed: u64,
        first: u64,
        (b, t): (usize, usize),
        device: &Device,
        s: &mut Scratch,
    ) -> Result<Batch> {
        match self {
            Self::CausalLm(sh) => {
                lm_batch(&sh.train, seed, first, b, t, &mut s.inputs, &mut s.targets)?;
                crate::trainer::to_batch(&s.inputs, &s.targets, b, t, device)
            }
            Self::MaskedLm { shards, train, .. } => {
                // The same windows as causal LM of length T − 2 (their next-token targets are
                // not used): the sampler stays the one pure function of (seed, index).
                lm_batch(
                    &shards.train,
                    seed,
                    first,
                    b,
                    t - 2,
                    &mut s.inputs,
                    &mut s.targets,
                )?;
                self.masked(train, first, (b, t), device, s)
            }
            Self::Dpo(set) => {
                let idx: Vec<usize> = (first..first + b as u64)
                    .map(|i| set.train_index(seed, i, &mut s.order))
                    .collect();
                set.train_batch(&idx, device)
            }
            Self::Kto(set) => {
                let idx: Vec<usize> = (first..first + b as u64)
                    .map(|i| set.train_index(seed, i, &mut s.order))
                    .collect();
                set.train_batch(&idx, device)
            }
            Self::Sft(set) => {
                let rows: Vec<usize> = (first..first + b as u64)
                    .map(|i| set.train_index(seed, i, &mut s.order))
                    .collect();
                let rows: Vec<&SftExample> = rows.iter().map(|&i| &set.train[i]).collect();
                set.batch(&rows, device)
            }
        }
    }

    /// Validation batch `first .. first + b` (fixed, non-overlapping windows, masked the same
    /// way at every evaluation; SFT: the validation examples in file order, `None` past the
    /// last).
    pub fn val_batch(
        &self,
        first: u64,
        (b, t): (usize, usize),
        device: &Device,
        s: &mut Scratch,
    ) -> Result<Option<Batch>> {
        Ok(Some(match self {
            Self::CausalLm(sh) => {
                lm_val_batch(&sh.val, first, b, t, &mut s.inputs, &mut s.targets)?;
                crate::trainer::to_batch(&s.inputs, &s.targets, b, t, device)?
            }
            Self::MaskedLm { shards, val, .. } => {
                lm_val_batch(&shards.val, first, b, t - 2, &mut s.inputs, &mut s.targets)?;
                self.masked(val, first, (b, t), device, s)?
            }
            Self::Dpo(set) => match set.val_batch(first as usize, b, device)? {
                Some(batch) => batch,
                None => return Ok(None),
            },
            Self::Kto(set) => match set.val_batch(first as usize, b, device)? {
                Some(batch) => batch,
                None => return Ok(None),
            },
            Self::Sft(set) => {
                let from = (first as usize).min(set.val.len());
                let rows: Vec<&SftExample> = set.val[from..(from + b).min(set.val.len())]
                    .iter()
                    .collect();
                if rows.is_empty() {
                    return Ok(None);
                }
                // Evaluations score the NLL whatever the training loss: DFT's loss is no
                // measure of the model (it grows as targets' probabilities rise toward 1/e),
                // and perplexity, the best checkpoint and early stopping read the NLL.
                Batch {
                    loss: TokenLoss::Nll,
                    ..set.batch(&rows, device)?
                }
            }
        }))
    }

    /// TR-DPO's settings of a DPO or KTO run that moves its reference.
    pub fn reference_sync(&self) -> Option<crate::dpo::RefSync> {
        match self {
            Self::Dpo(set) => set.sync,
            Self::Kto(set) => set.sync,
            _ => None,
        }
    }

    /// A DPO or KTO run's reference log-probabilities, computed again by `model`.
    pub fn compute_reference(
        &self,
        model: &dyn LossModel,
        b: usize,
        device: &Device,
    ) -> Result<()> {
        match self {
            Self::Dpo(set) => set.compute_reference(model, b, device),
            Self::Kto(set) => set.compute_reference(model, b, device),
            _ => Ok(()),
        }
    }

    /// Global batches of `b` per rank an evaluation reads: `configured` of the shards' windows,
    /// or every SFT validation example.
    pub fn eval_batches(&self, configured: usize, b: usize, world: usize) -> usize {
        match self {
            Self::Sft(set) => set.val.len().div_ceil(b * world),
            Self::Dpo(set) => set.val.len().div_ceil(b * world),
            Self::Kto(set) => set.val.len().div_ceil(b * world),
            _ => configured,
        }
    }

    /// Tokens the model reads in global samples `first .. first + n` (`t` each for windows;
    /// SFT: each example's own, padding left out).
    pub fn tokens(&self, seed: u64, first: u64, n: usize, t: usize, s: &mut Scratch) -> u64 {
        match self {
            Self::Dpo(set) => (first..first + n as u64)
                .map(|i| set.tokens_of(&set.train[set.train_index(seed, i, &mut s.order)]))
                .sum(),
            Self::Kto(set) => (first..first + n as u64)
                .map(|i| set.tokens_of(set.train_index(seed, i, &mut s.order)))
                .sum(),
            Self::Sft(set) => (first..first + n as u64)
                .map(|i| set.train[set.train_index(seed, i, &mut s.order)].ids.len() as u64 - 1)
                .sum(),
            _ => (n * t) as u64,
        }
    }

    /// `s.inputs` (B rows of T − 2 tokens) wrapped as `[CLS] row [SEP]` and masked, row r as
    /// sample `first + r`.
    fn masked(
        &self,
        collator: &MlmCollator,
        first: u64,
        (b, t): (usize, usize),
        device: &Device,
        s: &mut Scratch,
    ) -> Result<Batch> {
        let Self::MaskedLm { cls, sep, .. } = self else {
            unreachable!("masked() is only called for masked LM")
        };
        s.rows.resize(b, Vec::new());
        for (row, window) in s.rows.iter_mut().zip(s.inputs.chunks_exact(t - 2)) {
            row.clear();
            row.push(*cls);
            row.extend_from_slice(window);
            row.push(*sep);
        }
        // Rows are full length: the pad id is never used.
        let m = collator.batch(&s.rows, first, 0)?;
        let n_targets = m.weights.iter().filter(|&&w| w > 0.0).count();
        Ok(Batch {
            ids: Tensor::from_slice(&m.input_ids, (b, t), device)?,
            targets: Tensor::from_slice(&m.targets, b * t, device)?,
            weights: Some(Tensor::from_slice(&m.weights, b * t, device)?),
            n_targets,
            packing: None,
            loss: Default::default(),
            pairs: None,
            unpaired: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_as_their_own_kind_and_old_gpt_records_still_do() {
        let g = GptConfig::preset("gpt-tiny", 300).unwrap();
        let b = BertConfig::preset("bert-tiny", 300).unwrap();
        let l = LlamaConfig::preset("llama-tiny", 300).unwrap();
        for m in [
            ModelConfig::Gpt(g.clone()),
            ModelConfig::Bert(b),
            ModelConfig::Llama(l),
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), m);
        }
        // A GPT record as checkpoints wrote it before this enum: the bare GptConfig.
        let old = serde_json::to_string(&g).unwrap();
        assert_eq!(
            serde_json::from_str::<ModelConfig>(&old).unwrap(),
            ModelConfig::Gpt(g)
        );
        let e = serde_json::from_str::<ModelConfig>(r#"{"hidden_size": 8, "bogus": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("BERT") && e.contains("bogus"), "{e}");
        let e = serde_json::from_str::<ModelConfig>(r#"{"hidden_size": 8, "rms_norm_eps": 1e-6}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Llama model config"), "{e}");
    }

    /// A Llama-family model from scratch as another member of the family: the keys set what
    /// transformers' config of that family would, and keys of another family are refused.
    #[test]
    fn the_llama_keys_build_its_relatives() {
        let parse = |sets: &[&str]| {
            let mut all = vec!["model.preset=\"llama-tiny\"".to_string()];
            all.extend(sets.iter().map(|s| s.to_string()));
            RunConfig::parse("[data]\ndir = \"d\"\n", "t.toml", &all)
        };
        let resolve = |sets: &[&str]| {
            let cfg = parse(sets)?;
            ModelConfig::resolve(&cfg, 300)
        };
        let ModelConfig::Llama(q) =
            resolve(&["model.family=\"qwen3\"", "model.head_dim=64"]).unwrap()
        else {
            panic!("not a Llama")
        };
        assert_eq!(q.model_type, lantern_models::llama::LlamaFamily::Qwen3);
        assert_eq!((q.head_dim, q.q_width()), (Some(64), 256));
        // A head width equal to the width / heads is not kept apart.
        let ModelConfig::Llama(l) = resolve(&["model.head_dim=32"]).unwrap() else {
            panic!("not a Llama")
        };
        assert_eq!((l.head_dim, l.head_dim()), (None, 32));
        let ModelConfig::Llama(m) =
            resolve(&["model.family=\"mistral\"", "model.sliding_window=32"]).unwrap()
        else {
            panic!("not a Llama")
        };
        assert_eq!(m.sliding_window, Some(32));
        let ModelConfig::Llama(p) =
            resolve(&["model.family=\"phi3\"", "model.sliding_window=32"]).unwrap()
        else {
            panic!("not a Llama")
        };
        assert!(p.fused_projections() && p.sliding_window == Some(32));
        let ModelConfig::Llama(o) = resolve(&["model.family=\"olmo2\""]).unwrap() else {
            panic!("not a Llama")
        };
        assert!(o.post_norms_only() && o.qk_norm_whole());
        let ModelConfig::Llama(g) = resolve(&["model.family=\"granite\""]).unwrap() else {
            panic!("not a Llama")
        };
        assert_eq!(g.granite, Some(Default::default()));
        let ModelConfig::Llama(m) = resolve(&["model.family=\"smollm3\""]).unwrap() else {
            panic!("not a Llama")
        };
        assert_eq!(m.nope_layers, [false, false, false, true]);
        for (sets, want) in [
            (&["model.sliding_window=32"][..], "sliding_window"),
            (
                &["model.family=\"qwen2\"", "model.mlp_bias=true"][..],
                "mlp_bias",
            ),
            (&["model.family=\"mixtral\""][..], "qwen3"),
            (&["model.family=\"gemma3_text\""][..], "model.init_from"),
            (&["model.family=\"gemma2\""][..], "model.init_from"),
        ] {
            let e = resolve(sets).err().unwrap().to_string();
            assert!(e.contains(want), "{sets:?}: {e}");
        }
        let e = RunConfig::parse(
            "[data]\ndir = \"d\"\n",
            "t.toml",
            &["model.head_dim=8".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.head_dim") && e.contains("llama"), "{e}");
    }

    #[test]
    fn bert_base_flops_per_token_match_a_hand_count() {
        // BertForMaskedLM bert-base: 109,514,298 parameters (transformers' count), 393,216 of
        // them the position table; 6·109,121,082 + 12·12·768·512.
        let b = ModelConfig::Bert(BertConfig::preset("bert-base", 30522).unwrap());
        assert_eq!(b.num_params(), 109_514_298);
        assert_eq!(b.flops_per_token(512), 711_349_596.0);
        let g = GptConfig::preset("gpt-tiny", 300).unwrap();
        assert_eq!(
            ModelConfig::Gpt(g.clone()).flops_per_token(64),
            g.flops_per_token(64)
        );
    }

    /// A BERT run config whose `model.init_from` is a folder holding `c`'s config.json as
    /// `head`'s architecture (the folder lives as long as the returned guard).
    fn run_from_folder(c: &BertConfig, head: BertHead) -> (tempfile::TempDir, RunConfig) {
        let dir = tempfile::tempdir().unwrap();
        let v = bert::hf::to_hf_config(c, head, DType::F32);
        std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        let set = format!("model.init_from={}", dir.path().display());
        let cfg = RunConfig::parse(
            "[data]\ndir = \"d\"\n[model]\npreset = \"bert-tiny\"",
            "t",
            &[set],
        )
        .unwrap();
        (dir, cfg)
    }

    /// run_mlm's continued pretraining of a RoBERTa checkpoint: its config is kept (positions
    /// counted past the pad id), and the task wraps windows in `<s> … </s>` and masks with
    /// `<mask>`.
    #[test]
    fn a_roberta_checkpoint_pretrains_with_its_own_specials() {
        let mut c = BertConfig::new(300, 16, 1, 2, 32, 66);
        c.model_type = lantern_models::bert::Family::Roberta;
        c.pad_token_id = 1;
        let (_dir, cfg) = run_from_folder(&c, BertHead::MaskedLm);
        let m = ModelConfig::resolve(&cfg, 300).unwrap();
        assert_eq!(m.max_positions(), 64, "66 positions less pad_token_id + 1");
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden/roberta_tiny/tokenizer/tokenizer.json");
        let tok = tokenizers::Tokenizer::from_file(&golden).unwrap();
        let shard_dir = tempfile::tempdir().unwrap();
        let shards = || {
            let p = shard_dir.path().join("s.bin");
            lantern_data::write_shard(&p, &[5; 100], 300).unwrap();
            Shards {
                train: Shard::open(&p).unwrap(),
                val: Shard::open(&p).unwrap(),
            }
        };
        let Task::MaskedLm {
            cls, sep, train, ..
        } = Task::new(&m, &cfg, (&tok, &golden), shards()).unwrap()
        else {
            panic!("not masked LM")
        };
        assert_eq!((cls, sep, train.mask_id), (0, 2, 4), "<s>, </s>, <mask>");
        // A tokenizer with neither spelling is an error naming both.
        let gpt = tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default());
        let e = Task::new(&m, &cfg, (&gpt, Path::new("tok.json")), shards())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("[CLS] (or <s>)") && e.contains("tok.json"),
            "{e}"
        );
    }

    #[test]
    fn an_electra_checkpoint_is_no_masked_lm() {
        let mut c = BertConfig::new(300, 16, 1, 2, 32, 66);
        c.model_type = lantern_models::bert::Family::Electra;
        c.embedding_size = Some(8);
        let (_dir, cfg) = run_from_folder(&c, BertHead::Encoder);
        let e = ModelConfig::resolve(&cfg, 300).unwrap_err().to_string();
        assert!(
            e.contains("electra") && e.contains("lantern finetune"),
            "{e}"
        );
    }

    #[test]
    fn implausible_bert_records_are_refused() {
        let mut b = BertConfig::preset("bert-tiny", 300).unwrap();
        b.num_hidden_layers = 1_000_000;
        let e = ModelConfig::Bert(b)
            .check(Path::new("ck/trainer_state.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trainer_state.json") && e.contains("num_hidden_layers"),
            "{e}"
        );
    }
}

//! The causal language models, GPT-2 and Llama, behind one type for the commands that only
//! need a language model: loading a folder, generation with a KV cache, perplexity, export;
//! and for their task heads ([`classifier`]). What differs (positions learned or rotary,
//! LayerNorm or RMSNorm, GELU or SwiGLU, tied or untied head) stays in each model's module;
//! this is the dispatch.

pub mod classifier;

use crate::gpt::{self, perplexity, Gpt, GptConfig};
use crate::llama::{self, Llama, LlamaConfig, LlamaFamily};
use crate::{hf_config, Error, Mode, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// GPT-2's `model_type`; the others of the causal language models are the Llama family's
/// ([`LlamaFamily`]).
const GPT2: &str = "gpt2";

/// Whether `model_type` is a causal language model's: GPT-2, one of the Llama family, or the
/// multimodal Gemma 3, whose language model is read ([`hf_config::GEMMA3_MULTIMODAL`]).
pub fn is_model_type(model_type: &str) -> bool {
    model_type == GPT2
        || model_type == hf_config::GEMMA3_MULTIMODAL
        || LlamaFamily::from_model_type(model_type).is_some()
}

/// The config of a causal language model.
// A run holds one or two of these, built once: the Llama variant's larger size (the family's
// optional keys) costs nothing worth a box at every construction site.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum DecoderConfig {
    Gpt(GptConfig),
    Llama(LlamaConfig),
}

impl DecoderConfig {
    /// Reads a transformers `config.json` of a `GPT2LMHeadModel` or `LlamaForCausalLM`, by its
    /// `model_type` (GPT-2 when absent, as folders written before it existed).
    pub fn from_hf(path: &Path) -> Result<Self> {
        Self::from_json(&hf_config::read_json(path)?, path)
    }

    /// [`DecoderConfig::from_hf`] of the parsed file (`path` is for messages).
    pub(crate) fn from_json(v: &Value, path: &Path) -> Result<Self> {
        match v.get("model_type").and_then(Value::as_str) {
            Some(GPT2) | None => Ok(Self::Gpt(gpt::hf::config_from_json(v, path)?)),
            Some(mt) if LlamaFamily::from_model_type(mt).is_some() => {
                Ok(Self::Llama(llama::hf::config_from_json(v, path)?))
            }
            Some(other) => Err(Error::File {
                path: path.to_path_buf(),
                msg: format!(
                    "model_type {other:?} is not a causal language model Lantern implements \
                     ({GPT2}, {})",
                    LlamaFamily::ALL.map(LlamaFamily::model_type).join(", ")
                ),
            }),
        }
    }

    /// transformers' class name of the model.
    pub fn architecture(&self) -> &'static str {
        match self {
            Self::Gpt(_) => "GPT2LMHeadModel",
            Self::Llama(c) => c.model_type.causal_lm(),
        }
    }

    /// peft's default LoRA targets (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`): the
    /// attention's query and value projections (GPT-2's fused `c_attn`). peft has none for
    /// Phi-3: its fused `qkv_proj` holds them.
    pub fn default_lora_targets(&self) -> &'static [&'static str] {
        match self {
            Self::Gpt(_) => &["c_attn"],
            Self::Llama(c) if c.fused_projections() => &["qkv_proj"],
            Self::Llama(_) => &["q_proj", "v_proj"],
        }
    }

    /// Whether the linear layers' weights are stored (in, out) (GPT-2's `Conv1D`; peft's
    /// `fan_in_fan_out`) rather than torch's `Linear` (out, in).
    pub fn weights_in_out(&self) -> bool {
        matches!(self, Self::Gpt(_))
    }

    /// transformers' `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Gpt(_) => GPT2,
            Self::Llama(c) => c.model_type.model_type(),
        }
    }

    /// The width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Gpt(c) => c.n_embd,
            Self::Llama(c) => c.hidden_size,
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Self::Gpt(c) => c.n_layer,
            Self::Llama(c) => c.num_hidden_layers,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Gpt(c) => c.validate(),
            Self::Llama(c) => c.validate(),
        }
    }

    /// Refuses sizes no real model has, naming `path`.
    pub fn check_plausible(&self, path: &Path) -> Result<()> {
        match self {
            Self::Gpt(c) => gpt::hf::check_plausible(c, path),
            Self::Llama(c) => llama::hf::check_plausible(c, path),
        }
    }

    /// A fresh model, initialised as transformers initialises the family.
    pub fn init_params(&self, rng: &mut Rng, device: &Device, dtype: DType) -> Result<Params> {
        match self {
            Self::Gpt(c) => gpt::init_params(c, rng, device, dtype),
            Self::Llama(c) => llama::init_params(c, rng, device, dtype),
        }
    }

    /// [`Params`] from named tensors in HF names, checked against the config (see the
    /// family's `params_from_tensors`). `path` is for messages.
    pub fn params_from_tensors(
        &self,
        tensors: BTreeMap<String, Tensor>,
        path: &Path,
        dtype: DType,
    ) -> Result<Params> {
        match self {
            Self::Gpt(c) => gpt::hf::params_from_tensors(tensors, c, path, dtype),
            Self::Llama(c) => llama::hf::params_from_tensors(tensors, c, path, dtype),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Gpt(c) => c.vocab_size,
            Self::Llama(c) => c.vocab_size,
        }
    }

    /// The longest sequence the model takes at once.
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Gpt(c) => c.n_positions,
            Self::Llama(c) => c.max_position_embeddings,
        }
    }

    /// Weights from a `model.safetensors` in HF names.
    pub fn load_params(&self, path: &Path, device: &Device, dtype: DType) -> Result<Params> {
        match self {
            Self::Gpt(c) => gpt::hf::load_params(path, c, device, dtype),
            Self::Llama(c) => llama::hf::load_params(path, c, device, dtype),
        }
    }

    /// The weights in HF names and `dtype`.
    pub fn export_tensors(
        &self,
        params: &Params,
        dtype: DType,
    ) -> Result<BTreeMap<String, Tensor>> {
        match self {
            Self::Gpt(_) => gpt::hf::export_tensors(params, dtype),
            Self::Llama(_) => llama::hf::export_tensors(params, dtype),
        }
    }

    /// transformers' `config.json`; `eot_id` becomes BOS/EOS when known.
    pub fn to_hf_config(&self, eot_id: Option<u32>, dtype: DType) -> Value {
        match self {
            Self::Gpt(c) => gpt::hf::to_hf_config(c, eot_id, dtype),
            Self::Llama(c) => llama::hf::to_hf_config(c, eot_id, dtype),
        }
    }
}

/// A causal language model reading a [`Params`] store.
// One per run, built once: the Llama variant's size (its config's optional keys) is not worth
// a box.
#[allow(clippy::large_enum_variant)]
pub enum Decoder {
    Gpt(Gpt),
    Llama(Llama),
}

/// The keys and values a [`Decoder`] has seen, for [`Decoder::forward_last_cached`].
pub enum DecoderCache {
    Gpt(gpt::KvCache),
    Llama(llama::KvCache),
}

impl DecoderCache {
    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        match self {
            Self::Gpt(c) => c.len(),
            Self::Llama(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Decoder {
    pub fn new(cfg: &DecoderConfig, params: &Params) -> Result<Self> {
        Ok(match cfg {
            DecoderConfig::Gpt(c) => Self::Gpt(Gpt::new(c, params)?),
            DecoderConfig::Llama(c) => Self::Llama(Llama::new(c, params)?),
        })
    }

    pub fn max_positions(&self) -> usize {
        match self {
            Self::Gpt(m) => m.config().n_positions,
            Self::Llama(m) => m.config().max_position_embeddings,
        }
    }

    /// The same model adding NEFTune's noise of strength `alpha` to the token embeddings
    /// while training ([`Gpt::with_neftune`], [`Llama::with_neftune`]).
    pub fn with_neftune(self, alpha: f64) -> Self {
        match self {
            Self::Gpt(m) => Self::Gpt(m.with_neftune(alpha)),
            Self::Llama(m) => Self::Llama(m.with_neftune(alpha)),
        }
    }

    /// ids: (B, T) u32 → the last block's output (B, T, C), before the final norm.
    pub fn last_block_output(&self, ids: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        match self {
            Self::Gpt(m) => m.last_block_output(ids, mode),
            Self::Llama(m) => m.last_block_output(ids, mode),
        }
    }

    /// The final norm (GPT-2's `ln_f`, Llama's `norm`) of the last block's output.
    pub fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gpt(m) => m.final_norm(x),
            Self::Llama(m) => m.final_norm(x),
        }
    }

    /// An empty cache for this model.
    pub fn cache(&self) -> DecoderCache {
        match self {
            Self::Gpt(_) => DecoderCache::Gpt(gpt::KvCache::new()),
            Self::Llama(_) => DecoderCache::Llama(llama::KvCache::new()),
        }
    }

    /// Whether `cache` no longer serves a sequence grown to `total` tokens, so that the whole
    /// sequence must run again with a new one (LongRoPE's switch to its long factors:
    /// [`LlamaConfig::cache_expires`]).
    pub fn cache_expires(&self, cache: &DecoderCache, total: usize) -> bool {
        match self {
            Self::Gpt(_) => false,
            Self::Llama(m) => m.config().cache_expires(cache.len(), total),
        }
    }

    /// ids: (B, T) u32 → logits (B, T, V).
    pub fn forward(&self, ids: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        match self {
            Self::Gpt(m) => m.forward(ids, mode),
            Self::Llama(m) => m.forward(ids, mode),
        }
    }

    /// The logits (B, V) of the last of `ids`, the tokens after those in `cache` (see
    /// [`Gpt::forward_last_cached`]).
    pub fn forward_last_cached(&self, ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        match (self, cache) {
            (Self::Gpt(m), DecoderCache::Gpt(c)) => m.forward_last_cached(ids, c),
            (Self::Llama(m), DecoderCache::Llama(c)) => m.forward_last_cached(ids, c),
            _ => Err(Error::Config(
                "a KV cache of one model family passed to another".into(),
            )),
        }
    }

    /// The NLL of each token at positions `from..T` of ids (B, T) → (B, T − from) f64 (see
    /// [`Gpt::target_nll`]).
    pub fn target_nll(&self, ids: &Tensor, from: usize) -> Result<Tensor> {
        match self {
            Self::Gpt(m) => m.target_nll(ids, from),
            Self::Llama(m) => m.target_nll(ids, from),
        }
    }

    /// [`perplexity::score_windows`] with this model on `device`.
    pub fn perplexity(
        &self,
        tokens: &[u32],
        windowing: &perplexity::Windowing,
        batch: usize,
        device: &Device,
    ) -> Result<perplexity::Perplexity> {
        perplexity::score_windows(tokens, windowing, batch, |ids, rows, from| {
            let t = ids.len() / rows;
            let ids = Tensor::from_slice(ids, (rows, t), device)?;
            let nll = self.target_nll(&ids, from)?; // (rows, T - from)
            Ok(nll.flatten_all()?.to_vec1::<f64>()?)
        })
    }
}

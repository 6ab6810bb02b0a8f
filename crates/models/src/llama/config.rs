use super::rope::{self, RopeScaling};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Llama hyper-parameters; field names are transformers' `LlamaConfig` names. The head width is
/// `hidden_size / num_attention_heads` ([`LlamaConfig::head_dim`]), as transformers derives it
/// when `head_dim` is not set. `rms_norm_eps` and `num_key_value_heads` have no serde default:
/// a run's checkpoint record is told apart from GPT's and BERT's by these keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the gated MLP (gate_proj and up_proj outputs).
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention): each serves
    /// `num_attention_heads / num_key_value_heads` query heads; equal to the heads for MHA.
    pub num_key_value_heads: usize,
    /// Longest sequence. No position table depends on it (RoPE is computed), but forwards and
    /// the key/value cache refuse positions past it, as transformers' trained models assume.
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// RoPE base wavelength θ (transformers' `rope_parameters.rope_theta`).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE's frequency scaling (`rope_type` llama3, linear, dynamic or yarn); `None` is the
    /// default RoPE. Gemma 3 scales its full layers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Whether `lm_head` is the token embedding (then not a parameter of its own).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation of every matrix and the embedding.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// The token batches are padded with: transformers' `nn.Embedding(padding_idx=..)`, whose
    /// row is drawn as zeros and never gets a gradient. Our presets have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// transformers' family of the checkpoint: Llama itself, or Mistral or Qwen2, which are
    /// Llama's blocks with one change each (Mistral's sliding window, Qwen2's query, key and
    /// value biases). It names the classes of the export and decides Qwen2's biases.
    #[serde(default, skip_serializing_if = "LlamaFamily::is_llama")]
    pub model_type: LlamaFamily,
    /// Llama's `attention_bias`: biases on q_proj, k_proj, v_proj and o_proj.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention_bias: bool,
    /// Llama's `mlp_bias`: biases on gate_proj, up_proj and down_proj.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mlp_bias: bool,
    /// Mistral's `sliding_window` W: the token at position i attends to the keys of positions
    /// i - W + 1 ..= i only (transformers' `sliding_window_overlay`). `None`: all before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// The width of an attention head when a config sets it apart from the model's
    /// (`head_dim`: Qwen3's 128 at hidden 1024 and 16 heads); `None`: `hidden_size /
    /// num_attention_heads`. q_proj is then (heads · head_dim, hidden), o_proj the transpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Gemma 3's `layer_types`: whether each layer attends within `sliding_window`
    /// (`sliding_attention`) or to every earlier position (`full_attention`). Empty: every
    /// layer alike (Mistral's window, where it has one, on all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sliding_layers: Vec<bool>,
    /// Gemma 3's RoPE base of its sliding layers (`rope_parameters.sliding_attention`); the
    /// full layers take `rope_theta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_local_theta: Option<f64>,
    /// Gemma 3's `query_pre_attn_scalar` q: attention scores are scaled by 1/√q rather than
    /// 1/√head_dim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma's `attn_logit_softcapping` c: the scaled attention scores s become
    /// `tanh(s / c) · c` before the mask and the softmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma's `final_logit_softcapping` c: the language model's logits z become
    /// `tanh(z / c) · c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// SmolLM3's layers without RoPE (`no_rope_layers` 0: NoPE); empty: RoPE on every layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nope_layers: Vec<bool>,
    /// Phi-3's `partial_rotary_factor` f (Phi-4-mini's 0.75): RoPE turns the first
    /// `int(head_dim · f)` dimensions of each head only, the rest pass through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    /// Granite's multipliers (always set for Granite, never for the others); boxed, so that
    /// the other families' configs do not carry their size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granite: Option<Box<GraniteMultipliers>>,
}

/// Granite's scalars, transformers' `GraniteConfig` keys (1 each by default): the token
/// embeddings are multiplied by `embedding_multiplier`, each residual branch's output (attention's
/// and the MLP's) by `residual_multiplier` before it is added, the attention scores by
/// `attention_multiplier` (in place of 1/√head_dim), and the logits are divided by
/// `logits_scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraniteMultipliers {
    pub embedding_multiplier: f64,
    pub residual_multiplier: f64,
    pub attention_multiplier: f64,
    pub logits_scaling: f64,
}

impl Default for GraniteMultipliers {
    fn default() -> Self {
        Self {
            embedding_multiplier: 1.0,
            residual_multiplier: 1.0,
            attention_multiplier: 1.0,
            logits_scaling: 1.0,
        }
    }
}

/// The transformers families that are Llama's architecture with a variation
/// ([`LlamaConfig::model_type`]); the names are their `model_type`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlamaFamily {
    #[default]
    Llama,
    /// `MistralForCausalLM`: Llama with a sliding attention window.
    Mistral,
    /// `Qwen2ForCausalLM`: Llama with biases on the query, key and value projections.
    Qwen2,
    /// `Qwen3ForCausalLM`: Llama with an RMSNorm over each query and key head (`q_norm`,
    /// `k_norm`) before RoPE, and usually a head width of its own (`head_dim`).
    Qwen3,
    /// `Gemma3ForCausalLM` (`gemma3_text`): Qwen3's head norms, RMSNorms with gains 1 + w,
    /// norms after attention and after the MLP as well as before, a GELU (tanh) gated MLP,
    /// embeddings scaled by √hidden, sliding and full attention layers with RoPE bases of their
    /// own, attention scaled by `query_pre_attn_scalar`.
    #[serde(rename = "gemma3_text")]
    Gemma3,
    /// `GemmaForCausalLM` (Gemma 1, CodeGemma): Llama with RMSNorm gains 1 + w, a GELU (tanh)
    /// gated MLP and embeddings scaled by √hidden.
    Gemma,
    /// `Gemma2ForCausalLM`: Gemma 3's layout without its head norms, one RoPE for every layer,
    /// and soft-capped attention scores and logits (`tanh(x / cap) · cap`).
    Gemma2,
    /// `GraniteForCausalLM` (IBM Granite 3): Llama with four multipliers
    /// ([`GraniteMultipliers`]) on the embeddings, the residual branches, the attention scores
    /// and the logits.
    Granite,
    /// `SmolLM3ForCausalLM`: Llama with no RoPE on some layers (`no_rope_layers`: every
    /// fourth by default).
    #[serde(rename = "smollm3")]
    SmolLM3,
    /// `Olmo2ForCausalLM` (OLMo 2): no norm before attention or the MLP but one on each one's
    /// output (`post_attention_layernorm`, `post_feedforward_layernorm`), and RMSNorms over all
    /// the query and all the key heads together (`q_norm`, `k_norm`), before RoPE.
    Olmo2,
    /// `Phi3ForCausalLM` (the 4k-context Phi-3 and Phi-4; the others' longrope RoPE is not
    /// implemented): Llama with its query, key and value projections fused into one
    /// (`qkv_proj`) and its gate and up projections too (`gate_up_proj`), and Mistral's
    /// sliding window when its config sets one.
    Phi3,
}

impl LlamaFamily {
    pub const ALL: [LlamaFamily; 11] = [
        Self::Llama,
        Self::Mistral,
        Self::Qwen2,
        Self::Qwen3,
        Self::Gemma3,
        Self::Gemma2,
        Self::Gemma,
        Self::Granite,
        Self::SmolLM3,
        Self::Olmo2,
        Self::Phi3,
    ];

    /// transformers' `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3_text",
            Self::Gemma2 => "gemma2",
            Self::Gemma => "gemma",
            Self::Granite => "granite",
            Self::SmolLM3 => "smollm3",
            Self::Olmo2 => "olmo2",
            Self::Phi3 => "phi3",
        }
    }

    /// The family of a `model_type`.
    pub fn from_model_type(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == name)
    }

    /// The `config.json` key of the MLP's activation and the one name it writes there:
    /// `hidden_act` `silu` (transformers also reads `swish` as SiLU), Gemma 3's
    /// `hidden_activation` `gelu_pytorch_tanh`.
    pub fn activation(self) -> (&'static str, &'static str) {
        match self {
            Self::Gemma3 | Self::Gemma2 => ("hidden_activation", "gelu_pytorch_tanh"),
            Self::Gemma => ("hidden_act", "gelu_pytorch_tanh"),
            _ => ("hidden_act", "silu"),
        }
    }

    /// transformers' causal language model class (`LlamaForCausalLM`, ...).
    pub fn causal_lm(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
            Self::Gemma2 => "Gemma2ForCausalLM",
            Self::Gemma => "GemmaForCausalLM",
            Self::Granite => "GraniteForCausalLM",
            Self::SmolLM3 => "SmolLM3ForCausalLM",
            Self::Olmo2 => "Olmo2ForCausalLM",
            Self::Phi3 => "Phi3ForCausalLM",
        }
    }

    fn is_llama(&self) -> bool {
        *self == Self::Llama
    }
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_initializer_range() -> f64 {
    0.02
}

/// Llama's MLP width for a model of width `c`: 8c/3 (two thirds of GPT's 4c, as the gated MLP
/// has three matrices), rounded to the nearest multiple of 32.
fn mlp_width(c: usize) -> usize {
    (8 * c + 48) / 96 * 32
}

impl LlamaConfig {
    /// Named presets, of GPT's `gpt-tiny` and `gpt-small-cpu` sizes (context, width, layers,
    /// heads) with half as many key/value heads as query heads and untied embeddings, as in
    /// Llama. The vocabulary comes from the tokenizer the data was prepared with.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let (max_position_embeddings, hidden_size, num_hidden_layers, num_attention_heads) =
            match name {
                "llama-tiny" => (128, 128, 4, 4),
                "llama-small-cpu" => (256, 256, 4, 4),
                other => {
                    return Err(Error::Config(format!(
                        "unknown Llama preset {other:?} (known: llama-tiny, llama-small-cpu)"
                    )))
                }
            };
        let c = Self {
            vocab_size,
            hidden_size,
            intermediate_size: mlp_width(hidden_size),
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: num_attention_heads / 2,
            max_position_embeddings,
            rms_norm_eps: 1e-6,
            rope_theta: default_rope_theta(),
            rope_scaling: None,
            tie_word_embeddings: false,
            initializer_range: default_initializer_range(),
            pad_token_id: None,
            model_type: LlamaFamily::Llama,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            head_dim: None,
            sliding_layers: Vec::new(),
            rope_local_theta: None,
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            nope_layers: Vec::new(),
            partial_rotary_factor: None,
            granite: None,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{k} must be positive"));
            }
        }
        let (c, h, kv) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
        );
        if self.head_dim.is_none() && !c.is_multiple_of(h) {
            return bad(format!(
                "hidden_size {c} is not a multiple of num_attention_heads {h}"
            ));
        }
        if self.head_dim == Some(0) {
            return bad("head_dim must be positive".into());
        }
        if !h.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return bad(format!(
                "rms_norm_eps {} must be finite and >= 0",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!(
                "rope_theta {} must be finite and > 0",
                self.rope_theta
            ));
        }
        if let Some(r) = &self.rope_scaling {
            r.validate().map_err(Error::Config)?;
            // Phi3Config refuses every type but the default and longrope, which only Phi-3
            // uses (and whose cache transformers restarts in Phi-3's generation only).
            let longrope = matches!(r, RopeScaling::Longrope(_));
            if (self.model_type == LlamaFamily::Phi3) != longrope {
                return bad(format!(
                    "{} RoPE scaling on {}: Phi-3 takes the default RoPE or longrope, and \
                     longrope is Phi-3's only",
                    r.name(),
                    self.model_type.model_type()
                ));
            }
            if let RopeScaling::Longrope(l) = r {
                let half = self.rotary_dim() / 2;
                if l.short_factor.len() != half || l.long_factor.len() != half {
                    return bad(format!(
                        "longrope needs one short and one long factor per frequency, {half} \
                         (the rotary dimensions / 2), not {} and {}",
                        l.short_factor.len(),
                        l.long_factor.len()
                    ));
                }
            }
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return bad(format!(
                "initializer_range {} must be finite and >= 0",
                self.initializer_range
            ));
        }
        if let Some(p) = self.pad_token_id {
            if p as usize >= self.vocab_size {
                return bad(format!(
                    "pad_token_id {p} is past the vocabulary of {}",
                    self.vocab_size
                ));
            }
        }
        let family = self.model_type.model_type();
        let (own_attention_bias, own_mlp_bias) = match self.model_type {
            LlamaFamily::Llama | LlamaFamily::Granite | LlamaFamily::SmolLM3 => (true, true),
            LlamaFamily::Qwen3
            | LlamaFamily::Gemma3
            | LlamaFamily::Gemma2
            | LlamaFamily::Gemma
            | LlamaFamily::Olmo2 => (true, false),
            LlamaFamily::Mistral | LlamaFamily::Qwen2 | LlamaFamily::Phi3 => (false, false),
        };
        let gemma3 = self.model_type == LlamaFamily::Gemma3;
        for (key, set, own) in [
            (
                "sliding_layers",
                !self.sliding_layers.is_empty(),
                self.gemma(),
            ),
            ("rope_local_theta", self.rope_local_theta.is_some(), gemma3),
            (
                "query_pre_attn_scalar",
                self.query_pre_attn_scalar.is_some(),
                self.sandwich_norms(),
            ),
            (
                "attn_logit_softcapping",
                self.attn_logit_softcapping.is_some(),
                self.sandwich_norms(),
            ),
            (
                "final_logit_softcapping",
                self.final_logit_softcapping.is_some(),
                self.sandwich_norms(),
            ),
        ] {
            if set && !own {
                return bad(format!("{key} is not a key of {family}'s config"));
            }
        }
        if !self.sliding_layers.is_empty() && self.sliding_layers.len() != self.num_hidden_layers {
            return bad(format!(
                "layer_types lists {} layers for num_hidden_layers {}",
                self.sliding_layers.len(),
                self.num_hidden_layers
            ));
        }
        for (k, v) in [
            ("rope_local_theta", self.rope_local_theta),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
        ] {
            if v.is_some_and(|x| !(x.is_finite() && x > 0.0)) {
                return bad(format!("{k} {v:?} must be finite and > 0"));
            }
        }
        if !self.nope_layers.is_empty() {
            if self.model_type != LlamaFamily::SmolLM3 {
                return bad(format!("no_rope_layers is SmolLM3's, not {family}'s"));
            }
            if self.nope_layers.len() != self.num_hidden_layers {
                return bad(format!(
                    "no_rope_layers lists {} layers for num_hidden_layers {}",
                    self.nope_layers.len(),
                    self.num_hidden_layers
                ));
            }
        }
        if let Some(f) = self.partial_rotary_factor {
            if self.model_type != LlamaFamily::Phi3 {
                return bad(format!(
                    "partial_rotary_factor on {family}: only Phi-3's attention rotates part of \
                     each head"
                ));
            }
            let rd = self.rotary_dim();
            if !(f > 0.0 && f <= 1.0) || rd == 0 || !rd.is_multiple_of(2) {
                return bad(format!(
                    "partial_rotary_factor {f} must be in (0, 1] and turn an even, non-zero \
                     number of the head's {} dimensions (it turns {rd})",
                    self.head_dim()
                ));
            }
        }
        match (&self.granite, self.model_type == LlamaFamily::Granite) {
            (Some(g), true) => {
                for (k, x) in [
                    ("embedding_multiplier", g.embedding_multiplier),
                    ("residual_multiplier", g.residual_multiplier),
                    ("attention_multiplier", g.attention_multiplier),
                    ("logits_scaling", g.logits_scaling),
                ] {
                    if !(x.is_finite() && x > 0.0) {
                        return bad(format!("granite {k} {x} must be finite and > 0"));
                    }
                }
            }
            (None, false) => {}
            (Some(_), false) => return bad(format!("granite's multipliers on {family}")),
            (None, true) => return bad("granite needs its multipliers".into()),
        }
        for (key, set, own) in [
            ("attention_bias", self.attention_bias, own_attention_bias),
            ("mlp_bias", self.mlp_bias, own_mlp_bias),
        ] {
            if set && !own {
                return bad(format!("{key} is not a key of {family}'s config"));
            }
        }
        match (self.model_type, self.sliding_window) {
            (_, None) => {}
            (_, Some(0)) => return bad("sliding_window must be positive".into()),
            (
                LlamaFamily::Mistral
                | LlamaFamily::Gemma3
                | LlamaFamily::Gemma2
                | LlamaFamily::Phi3,
                Some(_),
            ) => {}
            (_, Some(w)) => {
                return bad(format!(
                    "sliding_window {w}: only Mistral's, Gemma 3's and Phi-3's attention slides \
                     ({family} attends to every earlier position)"
                ))
            }
        }
        Ok(())
    }

    /// Whether q_proj, k_proj and v_proj have biases (Llama's and Qwen3's `attention_bias`;
    /// always in Qwen2).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == LlamaFamily::Qwen2
    }

    /// Whether o_proj has a bias (Llama's and Qwen3's `attention_bias`; Qwen2's has none).
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// Layer `l`'s attention window: Mistral's on every layer, Gemma 3's on its sliding
    /// layers; `None`: every earlier position.
    pub fn layer_window(&self, l: usize) -> Option<usize> {
        match self.sliding_layers.is_empty() {
            true => self.sliding_window,
            false => self.sliding_window.filter(|_| self.sliding_layers[l]),
        }
    }

    /// Whether layer `l`'s attention must run composite, with a mask, over `t` positions: its
    /// window is shorter than the sequence, or its scores are soft-capped (the fused kernel
    /// does neither).
    pub fn needs_composite(&self, l: usize, t: usize) -> bool {
        self.window_applies(l, t) || self.attn_logit_softcapping.is_some()
    }

    /// Layer `l`'s RoPE base: Gemma 3's sliding layers have their own.
    pub fn layer_rope_theta(&self, l: usize) -> f64 {
        match (self.sliding_layers.get(l), self.rope_local_theta) {
            (Some(true), Some(local)) => local,
            _ => self.rope_theta,
        }
    }

    /// SmolLM3Config's NoPE layers of a model of `layers` without `no_rope_layers`: every
    /// `every`-th (its `no_rope_layer_interval`, 4 by default).
    pub fn nope_every(layers: usize, every: usize) -> Vec<bool> {
        (0..layers).map(|l| (l + 1) % every == 0).collect()
    }

    /// Whether layer `l` turns its queries and keys with RoPE (SmolLM3's NoPE layers do not).
    pub fn layer_has_rope(&self, l: usize) -> bool {
        self.nope_layers.get(l) != Some(&true)
    }

    /// Whether the attention of `t` positions of layer `l` is narrower than causal: its
    /// window is shorter than the sequence.
    pub fn window_applies(&self, l: usize, t: usize) -> bool {
        self.layer_window(l).is_some_and(|w| w < t)
    }

    /// The attention scores' scale: Granite's `attention_multiplier`, 1/√`query_pre_attn_scalar`
    /// (Gemma), else 1/√head_dim.
    pub fn attn_scale(&self) -> f64 {
        if let Some(g) = &self.granite {
            return g.attention_multiplier;
        }
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim() as f64)
            .sqrt()
    }

    /// Phi-3's layout: q, k and v projected by one fused layer (`qkv_proj`), gate and up by
    /// another (`gate_up_proj`), each output the concatenation of the separate ones'.
    pub fn fused_projections(&self) -> bool {
        self.model_type == LlamaFamily::Phi3
    }

    /// Gemma's layout: RMSNorm gains 1 + w (stored w, drawn 0), a GELU (tanh) MLP, embeddings
    /// scaled by √hidden.
    pub fn gemma(&self) -> bool {
        matches!(
            self.model_type,
            LlamaFamily::Gemma | LlamaFamily::Gemma2 | LlamaFamily::Gemma3
        )
    }

    /// Gemma 2's and 3's norms after attention and the MLP too, as well as before them.
    pub fn sandwich_norms(&self) -> bool {
        matches!(self.model_type, LlamaFamily::Gemma2 | LlamaFamily::Gemma3)
    }

    /// The width of an attention head: `head_dim` if the config sets it, else `hidden_size /
    /// num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The dimensions of each head RoPE turns: `int(head_dim · partial_rotary_factor)`
    /// (transformers' `dim`), all of them without one.
    pub fn rotary_dim(&self) -> usize {
        match self.partial_rotary_factor {
            Some(f) => (self.head_dim() as f64 * f) as usize,
            None => self.head_dim(),
        }
    }

    /// The width of all query heads together (q_proj's output, o_proj's input).
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim()
    }

    /// Whether the queries and keys are RMS-normalised before RoPE (`q_norm`, `k_norm`): each
    /// head alone (Qwen3, Gemma 3) or all heads together (OLMo 2: [`LlamaConfig::qk_norm_whole`]).
    pub fn qk_norm(&self) -> bool {
        matches!(
            self.model_type,
            LlamaFamily::Qwen3 | LlamaFamily::Gemma3 | LlamaFamily::Olmo2
        )
    }

    /// OLMo 2's query and key norms: over all the heads together (gains of q_width and of the
    /// key heads' width) rather than over each head.
    pub fn qk_norm_whole(&self) -> bool {
        self.model_type == LlamaFamily::Olmo2
    }

    /// OLMo 2's layout: no norm before attention or the MLP, one on each one's output.
    pub fn post_norms_only(&self) -> bool {
        self.model_type == LlamaFamily::Olmo2
    }

    /// RoPE's inverse frequencies of the model's (full) layers, `rotary_dim / 2` of them, in f32
    /// as transformers computes them: `1 / θ^(2i/hd)`, then `rope_scaling`'s scaling (for
    /// LongRoPE, its short factors: those of sequences within the original context).
    pub fn inv_freq(&self) -> Vec<f32> {
        rope::inv_freq(
            self.rope_theta,
            self.head_dim(),
            self.rope_scaling.as_ref(),
            1,
        )
    }

    /// Whether a key/value cache of `cached` positions no longer serves a sequence of `total`:
    /// LongRoPE switches to its long factors once the sequence passes the original context, and
    /// the cached keys were rotated with the short ones. transformers' Phi-3 then runs the whole
    /// sequence again (`prepare_inputs_for_generation`), and so must a caller of
    /// [`crate::llama::Llama::forward_last_cached`].
    pub fn cache_expires(&self, cached: usize, total: usize) -> bool {
        match &self.rope_scaling {
            Some(RopeScaling::Longrope(l)) => cached > 0 && !l.long(cached) && l.long(total),
            _ => false,
        }
    }

    /// Layer `l`'s RoPE: its base ([`LlamaConfig::layer_rope_theta`]) and scaling (none on
    /// Gemma 3's sliding layers).
    pub fn layer_rope(&self, l: usize) -> (f64, Option<&RopeScaling>) {
        let sliding = self.sliding_layers.get(l) == Some(&true);
        let scaling = self.rope_scaling.as_ref().filter(|_| !sliding);
        (self.layer_rope_theta(l), scaling)
    }

    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameters counted once (a tied head is the embedding).
    pub fn num_params(&self) -> usize {
        let (c, i, q) = (self.hidden_size, self.intermediate_size, self.q_width());
        let kv = self.num_key_value_heads * self.head_dim();
        let attn = c * q + 2 * c * kv + q * c; // q, k, v, o
        let biases = self.qkv_bias() as usize * (q + 2 * kv)
            + self.o_bias() as usize * c
            + self.mlp_bias as usize * (2 * i + c);
        let qk_norm = match (self.qk_norm(), self.qk_norm_whole()) {
            (false, _) => 0,
            (true, false) => 2 * self.head_dim(),
            (true, true) => q + kv,
        };
        let norms = if self.sandwich_norms() { 4 } else { 2 } * c;
        // Norms, attention, gate/up/down.
        let block = norms + attn + 3 * c * i + biases + qk_norm;
        let head = match self.tie_word_embeddings {
            true => 0,
            false => self.vocab_size * c,
        };
        self.vocab_size * c + head + self.num_hidden_layers * block + c
    }

    /// Training FLOPs per token, PaLM/nanoGPT convention: 6·N + 12·L·H·Q·T
    /// (shared/ANCHORS.md). GPT's N leaves out the position table; Llama has none (RoPE is
    /// computed), so N is every parameter.
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        let n = self.num_params() as f64;
        let attn = self.num_hidden_layers * self.num_attention_heads * self.head_dim() * seq_len;
        6.0 * n + 12.0 * attn as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_llama_proportions() {
        let c = LlamaConfig::preset("llama-tiny", 1000).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
            (128, 4, 4)
        );
        assert_eq!((c.num_key_value_heads, c.intermediate_size), (2, 352));
        assert!(!c.tie_word_embeddings);
        assert_eq!(mlp_width(256), 672);
        assert_eq!(mlp_width(768), 2048);
        let e = LlamaConfig::preset("llama-7b", 10).unwrap_err().to_string();
        assert!(e.contains("llama-tiny"), "{e}");
    }

    #[test]
    fn num_params_counts_the_tied_head_once() {
        let mut c = LlamaConfig::preset("llama-tiny", 1000).unwrap();
        // embed + head + 4 × (norms + q, k, v, o + MLP) + final norm.
        let block = 2 * 128 + 128 * 128 * 2 + 2 * 128 * 64 + 3 * 128 * 352;
        assert_eq!(c.num_params(), 2 * 1000 * 128 + 4 * block + 128);
        c.tie_word_embeddings = true;
        assert_eq!(c.num_params(), 1000 * 128 + 4 * block + 128);
        let f = c.flops_per_token(128);
        assert_eq!(
            f,
            6.0 * c.num_params() as f64 + 12.0 * (4 * 4 * 32 * 128) as f64
        );
    }

    #[test]
    fn num_params_counts_each_familys_biases() {
        let base = LlamaConfig::preset("llama-tiny", 1000).unwrap();
        let (c, kv, i, l) = (128, 64, 352, 4);
        let qwen = LlamaConfig {
            model_type: LlamaFamily::Qwen2,
            ..base.clone()
        };
        assert_eq!(qwen.num_params(), base.num_params() + l * (c + 2 * kv));
        let biased = LlamaConfig {
            attention_bias: true,
            mlp_bias: true,
            ..base.clone()
        };
        let per_block = (c + 2 * kv) + c + (2 * i + c);
        assert_eq!(biased.num_params(), base.num_params() + l * per_block);
        // Qwen3 with heads of 64 (4 × 64 = 256 wide q, 2 × 64 = 128 wide k and v): two
        // head-wide norms per block.
        let qwen3 = LlamaConfig {
            model_type: LlamaFamily::Qwen3,
            head_dim: Some(64),
            ..base.clone()
        };
        let attn = |q: usize, kv: usize| 2 * c * q + 2 * c * kv;
        let more = attn(256, 128) - attn(128, 64) + 2 * 64;
        assert_eq!(qwen3.num_params(), base.num_params() + l * more);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let ok = LlamaConfig::preset("llama-tiny", 100).unwrap();
        type Edit = fn(&mut LlamaConfig);
        let cases: [(Edit, &str); 11] = [
            (
                |c| {
                    c.model_type = LlamaFamily::Qwen2;
                    c.attention_bias = true;
                },
                "attention_bias",
            ),
            (
                |c| {
                    c.model_type = LlamaFamily::Qwen3;
                    c.mlp_bias = true;
                },
                "mlp_bias",
            ),
            (|c| c.head_dim = Some(0), "head_dim"),
            (|c| c.sliding_window = Some(4), "sliding_window"),
            (
                |c| {
                    c.model_type = LlamaFamily::Mistral;
                    c.sliding_window = Some(0);
                },
                "sliding_window",
            ),
            (|c| c.num_key_value_heads = 0, "num_key_value_heads"),
            (|c| c.num_key_value_heads = 3, "num_key_value_heads"),
            (|c| c.hidden_size = 130, "num_attention_heads"),
            (|c| c.hidden_size = 4 * 7, "head_dim"),
            (|c| c.rope_theta = 0.0, "rope_theta"),
            (|c| c.rms_norm_eps = f64::NAN, "rms_norm_eps"),
        ];
        for (edit, field) in cases {
            let mut c = ok.clone();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn the_record_keeps_the_keys_that_name_its_family() {
        let c = LlamaConfig::preset("llama-tiny", 100).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("rms_norm_eps").is_some() && v.get("num_key_value_heads").is_some());
        let back: LlamaConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, c);
        let mut extra = v;
        extra["n_embd"] = 8.into();
        assert!(serde_json::from_value::<LlamaConfig>(extra).is_err());
    }
}

//! The Hugging Face `LlamaForCausalLM` folder format (and `MistralForCausalLM`,
//! `Qwen2ForCausalLM`, `Qwen3ForCausalLM`, `Gemma3ForCausalLM`, `Gemma2ForCausalLM`,
//! `GemmaForCausalLM`, `GraniteForCausalLM`, `SmolLM3ForCausalLM`, `Olmo2ForCausalLM`, `Phi3ForCausalLM`): `config.json` and
//! `model.safetensors`.
//!
//! Our parameter names and layouts are transformers' own, so export is a copy. Import accepts
//! checkpoints written by `transformers` (`save_pretrained`), with or without the `model.`
//! prefix (a bare `LlamaModel` has none), skips the `rotary_emb.inv_freq` buffers older
//! versions saved, reads each family's keys with its config class's defaults, and refuses the
//! variants our model does not implement (attention dropout, RoPE over part of the head,
//! another activation, Qwen's per-layer sliding windows) by name.

use super::{
    param_shapes, GraniteMultipliers, Llama3Rope, LlamaConfig, LlamaFamily, LongRope, RopeScaling,
    YarnRope,
};
use crate::{hf_config, safetensors_io, Error, Params, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `config.json` for `LlamaForCausalLM` (or the causal LM class of the config's family:
/// `MistralForCausalLM`, `Qwen2ForCausalLM`, ...), as transformers 5.24 writes it (RoPE in
/// `rope_parameters`). `eot_id` becomes BOS/EOS when known.
pub fn to_hf_config(cfg: &LlamaConfig, eot_id: Option<u32>, dtype: DType) -> Value {
    let mut v = json!({
        "architectures": [cfg.model_type.causal_lm()],
        "model_type": cfg.model_type.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": rope_parameters(cfg.rope_theta, cfg.rope_scaling.as_ref()),
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_cache": true,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "dtype": hf_config::dtype_name(dtype),
    });
    let (act_key, act) = cfg.model_type.activation();
    v[act_key] = act.into();
    // Qwen2Config's and Qwen3Config's window keys (no window: `use_sliding_window` off).
    let qwen = json!({
        "use_sliding_window": false,
        "sliding_window": null,
        "max_window_layers": cfg.num_hidden_layers,
        "layer_types": vec!["full_attention"; cfg.num_hidden_layers],
    });
    // What each family's config class has of its own. The classes without a head_dim key
    // (Qwen2's, SmolLM3's, Granite's, OLMo 2's, Phi-3's) read one where it is set, so it is
    // written, below, only where it differs from hidden / heads.
    let family = match cfg.model_type {
        LlamaFamily::Llama => json!({
            "head_dim": cfg.head_dim(),
            "attention_bias": cfg.attention_bias,
            "mlp_bias": cfg.mlp_bias,
            "pretraining_tp": 1,
        }),
        LlamaFamily::Mistral => json!({
            "head_dim": cfg.head_dim(),
            "sliding_window": cfg.sliding_window,
        }),
        LlamaFamily::Qwen2 => qwen,
        LlamaFamily::Qwen3 => {
            let mut q = qwen;
            q["head_dim"] = cfg.head_dim().into();
            q["attention_bias"] = cfg.attention_bias.into();
            q
        }
        LlamaFamily::Gemma => json!({
            "head_dim": cfg.head_dim(),
            "attention_bias": cfg.attention_bias,
            "use_bidirectional_attention": null,
        }),
        // SmolLM3Config: Llama's biases, its NoPE layers, Qwen's window keys but
        // max_window_layers.
        LlamaFamily::SmolLM3 => {
            let mut m = qwen;
            m.as_object_mut()
                .expect("an object")
                .remove("max_window_layers");
            m["attention_bias"] = cfg.attention_bias.into();
            m["mlp_bias"] = cfg.mlp_bias.into();
            m["no_rope_layers"] = (0..cfg.num_hidden_layers)
                .map(|l| cfg.layer_has_rope(l) as u8)
                .collect::<Vec<_>>()
                .into();
            m
        }
        // GraniteConfig: Llama's biases and its four multipliers.
        LlamaFamily::Granite => {
            let g = cfg.granite.clone().unwrap_or_default();
            json!({
                "attention_bias": cfg.attention_bias,
                "mlp_bias": cfg.mlp_bias,
                "embedding_multiplier": g.embedding_multiplier,
                "residual_multiplier": g.residual_multiplier,
                "attention_multiplier": g.attention_multiplier,
                "logits_scaling": g.logits_scaling,
            })
        }
        LlamaFamily::Olmo2 => json!({"attention_bias": cfg.attention_bias}),
        // Phi3Config's original context is read by longrope only.
        LlamaFamily::Phi3 => {
            let mut rope = rope_parameters(cfg.rope_theta, cfg.rope_scaling.as_ref());
            rope["partial_rotary_factor"] = cfg.partial_rotary_factor.unwrap_or(1.0).into();
            json!({
                "rope_parameters": rope,
                "sliding_window": cfg.sliding_window,
                "resid_pdrop": 0.0,
                "embd_pdrop": 0.0,
                // LongRoPE's original context (Phi3Config reads it here first), else the
                // model's.
                "original_max_position_embeddings": match &cfg.rope_scaling {
                    Some(RopeScaling::Longrope(l)) => l.original_max_position_embeddings,
                    _ => cfg.max_position_embeddings,
                },
            })
        }
        LlamaFamily::Gemma3 | LlamaFamily::Gemma2 => {
            let mut g = json!({
                "head_dim": cfg.head_dim(),
                "attention_bias": cfg.attention_bias,
                // An integer in Gemma's config classes (`int`), as their checkpoints write it.
                "query_pre_attn_scalar": cfg.query_pre_attn_scalar.map(|q| match q.fract() == 0.0 {
                    true => json!(q as u64),
                    false => json!(q),
                }),
                "sliding_window": cfg.sliding_window,
                "layer_types": (0..cfg.num_hidden_layers)
                    .map(|l| match cfg.sliding_layers.get(l) {
                        Some(true) => "sliding_attention",
                        _ => "full_attention",
                    })
                    .collect::<Vec<_>>(),
                "final_logit_softcapping": cfg.final_logit_softcapping,
                "attn_logit_softcapping": cfg.attn_logit_softcapping,
            });
            match cfg.model_type {
                LlamaFamily::Gemma3 => {
                    g["rope_parameters"] = json!({
                        "full_attention": rope_parameters(cfg.rope_theta, cfg.rope_scaling.as_ref()),
                        "sliding_attention": rope_parameters(
                            cfg.rope_local_theta.unwrap_or(cfg.rope_theta),
                            None,
                        ),
                    });
                    g["use_bidirectional_attention"] = false.into();
                }
                // Gemma2Config: one RoPE, and no bidirectional attention unless set.
                _ => g["use_bidirectional_attention"] = Value::Null,
            }
            g
        }
    };
    for (k, x) in family.as_object().expect("an object") {
        v[k] = x.clone();
    }
    if let (None, Some(hd)) = (v.get("head_dim"), cfg.head_dim) {
        v["head_dim"] = hd.into();
    }
    v
}

/// transformers 5.24's `rope_parameters` object of base `theta` and `scaling`.
fn rope_parameters(theta: f64, scaling: Option<&RopeScaling>) -> Value {
    let mut v = match scaling {
        None => json!({"rope_type": "default"}),
        // Tagged with `rope_type`, under transformers' key names.
        Some(s) => serde_json::to_value(s).expect("a RoPE scaling serialises"),
    };
    v["rope_theta"] = theta.into();
    v
}

/// Reads a `LlamaConfig` `config.json`: absent (or null) keys take transformers' defaults,
/// variants our model does not implement are refused naming the key.
pub fn config_from_hf(path: &Path) -> Result<LlamaConfig> {
    config_from_json(&hf_config::read_json(path)?, path)
}

/// [`config_from_hf`] of the parsed file (`path` is for messages).
pub(crate) fn config_from_json(v: &Value, path: &Path) -> Result<LlamaConfig> {
    let err = hf_config::file_err(path);
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    let int = |k: &str, d: usize| -> Result<usize> {
        get(k).map_or(Ok(d), |x| {
            x.as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| err(format!("\"{k}\" is {x}, expected a non-negative integer")))
        })
    };
    let float = |k: &str, d: f64| -> Result<f64> {
        get(k).map_or(Ok(d), |x| {
            x.as_f64()
                .ok_or_else(|| err(format!("\"{k}\" is {x}, expected a number")))
        })
    };
    let boolean = |k: &str| -> Result<bool> {
        get(k).map_or(Ok(false), |x| {
            x.as_bool()
                .ok_or_else(|| err(format!("\"{k}\" is {x}, expected true or false")))
        })
    };
    let names = || {
        LlamaFamily::ALL
            .map(|f| format!("{:?}", f.model_type()))
            .join(", ")
    };
    let family = match v.get("model_type").and_then(Value::as_str) {
        Some(mt) => LlamaFamily::from_model_type(mt)
            .ok_or_else(|| err(format!("model_type is {mt:?}, expected one of {}", names())))?,
        None => {
            return Err(err(format!(
                "no \"model_type\" (expected one of {})",
                names()
            )))
        }
    };
    // Each family's one activation (Gemma 3's under a key of its own); transformers maps
    // `swish` to the same SiLU.
    let (act_key, default_act) = family.activation();
    let act = get(act_key).map_or(Some(default_act), Value::as_str);
    // GemmaConfig reads Gemma 1's released `gelu` as the tanh approximation it was trained with.
    let alias = |a: &str| match (default_act, a) {
        ("silu", "swish") => true,
        ("gelu_pytorch_tanh", "gelu") => family == LlamaFamily::Gemma,
        _ => false,
    };
    if !act.is_some_and(|a| a == default_act || alias(a)) {
        return Err(err(format!(
            "\"{act_key}\" {} is not supported ({} uses {default_act})",
            get(act_key).unwrap_or(&Value::Null),
            family.model_type()
        )));
    }
    // Each family's keys; the others' are not read (transformers ignores them too).
    let defaults = Defaults::of(family);
    let (attention_bias, mlp_bias) = match family {
        LlamaFamily::Llama | LlamaFamily::Granite | LlamaFamily::SmolLM3 => {
            (boolean("attention_bias")?, boolean("mlp_bias")?)
        }
        LlamaFamily::Qwen3
        | LlamaFamily::Gemma3
        | LlamaFamily::Gemma2
        | LlamaFamily::Gemma
        | LlamaFamily::Olmo2 => (boolean("attention_bias")?, false),
        LlamaFamily::Mistral | LlamaFamily::Qwen2 | LlamaFamily::Phi3 => (false, false),
    };
    // The window key where the family's class has one: `absent` when the key is, none when
    // null.
    let window = |absent: Option<usize>| -> Result<Option<usize>> {
        match v.get("sliding_window") {
            None => Ok(absent),
            Some(Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                err(format!(
                    "\"sliding_window\" is {x}, expected a non-negative integer or null"
                ))
            }),
        }
    };
    let sliding_window = match family {
        LlamaFamily::Llama | LlamaFamily::Olmo2 | LlamaFamily::Granite | LlamaFamily::Gemma => None,
        // Phi3Config's window is none unless the key sets one.
        LlamaFamily::Phi3 => window(None)?,
        // An absent key is MistralConfig's (Gemma's config classes') default window.
        LlamaFamily::Mistral | LlamaFamily::Gemma3 | LlamaFamily::Gemma2 => window(Some(4096))?,
        // Qwen2Config and Qwen3Config set the window only with `use_sliding_window`, and then
        // on the layers past `max_window_layers` only.
        LlamaFamily::Qwen2 | LlamaFamily::Qwen3 | LlamaFamily::SmolLM3 => {
            if boolean("use_sliding_window")? {
                return Err(err(format!(
                    "\"use_sliding_window\": true is not supported ({} with full attention \
                     only, as every released checkpoint of it)",
                    family.model_type()
                )));
            }
            None
        }
    };
    // Phi-3's dropouts of the embeddings and of each residual branch too.
    let dropouts: &[&str] = match family {
        LlamaFamily::Phi3 => &["attention_dropout", "resid_pdrop", "embd_pdrop"],
        _ => &["attention_dropout"],
    };
    for &k in dropouts {
        let p = float(k, 0.0)?;
        if p != 0.0 {
            return Err(err(format!(
                "\"{k}\" {p} is not supported (the Llama family runs without dropout)"
            )));
        }
    }
    // A part of each head under RoPE (Phi-4-mini's 0.75): Phi-3's attention alone turns part of
    // a head. Phi3Config takes the RoPE parameters' value, else the top-level key's.
    let partial_rotary_factor = {
        let in_rope = ["rope_scaling", "rope_parameters"]
            .into_iter()
            .find_map(|k| {
                let x = get(k)?
                    .get("partial_rotary_factor")
                    .filter(|x| !x.is_null())?;
                Some((format!("\"{k}\".partial_rotary_factor"), x))
            });
        let top = || {
            let x = get("partial_rotary_factor")?;
            Some(("\"partial_rotary_factor\"".to_string(), x))
        };
        match in_rope.or_else(top) {
            None => None,
            Some((key, x)) => match (x.as_f64(), family) {
                (Some(1.0), _) => None,
                (Some(f), LlamaFamily::Phi3) => Some(f),
                _ => {
                    return Err(err(format!(
                        "{key} {x} is not supported ({} turns the whole head; only Phi-3 turns \
                         part of it)",
                        family.model_type()
                    )))
                }
            },
        }
    };
    let hidden_size = int("hidden_size", defaults.hidden)?;
    let num_attention_heads = int("num_attention_heads", defaults.heads)?;
    let num_hidden_layers = int("num_hidden_layers", defaults.layers)?;
    // A null key/value head count is the query heads' (MHA) in every family.
    let num_key_value_heads = match v.get("num_key_value_heads") {
        Some(Value::Null) => num_attention_heads,
        _ => int(
            "num_key_value_heads",
            defaults.kv_heads.unwrap_or(num_attention_heads),
        )?,
    };
    // Kept only where it differs from hidden_size / num_attention_heads, so that a config
    // that writes the derived width out reads as one that leaves it to be derived.
    let head_dim = match (get("head_dim"), defaults.head_dim) {
        (Some(_), _) => Some(int("head_dim", 0)?),
        (None, default) => default,
    }
    .filter(|&hd| num_attention_heads.checked_mul(hd) != Some(hidden_size));
    let gemma = match family {
        LlamaFamily::Gemma3 | LlamaFamily::Gemma2 => {
            Some(gemma(v, path, num_hidden_layers, family)?)
        }
        _ => None,
    };
    let (rope_theta, rope_scaling) = match &gemma {
        Some(g) => (g.rope_theta, g.rope_scaling.clone()),
        None => rope(v, path, family)?,
    };
    // SmolLM3Config's NoPE layers: `no_rope_layers` (1: RoPE, 0: none), else every
    // `no_rope_layer_interval`-th layer (4).
    let nope_layers = match (family, get("no_rope_layers")) {
        (LlamaFamily::SmolLM3, Some(list)) => {
            let list = list
                .as_array()
                .filter(|l| l.len() == num_hidden_layers)
                .ok_or_else(|| {
                    err(format!(
                        "\"no_rope_layers\" is {list}, expected a list of {num_hidden_layers} 0s \
                         and 1s"
                    ))
                })?;
            list.iter()
                .map(|x| match x.as_u64() {
                    Some(0) => Ok(true),
                    Some(1) => Ok(false),
                    _ => Err(err(format!(
                        "\"no_rope_layers\" holds {x}, expected 0 or 1"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?
        }
        (LlamaFamily::SmolLM3, None) => {
            let every = int("no_rope_layer_interval", 4)?;
            if every == 0 {
                return Err(err("\"no_rope_layer_interval\" is 0".into()));
            }
            LlamaConfig::nope_every(num_hidden_layers, every)
        }
        _ => Vec::new(),
    };
    let cfg = LlamaConfig {
        vocab_size: int("vocab_size", defaults.vocab_size)?,
        hidden_size,
        intermediate_size: int("intermediate_size", defaults.intermediate_size)?,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        max_position_embeddings: int("max_position_embeddings", defaults.max_positions)?,
        rms_norm_eps: float("rms_norm_eps", defaults.eps)?,
        rope_theta,
        rope_scaling,
        tie_word_embeddings: match get("tie_word_embeddings") {
            None => defaults.tied,
            Some(_) => boolean("tie_word_embeddings")?,
        },
        initializer_range: float("initializer_range", 0.02)?,
        pad_token_id: match get("pad_token_id") {
            // Gemma3TextConfig pads with 0 unless told otherwise.
            None if v.get("pad_token_id").is_none() => defaults.pad,
            None => None,
            Some(x) => Some(
                x.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| err(format!("\"pad_token_id\" is {x}, expected a token id")))?,
            ),
        },
        model_type: family,
        attention_bias,
        mlp_bias,
        sliding_window,
        head_dim,
        sliding_layers: gemma
            .as_ref()
            .map_or(Vec::new(), |g| g.sliding_layers.clone()),
        rope_local_theta: gemma.as_ref().and_then(|g| g.rope_local_theta),
        query_pre_attn_scalar: gemma.as_ref().map(|g| g.query_pre_attn_scalar),
        attn_logit_softcapping: gemma.as_ref().and_then(|g| g.attn_logit_softcapping),
        final_logit_softcapping: gemma.as_ref().and_then(|g| g.final_logit_softcapping),
        nope_layers,
        partial_rotary_factor,
        granite: match family {
            LlamaFamily::Granite => Some(Box::new(GraniteMultipliers {
                embedding_multiplier: float("embedding_multiplier", 1.0)?,
                residual_multiplier: float("residual_multiplier", 1.0)?,
                attention_multiplier: float("attention_multiplier", 1.0)?,
                logits_scaling: float("logits_scaling", 1.0)?,
            })),
            _ => None,
        },
    };
    cfg.validate().map_err(|e| err(e.to_string()))?;
    check_plausible(&cfg, path)?;
    Ok(cfg)
}

/// The defaults of each family's config class for the keys whose defaults differ
/// (`LlamaConfig`, `MistralConfig`, `Qwen2Config`, `Qwen3Config`, `Gemma3TextConfig`,
/// `Gemma2Config`, `GemmaConfig`, `GraniteConfig`, `SmolLM3Config`, `Olmo2Config`,
/// `Phi3Config` in transformers 5.24).
struct Defaults {
    hidden: usize,
    layers: usize,
    heads: usize,
    tied: bool,
    pad: Option<u32>,
    vocab_size: usize,
    intermediate_size: usize,
    max_positions: usize,
    /// `None`: as many as the query heads.
    kv_heads: Option<usize>,
    /// `None`: hidden_size / num_attention_heads.
    head_dim: Option<usize>,
    eps: f64,
    /// RoPE's base where a config states none.
    rope_theta: f64,
}

impl Defaults {
    fn of(family: LlamaFamily) -> Self {
        let llama = Self {
            hidden: 4096,
            layers: 32,
            heads: 32,
            tied: false,
            pad: None,
            vocab_size: 32000,
            intermediate_size: 11008,
            max_positions: 2048,
            kv_heads: None,
            head_dim: None,
            eps: 1e-6,
            rope_theta: 10_000.0,
        };
        let qwen2 = Self {
            vocab_size: 151936,
            intermediate_size: 22016,
            max_positions: 32768,
            kv_heads: Some(32),
            ..llama
        };
        match family {
            LlamaFamily::Llama => llama,
            LlamaFamily::Mistral => Self {
                intermediate_size: 14336,
                max_positions: 4096 * 32,
                kv_heads: Some(8),
                ..llama
            },
            LlamaFamily::Qwen2 => qwen2,
            LlamaFamily::Qwen3 => Self {
                head_dim: Some(128),
                ..qwen2
            },
            LlamaFamily::Gemma3 => Self {
                hidden: 2304,
                layers: 26,
                heads: 8,
                tied: true,
                pad: Some(0),
                vocab_size: 262_208,
                intermediate_size: 9216,
                max_positions: 131_072,
                kv_heads: Some(4),
                head_dim: Some(256),
                eps: 1e-6,
                rope_theta: 10_000.0,
            },
            LlamaFamily::Gemma2 => Self {
                hidden: 2304,
                layers: 26,
                heads: 8,
                tied: true,
                pad: Some(0),
                vocab_size: 256_000,
                intermediate_size: 9216,
                max_positions: 8192,
                kv_heads: Some(4),
                head_dim: Some(256),
                eps: 1e-6,
                rope_theta: 10_000.0,
            },
            LlamaFamily::Granite => llama,
            LlamaFamily::SmolLM3 => Self {
                hidden: 2048,
                layers: 36,
                heads: 16,
                tied: true,
                pad: Some(128_004),
                vocab_size: 128_256,
                max_positions: 32768,
                kv_heads: Some(4),
                rope_theta: 2_000_000.0,
                ..llama
            },
            LlamaFamily::Gemma => Self {
                hidden: 3072,
                layers: 28,
                heads: 16,
                tied: true,
                pad: Some(0),
                vocab_size: 256_000,
                intermediate_size: 24576,
                max_positions: 8192,
                kv_heads: None,
                head_dim: Some(256),
                eps: 1e-6,
                rope_theta: 10_000.0,
            },
            LlamaFamily::Olmo2 => Self {
                pad: Some(1),
                vocab_size: 50304,
                eps: 1e-5,
                ..llama
            },
            LlamaFamily::Phi3 => Self {
                hidden: 3072,
                pad: Some(32000),
                vocab_size: 32064,
                intermediate_size: 8192,
                max_positions: 4096,
                eps: 1e-5,
                ..llama
            },
        }
    }
}

/// What Gemma 2's and 3's configs say beyond Llama's keys.
struct GemmaKeys {
    rope_theta: f64,
    /// The (full) layers' scaling.
    rope_scaling: Option<RopeScaling>,
    /// Gemma 3's sliding layers' RoPE base.
    rope_local_theta: Option<f64>,
    query_pre_attn_scalar: f64,
    sliding_layers: Vec<bool>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
}

/// Gemma3TextConfig's and Gemma2Config's own keys, read as transformers 5.24 reads them:
/// `layer_types` (else Gemma 3's legacy `sliding_window_pattern`, default 6: every sixth layer
/// full; Gemma 2's every second layer full), `query_pre_attn_scalar` (256), the soft caps of
/// the attention scores and of the logits (`attn_logit_softcapping`,
/// `final_logit_softcapping`: Gemma 2's 50 and 30 when absent, Gemma 3's none; null is none).
/// Gemma 2 has one RoPE ([`rope`]). Gemma 3 has one per kind of layer
/// (`rope_parameters.full_attention` / `.sliding_attention`, or the legacy `rope_theta` /
/// `rope_local_base_freq`; 1,000,000 and 10,000 by default; a legacy `rope_scaling` is the
/// full layers', which may scale as [`rope_object`] reads, the sliding ones take the default
/// RoPE). Refused by name: bidirectional attention, a scaled RoPE on Gemma 3's sliding layers.
fn gemma(v: &Value, path: &Path, layers: usize, family: LlamaFamily) -> Result<GemmaKeys> {
    let err = hf_config::file_err(path);
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    let gemma2 = family == LlamaFamily::Gemma2;
    let cap = |k: &str, gemma2_default: f64| -> Result<Option<f64>> {
        match v.get(k) {
            None if gemma2 => Ok(Some(gemma2_default)),
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| err(format!("\"{k}\" is {x}, expected a number or null"))),
        }
    };
    let attn_logit_softcapping = cap("attn_logit_softcapping", 50.0)?;
    let final_logit_softcapping = cap("final_logit_softcapping", 30.0)?;
    if get("use_bidirectional_attention").and_then(Value::as_bool) == Some(true) {
        return Err(err(
            "\"use_bidirectional_attention\": true is not supported (causal attention only)".into(),
        ));
    }
    let sliding_layers = match get("layer_types") {
        Some(t) => {
            let kinds = t
                .as_array()
                .ok_or_else(|| err(format!("\"layer_types\" is {t}, expected a list")))?;
            if kinds.len() != layers {
                return Err(err(format!(
                    "\"layer_types\" lists {} layers for num_hidden_layers {layers}",
                    kinds.len()
                )));
            }
            kinds
                .iter()
                .map(|k| match k.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(err(format!(
                        "\"layer_types\" holds {k}: sliding_attention or full_attention only"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?
        }
        // Gemma2Config: sliding, full, sliding, ...
        None if gemma2 => (0..layers).map(|i| i % 2 == 0).collect(),
        None => {
            let pattern = match get("sliding_window_pattern") {
                None => 6,
                Some(x) => x.as_u64().filter(|&p| p > 0).ok_or_else(|| {
                    err(format!(
                        "\"sliding_window_pattern\" is {x}, expected a positive integer"
                    ))
                })? as usize,
            };
            (0..layers).map(|i| (i + 1) % pattern != 0).collect()
        }
    };
    let query_pre_attn_scalar = number_or(v, path, "query_pre_attn_scalar", 256.0)?;
    if gemma2 {
        let (rope_theta, rope_scaling) = rope(v, path, family)?;
        return Ok(GemmaKeys {
            rope_theta,
            rope_scaling,
            rope_local_theta: None,
            query_pre_attn_scalar,
            sliding_layers,
            attn_logit_softcapping,
            final_logit_softcapping,
        });
    }
    let (legacy_full, legacy_local) = (
        number_or(v, path, "rope_theta", 1_000_000.0)?,
        number_or(v, path, "rope_local_base_freq", 10_000.0)?,
    );
    // Each kind of layer's object; a legacy `rope_scaling` updates the full layers' one.
    let object = |kind: &str| -> Result<Value> {
        let mut o = match get("rope_parameters").and_then(|r| r.get(kind)) {
            Some(o) if o.is_object() => o.clone(),
            Some(o) if !o.is_null() => {
                return Err(err(format!(
                    "\"rope_parameters\".{kind} is {o}, expected an object"
                )))
            }
            _ => json!({"rope_type": "default"}),
        };
        if let (Some(legacy), "full_attention") = (get("rope_scaling"), kind) {
            let legacy = legacy
                .as_object()
                .ok_or_else(|| err(format!("\"rope_scaling\" is {legacy}, expected an object")))?;
            for (k, x) in legacy {
                o[k] = x.clone();
            }
        }
        Ok(o)
    };
    let key = |kind: &str| format!("\"rope_parameters\".{kind}");
    let (rope_theta, rope_scaling) = rope_object(
        v,
        path,
        &key("full_attention"),
        &object("full_attention")?,
        (legacy_full, false),
    )?;
    let (rope_local_theta, local_scaling) = rope_object(
        v,
        path,
        &key("sliding_attention"),
        &object("sliding_attention")?,
        (legacy_local, false),
    )?;
    if let Some(s) = local_scaling {
        return Err(err(format!(
            "\"rope_parameters\".sliding_attention has rope_type {:?}: Gemma 3's sliding layers \
             with the default RoPE only",
            s.name()
        )));
    }
    Ok(GemmaKeys {
        rope_theta,
        rope_scaling,
        rope_local_theta: Some(rope_local_theta),
        query_pre_attn_scalar,
        sliding_layers,
        attn_logit_softcapping,
        final_logit_softcapping,
    })
}

/// The RoPE of a config, read as transformers 5.24 reads it (`convert_rope_params_to_dict`):
/// the legacy `rope_scaling` object, if any, else `rope_parameters` ([`rope_object`]); the
/// legacy top-level `rope_theta` where it has none, else the family's default (10,000;
/// SmolLM3's 2,000,000).
fn rope(v: &Value, path: &Path, family: LlamaFamily) -> Result<(f64, Option<RopeScaling>)> {
    let legacy = number_or(v, path, "rope_theta", Defaults::of(family).rope_theta)?;
    match ["rope_scaling", "rope_parameters"]
        .into_iter()
        .find_map(|k| v.get(k).filter(|x| !x.is_null()).map(|x| (k, x)))
    {
        None => Ok((legacy, None)),
        Some((key, rope)) => {
            let phi3 = family == LlamaFamily::Phi3;
            rope_object(v, path, &format!("\"{key}\""), rope, (legacy, phi3))
        }
    }
}

/// The number at top-level `key` of a config, `default` when absent or null.
fn number_or(v: &Value, path: &Path, key: &str, default: f64) -> Result<f64> {
    match v.get(key).filter(|x| !x.is_null()) {
        None => Ok(default),
        Some(x) => x.as_f64().ok_or_else(|| {
            hf_config::file_err(path)(format!("\"{key}\" is {x}, expected a number"))
        }),
    }
}

/// max_position_embeddings / `original`: yarn's factor where a config leaves it out.
fn ratio_of_contexts(v: &Value, original: usize) -> f64 {
    let max = v.get("max_position_embeddings").and_then(Value::as_f64);
    max.unwrap_or(0.0) / original as f64
}

/// One RoPE parameters object of config `v` (`key`, quoted, names it in messages): its `rope_theta`
/// (else `legacy_theta`) and its scaling, by `rope_type` (or the legacy `type`): `default`,
/// `llama3` (its three factors required), `linear` and `dynamic` (`factor` required), `yarn`
/// (`factor` else max_position_embeddings / original_max_position_embeddings, and its optional
/// keys). `original_max_position_embeddings` is the config's top-level key if it has one, else
/// the object's, else `max_position_embeddings`, as `standardize_rope_params` sets it.
/// A `partial_rotary_factor` other than 1 is refused. With `phi3` (Phi3Config's reading),
/// `longrope` (its `short_factor` and `long_factor` required, `factor` and
/// `attention_factor` optional; `su` and `yarn` are its old names there) and the top-level
/// `original_max_position_embeddings` defaulting to Phi3Config's 4096; without, `longrope`
/// is refused.
fn rope_object(
    v: &Value,
    path: &Path,
    key: &str,
    rope: &Value,
    (legacy_theta, phi3): (f64, bool),
) -> Result<(f64, Option<RopeScaling>)> {
    let err = hf_config::file_err(path);
    let rope = rope
        .as_object()
        .ok_or_else(|| err(format!("{key} is {rope}, expected an object")))?;
    let kind = match rope.get("rope_type").or_else(|| rope.get("type")) {
        None => "default",
        Some(k) => k
            .as_str()
            .ok_or_else(|| err(format!("{key}.rope_type is {k}, expected a string")))?,
    };
    let kind = match kind {
        "su" | "yarn" if phi3 => "longrope",
        k => k,
    };
    let optional = |k: &str| -> Result<Option<f64>> {
        match rope.get(k).filter(|x| !x.is_null()) {
            None => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| err(format!("{key}.{k} is {x}, expected a number ({kind} RoPE)"))),
        }
    };
    let required = |k: &str| -> Result<f64> {
        optional(k)?.ok_or_else(|| err(format!("{key}.{k} is missing ({kind} RoPE)")))
    };
    let original_max = || -> Result<usize> {
        let top = v
            .get("original_max_position_embeddings")
            .filter(|x| !x.is_null());
        let (what, x) = match (top, rope.get("original_max_position_embeddings")) {
            (Some(x), _) => (
                "\"original_max_position_embeddings\"".to_string(),
                x.clone(),
            ),
            (None, Some(x)) if !x.is_null() => {
                (format!("{key}.original_max_position_embeddings"), x.clone())
            }
            // Phi3Config has the key, 4096 by default.
            _ if phi3 => return Ok(4096),
            _ => {
                let max = v.get("max_position_embeddings").and_then(Value::as_u64);
                return Ok(max.unwrap_or(0) as usize);
            }
        };
        match x.as_f64() {
            Some(n) if n >= 1.0 && n.fract() == 0.0 => Ok(n as usize),
            _ => Err(err(format!("{what} {x} is not a positive integer"))),
        }
    };
    match kind {
        "default" | "llama3" | "linear" | "dynamic" | "yarn" => {}
        "longrope" if phi3 => {}
        other => {
            return Err(err(format!(
                "{key} has rope_type {other:?}: the default RoPE, llama3, linear, dynamic \
                 and yarn are supported (and longrope on Phi-3)"
            )))
        }
    }
    // A fraction of the head under RoPE (Phi-3's, read with the family's keys) changes every
    // type's tables; elsewhere it is refused. Keys a type does not read are ignored, as
    // transformers ignores them.
    if let Some(x) = rope.get("partial_rotary_factor").filter(|x| !x.is_null()) {
        if x.as_f64() != Some(1.0) && !phi3 {
            return Err(err(format!(
                "{key}.partial_rotary_factor {x} is not supported (RoPE over the whole \
                 head only)"
            )));
        }
    }
    let scaling = match kind {
        "default" => None,
        "llama3" => Some(RopeScaling::Llama3(Llama3Rope {
            factor: required("factor")?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_max_position_embeddings: original_max()?,
        })),
        "linear" => Some(RopeScaling::Linear {
            factor: required("factor")?,
        }),
        "dynamic" => Some(RopeScaling::Dynamic {
            factor: required("factor")?,
        }),
        "longrope" => {
            let old = original_max()?;
            let factors = |k: &str| -> Result<Vec<f64>> {
                let list = rope.get(k).and_then(Value::as_array).ok_or_else(|| {
                    err(format!(
                        "{key}.{k} is missing or not a list (longrope RoPE)"
                    ))
                })?;
                list.iter()
                    .map(|x| {
                        x.as_f64()
                            .ok_or_else(|| err(format!("{key}.{k} holds {x}, expected numbers")))
                    })
                    .collect()
            };
            Some(RopeScaling::Longrope(Box::new(LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                factor: optional("factor")?,
                original_max_position_embeddings: old,
                attention_factor: optional("attention_factor")?,
            })))
        }
        _ => {
            let old = original_max()?;
            let factor = match optional("factor")? {
                Some(f) => f,
                None => ratio_of_contexts(v, old),
            };
            let truncate = match rope.get("truncate").filter(|x| !x.is_null()) {
                None => None,
                Some(x) => Some(x.as_bool().ok_or_else(|| {
                    err(format!("{key}.truncate is {x}, expected true or false"))
                })?),
            };
            Some(RopeScaling::Yarn(Box::new(YarnRope {
                factor,
                original_max_position_embeddings: old,
                beta_fast: optional("beta_fast")?,
                beta_slow: optional("beta_slow")?,
                attention_factor: optional("attention_factor")?,
                mscale: optional("mscale")?,
                mscale_all_dim: optional("mscale_all_dim")?,
                truncate,
            })))
        }
    };
    if let Some(s) = &scaling {
        s.validate().map_err(|e| err(format!("{key}: {e}")))?;
    }
    let theta = match rope.get("rope_theta").filter(|x| !x.is_null()) {
        None => legacy_theta,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| err(format!("{key}.rope_theta is {x}, expected a number")))?,
    };
    Ok((theta, scaling))
}

/// Bounds far above any Llama-style model, checked before anything is sized from a config read
/// from disk: a hostile `num_hidden_layers = 10^12` must be an error, not a loop or an
/// allocation. Positions size nothing up front (RoPE tables and the key/value cache grow with
/// the tokens run), and context windows of millions exist, so their bound is wider.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1 << 12;
const MAX_POSITIONS: usize = 1 << 26;
const MAX_PARAMS: usize = 1 << 40;

/// Refuses configs whose sizes no real model has (`path` is for messages).
pub fn check_plausible(cfg: &LlamaConfig, path: &Path) -> Result<()> {
    let err = hf_config::file_err(path);
    for (k, v, max) in [
        ("vocab_size", cfg.vocab_size, 1 << 24),
        ("hidden_size", cfg.hidden_size, MAX_DIM),
        ("intermediate_size", cfg.intermediate_size, MAX_DIM),
        ("num_attention_heads", cfg.num_attention_heads, MAX_DIM),
        ("num_key_value_heads", cfg.num_key_value_heads, MAX_DIM),
        ("head_dim", cfg.head_dim(), MAX_DIM),
        ("num_hidden_layers", cfg.num_hidden_layers, MAX_LAYERS),
        (
            "max_position_embeddings",
            cfg.max_position_embeddings,
            MAX_POSITIONS,
        ),
    ] {
        if v > max {
            return Err(err(format!("{k} {v} is implausibly large (limit {max})")));
        }
    }
    // With the bounds above this product cannot overflow u128.
    let (c, i, v) = (
        cfg.hidden_size as u128,
        cfg.intermediate_size as u128,
        cfg.vocab_size as u128,
    );
    let (q, kv) = (
        cfg.num_attention_heads as u128 * cfg.head_dim() as u128,
        cfg.num_key_value_heads as u128 * cfg.head_dim() as u128,
    );
    let n = 2 * v * c + cfg.num_hidden_layers as u128 * (2 * c * q + 2 * c * kv + 3 * c * i);
    if n > MAX_PARAMS as u128 {
        return Err(err(format!(
            "config describes about {n} parameters, more than the {MAX_PARAMS} this build accepts"
        )));
    }
    Ok(())
}

/// Where a multimodal Gemma 3 checkpoint keeps its language model: `language_model.` before
/// our names (the Hub's layout, which transformers 5.24 writes too), or the `model.`
/// `language_model.` layout of transformers' module tree.
const GEMMA3_LANGUAGE_MODEL: [&str; 2] = ["language_model.", "model.language_model."];

/// A multimodal Gemma 3's tensors that are not its language model's: left out of a text-only
/// load.
const GEMMA3_VISION: [&str; 4] = [
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
];

/// Tensors HF files may hold that are not parameters of `cfg`'s model: the tied head's copy
/// (a multimodal Gemma 3's too), the RoPE frequencies older transformers saved per layer, and
/// a multimodal Gemma 3's vision tower and projector.
fn ignorable(name: &str, cfg: &LlamaConfig) -> bool {
    let head = |n: &str| n == super::LM_HEAD || n == "language_model.lm_head.weight";
    (cfg.tie_word_embeddings && head(name))
        || name.ends_with("rotary_emb.inv_freq")
        || (cfg.gemma() && GEMMA3_VISION.iter().any(|p| name.starts_with(p)))
}

/// Builds [`Params`] from named tensors, checking names and shapes against `cfg`. Missing and
/// unexpected tensors are all reported by name (an untied config needs `lm_head.weight`).
/// `path` is for messages.
pub fn params_from_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    cfg: &LlamaConfig,
    path: &Path,
    dtype: DType,
) -> Result<Params> {
    let mut params = Params::new();
    let mut missing = Vec::new();
    for (name, shape) in param_shapes(cfg) {
        let bare = name.strip_prefix("model.").unwrap_or(&name).to_string();
        let mut names = vec![name.clone(), bare.clone()];
        if cfg.gemma() {
            // A multimodal Gemma 3's language model: `language_model.model.norm.weight`,
            // `model.language_model.norm.weight`, `language_model.lm_head.weight`.
            names.push(format!("{}{name}", GEMMA3_LANGUAGE_MODEL[0]));
            names.push(format!("{}{bare}", GEMMA3_LANGUAGE_MODEL[1]));
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match safetensors_io::take_shaped(&mut tensors, &name, &names, &shape, path)? {
            None => missing.push(name),
            Some(t) => params.insert(name, t.to_dtype(dtype)?)?,
        }
    }
    if !missing.is_empty() {
        return Err(Error::Missing {
            path: path.to_path_buf(),
            names: missing,
        });
    }
    let unexpected: Vec<String> = tensors.into_keys().filter(|n| !ignorable(n, cfg)).collect();
    if !unexpected.is_empty() {
        return Err(Error::Unexpected {
            path: path.to_path_buf(),
            names: unexpected,
        });
    }
    Ok(params)
}

/// Loads `model.safetensors` (our checkpoints or transformers') into parameters for `cfg`: the
/// config must be plausible, every tensor floating point, and names and shapes exactly the
/// model's. A folder that holds only a PyTorch pickle gets the refusal that explains how to
/// convert it.
pub fn load_params(
    path: &Path,
    cfg: &LlamaConfig,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    safetensors_io::refuse_pickle_weights(path)?;
    check_plausible(cfg, path)?;
    let tensors = safetensors_io::load_raw(path, device)?;
    safetensors_io::check_float(&tensors, path)?;
    params_from_tensors(tensors, cfg, path, dtype)
}

/// The tensors to write for a transformers-loadable `model.safetensors`: every parameter once,
/// under its transformers name (a tied head is not a parameter, so no `lm_head.weight`:
/// transformers re-ties on load).
pub fn export_tensors(params: &Params, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    params
        .iter()
        .map(|(n, v)| Ok((n.to_string(), v.as_tensor().to_dtype(dtype)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 96,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 32,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: None,
            tie_word_embeddings: false,
            initializer_range: 0.01,
            pad_token_id: None,
            // The variants' keys as Llama's.
            ..LlamaConfig::preset("llama-tiny", 8).unwrap()
        }
    }

    fn read(v: &Value) -> Result<LlamaConfig> {
        config_from_json(v, Path::new("dir/config.json"))
    }

    #[test]
    fn config_round_trips_through_config_json() {
        for tied in [false, true] {
            let cfg = LlamaConfig {
                tie_word_embeddings: tied,
                pad_token_id: tied.then_some(3),
                ..tiny()
            };
            let v = to_hf_config(&cfg, Some(7), DType::BF16);
            assert_eq!(read(&v).unwrap(), cfg);
            assert_eq!(
                (v["bos_token_id"].as_u64(), v["eos_token_id"].as_u64()),
                (Some(7), Some(7))
            );
            assert_eq!(v["dtype"], "bfloat16");
            assert_eq!(v["rope_parameters"]["rope_type"], "default");
            assert_eq!(v["head_dim"], 8);
        }
        // Through a file, with the file's errors naming it.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        std::fs::write(&path, to_hf_config(&tiny(), None, DType::F32).to_string()).unwrap();
        assert_eq!(config_from_hf(&path).unwrap(), tiny());
        std::fs::write(&path, "{").unwrap();
        let e = config_from_hf(&path).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("invalid JSON"),
            "{e}"
        );
    }

    #[test]
    fn every_family_round_trips_through_config_json() {
        let relatives = [
            LlamaConfig {
                attention_bias: true,
                mlp_bias: true,
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Qwen2,
                tie_word_embeddings: true,
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Mistral,
                sliding_window: Some(7),
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Mistral,
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Qwen3,
                head_dim: Some(16),
                attention_bias: true,
                ..tiny()
            },
            // An explicit head width is Llama's key too.
            LlamaConfig {
                head_dim: Some(4),
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Gemma3,
                head_dim: Some(16),
                sliding_window: Some(7),
                sliding_layers: vec![true, false],
                rope_local_theta: Some(10.0),
                query_pre_attn_scalar: Some(12.5),
                tie_word_embeddings: true,
                pad_token_id: Some(0),
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Phi3,
                sliding_window: Some(7),
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Olmo2,
                attention_bias: true,
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Granite,
                mlp_bias: true,
                granite: Some(Box::new(GraniteMultipliers {
                    embedding_multiplier: 12.0,
                    residual_multiplier: 0.22,
                    attention_multiplier: 0.015625,
                    logits_scaling: 8.0,
                })),
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Gemma2,
                head_dim: Some(16),
                sliding_window: Some(7),
                sliding_layers: vec![true, false],
                query_pre_attn_scalar: Some(12.0),
                attn_logit_softcapping: Some(50.0),
                final_logit_softcapping: Some(30.0),
                tie_word_embeddings: true,
                pad_token_id: Some(0),
                ..tiny()
            },
            LlamaConfig {
                model_type: LlamaFamily::Phi3,
                head_dim: Some(4),
                ..tiny()
            },
        ];
        for cfg in relatives {
            let v = to_hf_config(&cfg, None, DType::F32);
            assert_eq!(read(&v).unwrap(), cfg);
            assert_eq!(v["model_type"], cfg.model_type.model_type());
            assert_eq!(v["architectures"][0], cfg.model_type.causal_lm());
        }
        // Each family reads only its own keys, as transformers' config classes do: a Qwen2
        // with Llama's attention_bias still has q/k/v biases only; Llama has no window.
        let qwen = read(&json!({"model_type": "qwen2", "attention_bias": true,
            "sliding_window": 16}))
        .unwrap();
        assert!(!qwen.attention_bias && qwen.qkv_bias() && !qwen.o_bias());
        assert_eq!(qwen.sliding_window, None);
        let llama = read(&json!({"model_type": "llama", "sliding_window": 16})).unwrap();
        assert_eq!(llama.sliding_window, None);
    }

    #[test]
    fn absent_keys_take_each_familys_defaults() {
        // (vocabulary, MLP width, positions, key/value heads) of 32 query heads.
        for (mt, want) in [
            ("mistral", (32000, 14336, 131072, 8)),
            ("qwen2", (151936, 22016, 32768, 32)),
            ("qwen3", (151936, 22016, 32768, 32)),
        ] {
            let c = read(&json!({ "model_type": mt })).unwrap();
            assert_eq!(
                (
                    c.vocab_size,
                    c.intermediate_size,
                    c.max_position_embeddings,
                    c.num_key_value_heads
                ),
                want,
                "{mt}"
            );
            let mha = read(&json!({"model_type": mt, "num_key_value_heads": null})).unwrap();
            assert_eq!(mha.num_key_value_heads, 32, "{mt}");
        }
        // Qwen3Config's heads are 128 wide unless the key says otherwise (4096 / 32 = 128:
        // kept as derived); a head_dim equal to the derived width is not kept apart.
        let q = read(
            &json!({"model_type": "qwen3", "hidden_size": 1024, "num_attention_heads": 16,
            "num_key_value_heads": 8}),
        )
        .unwrap();
        assert_eq!((q.head_dim, q.q_width()), (Some(128), 2048));
        let q = read(&json!({"model_type": "qwen3"})).unwrap();
        assert_eq!((q.head_dim, q.head_dim()), (None, 128));
        // SmolLM3Config's: SmolLM3-3B's sizes, RoPE base 2,000,000, every fourth layer NoPE;
        // `no_rope_layers` lists them where set (1: RoPE).
        let m = read(&json!({"model_type": "smollm3", "num_hidden_layers": 8})).unwrap();
        assert_eq!(
            (
                m.vocab_size,
                m.hidden_size,
                m.num_key_value_heads,
                m.rope_theta
            ),
            (128_256, 2048, 4, 2_000_000.0)
        );
        let nope: Vec<usize> = (0..8).filter(|&l| !m.layer_has_rope(l)).collect();
        assert_eq!(nope, [3, 7]);
        assert_eq!(read(&to_hf_config(&m, None, DType::F32)).unwrap(), m);
        let m = read(&json!({"model_type": "smollm3", "num_hidden_layers": 2,
            "no_rope_layers": [0, 1]}))
        .unwrap();
        assert_eq!(m.nope_layers, [true, false]);
        for bad in [json!([1]), json!([1, 2])] {
            let e = read(&json!({"model_type": "smollm3", "num_hidden_layers": 2,
                "no_rope_layers": bad}))
            .unwrap_err()
            .to_string();
            assert!(e.contains("no_rope_layers"), "{e}");
        }
        // GemmaConfig's: Gemma 7B's sizes, heads of 256, tied, padding id 0; the released
        // configs' `hidden_act: "gelu"` is the tanh approximation (only for Gemma 1).
        let g = read(&json!({"model_type": "gemma", "hidden_act": "gelu"})).unwrap();
        assert_eq!(
            (
                g.vocab_size,
                g.hidden_size,
                g.num_hidden_layers,
                g.head_dim()
            ),
            (256_000, 3072, 28, 256)
        );
        assert!(g.gemma() && !g.sandwich_norms() && g.tie_word_embeddings);
        assert_eq!(g.pad_token_id, Some(0));
        assert!(read(&json!({"model_type": "gemma2", "hidden_activation": "gelu"})).is_err());
        // GraniteConfig's: Llama's sizes, every multiplier 1.
        let g = read(&json!({"model_type": "granite", "logits_scaling": 8.0})).unwrap();
        let want = GraniteMultipliers {
            logits_scaling: 8.0,
            ..Default::default()
        };
        assert_eq!(g.granite, Some(Box::new(want)));
        assert_eq!((g.vocab_size, g.attn_scale()), (32000, 1.0));
        // Olmo2Config's: vocabulary 50304, eps 1e-5, padding id 1, norms over all heads.
        let o = read(&json!({"model_type": "olmo2"})).unwrap();
        assert_eq!(
            (o.vocab_size, o.rms_norm_eps, o.pad_token_id),
            (50304, 1e-5, Some(1))
        );
        assert!(o.qk_norm() && o.qk_norm_whole() && o.post_norms_only());
        // Phi3Config's: Phi-3-mini's sizes, eps 1e-5, padding id 32000, no window.
        let p = read(&json!({"model_type": "phi3"})).unwrap();
        assert_eq!(
            (p.vocab_size, p.hidden_size, p.intermediate_size),
            (32064, 3072, 8192)
        );
        assert_eq!(
            (
                p.max_position_embeddings,
                p.num_key_value_heads,
                p.rms_norm_eps
            ),
            (4096, 32, 1e-5)
        );
        assert_eq!((p.pad_token_id, p.sliding_window), (Some(32000), None));
        let l = read(&json!({"model_type": "llama", "head_dim": 128})).unwrap();
        assert_eq!(l.head_dim, None);
        // Gemma3TextConfig's: 26 layers, every sixth full, window 4096, RoPE bases 1e6 and
        // 1e4, scores by 1/√256, heads of 256, tied, padding id 0; the legacy keys too.
        let g = read(&json!({"model_type": "gemma3_text"})).unwrap();
        assert_eq!(
            (
                g.vocab_size,
                g.hidden_size,
                g.num_hidden_layers,
                g.head_dim()
            ),
            (262_208, 2304, 26, 256)
        );
        assert_eq!(g.sliding_layers.iter().filter(|s| !**s).count(), 4);
        assert!(!g.sliding_layers[5] && g.sliding_layers[4]);
        assert_eq!((g.sliding_window, g.layer_window(5)), (Some(4096), None));
        assert_eq!((g.rope_theta, g.rope_local_theta), (1e6, Some(1e4)));
        assert_eq!((g.layer_rope_theta(5), g.layer_rope_theta(0)), (1e6, 1e4));
        assert_eq!(g.attn_scale(), 1.0 / 16.0);
        assert!(g.tie_word_embeddings && g.pad_token_id == Some(0));
        let g = read(&json!({"model_type": "gemma3_text", "num_hidden_layers": 4,
            "sliding_window_pattern": 2, "rope_theta": 50.0, "rope_local_base_freq": 5.0,
            "pad_token_id": null}))
        .unwrap();
        assert_eq!(g.sliding_layers, [true, false, true, false]);
        assert_eq!(
            (g.rope_theta, g.rope_local_theta, g.pad_token_id),
            (50.0, Some(5.0), None)
        );
        // Gemma 3 4B's legacy keys: `rope_scaling` (linear, 8) scales the full layers only.
        let g = read(&json!({"model_type": "gemma3_text", "num_hidden_layers": 6,
            "rope_theta": 1e6, "rope_local_base_freq": 1e4,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0}}))
        .unwrap();
        let linear = RopeScaling::Linear { factor: 8.0 };
        assert_eq!(g.layer_rope(5), (1e6, Some(&linear)));
        assert_eq!(g.layer_rope(0), (1e4, None));
        let v = to_hf_config(&g, None, DType::F32);
        assert_eq!(
            v["rope_parameters"]["full_attention"]["rope_type"],
            "linear"
        );
        assert_eq!(
            v["rope_parameters"]["sliding_attention"]["rope_type"],
            "default"
        );
        assert_eq!(read(&v).unwrap(), g);
        // Gemma2Config's: soft caps 50 and 30, every second layer full, one RoPE base
        // (10,000), heads of 256, window 4096, 8192 positions; null caps are none.
        let g = read(&json!({"model_type": "gemma2", "num_hidden_layers": 4})).unwrap();
        assert_eq!(
            (g.attn_logit_softcapping, g.final_logit_softcapping),
            (Some(50.0), Some(30.0))
        );
        assert_eq!(g.sliding_layers, [true, false, true, false]);
        assert_eq!((g.rope_theta, g.rope_local_theta), (10_000.0, None));
        assert_eq!(
            (g.head_dim(), g.sliding_window, g.max_position_embeddings),
            (256, Some(4096), 8192)
        );
        assert!(g.tie_word_embeddings && g.pad_token_id == Some(0) && !g.qk_norm());
        let v = to_hf_config(&g, None, DType::F32);
        assert_eq!(read(&v).unwrap(), g);
        let g = read(
            &json!({"model_type": "gemma2", "attn_logit_softcapping": null,
            "final_logit_softcapping": null}),
        )
        .unwrap();
        assert_eq!(
            (g.attn_logit_softcapping, g.final_logit_softcapping),
            (None, None)
        );
        // MistralConfig's window is 4096 unless the key says otherwise; null is none.
        let m = read(&json!({"model_type": "mistral"})).unwrap();
        assert_eq!(m.sliding_window, Some(4096));
        let m = read(&json!({"model_type": "mistral", "sliding_window": null})).unwrap();
        assert_eq!(m.sliding_window, None);
    }

    #[test]
    fn absent_keys_take_transformers_defaults() {
        let cfg = read(&json!({"model_type": "llama", "num_attention_heads": 8})).unwrap();
        assert_eq!(
            (
                cfg.vocab_size,
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_hidden_layers
            ),
            (32000, 4096, 11008, 32)
        );
        assert_eq!((cfg.num_attention_heads, cfg.num_key_value_heads), (8, 8));
        assert_eq!(
            (cfg.max_position_embeddings, cfg.rms_norm_eps),
            (2048, 1e-6)
        );
        assert_eq!((cfg.rope_theta, cfg.initializer_range), (10_000.0, 0.02));
        assert!(!cfg.tie_word_embeddings);
        // null is transformers' None: the default.
        let cfg =
            read(&json!({"model_type": "llama", "num_key_value_heads": null, "head_dim": null}))
                .unwrap();
        assert_eq!(cfg.num_key_value_heads, 32);
    }

    #[test]
    fn rope_theta_is_read_where_transformers_reads_it() {
        let base = |extra: Value| {
            let mut v = to_hf_config(&tiny(), None, DType::F32);
            v.as_object_mut().unwrap().remove("rope_parameters");
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            read(&v)
        };
        // The legacy top-level key, alone.
        assert_eq!(
            base(json!({"rope_theta": 1234.0})).unwrap().rope_theta,
            1234.0
        );
        // rope_parameters' own value wins over the legacy key; without one, the legacy key.
        let both = json!({"rope_theta": 1234.0, "rope_parameters": {"rope_type": "default", "rope_theta": 77.0}});
        assert_eq!(base(both).unwrap().rope_theta, 77.0);
        let no_theta = json!({"rope_theta": 1234.0, "rope_parameters": {"rope_type": "default"}});
        assert_eq!(base(no_theta).unwrap().rope_theta, 1234.0);
        // Neither: 10,000. A legacy `rope_scaling` of the default type is the same RoPE.
        assert_eq!(base(json!({})).unwrap().rope_theta, 10_000.0);
        let legacy = json!({"rope_scaling": {"type": "default"}, "rope_theta": 5.0});
        assert_eq!(base(legacy).unwrap().rope_theta, 5.0);
        // llama3: its four parameters are read, and each is required.
        let l3 = json!({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}});
        let c = base(l3.clone()).unwrap();
        let want = Llama3Rope {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        assert_eq!(
            (c.rope_theta, c.rope_scaling),
            (500000.0, Some(RopeScaling::Llama3(want)))
        );
        let e = base(json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("low_freq_factor") && e.contains("missing"),
            "{e}"
        );
        // Without its own original_max_position_embeddings, llama3's is the model's.
        let mut l3_bare = l3.clone();
        l3_bare["rope_parameters"]
            .as_object_mut()
            .unwrap()
            .remove("original_max_position_embeddings");
        let max = tiny().max_position_embeddings;
        match base(l3_bare).unwrap().rope_scaling {
            Some(RopeScaling::Llama3(r)) => assert_eq!(r.original_max_position_embeddings, max),
            other => panic!("{other:?}"),
        }
        // linear and dynamic (legacy `type` too) take their factor; yarn's original context is
        // the top-level key's before its own, and its factor the ratio of contexts when absent.
        let linear = json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0}});
        assert_eq!(
            base(linear).unwrap().rope_scaling,
            Some(RopeScaling::Linear { factor: 2.0 })
        );
        let dynamic = json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}});
        assert_eq!(
            base(dynamic).unwrap().rope_scaling,
            Some(RopeScaling::Dynamic { factor: 2.0 })
        );
        let yarn = json!({"original_max_position_embeddings": 8, "rope_scaling":
            {"rope_type": "yarn", "original_max_position_embeddings": 4, "beta_fast": 16,
             "truncate": false, "finetuned": true}});
        let want = YarnRope {
            factor: max as f64 / 8.0,
            original_max_position_embeddings: 8,
            beta_fast: Some(16.0),
            beta_slow: None,
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: Some(false),
        };
        assert_eq!(
            base(yarn).unwrap().rope_scaling,
            Some(RopeScaling::Yarn(Box::new(want)))
        );
        for (extra, key, what) in [
            (
                json!({"rope_scaling": {"rope_type": "longrope", "factor": 4.0}}),
                "rope_scaling",
                "longrope",
            ),
            (
                json!({"rope_parameters": {"rope_type": "linear"}}),
                "rope_parameters",
                "factor is missing",
            ),
            (
                json!({"rope_parameters": {"rope_type": "linear", "factor": -2.0}}),
                "rope_parameters",
                "factor -2",
            ),
            (
                json!({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}),
                "rope_parameters",
                "partial_rotary_factor",
            ),
            (
                json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "truncate": "no"}}),
                "rope_scaling",
                "truncate",
            ),
        ] {
            let e = base(extra).unwrap_err().to_string();
            assert!(
                e.starts_with("dir/config.json: ") && e.contains(key) && e.contains(what),
                "{e}"
            );
        }
    }

    /// Phi-3's LongRoPE, as Phi3Config reads it: `su` and `yarn` are its old names, the
    /// top-level original context (4096 when absent) wins; refused on other families.
    #[test]
    fn phi3_reads_longrope() {
        let base = |rope: Value, extra: Value| {
            let mut v = to_hf_config(
                &LlamaConfig {
                    model_type: LlamaFamily::Phi3,
                    ..tiny()
                },
                None,
                DType::F32,
            );
            v.as_object_mut()
                .unwrap()
                .remove("original_max_position_embeddings");
            v["rope_scaling"] = rope;
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            read(&v)
        };
        let factors = json!({"short_factor": [1.0, 1.0, 2.0, 2.0],
            "long_factor": [1.0, 2.0, 4.0, 8.0]});
        for name in ["longrope", "su", "yarn"] {
            let mut rope = factors.clone();
            rope["type"] = name.into();
            let c = base(rope, json!({})).unwrap();
            let Some(RopeScaling::Longrope(l)) = &c.rope_scaling else {
                panic!("{name}: {:?}", c.rope_scaling)
            };
            assert_eq!(l.original_max_position_embeddings, 4096, "{name}");
            assert_eq!((l.factor, l.long_factor[3]), (None, 8.0));
            // Written back with the original context at the top level, read the same.
            let v = to_hf_config(&c, None, DType::F32);
            assert_eq!(v["original_max_position_embeddings"], 4096);
            assert_eq!(v["rope_parameters"]["rope_type"], "longrope");
            assert_eq!(read(&v).unwrap(), c);
        }
        let mut rope = factors.clone();
        rope["rope_type"] = "longrope".into();
        rope["original_max_position_embeddings"] = 16.into();
        let c = base(rope.clone(), json!({"original_max_position_embeddings": 8})).unwrap();
        let Some(RopeScaling::Longrope(l)) = &c.rope_scaling else {
            panic!("{:?}", c.rope_scaling)
        };
        assert_eq!(l.original_max_position_embeddings, 8);
        assert!(c.cache_expires(8, 9) && !c.cache_expires(7, 8) && !c.cache_expires(9, 10));
        // On Llama, or with a factor per frequency missing: refused.
        let mut v = to_hf_config(&tiny(), None, DType::F32);
        v["rope_parameters"] = rope.clone();
        let e = read(&v).unwrap_err().to_string();
        assert!(e.contains("longrope"), "{e}");
        rope["short_factor"] = json!([1.0, 1.0]);
        let e = base(rope, json!({})).unwrap_err().to_string();
        assert!(e.contains("4 (the rotary dimensions / 2)"), "{e}");
    }

    /// Every scaling is written as transformers writes it and reads back the same.
    #[test]
    fn rope_scalings_round_trip_through_config_json() {
        let l3 = RopeScaling::Llama3(Llama3Rope {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16,
        });
        let yarn = RopeScaling::Yarn(Box::new(YarnRope {
            factor: 4.0,
            original_max_position_embeddings: 16,
            beta_fast: None,
            beta_slow: Some(2.0),
            attention_factor: None,
            mscale: Some(0.7),
            mscale_all_dim: Some(1.0),
            truncate: Some(true),
        }));
        for s in [
            l3,
            yarn,
            RopeScaling::Linear { factor: 2.0 },
            RopeScaling::Dynamic { factor: 3.0 },
        ] {
            let cfg = LlamaConfig {
                rope_scaling: Some(s.clone()),
                ..tiny()
            };
            let v = to_hf_config(&cfg, None, DType::F32);
            assert_eq!(v["rope_parameters"]["rope_type"], s.name());
            assert_eq!(v["rope_parameters"]["rope_theta"], cfg.rope_theta);
            assert_eq!(read(&v).unwrap(), cfg);
        }
    }

    #[test]
    fn unsupported_variants_are_refused_naming_the_key() {
        let cases = [
            (json!({"model_type": "mixtral"}), "model_type"),
            (json!({"hidden_act": "gelu"}), "hidden_act"),
            (json!({"attention_bias": 1}), "attention_bias"),
            (
                json!({"model_type": "qwen2", "use_sliding_window": true}),
                "use_sliding_window",
            ),
            (
                json!({"model_type": "mistral", "sliding_window": "4k"}),
                "sliding_window",
            ),
            (
                json!({"model_type": "mistral", "sliding_window": 0}),
                "sliding_window",
            ),
            (json!({"attention_dropout": 0.1}), "attention_dropout"),
            (json!({"head_dim": 7}), "head_dim"),
            (json!({"head_dim": -8}), "head_dim"),
            (
                json!({"model_type": "qwen3", "use_sliding_window": true}),
                "use_sliding_window",
            ),
            (
                json!({"model_type": "gemma3_text", "final_logit_softcapping": "30"}),
                "final_logit_softcapping",
            ),
            (
                json!({"model_type": "gemma2", "attn_logit_softcapping": -1.0}),
                "attn_logit_softcapping",
            ),
            (
                json!({"model_type": "gemma2", "use_bidirectional_attention": true}),
                "use_bidirectional_attention",
            ),
            (
                json!({"model_type": "gemma3_text", "layer_types": ["full_attention"]}),
                "layer_types",
            ),
            (
                json!({"model_type": "gemma3_text", "rope_parameters": {"sliding_attention":
                    {"rope_type": "linear", "factor": 8.0}}}),
                "sliding_attention",
            ),
            (
                json!({"model_type": "gemma3_text", "rope_scaling": {"rope_type": "longrope"}}),
                "full_attention",
            ),
            (
                json!({"model_type": "gemma3_text", "hidden_activation": "silu"}),
                "hidden_activation",
            ),
            (
                json!({"model_type": "phi3", "resid_pdrop": 0.1}),
                "resid_pdrop",
            ),
            (
                json!({"model_type": "phi3", "embd_pdrop": 0.1}),
                "embd_pdrop",
            ),
            (
                json!({"model_type": "phi3", "partial_rotary_factor": 0.1}),
                "partial_rotary_factor",
            ),
            (
                json!({"partial_rotary_factor": 0.75}),
                "partial_rotary_factor",
            ),
            (
                json!({"model_type": "phi3", "rope_scaling": {"rope_type": "longrope",
                    "short_factor": [1.0], "long_factor": [1.0]}}),
                "longrope",
            ),
            (
                json!({"model_type": "phi3", "rope_scaling": {"rope_type": "linear",
                    "factor": 2.0}}),
                "phi3",
            ),
            (json!({"num_key_value_heads": 3}), "num_key_value_heads"),
            (json!({"hidden_size": "32"}), "hidden_size"),
            (json!({"tie_word_embeddings": "yes"}), "tie_word_embeddings"),
            (json!({"rms_norm_eps": "small"}), "rms_norm_eps"),
            (
                json!({"num_hidden_layers": 1u64 << 40}),
                "num_hidden_layers",
            ),
            (
                json!({"vocab_size": 1 << 23, "hidden_size": 1 << 19, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": null}),
                "parameters",
            ),
        ];
        for (edit, key) in cases {
            let mut v = to_hf_config(&tiny(), None, DType::F32);
            for (k, x) in edit.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = read(&v).unwrap_err().to_string();
            assert!(
                e.starts_with("dir/config.json: ") && e.contains(key),
                "{key}: {e}"
            );
        }
        let mut v = to_hf_config(&tiny(), None, DType::F32);
        v.as_object_mut().unwrap().remove("model_type");
        let e = read(&v).unwrap_err().to_string();
        assert!(e.contains("model_type"), "{e}");
        // swish is transformers' other name for SiLU.
        let mut v = to_hf_config(&tiny(), None, DType::F32);
        v["hidden_act"] = "swish".into();
        assert_eq!(read(&v).unwrap(), tiny());
    }

    #[test]
    fn tensors_load_with_or_without_the_model_prefix() {
        let cfg = LlamaConfig {
            tie_word_embeddings: true,
            ..tiny()
        };
        let params = super::super::init_params(
            &cfg,
            &mut lantern_kernels::Rng::new(1),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let path = Path::new("m.safetensors");
        let exported = export_tensors(&params, DType::F32).unwrap();
        assert!(!exported.contains_key("lm_head.weight"));
        // A bare LlamaModel's names, an old per-layer inv_freq buffer and a tied head's copy.
        let mut bare: BTreeMap<String, Tensor> = exported
            .iter()
            .map(|(n, t)| (n.strip_prefix("model.").unwrap_or(n).to_string(), t.clone()))
            .collect();
        let inv = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        bare.insert("layers.0.self_attn.rotary_emb.inv_freq".into(), inv);
        bare.insert(
            "lm_head.weight".into(),
            exported["model.embed_tokens.weight"].clone(),
        );
        let p2 = params_from_tensors(bare, &cfg, path, DType::F32).unwrap();
        assert_eq!(p2.names(), params.names());
        let mut extra = exported.clone();
        extra.insert(
            "model.layers.0.self_attn.q_proj.bias".into(),
            Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = params_from_tensors(extra, &cfg, path, DType::F32)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unexpected") && e.contains("q_proj.bias"), "{e}");
    }
}

//! The Hugging Face `GPT2LMHeadModel` folder format: `config.json` and `model.safetensors`.
//!
//! Our parameter names and layouts are HF's, so export is a copy. Import accepts checkpoints
//! written by `transformers` (`save_pretrained`), with or without the `transformer.` prefix
//! (a bare `GPT2Model` has none), and skips the non-parameter buffers older versions saved.

use super::{param_shapes, GptConfig};
use crate::{hf_config, safetensors_io, Error, Params, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `config.json` for `GPT2LMHeadModel`. `eot_id` becomes BOS/EOS when known.
pub fn to_hf_config(cfg: &GptConfig, eot_id: Option<u32>, dtype: DType) -> Value {
    let dtype = hf_config::dtype_name(dtype);
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": null,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": true,
        "use_cache": true,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "torch_dtype": dtype,
    })
}

/// Reads a `GPT2Config` `config.json`, refusing variants our model does not implement.
pub fn config_from_hf(path: &Path) -> Result<GptConfig> {
    config_from_json(&hf_config::read_json(path)?, path)
}

/// [`config_from_hf`] of the parsed file (`path` is for messages).
pub(crate) fn config_from_json(v: &Value, path: &Path) -> Result<GptConfig> {
    let err = hf_config::file_err(path);
    let int = |k: &str| hf_config::usize_key(v, k, path);
    let float = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
    if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
        if mt != "gpt2" {
            return Err(err(format!("model_type is {mt:?}, expected \"gpt2\"")));
        }
    }
    let act = v
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(err(format!(
            "activation_function {act:?} is not supported (GPT-2 uses gelu_new)"
        )));
    }
    let n_embd = int("n_embd")?;
    if let Some(inner) = v.get("n_inner").and_then(Value::as_u64) {
        if inner as usize != 4 * n_embd {
            return Err(err(format!(
                "n_inner {inner} != 4 * n_embd is not supported"
            )));
        }
    }
    for (k, want) in [("tie_word_embeddings", true), ("scale_attn_weights", true)] {
        if let Some(b) = v.get(k).and_then(Value::as_bool) {
            if b != want {
                return Err(err(format!("\"{k}\": {b} is not supported")));
            }
        }
    }
    for k in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if v.get(k).and_then(Value::as_bool) == Some(true) {
            return Err(err(format!("\"{k}\": true is not supported")));
        }
    }
    let cfg = GptConfig {
        vocab_size: int("vocab_size")?,
        n_positions: int("n_positions")?,
        n_embd,
        n_layer: int("n_layer")?,
        n_head: int("n_head")?,
        dropout: float("resid_pdrop", 0.0),
        layer_norm_epsilon: float("layer_norm_epsilon", 1e-5),
    };
    cfg.validate().map_err(|e| err(e.to_string()))?;
    check_plausible(&cfg, path)?;
    Ok(cfg)
}

/// Bounds far above any GPT-2-style model, checked before anything is sized from a config read
/// from disk: a hostile `n_layer = 10^12` must be an error, not a loop or an allocation.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1 << 12;
const MAX_PARAMS: usize = 1 << 40;

/// Refuses configs whose sizes no real model has (`path` is for messages).
pub fn check_plausible(cfg: &GptConfig, path: &Path) -> Result<()> {
    let err = |m: String| Error::File {
        path: path.to_path_buf(),
        msg: m,
    };
    for (k, v, max) in [
        ("vocab_size", cfg.vocab_size, 1 << 24),
        ("n_positions", cfg.n_positions, MAX_DIM),
        ("n_embd", cfg.n_embd, MAX_DIM),
        ("n_head", cfg.n_head, MAX_DIM),
        ("n_layer", cfg.n_layer, MAX_LAYERS),
    ] {
        if v > max {
            return Err(err(format!("{k} {v} is implausibly large (limit {max})")));
        }
    }
    // With the bounds above this product cannot overflow u128.
    let c = cfg.n_embd as u128;
    let n =
        (cfg.vocab_size as u128 + cfg.n_positions as u128) * c + cfg.n_layer as u128 * 12 * c * c;
    if n > MAX_PARAMS as u128 {
        return Err(err(format!(
            "config describes about {n} parameters, more than the {MAX_PARAMS} this build accepts"
        )));
    }
    Ok(())
}

/// Buffers and tied copies that HF files may hold but that are not parameters.
fn ignorable(name: &str) -> bool {
    name == "lm_head.weight" || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Builds [`Params`] from named tensors, checking names and shapes against `cfg`. Missing and
/// unexpected tensors are all reported by name. `path` is for messages.
pub fn params_from_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    cfg: &GptConfig,
    path: &Path,
    dtype: DType,
) -> Result<Params> {
    let mut params = Params::new();
    let mut missing = Vec::new();
    for (name, shape) in param_shapes(cfg) {
        let bare = name
            .strip_prefix("transformer.")
            .unwrap_or(&name)
            .to_string();
        match safetensors_io::take_shaped(&mut tensors, &name, &[&name, &bare], &shape, path)? {
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
    let unexpected: Vec<String> = tensors.into_keys().filter(|n| !ignorable(n)).collect();
    if !unexpected.is_empty() {
        return Err(Error::Unexpected {
            path: path.to_path_buf(),
            names: unexpected,
        });
    }
    Ok(params)
}

/// Loads `model.safetensors` (our checkpoints or HF's) into parameters for `cfg`: the config
/// must be plausible, every tensor floating point, and names and shapes exactly the model's.
/// A folder that holds only a PyTorch pickle gets the refusal that explains how to convert it.
pub fn load_params(path: &Path, cfg: &GptConfig, device: &Device, dtype: DType) -> Result<Params> {
    safetensors_io::refuse_pickle_weights(path)?;
    check_plausible(cfg, path)?;
    let tensors = safetensors_io::load_raw(path, device)?;
    safetensors_io::check_float(&tensors, path)?;
    params_from_tensors(tensors, cfg, path, dtype)
}

/// The tensors to write for an HF-loadable `model.safetensors`: every parameter once (the tied
/// head is not written: safetensors refuses two names on one buffer, and HF re-ties on load).
pub fn export_tensors(params: &Params, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    params
        .iter()
        .map(|(n, v)| Ok((n.to_string(), v.as_tensor().to_dtype(dtype)?)))
        .collect()
}

//! What the Hugging Face `config.json` readers and writers of every family share: reading the
//! file, the `id2label`/`label2id` maps of classifiers, the `dtype` names, and the report of
//! what loading a checkpoint did besides copying tensors.

use crate::{Error, Result};
use candle_core::DType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// What loading did besides copying tensors, as transformers reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Head parameters the checkpoint lacked, initialised fresh ("newly initialized").
    pub newly_initialised: Vec<String>,
    /// Tensors of the checkpoint this model does not use (e.g. a pooler loaded into
    /// BertForMaskedLM, or an MLM head into a classifier); they are dropped.
    pub unused: Vec<String>,
}

/// An error about the file at `path`.
pub(crate) fn file_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |msg| Error::File {
        path: path.to_path_buf(),
        msg,
    }
}

/// transformers' `model_type` of the multimodal Gemma 3 (`Gemma3ForConditionalGeneration`:
/// Gemma 3 4B and larger), whose language model is read as `gemma3_text`.
pub const GEMMA3_MULTIMODAL: &str = "gemma3";

/// The non-negative integer under `key` of a config read from `path`, or an error naming both.
pub(crate) fn usize_key(v: &Value, key: &str, path: &Path) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| file_err(path)(format!("missing or non-integer \"{key}\"")))
}

/// The JSON object of a `config.json`; a multimodal Gemma 3's is its language model's
/// ([`language_model_of`]).
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let err = file_err(path);
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v = serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    language_model_of(v, path)
}

/// The config of the language model a multimodal Gemma 3 folder holds, which is what Lantern
/// reads of it (text only: the vision tower's tensors are left out when loading, and the
/// export is a `Gemma3ForCausalLM`): its `text_config`, of model_type `gemma3_text`, taking
/// the top-level `tie_word_embeddings` where it has none. Any other config is returned as is.
fn language_model_of(v: Value, path: &Path) -> Result<Value> {
    if v.get("model_type").and_then(Value::as_str) != Some(GEMMA3_MULTIMODAL) {
        return Ok(v);
    }
    let mut text = match v.get("text_config") {
        Some(t @ Value::Object(_)) => t.clone(),
        // Gemma3Config's default language model is Gemma3TextConfig's defaults.
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(t) => {
            return Err(file_err(path)(format!(
                "\"text_config\" is {t}, expected an object (a multimodal Gemma 3's language model)"
            )))
        }
    };
    match text.get("model_type").and_then(Value::as_str) {
        None | Some("gemma3_text") => text["model_type"] = "gemma3_text".into(),
        Some(other) => {
            return Err(file_err(path)(format!(
                "\"text_config\".model_type is {other:?}, expected \"gemma3_text\""
            )))
        }
    }
    if let (None, Some(tie)) = (
        text.get("tie_word_embeddings"),
        v.get("tie_word_embeddings"),
    ) {
        text["tie_word_embeddings"] = tie.clone();
    }
    Ok(text)
}

/// The keys of a language model's `config.json` that name its special tokens by id.
const SPECIAL_ID_KEYS: [&str; 2] = ["bos_token_id", "eos_token_id"];

/// `bos_token_id` and `eos_token_id` of the model folder's `config.json` at `path` (each an id,
/// a list of ids, as Llama 3's end-of-turn list, or null), as written there; a multimodal Gemma
/// 3's from its language model where the top level has none. Empty when the file cannot be read
/// (its readers report that).
pub fn special_ids(path: &Path) -> serde_json::Map<String, Value> {
    let Some(v) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return Default::default();
    };
    let text = language_model_of(v.clone(), path).unwrap_or(Value::Null);
    SPECIAL_ID_KEYS
        .iter()
        .filter_map(|&k| {
            let x = v.get(k).or_else(|| text.get(k))?;
            Some((k.to_string(), x.clone()))
        })
        .collect()
}

/// The ids under `key` of [`special_ids`]' map (one id or a list of them; none when absent or
/// null), in order.
pub fn special_id_list(ids: &serde_json::Map<String, Value>, key: &str) -> Vec<u32> {
    match ids.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
        Some(one) => one.as_u64().into_iter().collect(),
        None => Vec::new(),
    }
    .into_iter()
    .map(|x| x as u32)
    .collect()
}

/// Writes `ids` ([`special_ids`] of the folder a model came from) into a `config.json` being
/// written, in place of the ids it was given: the model keeps its own end-of-sequence ids
/// (which transformers' `generate` stops at) however its folder is rewritten.
pub fn keep_special_ids(cfg: &mut Value, ids: &serde_json::Map<String, Value>) {
    if let Value::Object(o) = cfg {
        for (k, x) in ids {
            o.insert(k.clone(), x.clone());
        }
    }
}

/// A config's `id2label` (empty when it has none): keys must be integers, names strings.
pub(crate) fn id2label(v: &Value, path: &Path) -> Result<BTreeMap<usize, String>> {
    let err = file_err(path);
    let mut out = BTreeMap::new();
    if let Some(m) = v.get("id2label").and_then(Value::as_object) {
        for (k, name) in m {
            let i: usize = k
                .parse()
                .map_err(|_| err(format!("id2label key {k:?} is not an integer")))?;
            let name = name
                .as_str()
                .ok_or_else(|| err(format!("id2label[{k}] is not a string")))?;
            out.insert(i, name.to_string());
        }
    }
    Ok(out)
}

/// Sets `id2label` and `label2id` of a classifier's config `v`.
/// The `problem_type` a sequence classifier's `config.json` records: the one set, else
/// `single_label_classification`, except for a single output without one (a reward model, as
/// TRL saves it), which has none: transformers reads one label as a score.
pub(crate) fn problem_type_of(set: Option<&str>, num_labels: usize) -> Option<&str> {
    match (set, num_labels) {
        (Some(p), _) => Some(p),
        (None, 1) => None,
        (None, _) => Some("single_label_classification"),
    }
}

pub(crate) fn set_label_maps(v: &mut Value, id2label: &BTreeMap<usize, String>) {
    let forward: serde_json::Map<String, Value> = id2label
        .iter()
        .map(|(i, n)| (i.to_string(), Value::from(n.clone())))
        .collect();
    let backward: serde_json::Map<String, Value> = id2label
        .iter()
        .map(|(i, n)| (n.clone(), Value::from(*i)))
        .collect();
    v["id2label"] = Value::Object(forward);
    v["label2id"] = Value::Object(backward);
}

/// transformers' name of a weights dtype (`torch_dtype`/`dtype`).
pub(crate) fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn special_ids_are_kept_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let ids = |v: Value| {
            std::fs::write(&p, v.to_string()).unwrap();
            special_ids(&p)
        };
        let got = ids(json!({"model_type": "llama", "bos_token_id": 1, "eos_token_id": [2, 9]}));
        assert_eq!(
            Value::Object(got.clone()),
            json!({"bos_token_id": 1, "eos_token_id": [2, 9]})
        );
        let mut cfg = json!({"bos_token_id": 5, "eos_token_id": 5, "vocab_size": 10});
        keep_special_ids(&mut cfg, &got);
        assert_eq!(
            cfg,
            json!({"bos_token_id": 1, "eos_token_id": [2, 9], "vocab_size": 10})
        );
        // A multimodal Gemma 3's language model holds them when the top level does not.
        let mm = json!({"model_type": "gemma3", "text_config": {"eos_token_id": [1, 106]}});
        assert_eq!(Value::Object(ids(mm)), json!({"eos_token_id": [1, 106]}));
        assert!(ids(json!({"model_type": "gpt2"})).is_empty());
        assert!(special_ids(&dir.path().join("missing.json")).is_empty());
    }
}

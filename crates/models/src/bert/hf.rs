//! The Hugging Face BERT folder format: `config.json` and `model.safetensors`, for BERT and
//! for RoBERTa and XLM-RoBERTa (`model_type` `roberta`, `xlm-roberta`; see [`Family`]).
//!
//! Names and layouts are HF's, so export is a copy. Import accepts checkpoints with or without
//! the `bert.` (`roberta.`) prefix (a bare `BertModel` such as all-MiniLM-L6-v2 has none),
//! skips buffers (`embeddings.position_ids`, `embeddings.token_type_ids`) and the tied MLM
//! decoder, and, like transformers, initialises a
//! task head the checkpoint lacks and reports it; a missing encoder tensor is an error.
//! A `BertForQuestionAnswering` config has no labels: its `qa_outputs` always has the 2
//! outputs of transformers' default `num_labels`; nor has a `BertForMultipleChoice` one (its
//! `classifier` has one output, a choice's score, whatever the number of choices).

use super::modern::{self, ModernSettings, Pooling};
use super::{init_param, is_head_param, param_shapes, BertConfig, BertHead, Family, QA_OUTPUTS};
use crate::{hf_config, safetensors_io, Error, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::hf_config::LoadReport;

/// DistilBertConfig's defaults for its two head dropouts.
const DISTILBERT_SEQ_DROPOUT: f64 = 0.2;
const DISTILBERT_QA_DROPOUT: f64 = 0.1;

/// ElectraConfig's defaults for the sequence summary of its multiple-choice model: the first
/// token, a dense layer, the exact GELU. Other settings are refused on reading.
fn electra_summary() -> [(&'static str, Value); 3] {
    [
        ("summary_type", json!("first")),
        ("summary_use_proj", json!(true)),
        ("summary_activation", json!("gelu")),
    ]
}
const ELECTRA_SUMMARY_LAST_DROPOUT: f64 = 0.1;

/// The keys BertConfig and RobertaConfig share.
fn bert_keys(cfg: &BertConfig, head: BertHead, dtype: &str) -> Value {
    json!({
        "architectures": [cfg.architecture(head)],
        "model_type": cfg.model_type.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "classifier_dropout": cfg.classifier_dropout,
        "pad_token_id": cfg.pad_token_id,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": true,
        "dtype": dtype,
    })
}

/// `config.json` for `head`'s architecture, with `id2label`/`label2id` for classifiers (none
/// for question answering: transformers' default of 2 labels is its start and end).
pub fn to_hf_config(cfg: &BertConfig, head: BertHead, dtype: DType) -> Value {
    let dtype = hf_config::dtype_name(dtype);
    let mut v = match cfg.model_type {
        // DistilBertConfig's own names for the same numbers.
        Family::DistilBert => json!({
            "architectures": [cfg.architecture(head)],
            "model_type": cfg.model_type.model_type(),
            "vocab_size": cfg.vocab_size,
            "dim": cfg.hidden_size,
            "n_layers": cfg.num_hidden_layers,
            "n_heads": cfg.num_attention_heads,
            "hidden_dim": cfg.intermediate_size,
            "activation": cfg.hidden_act,
            "max_position_embeddings": cfg.max_position_embeddings,
            "sinusoidal_pos_embds": false,
            "dropout": cfg.hidden_dropout_prob,
            "attention_dropout": cfg.attention_probs_dropout_prob,
            "seq_classif_dropout": cfg.classifier_dropout.unwrap_or(DISTILBERT_SEQ_DROPOUT),
            "qa_dropout": cfg.qa_dropout.unwrap_or(DISTILBERT_QA_DROPOUT),
            "pad_token_id": cfg.pad_token_id,
            "initializer_range": 0.02,
            "tie_word_embeddings": true,
            "dtype": dtype,
        }),
        Family::ModernBert => match &cfg.modern {
            Some(m) => modern_keys(cfg, m, head, dtype),
            None => bert_keys(cfg, head, dtype),
        },
        _ => bert_keys(cfg, head, dtype),
    };
    if let Some(e) = cfg.embedding_size {
        v["embedding_size"] = Value::from(e);
    }
    if cfg.model_type == Family::Electra {
        // ElectraSequenceSummary's settings (its multiple-choice head): the only ones we
        // implement, which are ElectraConfig's defaults.
        for (k, x) in electra_summary() {
            v[k] = x;
        }
        v["summary_last_dropout"] = Value::from(
            cfg.summary_last_dropout
                .unwrap_or(ELECTRA_SUMMARY_LAST_DROPOUT),
        );
    }
    if matches!(cfg.model_type, Family::Roberta | Family::XlmRoberta) {
        // RobertaConfig's special ids (`<s>` and `</s>`); transformers' defaults, which every
        // RoBERTa and XLM-R checkpoint uses.
        v["bos_token_id"] = Value::from(0);
        v["eos_token_id"] = Value::from(2);
    }
    if head.is_classifier() {
        hf_config::set_label_maps(&mut v, &cfg.id2label);
    }
    // transformers' configs accept only the three problem types of sequence classification;
    // without one, a single output (a reward model's) is left for transformers to read as a
    // score.
    if head == BertHead::SequenceClassification {
        if let Some(p) = hf_config::problem_type_of(cfg.problem_type.as_deref(), cfg.id2label.len())
        {
            v["problem_type"] = Value::from(p);
        }
    }
    v
}

/// Reads a BERT, RoBERTa, XLM-RoBERTa, DistilBERT or ELECTRA `config.json`; returns the config
/// and the head its
/// `architectures` names (`None` when absent or not an architecture of the family we
/// implement).
pub fn config_from_hf(path: &Path) -> Result<(BertConfig, Option<BertHead>)> {
    config_from_json(&hf_config::read_json(path)?, path)
}

/// [`config_from_hf`] of the parsed file (`path` is for messages).
pub(crate) fn config_from_json(v: &Value, path: &Path) -> Result<(BertConfig, Option<BertHead>)> {
    let err = hf_config::file_err(path);
    let family = match v.get("model_type").and_then(Value::as_str) {
        Some(mt) => Family::from_model_type(mt).ok_or_else(|| {
            err(format!(
                "model_type is {mt:?}, expected \"bert\", \"roberta\", \"xlm-roberta\", \
                 \"distilbert\", \"electra\" or \"modernbert\""
            ))
        })?,
        None => Family::Bert,
    };
    // DistilBertConfig names the same numbers differently.
    let distil = family == Family::DistilBert;
    let key = |k: &'static str| -> &'static str {
        match (distil, k) {
            (true, "hidden_size") => "dim",
            (true, "num_hidden_layers") => "n_layers",
            (true, "num_attention_heads") => "n_heads",
            (true, "intermediate_size") => "hidden_dim",
            (true, "hidden_act") => "activation",
            (true, "hidden_dropout_prob") => "dropout",
            (true, "attention_probs_dropout_prob") => "attention_dropout",
            _ => k,
        }
    };
    if distil && v.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
        return Err(err(
            "\"sinusoidal_pos_embds\": true is not supported (only learned positions)".into(),
        ));
    }
    let int = |k: &str| hf_config::usize_key(v, k, path);
    let float = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
    if let Some(pe) = v.get("position_embedding_type").and_then(Value::as_str) {
        if pe != "absolute" {
            return Err(err(format!(
                "position_embedding_type {pe:?} is not supported (only \"absolute\")"
            )));
        }
    }
    if v.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
        return Err(err(
            "\"tie_word_embeddings\": false is not supported (the MLM decoder is tied)".into(),
        ));
    }
    let mut id2label = hf_config::id2label(v, path)?;
    let head = match v
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(BertHead::from_family_architecture)
    {
        Some((f, h)) if f == family => Some(h),
        Some((f, h)) => {
            return Err(err(format!(
                "architectures names a {} model ({}{}) but model_type is {:?}",
                f.model_type(),
                f.class_prefix(),
                h.class_suffix(),
                family.model_type()
            )))
        }
        None => None,
    };
    if head == Some(BertHead::QuestionAnswering) {
        // transformers sizes `qa_outputs` by num_labels: id2label's size, else a
        // "num_labels" key. Only the 2 of start and end is a head we implement.
        let n = match v.get("id2label").and_then(Value::as_object) {
            Some(m) => Some(m.len()),
            None => v
                .get("num_labels")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
        };
        if let Some(n) = n.filter(|&n| n != QA_OUTPUTS) {
            return Err(err(format!(
                "{}ForQuestionAnswering with num_labels {n} (from id2label or num_labels): \
                 only {QA_OUTPUTS} outputs, the start and end logits, are supported",
                family.class_prefix()
            )));
        }
    }
    if !head.is_some_and(BertHead::is_classifier) {
        // transformers writes a default {0: LABEL_0, 1: LABEL_1} into every config; only a
        // classifier's labels mean anything.
        id2label.clear();
    }
    if family == Family::Electra {
        for (k, want) in electra_summary() {
            if let Some(x) = v.get(k).filter(|x| **x != want) {
                return Err(err(format!(
                    "{k} {x} is not supported: ELECTRA's sequence summary is implemented with \
                     ElectraConfig's defaults only ({k} {want})"
                )));
            }
        }
        for k in ["summary_proj_to_labels", "summary_first_dropout"] {
            if v.get(k)
                .is_some_and(|x| *x != json!(false) && *x != json!(0) && !x.is_null())
            {
                return Err(err(format!(
                    "{k} {} is not supported: ELECTRA's sequence summary is implemented with \
                     ElectraConfig's defaults only (no {k})",
                    v[k]
                )));
            }
        }
    }
    if family == Family::ModernBert {
        let cfg = modern_config(v, path, head, id2label)?;
        return Ok((cfg, head));
    }
    // RobertaConfig's default pad id is 1 (`<pad>`), the others' 0.
    let default_pad = match family {
        Family::Roberta | Family::XlmRoberta => 1,
        Family::Bert | Family::DistilBert | Family::Electra | Family::ModernBert => 0,
    };
    let cfg = BertConfig {
        model_type: family,
        vocab_size: int("vocab_size")?,
        hidden_size: int(key("hidden_size"))?,
        num_hidden_layers: int(key("num_hidden_layers"))?,
        num_attention_heads: int(key("num_attention_heads"))?,
        intermediate_size: int(key("intermediate_size"))?,
        hidden_act: v
            .get(key("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or("gelu")
            .to_string(),
        max_position_embeddings: int("max_position_embeddings")?,
        // DistilBERT has no token types (and a fixed LayerNorm eps).
        type_vocab_size: match distil {
            true => 0,
            false => v
                .get("type_vocab_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
        },
        layer_norm_eps: match distil {
            true => 1e-12,
            false => float("layer_norm_eps", 1e-12),
        },
        hidden_dropout_prob: float(key("hidden_dropout_prob"), 0.1),
        attention_probs_dropout_prob: float(key("attention_probs_dropout_prob"), 0.1),
        classifier_dropout: match distil {
            true => Some(float("seq_classif_dropout", DISTILBERT_SEQ_DROPOUT)),
            false => v.get("classifier_dropout").and_then(Value::as_f64),
        },
        qa_dropout: distil.then(|| float("qa_dropout", DISTILBERT_QA_DROPOUT)),
        // ElectraConfig's default is 128.
        embedding_size: match family {
            Family::Electra => Some(
                v.get("embedding_size")
                    .and_then(Value::as_u64)
                    .unwrap_or(128) as usize,
            ),
            _ => None,
        },
        summary_last_dropout: (family == Family::Electra)
            .then(|| float("summary_last_dropout", ELECTRA_SUMMARY_LAST_DROPOUT)),
        pad_token_id: v
            .get("pad_token_id")
            .and_then(Value::as_u64)
            .unwrap_or(default_pad) as u32,
        id2label,
        modern: None,
        problem_type: problem_type(v, head),
    };
    cfg.validate().map_err(|e| err(e.to_string()))?;
    Ok((cfg, head))
}

/// A sequence classifier's `problem_type`; none for the other heads.
fn problem_type(v: &Value, head: Option<BertHead>) -> Option<String> {
    match head {
        Some(BertHead::SequenceClassification) => v
            .get("problem_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// ModernBertConfig's keys (transformers 5's `layer_types` and `rope_parameters`, or the
/// `global_attn_every_n_layers`, `global_rope_theta` and `local_rope_theta` of earlier
/// releases and of the published checkpoints) as a [`BertConfig`].
fn modern_config(
    v: &Value,
    path: &Path,
    head: Option<BertHead>,
    id2label: BTreeMap<usize, String>,
) -> Result<BertConfig> {
    let err = hf_config::file_err(path);
    let int = |k: &str| hf_config::usize_key(v, k, path);
    let float = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
    let flag = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
    let string = |k: &str, d: &str| v.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    let layers = int("num_hidden_layers")?;
    let mut m = ModernSettings::new(layers);
    m.global_layers = match v.get("layer_types").filter(|x| !x.is_null()) {
        Some(Value::Array(types)) => types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(true),
                Some("sliding_attention") => Ok(false),
                _ => Err(err(format!(
                    "layer_types holds {t}: expected \"full_attention\" or \"sliding_attention\""
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => return Err(err(format!("layer_types {other} is not a list"))),
        None => modern::every_nth(
            layers,
            v.get("global_attn_every_n_layers")
                .and_then(Value::as_u64)
                .map_or(modern::GLOBAL_EVERY, |n| n as usize),
        ),
    };
    m.global_rope_theta = float("global_rope_theta", m.global_rope_theta);
    m.local_rope_theta = float("local_rope_theta", m.local_rope_theta);
    if let Some(rope) = v.get("rope_parameters").filter(|x| !x.is_null()) {
        for (kind, theta) in [
            ("full_attention", &mut m.global_rope_theta),
            ("sliding_attention", &mut m.local_rope_theta),
        ] {
            let Some(p) = rope.get(kind) else { continue };
            match p.get("rope_type").and_then(Value::as_str) {
                None | Some("default") => {}
                Some(t) => {
                    return Err(err(format!(
                        "rope_parameters.{kind}.rope_type {t:?} is not supported (only \"default\")"
                    )))
                }
            }
            if let Some(x) = p.get("rope_theta").and_then(Value::as_f64) {
                *theta = x;
            }
        }
    }
    if v.get("rope_scaling").is_some_and(|x| !x.is_null()) {
        return Err(err("rope_scaling is not supported for modernbert".into()));
    }
    for (k, want) in [
        ("hidden_activation", "gelu"),
        ("classifier_activation", "gelu"),
    ] {
        let got = string(k, want);
        if got != want {
            return Err(err(format!(
                "{k} {got:?} is not supported (only {want:?}, the exact erf form)"
            )));
        }
    }
    m.local_attention = v
        .get("local_attention")
        .and_then(Value::as_u64)
        .map_or(m.local_attention, |x| x as usize);
    m.norm_bias = flag("norm_bias", m.norm_bias);
    m.attention_bias = flag("attention_bias", m.attention_bias);
    m.mlp_bias = flag("mlp_bias", m.mlp_bias);
    m.classifier_bias = flag("classifier_bias", m.classifier_bias);
    m.decoder_bias = flag("decoder_bias", m.decoder_bias);
    m.classifier_pooling = match string("classifier_pooling", "cls").as_str() {
        "cls" => Pooling::Cls,
        "mean" => Pooling::Mean,
        other => {
            return Err(err(format!(
                "classifier_pooling {other:?} is not supported (\"cls\" or \"mean\")"
            )))
        }
    };
    m.embedding_dropout = float("embedding_dropout", 0.0);
    m.mlp_dropout = float("mlp_dropout", 0.0);
    for k in MODERN_SPECIAL_IDS {
        if let Some(id) = v.get(k).and_then(Value::as_u64) {
            m.special_ids.insert(k.to_string(), id as u32);
        }
    }
    let cfg = BertConfig {
        model_type: Family::ModernBert,
        vocab_size: int("vocab_size")?,
        hidden_size: int("hidden_size")?,
        num_hidden_layers: layers,
        num_attention_heads: int("num_attention_heads")?,
        intermediate_size: int("intermediate_size")?,
        hidden_act: "gelu".into(),
        max_position_embeddings: v
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map_or(8192, |x| x as usize),
        type_vocab_size: 0,
        layer_norm_eps: float("norm_eps", 1e-5),
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: float("attention_dropout", 0.0),
        classifier_dropout: Some(float("classifier_dropout", 0.0)),
        qa_dropout: None,
        embedding_size: None,
        summary_last_dropout: None,
        pad_token_id: v
            .get("pad_token_id")
            .and_then(Value::as_u64)
            .unwrap_or(MODERN_PAD) as u32,
        id2label,
        modern: Some(m),
        problem_type: problem_type(v, head),
    };
    cfg.validate().map_err(|e| err(e.to_string()))?;
    Ok(cfg)
}

/// ModernBertConfig's special ids, kept from the file read and written back.
const MODERN_SPECIAL_IDS: [&str; 4] = [
    "bos_token_id",
    "eos_token_id",
    "cls_token_id",
    "sep_token_id",
];
/// ModernBertConfig's default `pad_token_id`.
const MODERN_PAD: u64 = 50283;

/// `config.json` keys of a ModernBERT config (transformers 5's `layer_types` and
/// `rope_parameters`, and the keys earlier releases read).
fn modern_keys(cfg: &BertConfig, m: &ModernSettings, head: BertHead, dtype: &str) -> Value {
    let rope = |theta: f64| json!({"rope_type": "default", "rope_theta": theta});
    let mut v = json!({
        "architectures": [cfg.architecture(head)],
        "model_type": cfg.model_type.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_activation": cfg.hidden_act,
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": 0.02,
        "initializer_cutoff_factor": 2.0,
        "norm_eps": cfg.layer_norm_eps,
        "norm_bias": m.norm_bias,
        "pad_token_id": cfg.pad_token_id,
        "attention_bias": m.attention_bias,
        "attention_dropout": cfg.attention_probs_dropout_prob,
        "layer_types": m.global_layers.iter().map(|&g| match g {
            true => "full_attention",
            false => "sliding_attention",
        }).collect::<Vec<_>>(),
        "rope_parameters": {
            "full_attention": rope(m.global_rope_theta),
            "sliding_attention": rope(m.local_rope_theta),
        },
        "global_rope_theta": m.global_rope_theta,
        "local_rope_theta": m.local_rope_theta,
        "local_attention": m.local_attention,
        "embedding_dropout": m.embedding_dropout,
        "mlp_bias": m.mlp_bias,
        "mlp_dropout": m.mlp_dropout,
        "decoder_bias": m.decoder_bias,
        "classifier_pooling": m.classifier_pooling,
        "classifier_dropout": cfg.classifier_dropout.unwrap_or(0.0),
        "classifier_bias": m.classifier_bias,
        "classifier_activation": "gelu",
        "sparse_prediction": false,
        "tie_word_embeddings": true,
        "dtype": dtype,
    });
    if let Some(n) = m.global_every() {
        v["global_attn_every_n_layers"] = Value::from(n);
    }
    for (k, id) in &m.special_ids {
        v[k.as_str()] = Value::from(*id);
    }
    v
}

/// Buffers and tied copies HF files may hold that are not parameters.
fn ignorable(name: &str) -> bool {
    name.ends_with("embeddings.position_ids")
        || name.ends_with("embeddings.token_type_ids")
        || name.starts_with("cls.predictions.decoder.")
        || name.starts_with("lm_head.decoder.")
        || name == "vocab_projector.weight"
        || name == "decoder.weight"
}

/// Builds [`Params`] for `head` from named tensors, checking every name and shape against
/// `cfg`. Encoder tensors are found with or without the `bert.` (`roberta.`) prefix. Missing head and
/// pooler tensors are initialised from `rng` and reported; missing encoder tensors are an error naming them
/// all; a tensor whose shape disagrees with `cfg` is an error naming it. `path` is for messages.
pub fn params_from_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    cfg: &BertConfig,
    head: BertHead,
    path: &Path,
    rng: &mut Rng,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    cfg.validate()?;
    let mut params = Params::new();
    let mut report = LoadReport::default();
    let mut missing = Vec::new();
    let device = tensors
        .values()
        .next()
        .map(|t| t.device().clone())
        .unwrap_or(Device::Cpu);
    let prefix = cfg.model_type.encoder_prefix();
    for (name, shape) in param_shapes(cfg, head) {
        let bare = name.strip_prefix(prefix).unwrap_or(&name).to_string();
        let prefixed = format!("{prefix}{bare}");
        let names = [name.as_str(), &bare, &prefixed];
        match safetensors_io::take_shaped(&mut tensors, &name, &names, &shape, path)? {
            // transformers initialises these too: a task head, and the pooler, which
            // `BertForMaskedLM` checkpoints do not have (it is built without one).
            None if is_head_param(&name) || bare.starts_with("pooler.") => {
                let t = init_param(&name, &shape, cfg, rng, &device)?;
                params.insert(name.clone(), t.to_dtype(dtype)?)?;
                report.newly_initialised.push(name);
            }
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
    report.unused = tensors.into_keys().filter(|n| !ignorable(n)).collect();
    Ok((params, report))
}

/// Loads a `model.safetensors` (ours or HF's) into parameters for `head`.
pub fn load_params(
    path: &Path,
    cfg: &BertConfig,
    head: BertHead,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    let tensors = safetensors_io::load(path, device, DType::F32)?;
    params_from_tensors(tensors, cfg, head, path, rng, dtype)
}

/// The tensors of an HF-loadable `model.safetensors`: every parameter once, under the names
/// of `head`'s architecture (the tied decoder is not written; transformers re-ties it).
pub fn export_tensors(params: &Params, dtype: DType) -> Result<BTreeMap<String, Tensor>> {
    params
        .iter()
        .map(|(n, v)| Ok((n.to_string(), v.as_tensor().to_dtype(dtype)?)))
        .collect()
}

//! GPT-2 and Llama with a task head, as transformers builds them:
//! - `GPT2ForSequenceClassification`, `LlamaForSequenceClassification`: the transformer, then
//!   `score` (hidden → num_labels, no bias) on the hidden state of each sequence's last token
//!   that is not the padding id. With causal attention that token has seen the whole sequence,
//!   and padding on the right comes after it, so it sees no padding and no attention mask is
//!   needed; positions count from 0 as in transformers. A token inside the text that happens to
//!   equal the padding id (GPT-2 and Llama are usually padded with their end-of-text token) is a
//!   token like any other: transformers picks the rightmost non-padding token, and so do we.
//! - `GPT2ForTokenClassification`, `LlamaForTokenClassification`: the transformer, dropout
//!   (`classifier_dropout`, else `hidden_dropout`, else 0.1), then a linear layer with bias at
//!   every position (GPT-2's `classifier`, Llama's `score`). Each real token sees only itself and
//!   the tokens before it, never the padding after it.
//!
//! The transformer under a head is the language model's without its output layer: GPT-2's is
//! tied to the embedding anyway; Llama's base model is built as the tied model (its head is then
//! the embedding and never runs), and an `lm_head.weight` in a language model's file is reported
//! unused. Llama's embedding keeps the padding id's row gradient-free (`padding_idx`), GPT-2's has
//! no padding row.

use super::{Decoder, DecoderConfig};
use crate::hf_config::{self, LoadReport};
use crate::{safetensors_io, Error, Mode, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{self as k, Rng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The sequence classifier's weight: (num_labels, hidden), as `nn.Linear` stores it; also
/// Llama's token classifier weight.
pub const SCORE: &str = "score.weight";
/// Llama's token classifier bias (num_labels).
pub const SCORE_BIAS: &str = "score.bias";
/// GPT-2's token classifier parameters: (num_labels, n_embd) and (num_labels).
pub const CLASSIFIER_WEIGHT: &str = "classifier.weight";
pub const CLASSIFIER_BIAS: &str = "classifier.bias";
/// The `initializer_range` transformers draws a fresh head's weight with (biases start at 0).
const HEAD_STD: f64 = 0.02;
/// transformers' dropout before the token classifier when the config sets none.
const DEFAULT_CLASSIFIER_DROPOUT: f64 = 0.1;

/// Which head sits on the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderHead {
    SequenceClassification,
    TokenClassification,
}

/// transformers' class of each head on each family (`model_type`).
const ARCHITECTURES: [(&str, DecoderHead, &str); 20] = {
    use DecoderHead::{SequenceClassification as Seq, TokenClassification as Tok};
    [
        ("gpt2", Seq, "GPT2ForSequenceClassification"),
        ("gpt2", Tok, "GPT2ForTokenClassification"),
        ("llama", Seq, "LlamaForSequenceClassification"),
        ("llama", Tok, "LlamaForTokenClassification"),
        ("mistral", Seq, "MistralForSequenceClassification"),
        ("mistral", Tok, "MistralForTokenClassification"),
        ("qwen2", Seq, "Qwen2ForSequenceClassification"),
        ("qwen2", Tok, "Qwen2ForTokenClassification"),
        ("qwen3", Seq, "Qwen3ForSequenceClassification"),
        ("qwen3", Tok, "Qwen3ForTokenClassification"),
        // transformers has no token classifier for Gemma 3.
        ("gemma3_text", Seq, "Gemma3TextForSequenceClassification"),
        ("gemma", Seq, "GemmaForSequenceClassification"),
        ("gemma", Tok, "GemmaForTokenClassification"),
        ("gemma2", Seq, "Gemma2ForSequenceClassification"),
        ("gemma2", Tok, "Gemma2ForTokenClassification"),
        ("smollm3", Seq, "SmolLM3ForSequenceClassification"),
        ("smollm3", Tok, "SmolLM3ForTokenClassification"),
        // transformers has no token classifier for OLMo 2 either.
        ("olmo2", Seq, "Olmo2ForSequenceClassification"),
        ("phi3", Seq, "Phi3ForSequenceClassification"),
        ("phi3", Tok, "Phi3ForTokenClassification"),
    ]
};

impl DecoderHead {
    /// transformers' architecture name of this head on `lm`'s family. `None` where
    /// transformers has no such class (Gemma 3's and OLMo 2's token classifiers, Granite's
    /// both).
    pub fn architecture(self, lm: &DecoderConfig) -> Option<&'static str> {
        ARCHITECTURES
            .iter()
            .find(|(family, head, _)| *family == lm.model_type() && *head == self)
            .map(|(_, _, name)| *name)
    }

    /// Refuses a head transformers has no class for on `lm`'s family: its export could not
    /// be loaded.
    pub fn check(self, lm: &DecoderConfig) -> Result<()> {
        match self.architecture(lm) {
            Some(_) => Ok(()),
            None => Err(Error::Config(format!(
                "transformers has no {} class for {} (model_type {:?})",
                match self {
                    Self::SequenceClassification => "sequence classification",
                    Self::TokenClassification => "token classification",
                },
                lm.architecture(),
                lm.model_type()
            ))),
        }
    }

    /// The head `architectures` names, if it is one of `lm`'s family.
    pub fn from_architecture(name: &str, lm: &DecoderConfig) -> Option<Self> {
        ARCHITECTURES
            .iter()
            .find(|(family, _, n)| *family == lm.model_type() && *n == name)
            .map(|(_, head, _)| *head)
    }

    /// Whether `name` is a task head of GPT-2 or Llama (before the config is read).
    pub fn is_architecture(name: &str) -> bool {
        ARCHITECTURES.iter().any(|(_, _, n)| *n == name)
    }

    /// The names of the head's weight and bias on `lm`'s family.
    fn names(self, lm: &DecoderConfig) -> (&'static str, Option<&'static str>) {
        match (self, lm) {
            (Self::SequenceClassification, _) => (SCORE, None),
            (Self::TokenClassification, DecoderConfig::Gpt(_)) => {
                (CLASSIFIER_WEIGHT, Some(CLASSIFIER_BIAS))
            }
            (Self::TokenClassification, DecoderConfig::Llama(_)) => (SCORE, Some(SCORE_BIAS)),
        }
    }

    /// Whether `name` is one of the head's parameters on `lm`'s family.
    pub fn is_head_param(self, lm: &DecoderConfig, name: &str) -> bool {
        let (w, b) = self.names(lm);
        name == w || b == Some(name)
    }

    /// The head's parameters with their shapes, for `labels` outputs.
    fn param_shapes(self, lm: &DecoderConfig, labels: usize) -> Vec<(&'static str, Vec<usize>)> {
        let (w, b) = self.names(lm);
        let mut v = vec![(w, vec![labels, lm.hidden_size()])];
        v.extend(b.map(|b| (b, vec![labels])));
        v
    }

    /// A fresh head parameter as transformers draws it: N(0, 0.02) weights, zero biases.
    fn init(name: &str, shape: &[usize], rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let n = shape.iter().product();
        let t = match name.ends_with(".bias") {
            true => Tensor::zeros(shape, DType::F32, &Device::Cpu)?,
            false => Tensor::from_vec(rng.normal_vec(n, HEAD_STD), shape, &Device::Cpu)?,
        };
        Ok(t.to_device(device)?)
    }
}

/// A classifier's config: the language model's sizes, the labels and the padding id.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderClsConfig {
    /// The language model's config. A Llama's `pad_token_id` is this config's, not its own.
    pub lm: DecoderConfig,
    /// Class (tag) names by index (one output for regression).
    pub id2label: BTreeMap<usize, String>,
    /// The id batches are padded with. transformers cannot batch sequence classification
    /// without one; GPT-2 checkpoints have none, and fine-tuning sets it to the end-of-text id.
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    /// The end-of-text id (the first, where config.json lists several).
    pub eos_token_id: Option<u32>,
    /// `"single_label_classification"`, `"multi_label_classification"` or `"regression"`.
    pub problem_type: Option<String>,
    /// The dropout before the token classifier (`None`: transformers' 0.1).
    pub classifier_dropout: Option<f64>,
}

impl DecoderClsConfig {
    /// A classifier config over a language model's: no labels yet.
    pub fn from_lm(lm: DecoderConfig) -> Self {
        let mut lm = lm;
        let pad_token_id = match &mut lm {
            DecoderConfig::Llama(c) => c.pad_token_id.take(),
            DecoderConfig::Gpt(_) => None,
        };
        Self {
            lm,
            id2label: BTreeMap::new(),
            pad_token_id,
            bos_token_id: None,
            eos_token_id: None,
            problem_type: None,
            classifier_dropout: None,
        }
    }

    /// The transformer under the head: the language model with this config's padding id and,
    /// for Llama, no output layer of its own (built tied; see the module's note).
    pub fn base(&self) -> DecoderConfig {
        match &self.lm {
            DecoderConfig::Gpt(c) => DecoderConfig::Gpt(c.clone()),
            DecoderConfig::Llama(c) => {
                let mut c = c.clone();
                c.tie_word_embeddings = true;
                c.pad_token_id = self.pad_token_id;
                DecoderConfig::Llama(c)
            }
        }
    }

    /// transformers' `model_type`.
    pub fn family(&self) -> &'static str {
        self.lm.model_type()
    }

    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// Label names in index order.
    pub fn label_names(&self) -> Vec<String> {
        self.id2label.values().cloned().collect()
    }

    pub fn with_labels(mut self, names: &[String]) -> Self {
        self.id2label = names.iter().cloned().enumerate().collect();
        self
    }

    /// The complaint about a padding id past the vocabulary, if it is.
    fn pad_past_vocab(&self) -> Option<String> {
        let (p, v) = (self.pad_token_id?, self.lm.vocab_size());
        (p as usize >= v).then(|| format!("pad_token_id {p} is past the vocabulary of {v}"))
    }

    pub fn validate(&self) -> Result<()> {
        self.base().validate()?;
        if self.id2label.is_empty() {
            return Err(Error::Config(format!(
                "a {} classifier needs at least one label",
                self.family()
            )));
        }
        if let Some(msg) = self.pad_past_vocab() {
            return Err(Error::Config(msg));
        }
        if let Some(p) = self.classifier_dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Config(format!(
                    "classifier_dropout {p} must be in [0, 1)"
                )));
            }
        }
        Ok(())
    }
}

/// Reads a GPT-2 or Llama `config.json` (by `model_type`) as a classifier's: the language
/// model's sizes (as [`DecoderConfig::from_hf`]), `id2label`, the special ids, `problem_type`
/// and the token classifier's dropout. Also returns the head its `architectures` names, if it
/// names one of the family's.
pub fn config_from_hf(path: &Path) -> Result<(DecoderClsConfig, Option<DecoderHead>)> {
    config_from_json(&hf_config::read_json(path)?, path)
}

/// [`config_from_hf`] of the parsed file (`path` is for messages).
pub(crate) fn config_from_json(
    v: &Value,
    path: &Path,
) -> Result<(DecoderClsConfig, Option<DecoderHead>)> {
    let err = hf_config::file_err(path);
    let lm = DecoderConfig::from_json(v, path)?;
    let token_id = |k: &str, x: &Value| -> Result<u32> {
        x.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| err(format!("\"{k}\" is not a token id: {x}")))
    };
    let id = |k: &str| -> Result<Option<u32>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            // Llama 3 lists several end-of-text ids; the first is the one to pad with.
            Some(Value::Array(a)) if k == "eos_token_id" => {
                a.first().map(|x| token_id(k, x)).transpose()
            }
            Some(x) => token_id(k, x).map(Some),
        }
    };
    let head = v
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|a| DecoderHead::from_architecture(a, &lm));
    let number = |k: &str| -> Result<Option<f64>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| err(format!("\"{k}\" is not a number: {x}"))),
        }
    };
    // transformers' token classifiers take classifier_dropout, else hidden_dropout.
    let classifier_dropout = match number("classifier_dropout")? {
        Some(p) => Some(p),
        None => number("hidden_dropout")?,
    };
    if v.get("token_classification_bias") == Some(&Value::Bool(false)) {
        return Err(err(
            "\"token_classification_bias\": false is not supported (the token classifier has \
             a bias)"
                .into(),
        ));
    }
    let mut cfg = DecoderClsConfig::from_lm(lm);
    cfg.id2label = hf_config::id2label(v, path)?;
    cfg.pad_token_id = id("pad_token_id")?;
    cfg.bos_token_id = id("bos_token_id")?;
    cfg.eos_token_id = id("eos_token_id")?;
    cfg.problem_type = v
        .get("problem_type")
        .and_then(Value::as_str)
        .map(str::to_string);
    cfg.classifier_dropout = classifier_dropout;
    if let Some(msg) = cfg.pad_past_vocab() {
        return Err(err(msg));
    }
    Ok((cfg, head))
}

/// `config.json` of `head`'s architecture.
pub fn to_hf_config(cfg: &DecoderClsConfig, head: DecoderHead, dtype: DType) -> Value {
    let mut v = cfg.lm.to_hf_config(cfg.eos_token_id, dtype);
    v["architectures"] = Value::from(head.architecture(&cfg.lm).into_iter().collect::<Vec<_>>());
    v["bos_token_id"] = Value::from(cfg.bos_token_id);
    v["eos_token_id"] = Value::from(cfg.eos_token_id);
    v["pad_token_id"] = Value::from(cfg.pad_token_id);
    hf_config::set_label_maps(&mut v, &cfg.id2label);
    match head {
        // transformers' configs accept only the three problem types of sequence classification.
        DecoderHead::SequenceClassification => {
            if let Some(p) =
                hf_config::problem_type_of(cfg.problem_type.as_deref(), cfg.id2label.len())
            {
                v["problem_type"] = Value::from(p);
            }
        }
        DecoderHead::TokenClassification => {
            v["classifier_dropout"] = Value::from(cfg.classifier_dropout)
        }
    }
    v
}

/// Builds `head`'s [`Params`] from named tensors: the transformer's must all be there (with or
/// without the family's `transformer.` / `model.` prefix); a missing head (a language model's
/// checkpoint) is drawn fresh with `rng` (N(0, 0.02) weights, zero bias) and reported, as
/// transformers does; `lm_head.weight` (the language model's output layer) is dropped and
/// reported as unused. `path` is for messages.
pub fn params_from_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    cfg: &DecoderClsConfig,
    head: DecoderHead,
    path: &Path,
    rng: &mut Rng,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    cfg.validate()?;
    let mut report = LoadReport::default();
    let device = tensors
        .values()
        .next()
        .map_or(Device::Cpu, |t| t.device().clone());
    let mut head_params = Vec::new();
    for (name, shape) in head.param_shapes(&cfg.lm, cfg.num_labels()) {
        let t = match safetensors_io::take_shaped(&mut tensors, name, &[name], &shape, path)? {
            Some(t) => t,
            None => {
                report.newly_initialised.push(name.to_string());
                DecoderHead::init(name, &shape, rng, &device)?
            }
        };
        head_params.push((name, t));
    }
    if tensors.remove("lm_head.weight").is_some() {
        report.unused.push("lm_head.weight".to_string());
    }
    let mut params = cfg.base().params_from_tensors(tensors, path, dtype)?;
    for (name, t) in head_params {
        params.insert(name.to_string(), t.to_dtype(dtype)?)?;
    }
    Ok((params, report))
}

/// Loads `model.safetensors` for `head` (a classifier's, or a language model's with a fresh
/// head).
pub fn load_params(
    path: &Path,
    cfg: &DecoderClsConfig,
    head: DecoderHead,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    safetensors_io::refuse_pickle(path)?;
    head.check(&cfg.lm)?;
    cfg.lm.check_plausible(path)?;
    let tensors = safetensors_io::load_raw(path, device)?;
    safetensors_io::check_float(&tensors, path)?;
    params_from_tensors(tensors, cfg, head, path, rng, dtype)
}

/// A fresh classifier: the family's initialisation and a fresh head.
pub fn init_params(
    cfg: &DecoderClsConfig,
    head: DecoderHead,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    cfg.validate()?;
    head.check(&cfg.lm)?;
    let mut params = cfg.base().init_params(rng, device, dtype)?;
    for (name, shape) in head.param_shapes(&cfg.lm, cfg.num_labels()) {
        let t = DecoderHead::init(name, &shape, rng, device)?;
        params.insert(name.to_string(), t.to_dtype(dtype)?)?;
    }
    Ok(params)
}

/// The forward graph of `GPT2ForSequenceClassification` / `LlamaForSequenceClassification`
/// over a [`Params`] store.
pub struct DecoderForSequenceClassification {
    model: Decoder,
    score: Tensor,
    pad_token_id: Option<u32>,
}

impl DecoderForSequenceClassification {
    /// The same model with NEFTune's noise on its token embeddings ([`Decoder::with_neftune`]).
    pub fn with_neftune(mut self, alpha: f64) -> Self {
        self.model = self.model.with_neftune(alpha);
        self
    }

    pub fn new(cfg: &DecoderClsConfig, params: &Params) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            model: Decoder::new(&cfg.base(), params)?,
            score: params.get(SCORE)?,
            pad_token_id: cfg.pad_token_id,
        })
    }

    /// The transformer under the head.
    pub fn decoder(&self) -> &Decoder {
        &self.model
    }

    /// The position of each row's last token that is not the padding id (0 for a row of
    /// padding only, as transformers' argmax gives); without a padding id, the last position
    /// of a single row. ids: (B, T) u32.
    pub fn last_tokens(&self, ids: &Tensor) -> Result<Vec<u32>> {
        let (b, t) = ids.dims2()?;
        let Some(pad) = self.pad_token_id else {
            if b != 1 {
                return Err(Error::Config(
                    "a sequence classifier without pad_token_id can only run one sequence at \
                     a time"
                        .into(),
                ));
            }
            return Ok(vec![t.saturating_sub(1) as u32]);
        };
        let rows = ids.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
        Ok(rows
            .iter()
            .map(|r| r.iter().rposition(|&x| x != pad).unwrap_or(0) as u32)
            .collect())
    }

    /// ids (B, T) u32 → logits (B, num_labels) in the parameters' dtype.
    pub fn forward(&self, ids: &Tensor, mut mode: Mode<'_>) -> Result<Tensor> {
        let last = self.last_tokens(ids)?;
        let x = self.model.last_block_output(ids, &mut mode)?;
        self.head(&x, &last, ids.dims2()?)
    }

    /// The last block's output x (B, T, C) → logits (B, L): the final norm, each row's token
    /// at `last`, then `score`. Only the B picked rows go through the head.
    pub fn head(&self, x: &Tensor, last: &[u32], (b, t): (usize, usize)) -> Result<Tensor> {
        let c = x.dim(2)?;
        // Row r's picked token is row r·T + last[r] of the flattened states; a gather whose
        // backward scatters into those rows (the embedding op).
        let h = self.model.final_norm(x)?.reshape((b * t, c))?; // (B·T, C)
        let rows: Vec<u32> = last
            .iter()
            .enumerate()
            .map(|(r, &p)| (r * t) as u32 + p)
            .collect();
        let rows = Tensor::from_vec(rows, b, x.device())?;
        let picked = k::embedding(&h, &rows, None)?; // (B, C)
        Ok(picked.matmul(&self.score.t()?)?) // (B, L)
    }
}

/// The forward graph of `GPT2ForTokenClassification` / `LlamaForTokenClassification` over a
/// [`Params`] store.
pub struct DecoderForTokenClassification {
    model: Decoder,
    classifier: (Tensor, Tensor),
    dropout: f64,
}

impl DecoderForTokenClassification {
    /// The same model with NEFTune's noise on its token embeddings ([`Decoder::with_neftune`]).
    pub fn with_neftune(mut self, alpha: f64) -> Self {
        self.model = self.model.with_neftune(alpha);
        self
    }

    pub fn new(cfg: &DecoderClsConfig, params: &Params) -> Result<Self> {
        cfg.validate()?;
        DecoderHead::TokenClassification.check(&cfg.lm)?;
        let (w, b) = DecoderHead::TokenClassification.names(&cfg.lm);
        let b = b.expect("the token classifiers have a bias");
        Ok(Self {
            model: Decoder::new(&cfg.base(), params)?,
            classifier: (params.get(w)?, params.get(b)?),
            dropout: cfg.classifier_dropout.unwrap_or(DEFAULT_CLASSIFIER_DROPOUT),
        })
    }

    /// The transformer under the head.
    pub fn decoder(&self) -> &Decoder {
        &self.model
    }

    /// ids (B, T) u32 → logits (B, T, num_labels) in the parameters' dtype.
    pub fn forward(&self, ids: &Tensor, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.model.last_block_output(ids, &mut mode)?;
        self.head_on(&x, &mut mode)
    }

    /// The last block's output x (B, T, C) → logits (B, T, L): the final norm, dropout, then
    /// the classifier at every position.
    pub fn head_on(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let h = self.model.final_norm(x)?;
        let h = match mode {
            Mode::Train(rng) if self.dropout > 0.0 => k::dropout(&h, self.dropout, rng)?,
            _ => h,
        };
        let (w, bias) = &self.classifier;
        let logits = k::bias_add(&h.reshape((b * t, c))?.matmul(&w.t()?)?, bias)?; // (B·T, L)
        Ok(logits.reshape((b, t, w.dim(0)?))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::GptConfig;
    use crate::llama::{LlamaConfig, LlamaFamily};
    use crate::testutil::max_diff;

    const LABELS: [&str; 3] = ["a", "b", "c"];

    fn with_labels(lm: DecoderConfig) -> DecoderClsConfig {
        let names: Vec<String> = LABELS.iter().map(|s| s.to_string()).collect();
        let mut c = DecoderClsConfig::from_lm(lm).with_labels(&names);
        c.pad_token_id = Some(19);
        c
    }

    fn tiny() -> DecoderClsConfig {
        with_labels(DecoderConfig::Gpt(GptConfig {
            vocab_size: 20,
            n_positions: 16,
            n_embd: 16,
            n_layer: 2,
            n_head: 2,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        }))
    }

    fn tiny_llama() -> DecoderClsConfig {
        with_labels(DecoderConfig::Llama(LlamaConfig {
            vocab_size: 20,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            max_position_embeddings: 16,
            rms_norm_eps: 1e-6,
            rope_theta: 100.0,
            rope_scaling: None,
            tie_word_embeddings: false,
            initializer_range: 0.2,
            pad_token_id: None,
            // The variants' keys as Llama's.
            ..LlamaConfig::preset("llama-tiny", 8).unwrap()
        }))
    }

    /// [`tiny_llama`] as a relative: Qwen2 (q/k/v biases), Mistral and Phi-3 (a window of 3
    /// tokens, shorter than the test sequences; Phi-3's layers fused), Qwen3 (head norms, heads
    /// of 12 under a width of 16 and 2 heads) or Gemma 3.
    fn tiny_relative(family: LlamaFamily) -> DecoderClsConfig {
        let DecoderConfig::Llama(c) = tiny_llama().lm else {
            unreachable!()
        };
        let gemma = matches!(family, LlamaFamily::Gemma3 | LlamaFamily::Gemma2);
        // SmolLM3: its second layer without RoPE.
        if family == LlamaFamily::SmolLM3 {
            return with_labels(DecoderConfig::Llama(LlamaConfig {
                model_type: family,
                nope_layers: vec![false, true],
                ..c
            }));
        }
        // Gemma 1: Gemma's norms, MLP and embeddings, Llama's layers otherwise (heads of 12).
        if family == LlamaFamily::Gemma {
            return with_labels(DecoderConfig::Llama(LlamaConfig {
                model_type: family,
                head_dim: Some(12),
                ..c
            }));
        }
        let gemma2 = family == LlamaFamily::Gemma2;
        with_labels(DecoderConfig::Llama(LlamaConfig {
            model_type: family,
            sliding_window: (gemma || matches!(family, LlamaFamily::Mistral | LlamaFamily::Phi3))
                .then_some(3),
            head_dim: (gemma || family == LlamaFamily::Qwen3).then_some(12),
            // Gemma: a sliding layer then a full one, with a score scale of their own; Gemma 3's
            // RoPE bases differ, Gemma 2 soft-caps its scores (and its LM's logits).
            sliding_layers: if gemma { vec![true, false] } else { Vec::new() },
            rope_local_theta: (gemma && !gemma2).then_some(50.0),
            query_pre_attn_scalar: gemma.then_some(10.0),
            attn_logit_softcapping: gemma2.then_some(2.0),
            final_logit_softcapping: gemma2.then_some(3.0),
            ..c
        }))
    }

    /// Whether transformers has a token classifier for the family (not Gemma 3).
    fn has_token_classifier(cfg: &DecoderClsConfig) -> bool {
        DecoderHead::TokenClassification.check(&cfg.lm).is_ok()
    }

    fn families() -> [DecoderClsConfig; 11] {
        [
            tiny(),
            tiny_llama(),
            tiny_relative(LlamaFamily::Qwen2),
            tiny_relative(LlamaFamily::Mistral),
            tiny_relative(LlamaFamily::Qwen3),
            tiny_relative(LlamaFamily::Gemma3),
            tiny_relative(LlamaFamily::Gemma2),
            tiny_relative(LlamaFamily::Gemma),
            tiny_relative(LlamaFamily::SmolLM3),
            tiny_relative(LlamaFamily::Olmo2),
            tiny_relative(LlamaFamily::Phi3),
        ]
    }

    fn model(cfg: &DecoderClsConfig) -> (Params, DecoderForSequenceClassification) {
        let seq = DecoderHead::SequenceClassification;
        let p = init_params(cfg, seq, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
        let m = DecoderForSequenceClassification::new(cfg, &p).unwrap();
        (p, m)
    }

    /// A language model's weights as its file holds them (Llama's untied head included; GPT-2's
    /// tied copy added, as transformers saves it).
    fn lm_tensors(cfg: &DecoderClsConfig) -> BTreeMap<String, Tensor> {
        let lm = cfg
            .lm
            .init_params(&mut Rng::new(1), &Device::Cpu, DType::F32)
            .unwrap();
        let mut tensors: BTreeMap<String, Tensor> = lm
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect();
        if let Some(wte) = tensors.get("transformer.wte.weight").cloned() {
            tensors.insert("lm_head.weight".into(), wte);
        }
        tensors
    }

    #[test]
    fn neftune_reaches_the_classifiers_embeddings_in_training_only() {
        // Every family's classifier: a training forward with NEFTune draws one number per
        // embedding element (dropout off) and moves the logits; evaluation does not.
        for cfg in families() {
            let (_, plain) = model(&cfg);
            let noised = model(&cfg).1.with_neftune(5.0);
            let ids = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 19, 19]], &Device::Cpu).unwrap();
            let clean = plain.forward(&ids, Mode::Eval).unwrap();
            let eval = noised.forward(&ids, Mode::Eval).unwrap();
            assert_eq!(max_diff(&eval, &clean), 0.0, "{}", cfg.family());
            let mut rng = Rng::new(2);
            let trained = noised.forward(&ids, Mode::Train(&mut rng)).unwrap();
            assert!(max_diff(&trained, &clean) > 0.0, "{}", cfg.family());
            let width = cfg.lm.hidden_size() as u64;
            assert_eq!(rng.state().counter, 2 * 4 * width, "{}", cfg.family());
        }
    }

    #[test]
    fn the_pooled_token_is_the_rightmost_non_padding_one() {
        let cfg = tiny();
        let (_, m) = model(&cfg);
        let ids = Tensor::new(
            &[
                [1u32, 19, 2, 3],
                [4, 5, 19, 19],
                [6, 19, 19, 19],
                [19, 19, 19, 19],
            ],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(m.last_tokens(&ids).unwrap(), vec![3, 1, 0, 0]);
    }

    #[test]
    fn padding_changes_nothing_and_each_row_is_its_own_sequence() {
        for cfg in families() {
            let (_, m) = model(&cfg);
            let padded =
                Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 19, 19, 19]], &Device::Cpu).unwrap();
            let both = m.forward(&padded, Mode::Eval).unwrap();
            for (row, alone) in [(0, vec![1u32, 2, 3, 4, 5]), (1, vec![6, 7])] {
                let ids = Tensor::from_vec(alone.clone(), (1, alone.len()), &Device::Cpu).unwrap();
                let one = m.forward(&ids, Mode::Eval).unwrap();
                let d = max_diff(&both.get(row).unwrap(), &one.get(0).unwrap());
                assert!(d < 1e-5, "{} row {row}: {d}", cfg.family());
            }
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_except_the_padding_row() {
        for mut cfg in families() {
            if let DecoderConfig::Gpt(g) = &mut cfg.lm {
                g.dropout = 0.1;
            }
            let (p, m) = model(&cfg);
            let ids = Tensor::new(&[[1u32, 2, 19, 4], [5, 6, 19, 19]], &Device::Cpu).unwrap();
            let mut rng = Rng::new(1);
            let logits = m.forward(&ids, Mode::Train(&mut rng)).unwrap();
            let loss = logits.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            for (name, v) in p.iter() {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                let n = g.abs().unwrap().sum_all().unwrap();
                assert!(n.to_scalar::<f32>().unwrap() > 0.0, "{name}: zero gradient");
            }
            // Llama's padding row (transformers' padding_idx) gets none, even where the id is
            // a real token (row 0); GPT-2's embedding has no padding row.
            let (table, pad_row_free) = match cfg.lm {
                DecoderConfig::Gpt(_) => ("transformer.wte.weight", false),
                DecoderConfig::Llama(_) => (crate::llama::EMBED_TOKENS, true),
            };
            let g = grads.get(&p.get(table).unwrap()).unwrap().get(19).unwrap();
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(
                n == 0.0,
                pad_row_free,
                "{}: padding row gradient {n}",
                cfg.family()
            );
        }
    }

    #[test]
    fn a_language_models_weights_load_with_a_fresh_reported_score() {
        for cfg in families() {
            let tensors = lm_tensors(&cfg);
            let seq = DecoderHead::SequenceClassification;
            let path = Path::new("lm.safetensors");
            let (p, report) = params_from_tensors(
                tensors.clone(),
                &cfg,
                seq,
                path,
                &mut Rng::new(2),
                DType::F32,
            )
            .unwrap();
            assert_eq!(report.newly_initialised, vec![SCORE.to_string()]);
            assert_eq!(report.unused, vec!["lm_head.weight".to_string()]);
            // Every tensor but the head's, and the score.
            assert_eq!(p.len(), tensors.len());
            assert!(p.get("lm_head.weight").is_err());
            // A score of the wrong number of labels is named.
            let mut tensors = tensors;
            tensors.insert(
                SCORE.into(),
                Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap(),
            );
            let path = Path::new("cls.safetensors");
            let Err(e) =
                params_from_tensors(tensors, &cfg, seq, path, &mut Rng::new(2), DType::F32)
            else {
                panic!("a score of 2 labels loaded into a model of 3")
            };
            let e = e.to_string();
            assert!(e.contains("cls.safetensors") && e.contains(SCORE), "{e}");
        }
    }

    #[test]
    fn the_token_classifier_scores_every_position_and_padding_changes_no_real_one() {
        for cfg in families() {
            let tok = DecoderHead::TokenClassification;
            if !has_token_classifier(&cfg) {
                let e = init_params(&cfg, tok, &mut Rng::new(3), &Device::Cpu, DType::F32)
                    .err()
                    .unwrap()
                    .to_string();
                assert!(e.contains("no token classification class"), "{e}");
                continue;
            }
            let (w, b) = tok.names(&cfg.lm);
            let b = b.unwrap();
            let p = init_params(&cfg, tok, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
            assert_eq!(p.get(b).unwrap().dims(), &[3]);
            let m = DecoderForTokenClassification::new(&cfg, &p).unwrap();
            let padded =
                Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 19, 19, 19]], &Device::Cpu).unwrap();
            let both = m.forward(&padded, Mode::Eval).unwrap();
            assert_eq!(both.dims(), &[2, 5, 3]);
            let alone = Tensor::new(&[[6u32, 7]], &Device::Cpu).unwrap();
            let one = m.forward(&alone, Mode::Eval).unwrap();
            let real = both.get(1).unwrap().narrow(0, 0, 2).unwrap();
            assert!(max_diff(&real, &one.get(0).unwrap()) < 1e-5);
            // With dropout (the classifier's 0.1 by default) every parameter gets a gradient.
            let mut rng = Rng::new(1);
            let out = m.forward(&padded, Mode::Train(&mut rng)).unwrap();
            let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in p.iter() {
                assert!(grads.get(v.as_tensor()).is_some(), "{name}: no gradient");
            }
            // A language model's weights get a fresh, reported head: weight and zero bias.
            let (p, report) = params_from_tensors(
                lm_tensors(&cfg),
                &cfg,
                tok,
                Path::new("lm.safetensors"),
                &mut Rng::new(2),
                DType::F32,
            )
            .map_err(|e| e.to_string())
            .unwrap();
            assert_eq!(report.newly_initialised, [w, b]);
            let bias = p.get(b).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(bias, [0.0; 3]);
        }
    }

    #[test]
    fn the_config_round_trips_through_transformers_format() {
        for mut cfg in families() {
            cfg.eos_token_id = Some(19);
            cfg.problem_type = Some("multi_label_classification".into());
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.json");
            let seq = DecoderHead::SequenceClassification;
            std::fs::write(&path, to_hf_config(&cfg, seq, DType::F32).to_string()).unwrap();
            let (back, head) = config_from_hf(&path).unwrap();
            assert_eq!(head, Some(seq));
            assert_eq!(back, cfg);
            if !has_token_classifier(&cfg) {
                continue;
            }
            // The token classifier's config keeps its dropout (and has no problem type).
            let mut tok = cfg.clone();
            tok.problem_type = None;
            tok.classifier_dropout = Some(0.25);
            let v = to_hf_config(&tok, DecoderHead::TokenClassification, DType::F32);
            std::fs::write(&path, v.to_string()).unwrap();
            let (back, head) = config_from_hf(&path).unwrap();
            assert_eq!(head, Some(DecoderHead::TokenClassification));
            assert_eq!(back, tok);
            // transformers' fallback to hidden_dropout; a list of end-of-text ids (Llama 3).
            let mut v = v;
            v["classifier_dropout"] = Value::Null;
            v["hidden_dropout"] = Value::from(0.3);
            v["eos_token_id"] = Value::from(vec![18, 19]);
            std::fs::write(&path, v.to_string()).unwrap();
            let (back, _) = config_from_hf(&path).unwrap();
            assert_eq!(
                (back.classifier_dropout, back.eos_token_id),
                (Some(0.3), Some(18))
            );
            // A padding id past the vocabulary is named.
            let mut v = to_hf_config(&cfg, seq, DType::F32);
            v["pad_token_id"] = Value::from(20);
            std::fs::write(&path, v.to_string()).unwrap();
            let e = config_from_hf(&path).unwrap_err().to_string();
            assert!(
                e.contains("config.json") && e.contains("pad_token_id 20"),
                "{e}"
            );
        }
    }

    #[test]
    fn heads_are_named_as_the_family_names_them() {
        let (gpt, llama) = (tiny().lm, tiny_llama().lm);
        let seq = DecoderHead::SequenceClassification;
        assert_eq!(
            seq.architecture(&llama),
            Some("LlamaForSequenceClassification")
        );
        assert_eq!(
            DecoderHead::from_architecture("GPT2ForTokenClassification", &gpt),
            Some(DecoderHead::TokenClassification)
        );
        // Another family's class is not this family's head.
        assert_eq!(
            DecoderHead::from_architecture("GPT2ForSequenceClassification", &llama),
            None
        );
        assert!(DecoderHead::is_architecture("LlamaForTokenClassification"));
        assert!(!DecoderHead::is_architecture("LlamaForCausalLM"));
        // The base model of a Llama classifier has no output layer of its own.
        let cfg = tiny_llama();
        let p = init_params(&cfg, seq, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
        assert!(p.get("lm_head.weight").is_err());
        let e = to_hf_config(&cfg, seq, DType::F32);
        assert_eq!(e["tie_word_embeddings"], false);
        assert_eq!(e["pad_token_id"], 19);
    }
}

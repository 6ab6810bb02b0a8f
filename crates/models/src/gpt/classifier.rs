//! GPT-2 with a task head, as transformers builds them:
//! - `GPT2ForSequenceClassification`: the transformer, then `score` (n_embd → num_labels, no
//!   bias) on the hidden state of each sequence's last token that is not the padding id. With
//!   causal attention that token has seen the whole sequence, and padding on the right comes
//!   after it, so it sees no padding and no attention mask is needed; positions count from 0 as
//!   in transformers. A token inside the text that happens to equal the padding id (GPT-2 is
//!   usually padded with its end-of-text token) is a token like any other: transformers picks
//!   the rightmost non-padding token, and so do we.
//! - `GPT2ForTokenClassification`: the transformer, dropout (`classifier_dropout`, 0.1 when
//!   unset), then `classifier` (n_embd → num_labels, with bias) at every position. Each real
//!   token sees only itself and the tokens before it, never the padding after it.

use super::hf::{self as gpt_hf};
use super::{Gpt, GptConfig};
use crate::hf_config::{self, LoadReport};
use crate::{safetensors_io, Error, Mode, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{self as k, Rng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The sequence classifier's parameter: (num_labels, n_embd), as `nn.Linear` stores it.
pub const SCORE: &str = "score.weight";
/// The token classifier's parameters: (num_labels, n_embd) and (num_labels).
pub const CLASSIFIER_WEIGHT: &str = "classifier.weight";
pub const CLASSIFIER_BIAS: &str = "classifier.bias";
/// The `initializer_range` transformers draws a fresh head's weight with (biases start at 0).
const HEAD_STD: f64 = 0.02;
/// transformers' dropout before the token classifier when the config sets none.
const DEFAULT_CLASSIFIER_DROPOUT: f64 = 0.1;

/// Which head sits on the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptHead {
    SequenceClassification,
    TokenClassification,
}

impl GptHead {
    /// transformers' architecture name.
    pub fn architecture(self) -> &'static str {
        match self {
            Self::SequenceClassification => "GPT2ForSequenceClassification",
            Self::TokenClassification => "GPT2ForTokenClassification",
        }
    }

    /// The head `architectures` names, if it is one of GPT-2's.
    pub fn from_architecture(name: &str) -> Option<Self> {
        [Self::SequenceClassification, Self::TokenClassification]
            .into_iter()
            .find(|h| h.architecture() == name)
    }

    /// The head's parameters with their shapes, for `labels` outputs of width `c`.
    fn param_shapes(self, labels: usize, c: usize) -> Vec<(&'static str, Vec<usize>)> {
        match self {
            Self::SequenceClassification => vec![(SCORE, vec![labels, c])],
            Self::TokenClassification => vec![
                (CLASSIFIER_WEIGHT, vec![labels, c]),
                (CLASSIFIER_BIAS, vec![labels]),
            ],
        }
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

/// A GPT-2 classifier's config: GPT-2's sizes, the labels and the padding id.
#[derive(Debug, Clone, PartialEq)]
pub struct GptClsConfig {
    pub gpt: GptConfig,
    /// Class (tag) names by index (one output for regression).
    pub id2label: BTreeMap<usize, String>,
    /// The id batches are padded with. transformers cannot batch sequence classification
    /// without one; GPT-2 checkpoints have none, and fine-tuning sets it to the end-of-text id.
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// `"single_label_classification"`, `"multi_label_classification"` or `"regression"`.
    pub problem_type: Option<String>,
    /// The dropout before the token classifier (`None`: transformers' 0.1).
    pub classifier_dropout: Option<f64>,
}

impl GptClsConfig {
    /// A classifier config over a language model's: no labels yet.
    pub fn from_lm(gpt: GptConfig) -> Self {
        Self {
            gpt,
            id2label: BTreeMap::new(),
            pad_token_id: None,
            bos_token_id: None,
            eos_token_id: None,
            problem_type: None,
            classifier_dropout: None,
        }
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

    pub fn validate(&self) -> Result<()> {
        self.gpt.validate()?;
        if self.id2label.is_empty() {
            return Err(Error::Config(
                "a GPT-2 classifier needs at least one label".into(),
            ));
        }
        if let Some(p) = self.pad_token_id {
            if p as usize >= self.gpt.vocab_size {
                return Err(Error::Config(format!(
                    "pad_token_id {p} is past the vocabulary of {}",
                    self.gpt.vocab_size
                )));
            }
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

/// Reads a `GPT2Config` `config.json` as a classifier's: GPT-2's sizes (as
/// [`gpt_hf::config_from_hf`]), `id2label`, the special ids, `problem_type` and
/// `classifier_dropout`. Also returns the head its `architectures` names, if it names one.
pub fn config_from_hf(path: &Path) -> Result<(GptClsConfig, Option<GptHead>)> {
    config_from_json(&hf_config::read_json(path)?, path)
}

/// [`config_from_hf`] of the parsed file (`path` is for messages).
pub(crate) fn config_from_json(v: &Value, path: &Path) -> Result<(GptClsConfig, Option<GptHead>)> {
    let err = hf_config::file_err(path);
    let gpt = gpt_hf::config_from_json(v, path)?;
    let id = |k: &str| -> Result<Option<u32>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| err(format!("\"{k}\" is not a token id: {x}"))),
        }
    };
    let head = v
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(GptHead::from_architecture);
    let classifier_dropout = match v.get("classifier_dropout") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_f64()
                .ok_or_else(|| err(format!("\"classifier_dropout\" is not a number: {x}")))?,
        ),
    };
    let cfg = GptClsConfig {
        id2label: hf_config::id2label(v, path)?,
        pad_token_id: id("pad_token_id")?,
        bos_token_id: id("bos_token_id")?,
        eos_token_id: id("eos_token_id")?,
        problem_type: v
            .get("problem_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        classifier_dropout,
        gpt,
    };
    if let Some(p) = cfg.pad_token_id {
        if p as usize >= cfg.gpt.vocab_size {
            return Err(err(format!(
                "pad_token_id {p} is past the vocabulary of {}",
                cfg.gpt.vocab_size
            )));
        }
    }
    Ok((cfg, head))
}

/// `config.json` of `head`'s architecture.
pub fn to_hf_config(cfg: &GptClsConfig, head: GptHead, dtype: DType) -> Value {
    let mut v = gpt_hf::to_hf_config(&cfg.gpt, cfg.eos_token_id, dtype);
    v["architectures"] = Value::from(vec![head.architecture()]);
    v["bos_token_id"] = Value::from(cfg.bos_token_id);
    v["eos_token_id"] = Value::from(cfg.eos_token_id);
    v["pad_token_id"] = Value::from(cfg.pad_token_id);
    hf_config::set_label_maps(&mut v, &cfg.id2label);
    match head {
        // transformers' configs accept only the three problem types of sequence classification.
        GptHead::SequenceClassification => {
            v["problem_type"] = Value::from(
                cfg.problem_type
                    .as_deref()
                    .unwrap_or("single_label_classification"),
            )
        }
        GptHead::TokenClassification => {
            v["classifier_dropout"] = Value::from(cfg.classifier_dropout)
        }
    }
    v
}

/// Builds `head`'s [`Params`] from named tensors: the transformer's must all be there (with or
/// without `transformer.`); a missing head (a language model's checkpoint) is drawn fresh
/// with `rng` (N(0, 0.02) weights, zero bias) and reported, as transformers does;
/// `lm_head.weight` (tied) is dropped and reported as unused. `path` is for messages.
pub fn params_from_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    cfg: &GptClsConfig,
    head: GptHead,
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
    for (name, shape) in head.param_shapes(cfg.num_labels(), cfg.gpt.n_embd) {
        let t = match safetensors_io::take_shaped(&mut tensors, name, &[name], &shape, path)? {
            Some(t) => t,
            None => {
                report.newly_initialised.push(name.to_string());
                GptHead::init(name, &shape, rng, &device)?
            }
        };
        head_params.push((name, t));
    }
    if tensors.remove("lm_head.weight").is_some() {
        report.unused.push("lm_head.weight".to_string());
    }
    let mut params = gpt_hf::params_from_tensors(tensors, &cfg.gpt, path, dtype)?;
    for (name, t) in head_params {
        params.insert(name.to_string(), t.to_dtype(dtype)?)?;
    }
    Ok((params, report))
}

/// Loads `model.safetensors` for `head` (a classifier's, or a language model's with a fresh
/// head).
pub fn load_params(
    path: &Path,
    cfg: &GptClsConfig,
    head: GptHead,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    safetensors_io::refuse_pickle(path)?;
    gpt_hf::check_plausible(&cfg.gpt, path)?;
    let tensors = safetensors_io::load_raw(path, device)?;
    safetensors_io::check_float(&tensors, path)?;
    params_from_tensors(tensors, cfg, head, path, rng, dtype)
}

/// A fresh classifier: GPT-2's initialisation and a fresh head.
pub fn init_params(
    cfg: &GptClsConfig,
    head: GptHead,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    cfg.validate()?;
    let mut params = super::init_params(&cfg.gpt, rng, device, dtype)?;
    for (name, shape) in head.param_shapes(cfg.num_labels(), cfg.gpt.n_embd) {
        let t = GptHead::init(name, &shape, rng, device)?;
        params.insert(name.to_string(), t.to_dtype(dtype)?)?;
    }
    Ok(params)
}

/// The forward graph of `GPT2ForSequenceClassification` over a [`Params`] store.
pub struct GptForSequenceClassification {
    gpt: Gpt,
    score: Tensor,
    pad_token_id: Option<u32>,
}

impl GptForSequenceClassification {
    pub fn new(cfg: &GptClsConfig, params: &Params) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            gpt: Gpt::new(&cfg.gpt, params)?,
            score: params.get(SCORE)?,
            pad_token_id: cfg.pad_token_id,
        })
    }

    pub fn gpt(&self) -> &Gpt {
        &self.gpt
    }

    /// The position of each row's last token that is not the padding id (0 for a row of
    /// padding only, as transformers' argmax gives); without a padding id, the last position
    /// of a single row. ids: (B, T) u32.
    pub fn last_tokens(&self, ids: &Tensor) -> Result<Vec<u32>> {
        let (b, t) = ids.dims2()?;
        let Some(pad) = self.pad_token_id else {
            if b != 1 {
                return Err(Error::Config(
                    "a GPT-2 classifier without pad_token_id can only run one sequence at \
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
        let x = self.gpt.last_block_output(ids, &mut mode)?;
        self.head(&x, &last, ids.dims2()?)
    }

    /// The last block's output x (B, T, C) → logits (B, L): the final LayerNorm, each row's
    /// token at `last`, then `score`. Only the B picked rows go through the head.
    pub fn head(&self, x: &Tensor, last: &[u32], (b, t): (usize, usize)) -> Result<Tensor> {
        let c = x.dim(2)?;
        // Row r's picked token is row r·T + last[r] of the flattened states; a gather whose
        // backward scatters into those rows (the embedding op).
        let h = self.gpt.final_norm(x)?.reshape((b * t, c))?; // (B·T, C)
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

/// The forward graph of `GPT2ForTokenClassification` over a [`Params`] store.
pub struct GptForTokenClassification {
    gpt: Gpt,
    classifier: (Tensor, Tensor),
    dropout: f64,
}

impl GptForTokenClassification {
    pub fn new(cfg: &GptClsConfig, params: &Params) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            gpt: Gpt::new(&cfg.gpt, params)?,
            classifier: (params.get(CLASSIFIER_WEIGHT)?, params.get(CLASSIFIER_BIAS)?),
            dropout: cfg.classifier_dropout.unwrap_or(DEFAULT_CLASSIFIER_DROPOUT),
        })
    }

    pub fn gpt(&self) -> &Gpt {
        &self.gpt
    }

    /// ids (B, T) u32 → logits (B, T, num_labels) in the parameters' dtype.
    pub fn forward(&self, ids: &Tensor, mut mode: Mode<'_>) -> Result<Tensor> {
        let x = self.gpt.last_block_output(ids, &mut mode)?;
        self.head_on(&x, &mut mode)
    }

    /// The last block's output x (B, T, C) → logits (B, T, L): the final LayerNorm, dropout,
    /// then `classifier` at every position.
    pub fn head_on(&self, x: &Tensor, mode: &mut Mode<'_>) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let h = self.gpt.final_norm(x)?;
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

    fn tiny() -> GptClsConfig {
        let gpt = GptConfig {
            vocab_size: 20,
            n_positions: 16,
            n_embd: 16,
            n_layer: 2,
            n_head: 2,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
        };
        let mut c = GptClsConfig::from_lm(gpt).with_labels(&["a".into(), "b".into(), "c".into()]);
        c.pad_token_id = Some(19);
        c
    }

    fn model(cfg: &GptClsConfig) -> (Params, GptForSequenceClassification) {
        let seq = GptHead::SequenceClassification;
        let p = init_params(cfg, seq, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
        let m = GptForSequenceClassification::new(cfg, &p).unwrap();
        (p, m)
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
        let cfg = tiny();
        let (_, m) = model(&cfg);
        let padded = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 19, 19, 19]], &Device::Cpu).unwrap();
        let both = m
            .forward(&padded, Mode::Eval)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, alone) in [(0, vec![1u32, 2, 3, 4, 5]), (1, vec![6, 7])] {
            let ids = Tensor::from_vec(alone.clone(), (1, alone.len()), &Device::Cpu).unwrap();
            let one = m
                .forward(&ids, Mode::Eval)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (a, b) in both[row].iter().zip(&one[0]) {
                assert!((a - b).abs() < 1e-5, "row {row}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_except_unused_embedding_rows() {
        let mut cfg = tiny();
        cfg.gpt.dropout = 0.1;
        let (p, m) = model(&cfg);
        let ids = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 19, 19]], &Device::Cpu).unwrap();
        let mut rng = Rng::new(1);
        let logits = m.forward(&ids, Mode::Train(&mut rng)).unwrap();
        let loss = logits.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, v) in p.iter() {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{name}: zero gradient");
        }
        // Only the two pooled tokens' rows reach score: its gradient is theirs.
        let g = grads.get(&p.get(SCORE).unwrap()).unwrap();
        assert_eq!(g.dims(), &[3, 16]);
    }

    #[test]
    fn a_language_models_weights_load_with_a_fresh_reported_score() {
        let cfg = tiny();
        let lm = super::super::init_params(&cfg.gpt, &mut Rng::new(1), &Device::Cpu, DType::F32)
            .unwrap();
        let mut tensors: BTreeMap<String, Tensor> = lm
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect();
        tensors.insert(
            "lm_head.weight".into(),
            tensors["transformer.wte.weight"].clone(),
        );
        let (p, report) = params_from_tensors(
            tensors.clone(),
            &cfg,
            GptHead::SequenceClassification,
            Path::new("lm.safetensors"),
            &mut Rng::new(2),
            DType::F32,
        )
        .unwrap();
        assert_eq!(report.newly_initialised, vec![SCORE.to_string()]);
        assert_eq!(report.unused, vec!["lm_head.weight".to_string()]);
        assert_eq!(p.len(), lm.len() + 1);
        // A score of the wrong number of labels is named.
        tensors.insert(
            SCORE.into(),
            Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap(),
        );
        let Err(e) = params_from_tensors(
            tensors,
            &cfg,
            GptHead::SequenceClassification,
            Path::new("cls.safetensors"),
            &mut Rng::new(2),
            DType::F32,
        ) else {
            panic!("a score of 2 labels loaded into a model of 3")
        };
        let e = e.to_string();
        assert!(e.contains("cls.safetensors") && e.contains(SCORE), "{e}");
    }

    #[test]
    fn the_token_classifier_scores_every_position_and_padding_changes_no_real_one() {
        let cfg = tiny();
        let tok = GptHead::TokenClassification;
        let p = init_params(&cfg, tok, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(p.get(CLASSIFIER_BIAS).unwrap().dims(), &[3]);
        let m = GptForTokenClassification::new(&cfg, &p).unwrap();
        let padded = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 19, 19, 19]], &Device::Cpu).unwrap();
        let both = m.forward(&padded, Mode::Eval).unwrap();
        assert_eq!(both.dims(), &[2, 5, 3]);
        let alone = Tensor::new(&[[6u32, 7]], &Device::Cpu).unwrap();
        let one = m.forward(&alone, Mode::Eval).unwrap();
        let real = both.get(1).unwrap().narrow(0, 0, 2).unwrap();
        let d = (real - one.get(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        // With dropout (the classifier's 0.1 by default) every parameter gets a gradient.
        let mut rng = Rng::new(1);
        let loss = m
            .forward(&padded, Mode::Train(&mut rng))
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, v) in p.iter() {
            assert!(grads.get(v.as_tensor()).is_some(), "{name}: no gradient");
        }
        // A language model's weights get a fresh, reported head: weight and zero bias.
        let lm = super::super::init_params(&cfg.gpt, &mut Rng::new(1), &Device::Cpu, DType::F32)
            .unwrap();
        let tensors = lm
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect();
        let (p, report) = params_from_tensors(
            tensors,
            &cfg,
            tok,
            Path::new("lm.safetensors"),
            &mut Rng::new(2),
            DType::F32,
        )
        .map_err(|e| e.to_string())
        .unwrap();
        assert_eq!(
            report.newly_initialised,
            [CLASSIFIER_WEIGHT, CLASSIFIER_BIAS]
        );
        let bias = p.get(CLASSIFIER_BIAS).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(bias, [0.0; 3]);
    }

    #[test]
    fn the_config_round_trips_through_transformers_format() {
        let mut cfg = tiny();
        cfg.eos_token_id = Some(19);
        cfg.problem_type = Some("multi_label_classification".into());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let seq = GptHead::SequenceClassification;
        std::fs::write(&path, to_hf_config(&cfg, seq, DType::F32).to_string()).unwrap();
        let (back, head) = config_from_hf(&path).unwrap();
        assert_eq!(head, Some(seq));
        assert_eq!(back, cfg);
        // The token classifier's config keeps its dropout (and has no problem type).
        let mut tok = cfg.clone();
        tok.problem_type = None;
        tok.classifier_dropout = Some(0.25);
        let v = to_hf_config(&tok, GptHead::TokenClassification, DType::F32);
        std::fs::write(&path, v.to_string()).unwrap();
        let (back, head) = config_from_hf(&path).unwrap();
        assert_eq!(head, Some(GptHead::TokenClassification));
        assert_eq!(back, tok);
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

//! GPT-2 for sequence classification, transformers' `GPT2ForSequenceClassification`: the
//! transformer, then `score` (n_embd → num_labels, no bias) on the hidden state of each
//! sequence's last token that is not the padding id.
//!
//! With causal attention that token has seen the whole sequence, and padding on the right
//! comes after it, so it sees no padding and no attention mask is needed; positions count from
//! 0 as in transformers. A token inside the text that happens to equal the padding id (GPT-2
//! is usually padded with its end-of-text token) is a token like any other: transformers
//! picks the rightmost non-padding token, and so do we.

use super::hf::{self as gpt_hf};
use super::{param_shapes, Gpt, GptConfig};
use crate::hf_config::{self, LoadReport};
use crate::{safetensors_io, Error, Mode, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{self as k, Rng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The classifier's parameter: (num_labels, n_embd), as `nn.Linear` stores it.
pub const SCORE: &str = "score.weight";
/// transformers' architecture name.
pub const ARCHITECTURE: &str = "GPT2ForSequenceClassification";
/// The `initializer_range` transformers draws a fresh `score` with.
const SCORE_STD: f64 = 0.02;

/// A `GPT2ForSequenceClassification` config: GPT-2's sizes, the labels and the padding id.
#[derive(Debug, Clone, PartialEq)]
pub struct GptClsConfig {
    pub gpt: GptConfig,
    /// Class names by index (one output for regression).
    pub id2label: BTreeMap<usize, String>,
    /// The id batches are padded with. transformers cannot batch without one; GPT-2
    /// checkpoints have none, and fine-tuning sets it to the end-of-text id.
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// `"single_label_classification"`, `"multi_label_classification"` or `"regression"`.
    pub problem_type: Option<String>,
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

    /// The padding id, which a batch of several sequences needs (`path` is for messages).
    pub fn pad_id(&self, path: &Path) -> Result<u32> {
        self.pad_token_id.ok_or_else(|| Error::File {
            path: path.to_path_buf(),
            msg: "GPT-2 classifier config has no pad_token_id: transformers cannot tell \
                  where a padded sequence ends without one (set it, usually to the \
                  end-of-text id)"
                .into(),
        })
    }

    /// Every parameter with its shape: the transformer's, then `score`.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = param_shapes(&self.gpt);
        v.push((SCORE.to_string(), vec![self.num_labels(), self.gpt.n_embd]));
        v
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
        Ok(())
    }
}

/// Reads a `GPT2Config` `config.json` as a classifier's: GPT-2's sizes (as
/// [`gpt_hf::config_from_hf`]), `id2label`, the special ids and `problem_type`. Also returns
/// whether `architectures` names `GPT2ForSequenceClassification`.
pub fn config_from_hf(path: &Path) -> Result<(GptClsConfig, bool)> {
    let v = hf_config::read_json(path)?;
    let err = hf_config::file_err(path);
    let gpt = gpt_hf::config_from_json(&v, path)?;
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
    let is_classifier = v
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        == Some(ARCHITECTURE);
    let cfg = GptClsConfig {
        id2label: hf_config::id2label(&v, path)?,
        pad_token_id: id("pad_token_id")?,
        bos_token_id: id("bos_token_id")?,
        eos_token_id: id("eos_token_id")?,
        problem_type: v
            .get("problem_type")
            .and_then(Value::as_str)
            .map(str::to_string),
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
    Ok((cfg, is_classifier))
}

/// `config.json` of a `GPT2ForSequenceClassification`.
pub fn to_hf_config(cfg: &GptClsConfig, dtype: DType) -> Value {
    let mut v = gpt_hf::to_hf_config(&cfg.gpt, cfg.eos_token_id, dtype);
    v["architectures"] = Value::from(vec![ARCHITECTURE]);
    v["bos_token_id"] = Value::from(cfg.bos_token_id);
    v["eos_token_id"] = Value::from(cfg.eos_token_id);
    v["pad_token_id"] = Value::from(cfg.pad_token_id);
    hf_config::set_label_maps(&mut v, &cfg.id2label);
    v["problem_type"] = Value::from(
        cfg.problem_type
            .as_deref()
            .unwrap_or("single_label_classification"),
    );
    v
}

/// Builds the classifier's [`Params`] from named tensors: the transformer's must all be there
/// (with or without `transformer.`); a missing `score` (a language model's checkpoint) is drawn
/// from N(0, 0.02) with `rng` and reported, as transformers does; `lm_head.weight` (tied) is
/// dropped and reported as unused. `path` is for messages.
pub fn params_from_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    cfg: &GptClsConfig,
    path: &Path,
    rng: &mut Rng,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    cfg.validate()?;
    let mut report = LoadReport::default();
    let shape = [cfg.num_labels(), cfg.gpt.n_embd];
    let score = match safetensors_io::take_shaped(&mut tensors, SCORE, &[SCORE], &shape, path)? {
        Some(t) => t,
        None => {
            report.newly_initialised.push(SCORE.to_string());
            let device = tensors
                .values()
                .next()
                .map_or(Device::Cpu, |t| t.device().clone());
            Tensor::from_vec(
                rng.normal_vec(shape[0] * shape[1], SCORE_STD),
                &shape,
                &device,
            )?
        }
    };
    if tensors.remove("lm_head.weight").is_some() {
        report.unused.push("lm_head.weight".to_string());
    }
    let mut params = gpt_hf::params_from_tensors(tensors, &cfg.gpt, path, dtype)?;
    params.insert(SCORE.to_string(), score.to_dtype(dtype)?)?;
    Ok((params, report))
}

/// Loads `model.safetensors` (a classifier's, or a language model's with a fresh `score`).
pub fn load_params(
    path: &Path,
    cfg: &GptClsConfig,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<(Params, LoadReport)> {
    safetensors_io::refuse_pickle(path)?;
    gpt_hf::check_plausible(&cfg.gpt, path)?;
    let tensors = safetensors_io::load_raw(path, device)?;
    safetensors_io::check_float(&tensors, path)?;
    params_from_tensors(tensors, cfg, path, rng, dtype)
}

/// A fresh classifier: GPT-2's initialisation and a N(0, 0.02) `score`.
pub fn init_params(
    cfg: &GptClsConfig,
    rng: &mut Rng,
    device: &Device,
    dtype: DType,
) -> Result<Params> {
    cfg.validate()?;
    let mut params = super::init_params(&cfg.gpt, rng, device, dtype)?;
    let (l, c) = (cfg.num_labels(), cfg.gpt.n_embd);
    let score = Tensor::from_vec(rng.normal_vec(l * c, SCORE_STD), (l, c), &Device::Cpu)?;
    params.insert(SCORE.to_string(), score.to_device(device)?.to_dtype(dtype)?)?;
    Ok(params)
}

/// The forward graph of a [`GptClsConfig`] over a [`Params`] store.
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
        let (b, t) = ids.dims2()?;
        let last = self.last_tokens(ids)?;
        let g = &self.gpt;
        let mut x = g.embed_input(ids, &mut mode)?;
        let mask = g.block_mask(ids, &mode)?;
        for l in 0..g.n_blocks() {
            x = g.block(l, x, mask.as_ref(), &mut mode)?;
        }
        self.head(&x, &last, (b, t))
    }

    /// The last block's output x (B, T, C) → logits (B, L): the final LayerNorm, each row's
    /// token at `last`, then `score`. Only the B picked rows go through the head.
    pub fn head(&self, x: &Tensor, last: &[u32], (b, t): (usize, usize)) -> Result<Tensor> {
        let c = x.dim(2)?;
        let h = self.gpt.final_norm(x)?.reshape((b * t, c))?; // (B·T, C)
                                                              // Row r's picked token is row r·T + last[r] of the flattened states; a gather whose
                                                              // backward scatters into those rows (the embedding op).
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
        let p = init_params(cfg, &mut Rng::new(3), &Device::Cpu, DType::F32).unwrap();
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
    fn the_config_round_trips_through_transformers_format() {
        let mut cfg = tiny();
        cfg.eos_token_id = Some(19);
        cfg.problem_type = Some("multi_label_classification".into());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, to_hf_config(&cfg, DType::F32).to_string()).unwrap();
        let (back, is_cls) = config_from_hf(&path).unwrap();
        assert!(is_cls);
        assert_eq!(back, cfg);
        // A padding id past the vocabulary is named.
        let mut v = to_hf_config(&cfg, DType::F32);
        v["pad_token_id"] = Value::from(20);
        std::fs::write(&path, v.to_string()).unwrap();
        let e = config_from_hf(&path).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("pad_token_id 20"),
            "{e}"
        );
    }
}

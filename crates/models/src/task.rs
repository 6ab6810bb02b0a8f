//! The models fine-tuning trains, whatever their family: an encoder of the BERT family with any
//! of its task heads ([`BertClassifier`]), or GPT-2 with a sequence or token classifier
//! ([`GptForSequenceClassification`], [`GptForTokenClassification`]). Task heads are named by
//! [`BertHead`]; GPT-2 has [`BertHead::SequenceClassification`] and
//! [`BertHead::TokenClassification`].
//!
//! `config.json`'s `model_type` picks the family ([`TaskConfig::from_hf`]); everything a
//! fine-tuning loop asks of a config or a model goes through here, so the loop itself does not
//! branch on the family.

use crate::bert::{self, BertClassifier, BertConfig, BertHead, BertInput, BertModel};
use crate::gpt::classifier::{
    self as gpt_cls, GptClsConfig, GptForSequenceClassification, GptForTokenClassification, GptHead,
};
use crate::{hf_config, Error, LoadReport, Mode, Params, Result};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The config of a model fine-tuning trains.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskConfig {
    Bert(BertConfig),
    Gpt2(GptClsConfig),
}

impl TaskConfig {
    /// Reads a `config.json` of the BERT family or of GPT-2; returns the config and the task
    /// head its `architectures` names (`None`: a bare model, a language model, or an
    /// architecture of the family we do not implement).
    pub fn from_hf(path: &Path) -> Result<(Self, Option<BertHead>)> {
        let v = hf_config::read_json(path)?;
        if v.get("model_type").and_then(Value::as_str) == Some("gpt2") {
            let (c, head) = gpt_cls::config_from_json(&v, path)?;
            let head = head.map(|h| match h {
                GptHead::SequenceClassification => BertHead::SequenceClassification,
                GptHead::TokenClassification => BertHead::TokenClassification,
            });
            return Ok((Self::Gpt2(c), head));
        }
        if v.get("model_type").and_then(Value::as_str) == Some("llama") {
            // Pretraining, generation and export take Llama; its task heads are not built.
            return Err(Error::File {
                path: path.to_path_buf(),
                msg:
                    "a Llama model: fine-tuning with a task head (LlamaForSequenceClassification, \
                      LlamaForTokenClassification) is not implemented; Lantern fine-tunes the \
                      BERT family and GPT-2, and trains Llama as a language model (`lantern \
                      train` with model.init_from)"
                        .into(),
            });
        }
        let (c, head) = bert::hf::config_from_json(&v, path)?;
        Ok((Self::Bert(c), head))
    }

    /// The family's name, for messages.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Bert(c) => c.model_type.model_type(),
            Self::Gpt2(_) => "gpt2",
        }
    }

    /// transformers' class name of `head`'s architecture.
    pub fn architecture(&self, head: BertHead) -> String {
        match self {
            Self::Bert(c) => c.architecture(head),
            Self::Gpt2(_) => gpt_head(head).map_or_else(
                || format!("GPT-2 with {}", head.architecture()),
                |h| h.architecture().to_string(),
            ),
        }
    }

    /// Whether the family has `head`: every head for the BERT family, the sequence and token
    /// classifiers for GPT-2.
    pub fn has_head(&self, head: BertHead) -> bool {
        match self {
            Self::Bert(_) => true,
            Self::Gpt2(_) => gpt_head(head).is_some(),
        }
    }

    /// Refuses a head the family does not have, naming the config file.
    pub fn check_head(&self, head: BertHead, path: &Path) -> Result<()> {
        match self.has_head(head) {
            true => Ok(()),
            false => Err(Error::File {
                path: path.to_path_buf(),
                msg: format!(
                    "a {} model fine-tunes for sequence classification (single-label, \
                     multi-label or regression) or token classification only, not as {}",
                    self.family(),
                    head.architecture()
                ),
            }),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(c) => c.vocab_size,
            Self::Gpt2(c) => c.gpt.vocab_size,
        }
    }

    /// The longest input in tokens.
    pub fn max_tokens(&self) -> usize {
        match self {
            Self::Bert(c) => c.max_tokens(),
            Self::Gpt2(c) => c.gpt.n_positions,
        }
    }

    /// Layers and width, for the run's header line.
    pub fn layers_and_width(&self) -> (usize, usize) {
        match self {
            Self::Bert(c) => (c.num_hidden_layers, c.hidden_size),
            Self::Gpt2(c) => (c.gpt.n_layer, c.gpt.n_embd),
        }
    }

    pub fn num_labels(&self) -> usize {
        self.id2label().len()
    }

    /// Label names in index order.
    pub fn label_names(&self) -> Vec<String> {
        self.id2label().values().cloned().collect()
    }

    fn id2label(&self) -> &BTreeMap<usize, String> {
        match self {
            Self::Bert(c) => &c.id2label,
            Self::Gpt2(c) => &c.id2label,
        }
    }

    /// The config's `problem_type`, if it names one.
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            Self::Bert(c) => c.problem_type.as_deref(),
            Self::Gpt2(c) => c.problem_type.as_deref(),
        }
    }

    /// The same config over `labels`, recording `problem_type`.
    pub fn with_labels(self, labels: &[String], problem_type: Option<String>) -> Self {
        match self {
            Self::Bert(c) => {
                let mut c = c.with_labels(labels);
                c.problem_type = problem_type;
                Self::Bert(c)
            }
            Self::Gpt2(c) => {
                let mut c = c.with_labels(labels);
                c.problem_type = problem_type;
                Self::Gpt2(c)
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Bert(c) => c.validate(),
            Self::Gpt2(c) => c.validate(),
        }
    }

    /// `config.json` of `head`'s architecture.
    pub fn to_hf_config(&self, head: BertHead, dtype: DType) -> Value {
        match self {
            Self::Bert(c) => bert::hf::to_hf_config(c, head, dtype),
            Self::Gpt2(c) => match gpt_head(head) {
                Some(h) => gpt_cls::to_hf_config(c, h, dtype),
                // No such model: the language model's config.
                None => crate::gpt::hf::to_hf_config(&c.gpt, c.eos_token_id, dtype),
            },
        }
    }

    /// Fresh parameters for `head` (the initialisation transformers gives each family).
    pub fn init_params(
        &self,
        head: BertHead,
        rng: &mut Rng,
        device: &Device,
        dtype: DType,
    ) -> Result<Params> {
        match self {
            Self::Bert(c) => bert::init_params(c, head, rng, device, dtype),
            Self::Gpt2(c) => {
                let h = gpt_head(head).ok_or_else(|| no_gpt_head(head))?;
                gpt_cls::init_params(c, h, rng, device, dtype)
            }
        }
    }

    /// Loads `model.safetensors` for `head`: a missing head is drawn from `rng` and reported
    /// (as transformers), unused tensors are reported.
    pub fn load_params(
        &self,
        path: &Path,
        head: BertHead,
        rng: &mut Rng,
        device: &Device,
        dtype: DType,
    ) -> Result<(Params, LoadReport)> {
        match self {
            Self::Bert(c) => bert::hf::load_params(path, c, head, rng, device, dtype),
            Self::Gpt2(c) => {
                let h = gpt_head(head).ok_or_else(|| no_gpt_head(head))?;
                gpt_cls::load_params(path, c, h, rng, device, dtype)
            }
        }
    }

    /// The tensors of an HF-loadable `model.safetensors`.
    pub fn export_tensors(
        &self,
        params: &Params,
        dtype: DType,
    ) -> Result<BTreeMap<String, Tensor>> {
        match self {
            Self::Bert(_) => bert::hf::export_tensors(params, dtype),
            Self::Gpt2(_) => crate::gpt::hf::export_tensors(params, dtype),
        }
    }
}

/// A model fine-tuning trains, over the variables of a [`Params`] store.
pub enum TaskModel {
    /// Boxed: an encoder with its head is a few hundred bytes of tensor handles.
    Bert(Box<BertClassifier>),
    Gpt2Sequence(GptForSequenceClassification),
    Gpt2Token(GptForTokenClassification),
}

impl TaskModel {
    pub fn new(cfg: &TaskConfig, params: &Params, head: BertHead) -> Result<Self> {
        match cfg {
            TaskConfig::Bert(c) => Ok(Self::Bert(Box::new(BertClassifier::new(c, params, head)?))),
            TaskConfig::Gpt2(c) => match gpt_head(head).ok_or_else(|| no_gpt_head(head))? {
                GptHead::SequenceClassification => Ok(Self::Gpt2Sequence(
                    GptForSequenceClassification::new(c, params)?,
                )),
                GptHead::TokenClassification => {
                    Ok(Self::Gpt2Token(GptForTokenClassification::new(c, params)?))
                }
            },
        }
    }

    pub fn head(&self) -> BertHead {
        match self {
            Self::Bert(m) => m.head(),
            Self::Gpt2Sequence(_) => BertHead::SequenceClassification,
            Self::Gpt2Token(_) => BertHead::TokenClassification,
        }
    }

    /// Logits, as [`BertClassifier::forward`]: (B, num_labels) for sequence classification,
    /// (B, T, num_labels) for token classification. GPT-2 reads the ids only: with causal
    /// attention no real token sees the padding after it, and it has no token types.
    pub fn forward(&self, input: &BertInput<'_>, mode: Mode<'_>) -> Result<Tensor> {
        match self {
            Self::Bert(m) => m.forward(input, mode),
            Self::Gpt2Sequence(m) => m.forward(input.ids, mode),
            Self::Gpt2Token(m) => m.forward(input.ids, mode),
        }
    }

    /// The encoder of a BERT-family model (what activation checkpointing recomputes layer by
    /// layer); `None` for GPT-2.
    pub fn bert(&self) -> Option<&BertModel> {
        match self {
            Self::Bert(m) => Some(m.bert()),
            Self::Gpt2Sequence(_) | Self::Gpt2Token(_) => None,
        }
    }
}

/// GPT-2's head of a task head's name, if GPT-2 has it.
fn gpt_head(head: BertHead) -> Option<GptHead> {
    match head {
        BertHead::SequenceClassification => Some(GptHead::SequenceClassification),
        BertHead::TokenClassification => Some(GptHead::TokenClassification),
        _ => None,
    }
}

fn no_gpt_head(head: BertHead) -> Error {
    Error::Config(format!("GPT-2 has no {} head", head.architecture()))
}

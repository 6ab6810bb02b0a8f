//! The models fine-tuning trains, whatever their family: an encoder of the BERT family with any
//! of its task heads ([`BertClassifier`]), or a decoder (GPT-2, Llama) with a sequence or token
//! classifier ([`DecoderForSequenceClassification`], [`DecoderForTokenClassification`]). Task
//! heads are named by [`BertHead`]; the decoders have [`BertHead::SequenceClassification`] and
//! [`BertHead::TokenClassification`].
//!
//! `config.json`'s `model_type` picks the family ([`TaskConfig::from_hf`]); everything a
//! fine-tuning loop asks of a config or a model goes through here, so the loop itself does not
//! branch on the family.

use crate::bert::{self, BertClassifier, BertConfig, BertHead, BertInput, BertModel};
use crate::decoder::classifier::{
    self as decoder_cls, DecoderClsConfig, DecoderForSequenceClassification,
    DecoderForTokenClassification, DecoderHead,
};
use crate::decoder::Decoder;
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
    /// GPT-2 or Llama with a classifier.
    Decoder(DecoderClsConfig),
}

/// Whether `name` (any family's) is an embedding table rather than a linear layer's weight.
pub fn is_embedding(name: &str) -> bool {
    name.contains("embeddings.")
        || name == crate::llama::EMBED_TOKENS
        || [".wte.weight", ".wpe.weight"]
            .iter()
            .any(|s| name.ends_with(s))
}

impl TaskConfig {
    /// Reads a `config.json` of the BERT family, GPT-2 or Llama; returns the config and the
    /// task head its `architectures` names (`None`: a bare model, a language model, or an
    /// architecture of the family we do not implement).
    pub fn from_hf(path: &Path) -> Result<(Self, Option<BertHead>)> {
        let v = hf_config::read_json(path)?;
        if v.get("model_type")
            .and_then(Value::as_str)
            .is_some_and(crate::decoder::is_model_type)
        {
            let (c, head) = decoder_cls::config_from_json(&v, path)?;
            let head = head.map(|h| match h {
                DecoderHead::SequenceClassification => BertHead::SequenceClassification,
                DecoderHead::TokenClassification => BertHead::TokenClassification,
            });
            return Ok((Self::Decoder(c), head));
        }
        let (c, head) = bert::hf::config_from_json(&v, path)?;
        Ok((Self::Bert(c), head))
    }

    /// The same model with every dropout rate 0, the classifier's too (TRL's
    /// `disable_dropout`: its reward models train without; their config keeps the rates).
    pub fn without_dropout(&self) -> Self {
        let mut c = self.clone();
        match &mut c {
            Self::Bert(b) => {
                b.hidden_dropout_prob = 0.0;
                b.attention_probs_dropout_prob = 0.0;
                b.classifier_dropout = Some(0.0);
            }
            Self::Decoder(d) => {
                if let crate::decoder::DecoderConfig::Gpt(g) = &mut d.lm {
                    g.dropout = 0.0;
                }
                d.classifier_dropout = Some(0.0);
            }
        }
        c
    }

    /// The family's name, for messages.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Bert(c) => c.model_type.model_type(),
            Self::Decoder(c) => c.family(),
        }
    }

    /// transformers' class name of `head`'s architecture.
    pub fn architecture(&self, head: BertHead) -> String {
        match self {
            Self::Bert(c) => c.architecture(head),
            Self::Decoder(c) => decoder_head(head)
                .and_then(|h| h.architecture(&c.lm))
                .map_or_else(
                    || format!("{} with {}", c.family(), head.architecture()),
                    str::to_string,
                ),
        }
    }

    /// Whether the family has `head`: every head for the BERT family, the sequence and token
    /// classifiers for GPT-2 and Llama.
    pub fn has_head(&self, head: BertHead) -> bool {
        match self {
            Self::Bert(_) => true,
            Self::Decoder(_) => decoder_head(head).is_some(),
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
            Self::Decoder(c) => c.lm.vocab_size(),
        }
    }

    /// The longest input in tokens.
    pub fn max_tokens(&self) -> usize {
        match self {
            Self::Bert(c) => c.max_tokens(),
            Self::Decoder(c) => c.lm.max_positions(),
        }
    }

    /// Layers and width, for the run's header line.
    pub fn layers_and_width(&self) -> (usize, usize) {
        match self {
            Self::Bert(c) => (c.num_hidden_layers, c.hidden_size),
            Self::Decoder(c) => (c.lm.num_layers(), c.lm.hidden_size()),
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
            Self::Decoder(c) => &c.id2label,
        }
    }

    /// The config's `problem_type`, if it names one.
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            Self::Bert(c) => c.problem_type.as_deref(),
            Self::Decoder(c) => c.problem_type.as_deref(),
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
            Self::Decoder(c) => {
                let mut c = c.with_labels(labels);
                c.problem_type = problem_type;
                Self::Decoder(c)
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Bert(c) => c.validate(),
            Self::Decoder(c) => c.validate(),
        }
    }

    /// `config.json` of `head`'s architecture.
    pub fn to_hf_config(&self, head: BertHead, dtype: DType) -> Value {
        match self {
            Self::Bert(c) => bert::hf::to_hf_config(c, head, dtype),
            Self::Decoder(c) => match decoder_head(head) {
                Some(h) => decoder_cls::to_hf_config(c, h, dtype),
                // No such model: the language model's config.
                None => c.lm.to_hf_config(c.eos_token_id, dtype),
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
            Self::Decoder(c) => {
                let h = decoder_head(head).ok_or_else(|| no_decoder_head(c, head))?;
                decoder_cls::init_params(c, h, rng, device, dtype)
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
            Self::Decoder(c) => {
                let h = decoder_head(head).ok_or_else(|| no_decoder_head(c, head))?;
                decoder_cls::load_params(path, c, h, rng, device, dtype)
            }
        }
    }

    /// Whether `name` belongs to the task head `head` (what a model without the head lacks),
    /// rather than to the pretrained body: the parameters peft trains in full for a task
    /// (`modules_to_save`: `classifier`, `score`, `qa_outputs`, DistilBERT's `pre_classifier`).
    pub fn is_head_param(&self, head: BertHead, name: &str) -> bool {
        match self {
            Self::Bert(_) => bert::is_head_param(name),
            Self::Decoder(c) => decoder_head(head).is_some_and(|h| h.is_head_param(&c.lm, name)),
        }
    }

    /// Whether the family stores its linear layers' weights as (in, out) (GPT-2's `Conv1D`;
    /// peft's `fan_in_fan_out`) rather than torch's `Linear` (out, in).
    pub fn weights_in_out(&self) -> bool {
        matches!(self, Self::Decoder(c) if c.lm.weights_in_out())
    }

    /// Whether `name` is an embedding table rather than a linear layer's weight.
    pub fn is_embedding(&self, name: &str) -> bool {
        is_embedding(name)
    }

    /// peft's default LoRA targets for the family (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`):
    /// the attention's query and value projections. peft has none for DistilBERT; its query
    /// and value projections are the same choice. Nor for ModernBERT, whose query, key and
    /// value are one fused layer: `Wqkv`, as peft's default for GPT-2's fused `c_attn`.
    pub fn default_lora_targets(&self) -> &'static [&'static str] {
        match self {
            Self::Bert(c) => match c.model_type {
                bert::Family::DistilBert => &["q_lin", "v_lin"],
                bert::Family::ModernBert => &["Wqkv"],
                _ => &["query", "value"],
            },
            Self::Decoder(c) => c.lm.default_lora_targets(),
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
            Self::Decoder(c) => c.lm.export_tensors(params, dtype),
        }
    }
}

/// A model fine-tuning trains, over the variables of a [`Params`] store.
pub enum TaskModel {
    /// Boxed: an encoder with its head is a few hundred bytes of tensor handles.
    Bert(Box<BertClassifier>),
    DecoderSequence(DecoderForSequenceClassification),
    DecoderToken(DecoderForTokenClassification),
}

impl TaskModel {
    pub fn new(cfg: &TaskConfig, params: &Params, head: BertHead) -> Result<Self> {
        match cfg {
            TaskConfig::Bert(c) => Ok(Self::Bert(Box::new(BertClassifier::new(c, params, head)?))),
            TaskConfig::Decoder(c) => {
                match decoder_head(head).ok_or_else(|| no_decoder_head(c, head))? {
                    DecoderHead::SequenceClassification => Ok(Self::DecoderSequence(
                        DecoderForSequenceClassification::new(c, params)?,
                    )),
                    DecoderHead::TokenClassification => Ok(Self::DecoderToken(
                        DecoderForTokenClassification::new(c, params)?,
                    )),
                }
            }
        }
    }

    /// The same model adding NEFTune's noise of strength `alpha` to its token embeddings
    /// while training ([`crate::neftune`]).
    pub fn with_neftune(self, alpha: f64) -> Self {
        match self {
            Self::Bert(m) => Self::Bert(Box::new(m.with_neftune(alpha))),
            Self::DecoderSequence(m) => Self::DecoderSequence(m.with_neftune(alpha)),
            Self::DecoderToken(m) => Self::DecoderToken(m.with_neftune(alpha)),
        }
    }

    pub fn head(&self) -> BertHead {
        match self {
            Self::Bert(m) => m.head(),
            Self::DecoderSequence(_) => BertHead::SequenceClassification,
            Self::DecoderToken(_) => BertHead::TokenClassification,
        }
    }

    /// Logits, as [`BertClassifier::forward`]: (B, num_labels) for sequence classification,
    /// (B, T, num_labels) for token classification. GPT-2 and Llama read the ids only: with
    /// causal attention no real token sees the padding after it, and they have no token types.
    pub fn forward(&self, input: &BertInput<'_>, mode: Mode<'_>) -> Result<Tensor> {
        match self {
            Self::Bert(m) => m.forward(input, mode),
            Self::DecoderSequence(m) => m.forward(input.ids, mode),
            Self::DecoderToken(m) => m.forward(input.ids, mode),
        }
    }

    /// The encoder of a BERT-family model (what activation checkpointing recomputes layer by
    /// layer); `None` for a decoder.
    pub fn bert(&self) -> Option<&BertModel> {
        match self {
            Self::Bert(m) => Some(m.bert()),
            Self::DecoderSequence(_) | Self::DecoderToken(_) => None,
        }
    }

    /// The transformer under a decoder's head; `None` for the BERT family.
    pub fn decoder(&self) -> Option<&Decoder> {
        match self {
            Self::Bert(_) => None,
            Self::DecoderSequence(m) => Some(m.decoder()),
            Self::DecoderToken(m) => Some(m.decoder()),
        }
    }
}

/// The decoders' head of a task head's name, if they have it.
fn decoder_head(head: BertHead) -> Option<DecoderHead> {
    match head {
        BertHead::SequenceClassification => Some(DecoderHead::SequenceClassification),
        BertHead::TokenClassification => Some(DecoderHead::TokenClassification),
        _ => None,
    }
}

fn no_decoder_head(cfg: &DecoderClsConfig, head: BertHead) -> Error {
    Error::Config(format!(
        "{} has no {} head",
        cfg.family(),
        head.architecture()
    ))
}

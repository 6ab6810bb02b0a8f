use super::modern::ModernSettings;
use super::BertHead;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which member of the BERT family: transformers' `model_type`.
///
/// RoBERTa (Liu et al. 2019) and XLM-RoBERTa (Conneau et al. 2020, the same network) are BERT
/// with three differences that matter here: position ids count from `pad_token_id + 1` over the
/// non-pad tokens (pad tokens get position `pad_token_id`), so `max_position_embeddings` is
/// the token limit plus `pad_token_id + 1`; their sequence classifier has no pooler and a
/// two-layer head (`classifier.dense`, tanh, `classifier.out_proj`) on `<s>`; and tensors are
/// named `roberta.*` (`lm_head.*` for the MLM head).
///
/// ELECTRA (Clark et al. 2020; its discriminator, the checkpoint people fine-tune) is BERT with
/// embeddings of their own width (`embedding_size`) projected to the hidden size
/// (`electra.embeddings_project`), no pooler, and a sequence classifier like RoBERTa's with a
/// GELU in place of the tanh. Its masked-LM generator is not implemented.
///
/// DistilBERT (Sanh et al. 2019) is a BERT encoder without token types or pooler, under its
/// own tensor and config names (`distilbert.transformer.layer.N.attention.q_lin`, `dim`,
/// `n_layers`, ...); its sequence classifier is `pre_classifier` → ReLU → dropout →
/// `classifier` on `[CLS]`, and its question-answering head has a dropout (`qa_dropout`).
///
/// ModernBERT (Warner et al. 2024) keeps the encoder-only shape and the heads but changes the
/// layer: pre-LayerNorm (no biases by default), rotary positions instead of a position table,
/// a fused `Wqkv`, a GeGLU feed-forward, and attention over a local window in all but every
/// third layer; its settings are [`ModernSettings`] (`super::modern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    #[default]
    Bert,
    Roberta,
    XlmRoberta,
    #[serde(rename = "distilbert")]
    DistilBert,
    Electra,
    #[serde(rename = "modernbert")]
    ModernBert,
}

impl Family {
    pub(crate) const ALL: [Family; 6] = [
        Family::Bert,
        Family::Roberta,
        Family::XlmRoberta,
        Family::DistilBert,
        Family::Electra,
        Family::ModernBert,
    ];

    /// transformers' `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::XlmRoberta => "xlm-roberta",
            Family::DistilBert => "distilbert",
            Family::Electra => "electra",
            Family::ModernBert => "modernbert",
        }
    }

    pub fn from_model_type(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == name)
    }

    /// The class-name prefix of the family's architectures (`BertModel`, `RobertaModel`,
    /// `XLMRobertaModel`, `DistilBertModel`, ...).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Family::Bert => "Bert",
            Family::Roberta => "Roberta",
            Family::XlmRoberta => "XLMRoberta",
            Family::DistilBert => "DistilBert",
            Family::Electra => "Electra",
            Family::ModernBert => "ModernBert",
        }
    }

    /// The prefix of encoder tensor names inside a model with a head (`bert.`, `roberta.`,
    /// `distilbert.`).
    pub fn encoder_prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert.",
            Family::Roberta | Family::XlmRoberta => "roberta.",
            Family::DistilBert => "distilbert.",
            Family::Electra => "electra.",
            Family::ModernBert => "model.",
        }
    }

    /// Whether position ids count from `pad_token_id + 1` over non-pad tokens (RoBERTa's
    /// `create_position_ids_from_input_ids`) rather than from 0 over every position.
    pub fn offsets_positions(self) -> bool {
        matches!(self, Family::Roberta | Family::XlmRoberta)
    }

    /// Whether the model adds token-type embeddings of the input's token types. RoBERTa has a
    /// one-row table its tokenizers never index past (they pass no token types: row 0 is
    /// added everywhere); DistilBERT has no table at all.
    pub fn uses_token_types(self) -> bool {
        matches!(self, Family::Bert | Family::Electra)
    }

    /// Whether the family has a masked-LM head here (ELECTRA's generator is not implemented).
    pub fn has_masked_lm(self) -> bool {
        self != Family::Electra
    }

    /// Whether the model has a token-type table (`embeddings.token_type_embeddings`).
    pub fn has_token_type_table(self) -> bool {
        !matches!(self, Family::DistilBert | Family::ModernBert)
    }

    /// Whether the model has a learned position table (ModernBERT's positions are rotary).
    pub fn has_position_table(self) -> bool {
        self != Family::ModernBert
    }
}

/// BERT hyper-parameters; field names are HF's `BertConfig` names, so a `config.json` maps
/// onto this 1:1 (see [`super::hf`] for reading and writing the file). RoBERTa and XLM-R
/// configs are the same fields with another [`Family`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// `"bert"` (the default, also for configs written before the field existed), `"roberta"`
    /// or `"xlm-roberta"`.
    #[serde(default)]
    pub model_type: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Only `"gelu"` (the exact erf form, BERT's) is implemented.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Dropout before the classifier; `None` = `hidden_dropout_prob` (as transformers).
    /// DistilBERT's `seq_classif_dropout` (its sequence classifier only).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Dropout before `qa_outputs`: DistilBERT's `qa_dropout`; `None` (BERT, RoBERTa) = none.
    #[serde(default)]
    pub qa_dropout: Option<f64>,
    /// ELECTRA's embedding width, projected to `hidden_size` when it differs; `None` (every
    /// other family) = `hidden_size`.
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// ELECTRA's `summary_last_dropout`: the dropout after its multiple-choice model's
    /// sequence summary; `None` (every other family) = none.
    #[serde(default)]
    pub summary_last_dropout: Option<f64>,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Class names by index, for sequence classification; empty for other heads.
    #[serde(default)]
    pub id2label: BTreeMap<usize, String>,
    /// ModernBERT's own settings; `None` for every other family.
    #[serde(default)]
    pub modern: Option<ModernSettings>,
    /// transformers' `problem_type` of a classifier: `"single_label_classification"`,
    /// `"multi_label_classification"` or `"regression"` (one output); `None` = the first.
    #[serde(default)]
    pub problem_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    /// A small config with transformers' defaults for everything but the sizes.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        max_position_embeddings: usize,
    ) -> Self {
        Self {
            model_type: Family::Bert,
            vocab_size,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: default_act(),
            max_position_embeddings,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            classifier_dropout: None,
            qa_dropout: None,
            embedding_size: None,
            summary_last_dropout: None,
            pad_token_id: 0,
            id2label: BTreeMap::new(),
            modern: None,
            problem_type: None,
        }
    }

    /// Named presets for masked-LM pretraining. `bert-tiny` is Google's BERT-Tiny (L=2, H=128,
    /// A=2; Turc et al. 2019) and trains on two CPU cores in a minute or two; `bert-base` is
    /// BERT-base (L=12, H=768, A=12). Dropout 0.1 and the rest as transformers' defaults; the
    /// vocabulary comes from the tokenizer the data was prepared with.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let (hidden, layers, heads, positions) = match name {
            "bert-tiny" => (128, 2, 2, 128),
            "bert-base" => (768, 12, 12, 512),
            other => {
                return Err(Error::Config(format!(
                    "unknown BERT preset {other:?} (known: {})",
                    Self::PRESETS.join(", ")
                )))
            }
        };
        let c = Self::new(vocab_size, hidden, layers, heads, 4 * hidden, positions);
        c.validate()?;
        Ok(c)
    }

    pub const PRESETS: [&'static str; 2] = ["bert-tiny", "bert-base"];

    /// Parameters of the masked-LM model (`BertForMaskedLM`: encoder without pooler, MLM
    /// transform and output bias; the decoder is tied to the word embeddings).
    pub fn num_params_mlm(&self) -> usize {
        let (v, c, f) = (self.vocab_size, self.hidden_size, self.intermediate_size);
        let emb = (v + self.max_position_embeddings + self.type_vocab_size) * c + 2 * c;
        let layer = 4 * (c * c + c) + 2 * c + (c * f + f) + (f * c + c) + 2 * c;
        let head = c * c + c + 2 * c + v;
        emb + self.num_hidden_layers * layer + head
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.num_hidden_layers == 0
            || self.num_attention_heads == 0
            || self.intermediate_size == 0
            || self.max_position_embeddings == 0
            || self.embedding_size == Some(0)
            || (self.type_vocab_size == 0 && self.model_type.has_token_type_table())
        {
            return bad(format!("BERT sizes must be positive: {self:?}"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act {:?} is not supported (BERT uses \"gelu\", the exact erf form)",
                self.hidden_act
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout.unwrap_or(0.0)),
            ("qa_dropout", self.qa_dropout.unwrap_or(0.0)),
            (
                "summary_last_dropout",
                self.summary_last_dropout.unwrap_or(0.0),
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} {p} must be in [0, 1)"));
            }
        }
        match (self.model_type, &self.modern) {
            (Family::ModernBert, Some(m)) => m.validate(self.num_hidden_layers)?,
            (Family::ModernBert, None) => {
                return bad("a modernbert config without its settings".into());
            }
            (_, Some(_)) => {
                return bad(format!(
                    "ModernBERT settings in a {} config",
                    self.model_type.model_type()
                ))
            }
            (_, None) => {}
        }
        if self.model_type.offsets_positions()
            && self.max_position_embeddings <= self.pad_token_id as usize + 1
        {
            return bad(format!(
                "max_position_embeddings {} leaves no position for a token: {} positions \
                 count from pad_token_id + 1 = {}",
                self.max_position_embeddings,
                self.model_type.model_type(),
                self.pad_token_id + 1
            ));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return bad(format!(
                "pad_token_id {} is >= vocab_size {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if let Some((&i, _)) = self
            .id2label
            .iter()
            .find(|(&i, _)| i >= self.id2label.len())
        {
            return bad(format!(
                "id2label has index {i} but only {} labels: indices must be 0..n",
                self.id2label.len()
            ));
        }
        Ok(())
    }

    /// The longest input in tokens: `max_position_embeddings`, less the `pad_token_id + 1`
    /// positions RoBERTa's numbering skips (514 positions hold 512 tokens).
    pub fn max_tokens(&self) -> usize {
        match self.model_type.offsets_positions() {
            true => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
            false => self.max_position_embeddings,
        }
    }

    /// The prefix of encoder tensor names in `head`'s checkpoints: none for a bare encoder
    /// (`BertModel`, `RobertaModel`), else `bert.` or `roberta.`.
    pub fn prefix(&self, head: BertHead) -> &'static str {
        match head {
            BertHead::Encoder => "",
            _ => self.model_type.encoder_prefix(),
        }
    }

    /// transformers builds every head but the BERT sequence classifier and the BERT and
    /// RoBERTa multiple-choice models with `add_pooling_layer=False`; a bare encoder keeps its
    /// pooler. DistilBERT and ELECTRA have none.
    pub fn has_pooler(&self, head: BertHead) -> bool {
        match head {
            _ if matches!(
                self.model_type,
                Family::DistilBert | Family::Electra | Family::ModernBert
            ) =>
            {
                false
            }
            BertHead::Encoder | BertHead::MultipleChoice => true,
            BertHead::SequenceClassification => self.model_type == Family::Bert,
            _ => false,
        }
    }

    /// The HF class of `head` in this family, e.g. `RobertaForSequenceClassification`.
    pub fn architecture(&self, head: BertHead) -> String {
        format!("{}{}", self.model_type.class_prefix(), head.class_suffix())
    }

    /// The width of the embeddings: `embedding_size` (ELECTRA), else `hidden_size`.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// Whether the embeddings are projected to the hidden size (`embeddings_project`), as
    /// ELECTRA does when the two widths differ.
    pub fn projects_embeddings(&self) -> bool {
        self.embedding_dim() != self.hidden_size
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Number of classes of a classification head: the labels named in `id2label`.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::{param_shapes, BertHead};

    #[test]
    fn presets_and_their_parameter_count() {
        for name in BertConfig::PRESETS {
            let c = BertConfig::preset(name, 1000).unwrap();
            let counted: usize = param_shapes(&c, BertHead::MaskedLm)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            assert_eq!(c.num_params_mlm(), counted, "{name}");
        }
        let t = BertConfig::preset("bert-tiny", 1000).unwrap();
        assert_eq!(
            (t.num_hidden_layers, t.hidden_size, t.num_attention_heads),
            (2, 128, 2)
        );
        let e = BertConfig::preset("bert-huge", 10).unwrap_err().to_string();
        assert!(e.contains("bert-huge") && e.contains("bert-tiny"), "{e}");
    }
}

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// BERT hyper-parameters; field names are HF's `BertConfig` names, so a `config.json` maps
/// onto this 1:1 (see [`super::hf`] for reading and writing the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
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
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Class names by index, for sequence classification; empty for other heads.
    #[serde(default)]
    pub id2label: BTreeMap<usize, String>,
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
            pad_token_id: 0,
            id2label: BTreeMap::new(),
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
            || self.type_vocab_size == 0
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
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} {p} must be in [0, 1)"));
            }
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

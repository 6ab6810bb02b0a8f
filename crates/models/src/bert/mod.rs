//! BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
//! Language Understanding"): word + learned position + token-type embeddings, post-LayerNorm
//! encoder layers with bidirectional attention over non-padding keys, exact-erf GELU, a tanh
//! pooler over [CLS], and five heads — masked-LM (decoder tied to the word embeddings),
//! sequence classification, token classification, extractive question answering (start and
//! end logits per token) and multiple choice (a score per choice). Parameter names and layouts
//! are transformers' (`BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`,
//! `BertForTokenClassification`, `BertForQuestionAnswering`, `BertForMultipleChoice`), 1:1.

mod config;
pub mod hf;
mod model;
pub mod modern;

pub use config::{BertConfig, Family};
pub use model::{
    init_param, init_params, is_head_param, mlm_tied_copies, param_shapes, BertClassifier,
    BertForMaskedLM, BertForMultipleChoice, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, BertHead, BertInput, BertModel,
    QA_OUTPUTS,
};
pub use modern::{ModernSettings, Pooling};

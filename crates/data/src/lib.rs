//! lantern-data: everything between raw text on disk and `(inputs, targets)` token batches.
//!
//! - [`tokenizer`]: train a GPT-2-style byte-level BPE tokenizer, or load any `tokenizer.json`.
//! - [`tokenizer_config`]: the `tokenizer_config.json` transformers reads beside a model
//!   folder's `tokenizer.json` (special tokens, class, longest input).
//! - [`shard`]: our memory-mapped token shard format (`train.bin`, `val.bin`).
//! - [`documents`]: a corpus file's documents as a stream (fortune-format text, JSON Lines,
//!   Parquet; gzip, zstd).
//! - [`prepare`]: turn corpus files into a dataset folder, in two streaming passes.
//! - [`sampler`]: deterministic batch sampling, where a run's data position is one number.
//! - [`mlm`]: BERT's masked-LM collator, deterministic per sample.
//! - [`labelled`]: labelled examples (JSONL, CSV or CoNLL) for sequence and token
//!   classification, and batches.
//! - [`choice`]: multiple-choice examples (SWAG layout or text and choices).
//! - [`sft`]: supervised fine-tuning examples (TRL's text, prompt-completion and
//!   conversational layouts) for a causal LM; [`chat`] renders chat templates, [`packing`]
//!   packs examples into rows.
//! - [`dpo`]: preference examples (TRL's prompt / chosen / rejected layouts) for DPO.
//! - [`qa`]: extractive question answering (SQuAD): examples, and question + context windows
//!   with answer spans.
//! - [`records`]: Parquet files, shards named by a pattern and `save_to_disk` folders (Arrow
//!   IPC) read as JSON Lines, for every reader of records above.
//!
//! Nothing here knows about models, devices or tensors: the trainer turns the `u32` buffers
//! filled here into tensors itself.

mod arrow_rows;
pub mod chat;
pub mod choice;
pub mod documents;
pub mod dpo;
pub mod error;
mod fsio;
mod hash;
pub mod labelled;
pub mod mlm;
pub mod packing;
pub mod prepare;
pub mod qa;
pub mod records;
pub mod sampler;
pub mod sft;
pub mod shard;
pub mod tokenizer;
pub mod tokenizer_config;
pub mod wordpiece;

pub use error::{Error, Result};
pub use mlm::{MlmBatch, MlmCollator, MlmSample};
pub use prepare::{
    prepare, prepare_with_progress, read_meta, DatasetMeta, PrepareOptions, PrepareProgress,
    PrepareSummary, META_FILE, TOKENIZER_FILE, TRAIN_FILE, VAL_FILE,
};
pub use sampler::{lm_batch, lm_val_batch, lm_val_windows, lm_window_start};
pub use shard::{write_shard, Shard, ShardWriter};
pub use tokenizer::{load_tokenizer, train_bpe, train_bpe_from_texts, EOT};
pub use tokenizer_config::{
    tokenizer_config, tokenizer_config_bytes, ModelTokens, TokenizerFamily, TOKENIZER_CONFIG_FILE,
};

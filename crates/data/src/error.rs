//! The crate's one error type. Every variant that concerns a file carries its path, so a
//! message can be acted on without a backtrace ("data/train.bin: token id 70000 at position 12
//! is >= vocabulary size 50257").

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file exists but its contents are not what its format promises (shard header, meta.json).
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },

    #[error("{}: token id {id} at position {position} is >= vocabulary size {vocab_size}", path.display())]
    TokenOutOfRange {
        path: PathBuf,
        id: u32,
        position: u64,
        vocab_size: u32,
    },

    #[error(
        "{}: shard vocabulary size {shard_vocab} is larger than the model's vocabulary size {model_vocab}",
        path.display()
    )]
    VocabMismatch {
        path: PathBuf,
        shard_vocab: u32,
        model_vocab: u32,
    },

    #[error(
        "{}: {len} tokens is too short for a window of {needed} tokens (seq_len + 1)",
        path.display()
    )]
    ShardTooShort {
        path: PathBuf,
        len: usize,
        needed: usize,
    },

    /// A tokenizer file could not be loaded, or a text could not be encoded with it.
    #[error("{}: {problem}", path.display())]
    Tokenizer { path: PathBuf, problem: String },

    /// Training a tokenizer failed; there is no single file to blame.
    #[error("training the BPE tokenizer: {0}")]
    TokenizerTraining(String),

    #[error("input {} does not exist", .0.display())]
    MissingInput(PathBuf),

    #[error("data folder {} does not exist", .0.display())]
    MissingDataDir(PathBuf),

    /// The corpus cannot be split as asked (too few documents, nothing usable found).
    #[error("{0}")]
    Corpus(String),

    /// An argument a caller passed is out of its valid range (vocab size, val fraction, seq_len).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

//! Errors of model construction and weight loading; every variant names what it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{path}: missing tensors: {}", names.join(", "))]
    Missing { path: PathBuf, names: Vec<String> },
    #[error("{path}: unexpected tensors (not part of this model): {}", names.join(", "))]
    Unexpected { path: PathBuf, names: Vec<String> },
    #[error("{path}: tensor {name} has shape {got:?}, the model config expects {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error(transparent)]
    Window(#[from] crate::gpt::perplexity::WindowError),
    #[error("parameter {0} does not exist in this model")]
    NoSuchParam(String),
}

pub type Result<T> = std::result::Result<T, Error>;

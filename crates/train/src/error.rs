//! Errors of a training run; each names the file, parameter or key it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] lantern_models::Error),
    #[error(transparent)]
    Data(#[from] lantern_data::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("gradient-integrity check failed: parameter {name} {problem} after the first backward pass (is it cut off from the loss, or did an op drop its gradient?)")]
    GradIntegrity { name: String, problem: String },
    #[error("{0}")]
    Device(String),
    /// Joining the world of a data-parallel run, or one of its collectives.
    #[error("data parallel: {0}")]
    Comm(#[from] lantern_comm::Error),
    #[error("could not write checkpoint step {step} under {}: {source}; the earlier checkpoints there are untouched", root.display())]
    SaveFailed {
        step: u64,
        root: PathBuf,
        source: Box<Error>,
    },
    /// The NaN guard skipped `train.max_consecutive_skips` steps in a row.
    #[error("training stopped at step {step}: {count} consecutive steps skipped for non-finite values (last: {what}); the weights and optimizer state of the last good update (step {}) are saved in {}", step - count, checkpoint.display())]
    NonFinite {
        step: u64,
        count: u64,
        what: String,
        checkpoint: PathBuf,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches a path to an I/O error.
pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

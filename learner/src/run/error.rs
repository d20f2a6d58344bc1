use std::path::PathBuf;

use asrl_common::config::ConfigError;
use asrl_common::data::{DataError, Example};
use asrl_common::device::DeviceError;
use asrl_common::fs::FsError;
use asrl_common::model::ModelError;
use asrl_common::tokenizer::TokenizerError;

use crate::report::{MetricsError, ReportError, TensorboardError};
use crate::service::ServiceError;
use crate::training::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("model.device: {0}")]
    Device(#[from] DeviceError),
    #[error("`data.path` is not set: point it at a JSONL file or a directory of them")]
    NoDataPath,
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Boxed: large and rare.
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("example {id}: cannot tokenise: {source}")]
    Tokenise {
        id: String,
        #[source]
        source: TokenizerError,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: TokenizerError,
    },
    #[error("{path}: no training examples ({lines} lines read, {bad} bad, {too_long} over {max_seq_len} tokens)")]
    NoTrainingExamples { path: PathBuf, lines: usize, bad: usize, too_long: usize, max_seq_len: usize },
    #[error(transparent)]
    Dataset(#[from] DataError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("TensorBoard events (set `run.tensorboard = false` to turn them off): {0}")]
    Tensorboard(#[from] TensorboardError),
    #[error("rollout service: {0}")]
    Service(#[from] ServiceError),
    #[error("rollout service: the gRPC service stopped")]
    ServiceStopped,
    #[error("interrupted")]
    Interrupted,
    /// A checkpoint whose run position does not fit the run (or its own trainer state).
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ModelError> for RunError {
    fn from(e: ModelError) -> Self {
        RunError::Model(Box::new(e))
    }
}

impl From<FsError> for RunError {
    fn from(e: FsError) -> Self {
        RunError::Io { path: e.path, source: e.source }
    }
}

impl RunError {
    pub(crate) fn tokenise(example: &Example, source: TokenizerError) -> Self {
        RunError::Tokenise { id: example.id.clone().unwrap_or_else(|| "(no id)".into()), source }
    }
}

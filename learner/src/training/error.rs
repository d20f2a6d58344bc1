use std::path::PathBuf;

use asrl_common::fs::FsError;
use asrl_common::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Boxed: a model error is large and rare, and every trainer call returns this type.
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("bad training input: {0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file (optimiser state) that cannot be written or read.
    #[error("{path}: {source}")]
    Tensors {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A checkpoint file that is readable but wrong (missing tensor, bad shape, bad state).
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("cannot encode a trainer.jsonl record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{count} consecutive optimiser steps had a non-finite loss or gradient")]
    NonFiniteRun { count: u64 },
    #[error("{0} SFT micro-batches are accumulated but not applied: flush before this")]
    PendingAccumulation(usize),
}

impl From<ModelError> for TrainError {
    fn from(e: ModelError) -> Self {
        TrainError::Model(Box::new(e))
    }
}

impl From<FsError> for TrainError {
    fn from(e: FsError) -> Self {
        TrainError::Io { path: e.path, source: e.source }
    }
}

impl TrainError {
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Checkpoint { path: path.into(), message: message.into() }
    }
}

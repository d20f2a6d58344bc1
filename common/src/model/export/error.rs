use std::path::PathBuf;

use crate::model::gguf::GgufError;
use crate::model::ModelError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong exporting a merged model. Each variant names the file, field or
/// tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A field of a base-model file that the export carries over but cannot use.
    #[error("{}: field `{field}`: {message}", path.display())]
    Field { path: PathBuf, field: String, message: String },
    #[error("{}: safetensors: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },
    /// The tokenizer cannot be written in the requested format (e.g. not byte-level BPE for GGUF).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Unsupported(String),
    /// A bad option value (`--max-shard-size`, `--gguf`, ...).
    #[error("{0}")]
    Option(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    TokenizerLoad(#[from] TokenizerError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn tensor(name: &str) -> impl FnOnce(candle_core::Error) -> Self + '_ {
        move |source| Self::Tensor { name: name.to_string(), source }
    }
}

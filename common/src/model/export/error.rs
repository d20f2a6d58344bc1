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
        source: Box<candle_core::Error>,
    },
    /// The tokenizer cannot be written in the requested format (e.g. not byte-level BPE for GGUF).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Unsupported(String),
    /// A bad option value (`--max-shard-size`, `--gguf`, ...).
    #[error("{0}")]
    Option(String),
    // Boxed: the loader errors are large and would bloat every `Result` of the exporter.
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error(transparent)]
    TokenizerLoad(Box<TokenizerError>),
    #[error(transparent)]
    Gguf(Box<GgufError>),
}

impl From<ModelError> for ExportError {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

impl From<TokenizerError> for ExportError {
    fn from(e: TokenizerError) -> Self {
        Self::TokenizerLoad(Box::new(e))
    }
}

impl From<GgufError> for ExportError {
    fn from(e: GgufError) -> Self {
        Self::Gguf(Box::new(e))
    }
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn tensor(name: &str) -> impl FnOnce(candle_core::Error) -> Self + '_ {
        move |source| Self::Tensor { name: name.to_string(), source: Box::new(source) }
    }
}

use std::path::PathBuf;

use crate::tokenizer::TokenizerError;

/// Everything that can go wrong loading, running or saving a model or an adapter.
/// Each variant names the file, field, tensor or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
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
    /// A config field that is missing, malformed or describes an unsupported model.
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
    #[error("{origin}: missing tensor `{name}`")]
    MissingTensor { origin: String, name: String },
    #[error("{origin}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape { origin: String, name: String, expected: Vec<usize>, got: Vec<usize> },
    /// An adapter that does not fit the base model or is not a LoRA adapter we can apply.
    #[error("{origin}: {message}")]
    Adapter { origin: String, message: String },
    /// A model input that cannot be run (bad token id, wrong rank, empty prompt, ...).
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Boxed: the GGUF error is the largest by far, and every `Result` here would carry its size.
    #[error(transparent)]
    Gguf(Box<super::gguf::GgufError>),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A fused training op refused its inputs (the message names the op and the input).
    #[error("training op: {0}")]
    Op(#[from] asrl_ops::OpError),
}

impl From<super::gguf::GgufError> for ModelError {
    fn from(e: super::gguf::GgufError) -> Self {
        Self::Gguf(Box::new(e))
    }
}

impl ModelError {
    pub(crate) fn config(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { origin: origin.into(), message: message.into() }
    }
    pub(crate) fn adapter(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Adapter { origin: origin.into(), message: message.into() }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

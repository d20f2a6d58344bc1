#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Inputs whose shapes or dtypes do not fit the op: names the op and what is wrong.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
}

impl OpError {
    pub fn shape(op: &'static str, message: impl Into<String>) -> Self {
        OpError::Shape { op, message: message.into() }
    }
}

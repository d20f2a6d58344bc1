//! The training data: a live JSONL dataset with a stable hash split, bad-line reports and
//! durable appends (the demo data generator is `asrl-tools demo-data`).
//!
//! - [`parse_value`] / [`parse_line`]: the one validator (loading and appending), for every
//!   [`ExampleFormat`] (the paper's `context`, `messages`, TRL's `prompt`/`completion`).
//! - [`LiveDataset::snapshot`]: re-scan the source, get a frozen [`Snapshot`] per epoch.
//! - [`append_json`] / [`append_examples`]: durable live additions.

mod append;
pub mod context;
mod encode;
mod example;
mod format;
mod live;
mod reader;
mod split;

use std::path::{Path, PathBuf};

pub use append::{append_examples, append_json, AppendReceipt};
pub use context::{format_context, parse_context, Message};
pub use encode::{encode_example, prompt_text, EncodedExample, ExampleEncoder};
pub use example::{parse_line, parse_line_format, parse_value, parse_value_format, BadReason, Example};
pub use format::ExampleFormat;
pub use live::{thousands, BadLine, DataReport, LiveDataset, Snapshot, SplitCounts};
pub use split::{Split, SplitFractions};

use crate::config::DataConfig;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a file or a directory")]
    NotFileOrDir(PathBuf),
    #[error("data config: {0}")]
    Config(String),
    #[error("example {index}: {reason}")]
    InvalidExample { index: usize, reason: BadReason },
}

/// Where live additions go: `path` itself, or `path/live_file` when `path` is a directory.
pub fn live_append_path(config: &DataConfig) -> Option<PathBuf> {
    let path = config.path.as_deref()?;
    Some(if path.is_dir() {
        path.join(&config.live_file)
    } else {
        path.to_path_buf()
    })
}

/// A tokenizer-free length estimate (about 3 bytes per token plus 4 per message for chat
/// markup), on the long side so filtering errs towards dropping. Use the real tokenizer when
/// one is loaded.
pub fn approx_token_count(example: &Example) -> usize {
    let bytes: usize = example
        .messages
        .iter()
        .map(|m| m.content.len())
        .sum::<usize>()
        + example.response.len();
    bytes.div_ceil(3) + 4 * (example.messages.len() + 1)
}

/// Reads a source once (a [`LiveDataset`]'s first snapshot).
pub fn load(
    source: &Path,
    config: &DataConfig,
    count_tokens: &dyn Fn(&Example) -> usize,
) -> Result<Snapshot, DataError> {
    LiveDataset::new(source, config)?.snapshot(count_tokens)
}

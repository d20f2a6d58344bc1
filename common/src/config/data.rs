use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The training dataset: where it lives, how it is split and what is filtered.
///
/// Defaults are the paper's: 80/10/10 split, examples over 2000 tokens dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A JSONL file or a directory of `*.jsonl` files (read in name order). No default: the
    /// learner requires it. AddExamples appends to this file (or to `live_file` in a directory).
    pub path: Option<PathBuf>,
    /// File inside a directory `path` that live additions are appended to. Default `live.jsonl`.
    pub live_file: String,
    /// Examples whose prompt + response exceed this many tokens are filtered out (from every
    /// split, and SFT never sees a longer one). Default 2000.
    pub max_seq_len: usize,
    /// Lines longer than this many bytes are reported as bad without being parsed. Default 1 MiB.
    pub max_line_bytes: usize,
    /// Share of examples in the train split. Default 0.8.
    pub train_fraction: f64,
    /// Share of examples in the validation split (the test split gets the rest). Default 0.1.
    pub val_fraction: f64,
    /// At most this many bad lines are kept with their reasons per scan (all are counted).
    /// Default 10000.
    pub max_reported_bad_lines: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: None,
            live_file: "live.jsonl".to_string(),
            max_seq_len: 2000,
            max_line_bytes: 1 << 20,
            train_fraction: 0.8,
            val_fraction: 0.1,
            max_reported_bad_lines: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_subset_and_unknown_fields() {
        let c: DataConfig = toml::from_str("path = \"data/live\"\nmax_seq_len = 1024").unwrap();
        assert_eq!(c.path.as_deref(), Some(std::path::Path::new("data/live")));
        assert_eq!((c.max_seq_len, c.max_line_bytes, c.train_fraction), (1024, 1 << 20, 0.8));
        let err = toml::from_str::<DataConfig>("max_seq_lenn = 5").unwrap_err().to_string();
        assert!(err.contains("max_seq_lenn"), "{err}");
        let round: DataConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}

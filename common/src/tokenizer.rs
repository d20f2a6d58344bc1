//! Tokenizer: HF `tokenizers` plus the eos ids from `tokenizer_config.json` /
//! `generation_config.json`.
//!
//! Minimal version written on the `model` branch so the model core can load HF dirs; the
//! `fixtures` branch owns the full module (chat template, GGUF tokenizer, `context` parsing).

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos_ids: Vec<u32>,
}

fn read_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TokenizerError::Invalid { path: path.into(), message: format!("invalid JSON: {e}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io { path: path.into(), source }),
    }
}

impl Tokenizer {
    pub fn new(inner: tokenizers::Tokenizer, eos_ids: Vec<u32>) -> Self {
        Self { inner, eos_ids }
    }

    /// `tokenizer.json` + eos ids from `tokenizer_config.json` (`eos_token`) and
    /// `generation_config.json` (`eos_token_id`, a number or a list).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizerError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| TokenizerError::Invalid { path: path.clone(), message: e.to_string() })?;
        let mut eos_ids = Vec::new();
        let tc_path = dir.join("tokenizer_config.json");
        if let Some(tc) = read_json(&tc_path)? {
            let eos = tc.get("eos_token").and_then(|e| e.as_str().or_else(|| e.get("content")?.as_str()));
            if let Some(tok) = eos {
                let id = inner.token_to_id(tok).ok_or_else(|| TokenizerError::Invalid {
                    path: tc_path.clone(),
                    message: format!("eos_token {tok:?} is not in the vocabulary"),
                })?;
                eos_ids.push(id);
            }
        }
        let gc_path = dir.join("generation_config.json");
        if let Some(gc) = read_json(&gc_path)? {
            let ids = match gc.get("eos_token_id") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(a)) => a.iter().map(|x| x.as_u64()).collect::<Option<Vec<_>>>().unwrap_or_default(),
                Some(x) => x.as_u64().into_iter().collect(),
            };
            eos_ids.extend(ids.into_iter().map(|i| i as u32));
        }
        eos_ids.sort();
        eos_ids.dedup();
        Ok(Self { inner, eos_ids })
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| TokenizerError::Tokenizers(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Tokenizers(e.to_string()))
    }

    /// Not available in this minimal tokenizer (the `fixtures` branch brings the template engine).
    pub fn apply_chat_template(
        &self,
        _messages: &[ChatMessage],
        _add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        Err(TokenizerError::Unsupported(
            "chat templates are not supported by this build's tokenizer; pass --raw".into(),
        ))
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

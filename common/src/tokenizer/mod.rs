//! Tokenizer (Hugging Face `tokenizers` BPE) plus the model's own chat template rendered with
//! minijinja the way transformers' `apply_chat_template` renders it, and the paper's `context`
//! strings turned into chat messages.
//!
//! - [`gguf`]: the byte-level BPE rebuilt from GGUF metadata ([`Tokenizer::from_gguf`]).
//! - [`chat_template`]: the minijinja environment HF templates expect.

mod chat_template;
mod gguf;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chat_template::ChatTemplate;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Field { path: PathBuf, field: String, message: String },
    #[error("GGUF tokenizer metadata `{key}`: {message}")]
    Gguf { key: String, message: String },
    #[error("tokenizer has no chat template (tokenizer_config.json `chat_template` / GGUF `tokenizer.chat_template`)")]
    NoChatTemplate,
    #[error("chat template: {0}")]
    Template(String),
    #[error("encode failed: {0}")]
    Encode(String),
    #[error("decode failed: {0}")]
    Decode(String),
}

/// One chat turn, as HF chat templates expect it (`{"role": ..., "content": ...}`); the same type
/// the dataset parses contexts into.
pub type ChatMessage = crate::data::Message;

/// BPE tokenizer + special token ids + compiled chat template. Cheap to clone.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// Compiled once; `None` when the model ships no template.
    template: Option<ChatTemplate>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    bos_token_id: Option<u32>,
    /// Prepend bos on `encode(.., true)` when the post-processor does not (HF `add_bos_token`).
    add_bos_token: bool,
    eos_token_ids: Vec<u32>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("has_chat_template", &self.template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// `tokenizer.json` + `tokenizer_config.json` (+ `chat_template.jinja`, which overrides the
    /// config's `chat_template` as in transformers, + `generation_config.json`, whose
    /// `eos_token_id`, an int or a list, is merged into the eos ids).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tok_path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| TokenizerError::Load { path: tok_path.clone(), message: e.to_string() })?;

        let cfg_path = dir.join("tokenizer_config.json");
        // Optional, as in transformers: a bare tokenizer.json has no template and no eos.
        let cfg: serde_json::Value =
            if cfg_path.exists() { read_json(&cfg_path)? } else { serde_json::Value::Object(Default::default()) };
        // transformers >= 4.43 saves the template as chat_template.jinja, which wins over the config.
        let jinja_path = dir.join("chat_template.jinja");
        let file_template = if jinja_path.exists() {
            Some(
                std::fs::read_to_string(&jinja_path)
                    .map_err(|source| TokenizerError::Io { path: jinja_path.clone(), source })?,
            )
        } else {
            None
        };
        let config_template = match cfg.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // Older configs store a list of named templates; HF uses the one named "default".
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            Some(_) => {
                return Err(TokenizerError::Field {
                    path: cfg_path,
                    field: "chat_template".into(),
                    message: "expected a string".into(),
                })
            }
        };
        let chat_template = file_template.or(config_template);
        let bos_token = special_token_field(&cfg, "bos_token", &cfg_path)?;
        let eos_token = special_token_field(&cfg, "eos_token", &cfg_path)?;
        let add_bos_token = match cfg.get("add_bos_token") {
            None | Some(serde_json::Value::Null) => false,
            Some(v) => v.as_bool().ok_or_else(|| TokenizerError::Field {
                path: cfg_path.clone(),
                field: "add_bos_token".into(),
                message: "expected a boolean".into(),
            })?,
        };

        let mut eos_ids = Vec::new();
        if let Some(tok) = &eos_token {
            let id = inner.token_to_id(tok).ok_or_else(|| TokenizerError::Field {
                path: cfg_path.clone(),
                field: "eos_token".into(),
                message: format!("token {tok:?} is not in tokenizer.json"),
            })?;
            eos_ids.push(id);
        }
        let gen_path = dir.join("generation_config.json");
        if gen_path.exists() {
            let gen: serde_json::Value = read_json(&gen_path)?;
            let bad = |v: &serde_json::Value| TokenizerError::Field {
                path: gen_path.clone(),
                field: "eos_token_id".into(),
                message: format!("expected a token id or a list of them, got {v}"),
            };
            match gen.get("eos_token_id") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(list)) => {
                    for v in list {
                        eos_ids.push(json_u32(v).ok_or_else(|| bad(v))?);
                    }
                }
                Some(v) => eos_ids.push(json_u32(v).ok_or_else(|| bad(v))?),
            }
        }
        let bos_token_id = bos_token.as_deref().and_then(|t| inner.token_to_id(t));
        Self::assemble(inner, chat_template, bos_token, eos_token, bos_token_id, add_bos_token, eos_ids)
    }


    pub(super) fn assemble(
        inner: tokenizers::Tokenizer,
        chat_template: Option<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
        bos_token_id: Option<u32>,
        add_bos_token: bool,
        mut eos_token_ids: Vec<u32>,
    ) -> Result<Self, TokenizerError> {
        let mut seen = std::collections::HashSet::new();
        eos_token_ids.retain(|id| seen.insert(*id));
        let template = chat_template.map(ChatTemplate::compile).transpose()?;
        Ok(Self {
            inner: Arc::new(inner),
            template,
            bos_token,
            eos_token,
            bos_token_id,
            add_bos_token,
            eos_token_ids,
        })
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens && self.add_bos_token {
            if let Some(bos) = self.bos_token_id {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The model's chat template rendered as transformers' `apply_chat_template(.., tokenize=False)`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self.template.as_ref().ok_or(TokenizerError::NoChatTemplate)?;
        template.render(messages, add_generation_prompt, self.bos_token.as_deref(), self.eos_token.as_deref())
    }

    /// Text of the eos token (e.g. `<|im_end|>`), when the model names one.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Source of the chat template, when the model has one (what an exporter writes back).
    pub fn chat_template(&self) -> Option<String> {
        self.template.as_ref()?.source()
    }

    /// Whether `encode(.., true)` prepends bos (HF `add_bos_token`, GGUF `tokenizer.ggml.add_bos_token`).
    pub fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }
}

/// The paper's `context` ("User: ...\nAssistant: ...\nUser: ...") as chat messages, by the
/// dataset's own rule ([`crate::data::parse_context`]): a line starting with `User:`,
/// `Assistant:` or `System:` begins a message, other lines continue it, text before any prefix is
/// a user message; contents are trimmed and empty messages dropped.
pub fn context_to_messages(context: &str) -> Vec<ChatMessage> {
    crate::data::parse_context(context)
}

fn read_json(path: &Path) -> Result<serde_json::Value, TokenizerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })
}

/// A special token in tokenizer_config.json: a string, an AddedToken object, or null.
fn special_token_field(cfg: &serde_json::Value, field: &str, path: &Path) -> Result<Option<String>, TokenizerError> {
    match cfg.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(obj @ serde_json::Value::Object(_)) => match obj.get("content").and_then(|c| c.as_str()) {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(TokenizerError::Field {
                path: path.to_path_buf(),
                field: field.into(),
                message: "object without a string `content`".into(),
            }),
        },
        Some(other) => Err(TokenizerError::Field {
            path: path.to_path_buf(),
            field: field.into(),
            message: format!("expected a string, got {other}"),
        }),
    }
}

fn json_u32(v: &serde_json::Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests;

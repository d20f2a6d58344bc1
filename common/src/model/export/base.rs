//! What an export carries over from the base model besides its weights and tokenizer: the HF
//! tokenizer/generation configs (sampling defaults, tokenizer class, extra fields) and the pad token,
//! which [`Tokenizer`] does not keep.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::{Map, Value};

use super::ExportError;
use crate::tokenizer::Tokenizer;

/// Metadata of the base model that the exported files keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaseMetadata {
    /// The base's `tokenizer_config.json` (empty for a GGUF base or when absent).
    pub tokenizer_config: Map<String, Value>,
    /// The base's `generation_config.json` (empty for a GGUF base or when absent).
    pub generation_config: Map<String, Value>,
    /// Padding token text: `tokenizer_config.json` `pad_token`, else the `pad_token_id` of
    /// config.json / generation_config.json, else GGUF `tokenizer.ggml.padding_token_id`.
    pub pad_token: Option<String>,
}

impl BaseMetadata {
    /// Reads it from `path`, an HF model dir or a `.gguf` file (the `--model` of the export).
    /// `tokenizer` is the base's, to name the pad token from an id.
    pub fn read(path: &Path, tokenizer: &Tokenizer) -> Result<Self, ExportError> {
        if path.is_file() {
            return Self::from_gguf(path, tokenizer);
        }
        let tokenizer_config = read_object(&path.join("tokenizer_config.json"))?;
        let generation_config = read_object(&path.join("generation_config.json"))?;
        let tc_path = path.join("tokenizer_config.json");
        let mut pad_token = match tokenizer_config.get("pad_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => match v.get("content").and_then(Value::as_str) {
                Some(s) => Some(s.to_string()),
                None => {
                    return Err(ExportError::Field {
                        path: tc_path,
                        field: "pad_token".into(),
                        message: format!("expected a string or an object with `content`, got {v}"),
                    })
                }
            },
        };
        if pad_token.is_none() {
            let config = read_object(&path.join("config.json"))?;
            let id = config.get("pad_token_id").or_else(|| generation_config.get("pad_token_id"));
            if let Some(id) = id.and_then(Value::as_u64).and_then(|id| u32::try_from(id).ok()) {
                pad_token = tokenizer.inner().id_to_token(id);
            }
        }
        Ok(Self { tokenizer_config, generation_config, pad_token })
    }

    fn from_gguf(path: &Path, tokenizer: &Tokenizer) -> Result<Self, ExportError> {
        let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
        let content = gguf_file::Content::read(&mut BufReader::new(file))
            .map_err(|source| crate::model::gguf::GgufError::Format { path: path.into(), source })?;
        let key = "tokenizer.ggml.padding_token_id";
        let pad_token = match content.metadata.get(key) {
            None => None,
            Some(v) => {
                let id = v.to_u32().map_err(|e| ExportError::Field {
                    path: path.into(),
                    field: key.into(),
                    message: e.to_string(),
                })?;
                tokenizer.inner().id_to_token(id)
            }
        };
        Ok(Self { pad_token, ..Self::default() })
    }
}

/// A JSON object file, or an empty object when the file does not exist.
fn read_object(path: &Path) -> Result<Map<String, Value>, ExportError> {
    if !path.exists() {
        return Ok(Map::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| ExportError::io(path, e))?;
    match serde_json::from_str(&text).map_err(|source| ExportError::Json { path: path.into(), source })? {
        Value::Object(map) => Ok(map),
        other => Err(ExportError::Field {
            path: path.into(),
            field: "(top level)".into(),
            message: format!("expected a JSON object, got {}", short(&other)),
        }),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..s.char_indices().nth(40).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

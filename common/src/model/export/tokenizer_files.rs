//! The tokenizer side of an HF export: `tokenizer.json` (the `tokenizers` JSON of our tokenizer,
//! whether it came from an HF dir or was rebuilt from GGUF metadata), `tokenizer_config.json`
//! (chat template, special tokens) and `generation_config.json` (eos/bos/pad ids).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{BaseMetadata, ExportError};
use crate::tokenizer::Tokenizer;

/// The special tokens every exported file agrees on (ids and texts).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpecialTokens {
    pub bos: Option<(u32, String)>,
    /// The primary eos token (tokenizer_config `eos_token`, GGUF `eos_token_id`).
    pub eos: Option<(u32, String)>,
    /// Every id generation stops at, the primary eos first.
    pub eos_ids: Vec<u32>,
    pub pad: Option<(u32, String)>,
    pub add_bos: bool,
}

impl SpecialTokens {
    pub fn of(tokenizer: &Tokenizer, base: &BaseMetadata) -> Self {
        let inner = tokenizer.inner();
        let named = |text: &str| inner.token_to_id(text).map(|id| (id, text.to_string()));
        let by_id = |id: u32| inner.id_to_token(id).map(|text| (id, text));
        let bos = tokenizer.bos_token_id().and_then(by_id);
        let eos = tokenizer.eos_token().and_then(named).or_else(|| tokenizer.eos_token_ids().first().and_then(|&id| by_id(id)));
        let mut eos_ids: Vec<u32> = eos.iter().map(|(id, _)| *id).collect();
        for &id in tokenizer.eos_token_ids() {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let pad = base.pad_token.as_deref().and_then(named);
        Self { bos, eos, eos_ids, pad, add_bos: tokenizer.add_bos_token() }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(id, _)| *id)
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad.as_ref().map(|(id, _)| *id)
    }

    /// `eos_token_id` as HF configs write it: one id, a list of several, or null.
    pub fn eos_json(&self, all: bool) -> Value {
        match self.eos_ids.as_slice() {
            [] => Value::Null,
            [one, ..] if !all => json!(one),
            [one] => json!(one),
            many => json!(many),
        }
    }
}

/// Writes tokenizer.json, tokenizer_config.json and generation_config.json into `dir`.
pub(crate) fn write_tokenizer_files(
    dir: &Path,
    tokenizer: &Tokenizer,
    special: &SpecialTokens,
    base: &BaseMetadata,
    max_position_embeddings: usize,
) -> Result<Vec<PathBuf>, ExportError> {
    let tok_path = dir.join("tokenizer.json");
    write_json(&tok_path, &tokenizer_json(tokenizer, special)?, false)?;
    let cfg_path = dir.join("tokenizer_config.json");
    write_json(&cfg_path, &Value::Object(tokenizer_config(tokenizer, special, base, max_position_embeddings)), true)?;
    let gen_path = dir.join("generation_config.json");
    write_json(&gen_path, &Value::Object(generation_config(special, base)), true)?;
    Ok(vec![tok_path, cfg_path, gen_path])
}

/// The `tokenizers` JSON. When bos must be prepended but the post-processor does not do it (a
/// tokenizer rebuilt from GGUF), a `TemplateProcessing` step is appended so that transformers,
/// vLLM and our loader all add it.
pub(crate) fn tokenizer_json(tokenizer: &Tokenizer, special: &SpecialTokens) -> Result<Value, ExportError> {
    let inner = tokenizer.inner();
    let text = inner.to_string(false).map_err(|e| ExportError::Tokenizer(format!("cannot serialise to JSON: {e}")))?;
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| ExportError::Tokenizer(format!("serialised JSON does not parse: {e}")))?;
    if let (true, Some((bos_id, bos))) = (special.add_bos, &special.bos) {
        let ids = inner.encode("a", true).map_err(|e| ExportError::Tokenizer(format!("encode: {e}")))?;
        if ids.get_ids().first() != Some(bos_id) {
            let template = json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.as_str(): {"id": bos, "ids": [bos_id], "tokens": [bos]}}
            });
            v["post_processor"] = match v.get("post_processor").cloned() {
                None | Some(Value::Null) => template,
                Some(existing) => json!({"type": "Sequence", "processors": [existing, template]}),
            };
        }
    }
    Ok(v)
}

fn tokenizer_config(
    tokenizer: &Tokenizer,
    special: &SpecialTokens,
    base: &BaseMetadata,
    max_position_embeddings: usize,
) -> Map<String, Value> {
    let mut cfg = base.tokenizer_config.clone();
    if cfg.is_empty() {
        // A GGUF base: the generic fast tokenizer over tokenizer.json.
        cfg.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
        cfg.insert("clean_up_tokenization_spaces".into(), json!(false));
        cfg.insert("model_max_length".into(), json!(max_position_embeddings));
    }
    // Remote tokenizer code is not copied, so a pointer to it would break loading.
    cfg.remove("auto_map");
    let text = |t: &Option<(u32, String)>| t.as_ref().map_or(Value::Null, |(_, s)| json!(s));
    cfg.insert("bos_token".into(), text(&special.bos));
    cfg.insert("eos_token".into(), text(&special.eos));
    cfg.insert("pad_token".into(), text(&special.pad));
    if special.add_bos || cfg.contains_key("add_bos_token") {
        cfg.insert("add_bos_token".into(), json!(special.add_bos));
    }
    match tokenizer.chat_template() {
        Some(t) => cfg.insert("chat_template".into(), json!(t)),
        None => cfg.remove("chat_template"),
    };
    cfg
}

fn generation_config(special: &SpecialTokens, base: &BaseMetadata) -> Map<String, Value> {
    let mut cfg = base.generation_config.clone();
    let mut set = |k: &str, v: Value| {
        if v.is_null() {
            cfg.remove(k);
        } else {
            cfg.insert(k.into(), v);
        }
    };
    set("bos_token_id", special.bos_id().map_or(Value::Null, |id| json!(id)));
    set("eos_token_id", special.eos_json(true));
    set("pad_token_id", special.pad_id().map_or(Value::Null, |id| json!(id)));
    cfg
}

/// Writes `value` as JSON (pretty: HF's two-space indent).
pub(crate) fn write_json(path: &Path, value: &Value, pretty: bool) -> Result<(), ExportError> {
    let mut text = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) }
        .map_err(|source| ExportError::Json { path: path.into(), source })?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| ExportError::io(path, e))
}

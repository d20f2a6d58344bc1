//! The tokenizer as llama.cpp's `tokenizer.ggml.*` arrays, the way convert_hf_to_gguf writes a
//! byte-level BPE (`gpt2`) vocabulary: byte-level token spellings, added tokens as their text,
//! token types (1 normal, 3 control, 4 user-defined, 5 unused padding), merges as "a b".

use std::collections::HashMap;

use serde_json::Value;

use super::ExportError;
use crate::tokenizer::Tokenizer;

/// Pre-tokenizer split regexes llama.cpp knows by `tokenizer.ggml.pre` name. They must equal the
/// reader's (`Tokenizer::from_gguf`), which the GGUF round-trip tests check by re-encoding texts.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GgufVocab {
    /// `tokenizer.ggml.pre`.
    pub pre: &'static str,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
}

/// `vocab_size` tokens (the model's embedding rows; ids the tokenizer lacks become `[PAD{id}]`).
pub(crate) fn gguf_vocab(tokenizer: &Tokenizer, vocab_size: usize) -> Result<GgufVocab, ExportError> {
    let err = |m: String| ExportError::Tokenizer(format!("GGUF export: {m}"));
    let text = tokenizer.inner().to_string(false).map_err(|e| err(format!("cannot serialise: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("serialised JSON does not parse: {e}")))?;
    let model = &v["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(err(format!("only byte-level BPE tokenizers can be written, this one is {}", model["type"])));
    }
    let pre = pre_name(&v["pre_tokenizer"]).ok_or_else(|| {
        err(format!(
            "pre-tokenizer {} is not one llama.cpp knows (byte-level with the GPT-2, Qwen2 or Llama-3 split)",
            compact(&v["pre_tokenizer"])
        ))
    })?;

    let mut slots: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: u64, text: String, ty: i32| -> Result<(), ExportError> {
        let slot = usize::try_from(id).ok().and_then(|i| slots.get_mut(i)).ok_or_else(|| {
            err(format!("token {text:?} has id {id}, outside the model's vocab_size {vocab_size}"))
        })?;
        *slot = Some((text, ty));
        Ok(())
    };
    let vocab = model["vocab"].as_object().ok_or_else(|| err("model.vocab is not an object".into()))?;
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| err(format!("model.vocab[{token:?}] is not an id")))?;
        place(id, token.clone(), NORMAL)?;
    }
    if let Some(added) = v["added_tokens"].as_array() {
        for t in added {
            let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
                return Err(err(format!("added token {} has no id/content", compact(t))));
            };
            let ty = if t["special"].as_bool() == Some(true) { CONTROL } else { USER_DEFINED };
            place(id, content.to_string(), ty)?;
        }
    }
    let (tokens, token_types) = slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED)))
        .unzip();

    let merges = model["merges"]
        .as_array()
        .ok_or_else(|| err("model.merges is not a list".into()))?
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok(format!("{a} {b}")),
                _ => Err(err(format!("model.merges[{i}] is not a pair of strings"))),
            },
            _ => Err(err(format!("model.merges[{i}] is not a string or a pair"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GgufVocab { pre, tokens, token_types, merges })
}

/// llama.cpp's `tokenizer.ggml.pre` for a `tokenizers` pre-tokenizer JSON, when it has one.
fn pre_name(pre: &Value) -> Option<&'static str> {
    let byte_level = |p: &Value, regex: bool| p["type"] == "ByteLevel" && p["use_regex"].as_bool() == Some(regex);
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    let steps = pre["pretokenizers"].as_array().filter(|_| pre["type"] == "Sequence")?;
    let [split, bl] = steps.as_slice() else { return None };
    if !(split["type"] == "Split" && split["behavior"] == "Isolated" && split["invert"] == false && byte_level(bl, false)) {
        return None;
    }
    let mut names = HashMap::new();
    names.insert(QWEN2_REGEX, "qwen2");
    names.insert(LLAMA3_REGEX, "llama-bpe");
    names.get(split["pattern"]["Regex"].as_str()?).copied()
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
pub(crate) fn pre_name_for_tests(pre: &Value) -> Option<&'static str> {
    pre_name(pre)
}

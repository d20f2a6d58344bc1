//! Byte-level BPE rebuilt from GGUF metadata (`tokenizer.ggml.*`), the way transformers' GGUF
//! loader rebuilds it.

use std::collections::HashMap;
use std::fmt;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel as ByteLevelPre;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{Tokenizer, TokenizerError};

impl Tokenizer {
    /// Byte-level BPE from GGUF metadata (`tokenizer.ggml.*`), built the way transformers'
    /// GGUF loader builds it, plus `tokenizer.chat_template` and the bos/eos ids.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let md = &content.metadata;
        let model_kind = gguf_string(md, "tokenizer.ggml.model")?;
        if model_kind != "gpt2" {
            return Err(TokenizerError::Gguf {
                key: "tokenizer.ggml.model".into(),
                message: format!("only byte-level BPE (`gpt2`) is supported, got `{model_kind}`"),
            });
        }
        let tokens = gguf_string_array(md, "tokenizer.ggml.tokens")?;
        let merges_raw = gguf_string_array(md, "tokenizer.ggml.merges")?;
        let token_types: Vec<u32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| gguf_err("tokenizer.ggml.token_type", e))?
                .iter()
                .map(gguf_u32)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| TokenizerError::Gguf {
                    key: "tokenizer.ggml.token_type".into(),
                    message: "expected integers".into(),
                })?,
            None => Vec::new(),
        };

        // Tokens outside the byte alphabet are written as the UTF-8 bytes they stand for.
        let alphabet = bytes_to_unicode();
        let in_alphabet: std::collections::HashSet<char> = alphabet.iter().copied().collect();
        let spell = |t: &str| -> String {
            if t.chars().all(|c| in_alphabet.contains(&c)) {
                t.to_string()
            } else {
                t.bytes().map(|b| alphabet[b as usize]).collect()
            }
        };
        let vocab: Vocab =
            tokens.iter().enumerate().map(|(i, t)| (spell(t), i as u32)).collect();
        let merges = merges_raw
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| {
                    TokenizerError::Gguf {
                        key: "tokenizer.ggml.merges".into(),
                        message: format!("entry {i} ({m:?}) is not two space-separated tokens"),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| gguf_err("tokenizer.ggml.merges", e))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);

        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str);
        match pre.and_then(split_regex) {
            Some(regex) => {
                let split = Split::new(
                    SplitPattern::Regex(regex.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| gguf_err("tokenizer.ggml.pre", e))?;
                let seq = PreSequence::new(vec![split.into(), ByteLevelPre::new(false, true, false).into()]);
                inner.with_pre_tokenizer(Some(seq));
            }
            None => {
                inner.with_pre_tokenizer(Some(ByteLevelPre::new(false, true, true)));
            }
        }
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // llama.cpp token types: 3 = control (special), 4 = user-defined (matched whole, not special).
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&token_types)
            .filter(|(t, ty)| **ty == 3 && t.chars().all(|c| in_alphabet.contains(&c)))
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&control);
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&token_types)
            .filter(|(_, ty)| **ty == 4)
            .map(|(t, _)| AddedToken::from(spell(t), false).normalized(false))
            .collect();
        inner.add_tokens(&user);

        let token_at = |key: &str| -> Result<Option<(u32, String)>, TokenizerError> {
            match md.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = gguf_u32(v).ok_or_else(|| TokenizerError::Gguf {
                        key: key.into(),
                        message: "expected an integer".into(),
                    })?;
                    let tok = tokens.get(id as usize).ok_or_else(|| TokenizerError::Gguf {
                        key: key.into(),
                        message: format!("id {id} is outside the {}-token vocabulary", tokens.len()),
                    })?;
                    Ok(Some((id, tok.clone())))
                }
            }
        };
        let bos = token_at("tokenizer.ggml.bos_token_id")?;
        let eos = token_at("tokenizer.ggml.eos_token_id")?;
        let add_bos_token = md
            .get("tokenizer.ggml.add_bos_token")
            .map(|v| v.to_bool().map_err(|e| gguf_err("tokenizer.ggml.add_bos_token", e)))
            .transpose()?
            .unwrap_or(false);
        let chat_template = md
            .get("tokenizer.chat_template")
            .map(|v| v.to_string().cloned().map_err(|e| gguf_err("tokenizer.chat_template", e)))
            .transpose()?;
        let eos_ids = eos.iter().map(|(id, _)| *id).collect();
        Self::assemble(
            inner,
            chat_template,
            bos.as_ref().map(|(_, t)| t.clone()),
            eos.as_ref().map(|(_, t)| t.clone()),
            bos.map(|(id, _)| id),
            add_bos_token,
            eos_ids,
        )
    }
}

/// GPT-2's byte -> printable char table (`bytes_to_unicode`).
fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = vec!['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

/// Pre-tokenizer split regexes by llama.cpp `tokenizer.ggml.pre`, as transformers maps them;
/// other values keep GPT-2's ByteLevel regex.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" | "lfm2" => Some(LLAMA3),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => Some(QWEN2),
        _ => None,
    }
}

fn gguf_err(key: &str, e: impl fmt::Display) -> TokenizerError {
    TokenizerError::Gguf { key: key.into(), message: e.to_string() }
}

fn gguf_string(md: &HashMap<String, gguf_file::Value>, key: &str) -> Result<String, TokenizerError> {
    md.get(key)
        .ok_or_else(|| gguf_err(key, "missing"))?
        .to_string()
        .cloned()
        .map_err(|e| gguf_err(key, e))
}

fn gguf_string_array(md: &HashMap<String, gguf_file::Value>, key: &str) -> Result<Vec<String>, TokenizerError> {
    md.get(key)
        .ok_or_else(|| gguf_err(key, "missing"))?
        .to_vec()
        .map_err(|e| gguf_err(key, e))?
        .iter()
        .enumerate()
        .map(|(i, v)| v.to_string().cloned().map_err(|e| gguf_err(key, format!("element {i}: {e}"))))
        .collect()
}

fn gguf_u32(v: &gguf_file::Value) -> Option<u32> {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => Some(*x as u32),
        V::I8(x) => u32::try_from(*x).ok(),
        V::U16(x) => Some(*x as u32),
        V::I16(x) => u32::try_from(*x).ok(),
        V::U32(x) => Some(*x),
        V::I32(x) => u32::try_from(*x).ok(),
        V::U64(x) => u32::try_from(*x).ok(),
        V::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}

//! Tokenizer (Hugging Face `tokenizers` BPE) plus the model's own chat template rendered with
//! minijinja the way transformers' `apply_chat_template` renders it, and the paper's `context`
//! strings turned into chat messages.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, ErrorKind};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel as ByteLevelPre;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

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
    template: Option<Arc<Environment<'static>>>,
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

const TEMPLATE_NAME: &str = "chat_template";

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

    fn assemble(
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
        let template = chat_template.map(compile_template).transpose()?.map(Arc::new);
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
        let env = self.template.as_ref().ok_or(TokenizerError::NoChatTemplate)?;
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        let mut ctx: HashMap<&str, JValue> = HashMap::new();
        ctx.insert("messages", JValue::from_serialize(messages));
        ctx.insert("add_generation_prompt", JValue::from(add_generation_prompt));
        // HF passes only the special tokens that are set.
        if let Some(b) = &self.bos_token {
            ctx.insert("bos_token", JValue::from(b.clone()));
        }
        if let Some(e) = &self.eos_token {
            ctx.insert("eos_token", JValue::from(e.clone()));
        }
        tmpl.render(ctx).map_err(template_err)
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
        let env = self.template.as_ref()?;
        env.get_template(TEMPLATE_NAME).ok().map(|t| t.source().to_string())
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

/// HF's template environment: trim_blocks + lstrip_blocks, python string methods,
/// `raise_exception`, and a `tojson` that does not HTML-escape (like transformers' override).
fn compile_template(source: String) -> Result<Environment<'static>, TokenizerError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<JValue, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_filter("tojson", tojson);
    env.add_template_owned(TEMPLATE_NAME, source).map_err(template_err)?;
    Ok(env)
}

fn template_err(e: minijinja::Error) -> TokenizerError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    TokenizerError::Template(msg)
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`, keys in
/// insertion order like a Python dict.
fn tojson(value: JValue, kwargs: Kwargs) -> Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_py_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(JValue::from_safe_string(out))
}

fn write_py_json(
    v: &JValue,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind as K;
    let item_sep = if indent.is_some() { "," } else { ", " };
    let pad = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let scalar = |out: &mut String, j: serde_json::Value| out.push_str(&j.to_string());
    match v.kind() {
        K::Undefined | K::None => out.push_str("null"),
        K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        K::Number => match serde_json::to_value(v) {
            Ok(j) => scalar(out, j),
            Err(e) => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())),
        },
        K::String => scalar(out, serde_json::Value::String(v.as_str().unwrap_or_default().to_string())),
        K::Seq | K::Iterable => {
            let items: Vec<JValue> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                pad(out, depth + 1);
                write_py_json(item, indent, sort, depth + 1, out)?;
            }
            if !items.is_empty() {
                pad(out, depth);
            }
            out.push(']');
        }
        K::Map => {
            let mut keys: Vec<JValue> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                pad(out, depth + 1);
                scalar(out, serde_json::Value::String(k.to_string()));
                out.push_str(": ");
                write_py_json(&v.get_item(k)?, indent, sort, depth + 1, out)?;
            }
            if !keys.is_empty() {
                pad(out, depth);
            }
            out.push('}');
        }
        _ => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("cannot convert {v} to JSON"))),
    }
    Ok(())
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

#[cfg(test)]
mod tests;

//! The model's chat template, compiled once and rendered with minijinja the way transformers'
//! `apply_chat_template(.., tokenize=False)` renders it.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, ErrorKind};

use super::{ChatMessage, TokenizerError};

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template. Cheap to clone.
#[derive(Clone)]
pub(super) struct ChatTemplate {
    env: Arc<Environment<'static>>,
}

impl ChatTemplate {
    /// HF's template environment: trim_blocks + lstrip_blocks, python string methods,
    /// `raise_exception`, and a `tojson` that does not HTML-escape (like transformers' override).
    pub(super) fn compile(source: String) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<JValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source).map_err(template_err)?;
        Ok(Self { env: Arc::new(env) })
    }

    /// The template's source text (what an exporter writes back).
    pub(super) fn source(&self) -> Option<String> {
        self.env.get_template(TEMPLATE_NAME).ok().map(|t| t.source().to_string())
    }

    /// HF passes only the special tokens that are set.
    pub(super) fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, TokenizerError> {
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        let mut ctx: HashMap<&str, JValue> = HashMap::new();
        ctx.insert("messages", JValue::from_serialize(messages));
        ctx.insert("add_generation_prompt", JValue::from(add_generation_prompt));
        if let Some(b) = bos_token {
            ctx.insert("bos_token", JValue::from(b));
        }
        if let Some(e) = eos_token {
            ctx.insert("eos_token", JValue::from(e));
        }
        tmpl.render(ctx).map_err(template_err)
    }
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

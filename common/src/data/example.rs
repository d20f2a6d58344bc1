//! One training example and the validator every line (loaded or appended) goes through.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::context::Message;
use super::format::{as_str, read_dialogue, wrong, ExampleFormat};
use crate::reward::final_answer;

/// A validated example: prompt messages, the target response and its ground-truth answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub id: Option<String>,
    /// The prompt, ending before the response.
    pub messages: Vec<Message>,
    /// The assistant response the model is trained on.
    pub response: String,
    /// Ground truth for rewards: the `answer` (or `ground_truth`) field, else the response's
    /// final answer.
    pub answer: String,
    /// The `type` field ("unknown" when absent).
    pub example_type: String,
}

/// Why a line was rejected. `kind()` is the key of the per-reason counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReason {
    #[error("line is {bytes} bytes, over the {limit}-byte limit")]
    LineTooLong { bytes: u64, limit: usize },
    #[error("invalid UTF-8 after byte {valid_up_to}")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("field {field}: expected {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("has both \"{first}\" and \"{second}\"; use one format")]
    AmbiguousFormat { first: &'static str, second: &'static str },
    #[error("{list}[{index}]: unknown role {role:?} (expected system, user or assistant)")]
    UnknownRole { list: &'static str, index: usize, role: String },
    #[error("completion must be one assistant message (found {0})")]
    BadCompletion(String),
    #[error("\"answer\" {answer:?} and \"ground_truth\" {ground_truth:?} differ; give one")]
    ConflictingAnswers { answer: String, ground_truth: String },
    #[error("the last message must be the assistant's response (found role {0:?})")]
    NoResponse(String),
    #[error("empty prompt")]
    EmptyPrompt,
    #[error("empty response")]
    EmptyResponse,
}

impl BadReason {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LineTooLong { .. } => "line_too_long",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingField(_) => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::AmbiguousFormat { .. } => "ambiguous_format",
            Self::UnknownRole { .. } => "unknown_role",
            Self::NoResponse(_) => "no_response",
            Self::BadCompletion(_) => "bad_completion",
            Self::ConflictingAnswers { .. } => "conflicting_answers",
            Self::EmptyPrompt => "empty_prompt",
            Self::EmptyResponse => "empty_response",
        }
    }
}

/// Validates one JSONL line (without its newline). `max_bytes` is the line length limit.
pub fn parse_line(line: &[u8], max_bytes: usize) -> Result<Example, BadReason> {
    parse_line_format(line, max_bytes).map(|(example, _)| example)
}

/// [`parse_line`], and which layout the line used.
pub fn parse_line_format(line: &[u8], max_bytes: usize) -> Result<(Example, ExampleFormat), BadReason> {
    if line.len() > max_bytes {
        return Err(BadReason::LineTooLong {
            bytes: line.len() as u64,
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(line).map_err(|e| BadReason::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| BadReason::InvalidJson(e.to_string()))?;
    parse_value_format(&value)
}

/// Validates one example given as JSON, in any [`ExampleFormat`]: the paper's
/// `{"context","response"}`, `{"messages":[{"role","content"},...]}` whose last message is the
/// assistant's response, or TRL's `{"prompt","completion"}` (two strings, or two lists of
/// messages). Optional: `type`; `answer` or `ground_truth` (string or number; else the
/// response's final answer); `id` (string or integer). Other fields are ignored.
pub fn parse_value(value: &Value) -> Result<Example, BadReason> {
    parse_value_format(value).map(|(example, _)| example)
}

/// [`parse_value`], and which layout the value used.
pub fn parse_value_format(value: &Value) -> Result<(Example, ExampleFormat), BadReason> {
    let obj = value.as_object().ok_or(BadReason::NotAnObject)?;
    let (format, messages, response) = read_dialogue(obj)?;
    if messages.is_empty() {
        return Err(BadReason::EmptyPrompt);
    }
    if response.trim().is_empty() {
        return Err(BadReason::EmptyResponse);
    }
    let answer = match (answer_field(obj, "answer")?, answer_field(obj, "ground_truth")?) {
        (Some(answer), Some(ground_truth)) if answer != ground_truth => {
            return Err(BadReason::ConflictingAnswers { answer, ground_truth })
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => final_answer(&response).to_string(),
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(_) => return Err(wrong("id", "a string or an integer")),
    };
    let example_type = match obj.get("type") {
        None | Some(Value::Null) => "unknown".to_string(),
        Some(t) => as_str(t, "type")?.to_string(),
    };
    Ok((
        Example {
            id,
            messages,
            response,
            answer,
            example_type,
        },
        format,
    ))
}

/// `answer` / `ground_truth`: a string (trimmed) or a number; absent or null = `None`.
fn answer_field(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, BadReason> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(wrong(field, "a string or a number")),
    }
}

impl Example {
    /// Chat-style JSON ([`ExampleFormat::Messages`]) that [`parse_value`] reads back to the
    /// same example.
    pub fn to_json(&self) -> Value {
        let mut messages: Vec<Value> = self
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        messages.push(serde_json::json!({"role": "assistant", "content": self.response}));
        let mut obj = Map::new();
        if let Some(id) = &self.id {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        obj.insert("messages".into(), Value::Array(messages));
        obj.insert("answer".into(), Value::String(self.answer.clone()));
        obj.insert("type".into(), Value::String(self.example_type.clone()));
        Value::Object(obj)
    }

    /// Hash of the prompt messages and response: equal content, equal key (duplicates).
    pub fn content_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for m in &self.messages {
            field(&mut h, m.role.as_bytes());
            field(&mut h, m.content.as_bytes());
        }
        h.update([0xff]);
        field(&mut h, self.response.as_bytes());
        h.finalize().into()
    }

    /// What the split hashes: the `id` when given, else the content.
    pub fn identity_key(&self) -> [u8; 32] {
        match &self.id {
            Some(id) => {
                let mut h = Sha256::new();
                h.update(b"id\0");
                h.update(id.as_bytes());
                h.finalize().into()
            }
            None => self.content_key(),
        }
    }
}

/// Length-prefixed so field boundaries cannot be forged by content.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(line: &str) -> BadReason {
        parse_line(line.as_bytes(), 1 << 20).expect_err(line)
    }

    const PAPER: &str = r#"{"context": "User: What is 2+2?", "response": "<|thinking|>\n[LOGIC]2+2=4[/LOGIC]\n[INTUITION]small[/INTUITION]\n<|/thinking|>\n4", "type": "arith"}"#;

    #[test]
    fn paper_format() {
        let e = parse_line(PAPER.as_bytes(), 1 << 20).unwrap();
        assert_eq!(e.messages, vec![Message::new("user", "What is 2+2?")]);
        assert_eq!(e.answer, "4");
        assert_eq!(e.example_type, "arith");
        assert_eq!(e.id, None);
    }

    #[test]
    fn chat_format_optional_fields_and_round_trip() {
        let line = r#"{"id": 7, "answer": 12, "messages": [{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"twelve"}]}"#;
        let e = parse_line(line.as_bytes(), 1 << 20).unwrap();
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.answer, "12");
        assert_eq!(e.example_type, "unknown");
        assert_eq!(e.messages.len(), 2);
        assert_eq!(e.response, "twelve");
        assert_eq!(parse_value(&e.to_json()).unwrap(), e);
        // No thinking block and no answer field: the whole response.
        let e = parse_line(br#"{"context":"q","response":"  plain  "}"#, 100).unwrap();
        assert_eq!(e.answer, "plain");
    }

    #[test]
    fn every_bad_case_has_a_reason() {
        assert_eq!(
            parse_line(PAPER.as_bytes(), 20).unwrap_err().kind(),
            "line_too_long"
        );
        assert_eq!(
            parse_line(b"{\"context\":\"\xff\"}", 100)
                .unwrap_err()
                .kind(),
            "invalid_utf8"
        );
        assert_eq!(bad("{\"context\": ").kind(), "invalid_json");
        assert_eq!(bad("[1,2]").kind(), "not_an_object");
        assert_eq!(bad(r#"{"response":"r"}"#).kind(), "missing_field");
        assert_eq!(
            bad(r#"{"context":"q"}"#),
            BadReason::MissingField("response")
        );
        assert_eq!(bad(r#"{"context":5,"response":"r"}"#).kind(), "wrong_type");
        assert_eq!(
            bad(r#"{"context":"q","response":["r"]}"#).kind(),
            "wrong_type"
        );
        assert_eq!(
            bad(r#"{"context":"q","response":"r","type":3}"#).kind(),
            "wrong_type"
        );
        assert_eq!(
            bad(r#"{"context":"q","response":"r","answer":{}}"#).kind(),
            "wrong_type"
        );
        assert_eq!(
            bad(r#"{"context":"q","response":"r","id":1.5}"#).kind(),
            "wrong_type"
        );
        assert_eq!(
            bad(r#"{"context":"q","response":"  \n"}"#),
            BadReason::EmptyResponse
        );
        assert_eq!(
            bad(r#"{"context":"User:  ","response":"r"}"#),
            BadReason::EmptyPrompt
        );
        assert_eq!(
            bad(r#"{"context":"q","messages":[],"response":"r"}"#).kind(),
            "ambiguous_format"
        );
        assert_eq!(bad(r#"{"messages":{}}"#).kind(), "wrong_type");
        assert_eq!(bad(r#"{"messages":[]}"#), BadReason::EmptyPrompt);
        assert_eq!(
            bad(r#"{"messages":[{"role":"user","content":"q"}]}"#).kind(),
            "no_response"
        );
        assert_eq!(
            bad(r#"{"messages":[{"role":"assistant","content":"a"}]}"#),
            BadReason::EmptyPrompt
        );
        assert_eq!(
            bad(r#"{"messages":[{"role":"bot","content":"q"}]}"#).kind(),
            "unknown_role"
        );
        assert_eq!(
            bad(r#"{"messages":[{"role":"user"}]}"#).kind(),
            "missing_field"
        );
        assert_eq!(
            bad(
                r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":""}]}"#
            ),
            BadReason::EmptyResponse
        );
        let msg = bad(r#"{"messages":[{"role":"user","content":1}]}"#).to_string();
        assert!(msg.contains("messages[0].content"), "{msg}");
    }

    #[test]
    fn keys() {
        let a = parse_line(PAPER.as_bytes(), 1 << 20).unwrap();
        let mut b = a.clone();
        b.example_type = "other".into();
        b.id = Some("x".into());
        assert_eq!(a.content_key(), b.content_key());
        assert_ne!(a.identity_key(), b.identity_key());
        b.response.push('!');
        assert_ne!(a.content_key(), b.content_key());
    }
}

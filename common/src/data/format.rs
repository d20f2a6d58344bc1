//! The JSONL layouts an example may come in, and how each becomes prompt messages + response.
//!
//! | format | line | prompt | response |
//! |---|---|---|---|
//! | [`ExampleFormat::Context`] (the paper's) | `{"context": "User: ...", "response": "..."}` | `context` split on `User:`/`Assistant:`/`System:` lines | `response` |
//! | [`ExampleFormat::Messages`] (TRL conversational LM) | `{"messages": [{"role", "content"}, ...]}` | every message but the last | the last message, which must be the assistant's |
//! | [`ExampleFormat::PromptCompletion`] (TRL standard) | `{"prompt": "...", "completion": "..."}` | `prompt` as one user message | `completion` |
//! | [`ExampleFormat::ChatPromptCompletion`] (TRL conversational) | `{"prompt": [messages], "completion": [{"role": "assistant", ...}]}` | `prompt`'s messages | the one assistant message of `completion` |
//!
//! Every format is trained the same way afterwards: the model's chat template over the prompt
//! messages, then the response.

use std::fmt;

use serde_json::{Map, Value};

use super::context::{parse_context, Message};
use super::example::BadReason;

/// Which layout a line used; `data check` counts them per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExampleFormat {
    /// The paper's `{"context", "response"}`.
    Context,
    /// `{"messages"}`, the last message the response.
    Messages,
    /// TRL's standard `{"prompt", "completion"}` (two strings).
    PromptCompletion,
    /// TRL's conversational `{"prompt", "completion"}` (two lists of messages).
    ChatPromptCompletion,
}

impl ExampleFormat {
    pub const ALL: [ExampleFormat; 4] =
        [Self::Context, Self::Messages, Self::PromptCompletion, Self::ChatPromptCompletion];

    /// A stable key (`context`, `messages`, `prompt_completion`, `chat_prompt_completion`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Context => "context",
            Self::Messages => "messages",
            Self::PromptCompletion => "prompt_completion",
            Self::ChatPromptCompletion => "chat_prompt_completion",
        }
    }

    /// How `data check` names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Context => "context/response (paper)",
            Self::Messages => "messages",
            Self::PromptCompletion => "prompt/completion",
            Self::ChatPromptCompletion => "prompt/completion (conversational)",
        }
    }
}

impl fmt::Display for ExampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The prompt messages and the response of an example object, and the format they came in.
pub(crate) fn read_dialogue(obj: &Map<String, Value>) -> Result<(ExampleFormat, Vec<Message>, String), BadReason> {
    let present: Vec<&'static str> =
        ["context", "messages", "prompt"].into_iter().filter(|k| obj.contains_key(*k)).collect();
    match present.as_slice() {
        [] => Err(BadReason::MissingField("context, messages or prompt")),
        ["context"] => {
            let context = as_str(&obj["context"], "context")?;
            let response = as_str(obj.get("response").ok_or(BadReason::MissingField("response"))?, "response")?;
            Ok((ExampleFormat::Context, parse_context(context), response.to_string()))
        }
        ["messages"] => {
            let mut messages = message_list(&obj["messages"], &MESSAGES)?;
            let last = messages.pop().ok_or(BadReason::EmptyPrompt)?;
            if last.role != "assistant" {
                return Err(BadReason::NoResponse(last.role));
            }
            Ok((ExampleFormat::Messages, messages, last.content))
        }
        [first, second, ..] => Err(BadReason::AmbiguousFormat { first, second }),
        // Only "prompt" is left.
        [_] => prompt_completion(obj),
    }
}

fn prompt_completion(obj: &Map<String, Value>) -> Result<(ExampleFormat, Vec<Message>, String), BadReason> {
    let completion = obj.get("completion").ok_or(BadReason::MissingField("completion"))?;
    match &obj["prompt"] {
        Value::String(prompt) => {
            let completion = completion.as_str().ok_or_else(|| wrong("completion", "a string, as `prompt` is"))?;
            let messages = if prompt.trim().is_empty() { Vec::new() } else { vec![Message::new("user", prompt.as_str())] };
            Ok((ExampleFormat::PromptCompletion, messages, completion.to_string()))
        }
        Value::Array(_) => {
            if !completion.is_array() {
                return Err(wrong("completion", "a list of messages, as `prompt` is"));
            }
            let messages = message_list(&obj["prompt"], &PROMPT)?;
            let mut completion = message_list(completion, &COMPLETION)?;
            let response = match completion.len() {
                1 if completion[0].role == "assistant" => completion.remove(0),
                1 => return Err(BadReason::BadCompletion(format!("role {:?}", completion[0].role))),
                n => return Err(BadReason::BadCompletion(format!("{n} messages"))),
            };
            Ok((ExampleFormat::ChatPromptCompletion, messages, response.content))
        }
        _ => Err(wrong("prompt", "a string or a list of messages")),
    }
}

/// A list of `{role, content}` objects and the names its errors use.
struct ListFields {
    name: &'static str,
    role: &'static str,
    content: &'static str,
}

const MESSAGES: ListFields = ListFields { name: "messages", role: "messages[].role", content: "messages[].content" };
const PROMPT: ListFields = ListFields { name: "prompt", role: "prompt[].role", content: "prompt[].content" };
const COMPLETION: ListFields =
    ListFields { name: "completion", role: "completion[].role", content: "completion[].content" };

fn message_list(v: &Value, list: &ListFields) -> Result<Vec<Message>, BadReason> {
    let items = v.as_array().ok_or_else(|| wrong(list.name, "an array"))?;
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let field = |name: &str| format!("{}[{index}].{name}", list.name);
        let obj = item.as_object().ok_or_else(|| wrong(&format!("{}[{index}]", list.name), "an object"))?;
        let role = obj.get("role").ok_or(BadReason::MissingField(list.role))?;
        let role = role.as_str().ok_or_else(|| wrong(&field("role"), "a string"))?;
        if !matches!(role, "system" | "user" | "assistant") {
            return Err(BadReason::UnknownRole { list: list.name, index, role: role.to_string() });
        }
        let content = obj.get("content").ok_or(BadReason::MissingField(list.content))?;
        let content = content.as_str().ok_or_else(|| wrong(&field("content"), "a string"))?;
        messages.push(Message::new(role, content));
    }
    Ok(messages)
}

pub(crate) fn wrong(field: &str, expected: &'static str) -> BadReason {
    BadReason::WrongType { field: field.to_string(), expected }
}

pub(crate) fn as_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, BadReason> {
    v.as_str().ok_or_else(|| wrong(field, "a string"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{parse_line, parse_line_format, Example};

    fn parse(line: &str) -> Result<Example, BadReason> {
        parse_line(line.as_bytes(), 1 << 20)
    }

    fn format_of(line: &str) -> ExampleFormat {
        parse_line_format(line.as_bytes(), 1 << 20).unwrap().1
    }

    const RESPONSE: &str = "<|thinking|>\n[LOGIC]2+2=4[/LOGIC]\n[INTUITION]small[/INTUITION]\n<|/thinking|>\n4";

    #[test]
    fn one_dialogue_in_every_format_is_one_example() {
        let r = serde_json::to_string(RESPONSE).unwrap();
        let lines = [
            (format!(r#"{{"context": "System: Be brief.\nUser: What is 2+2?", "response": {r}}}"#), ExampleFormat::Context),
            (
                format!(
                    r#"{{"messages": [{{"role": "system", "content": "Be brief."}}, {{"role": "user", "content": "What is 2+2?"}}, {{"role": "assistant", "content": {r}}}]}}"#
                ),
                ExampleFormat::Messages,
            ),
            (
                format!(
                    r#"{{"prompt": [{{"role": "system", "content": "Be brief."}}, {{"role": "user", "content": "What is 2+2?"}}], "completion": [{{"role": "assistant", "content": {r}}}]}}"#
                ),
                ExampleFormat::ChatPromptCompletion,
            ),
        ];
        let first = parse(&lines[0].0).unwrap();
        assert_eq!(first.messages, vec![Message::new("system", "Be brief."), Message::new("user", "What is 2+2?")]);
        for (line, format) in &lines {
            let e = parse(line).unwrap();
            assert_eq!(format_of(line), *format, "{line}");
            assert_eq!(e, first, "{line}");
            assert_eq!(e.content_key(), first.content_key());
            assert_eq!(e.answer, "4", "the final-answer rule");
        }
        // TRL's standard format: the prompt text is one user message.
        let line = format!(r#"{{"prompt": "What is 2+2?", "completion": {r}, "type": "arith"}}"#);
        let e = parse(&line).unwrap();
        assert_eq!(format_of(&line), ExampleFormat::PromptCompletion);
        assert_eq!((e.messages, e.response.as_str()), (vec![Message::new("user", "What is 2+2?")], RESPONSE));
        assert_eq!((e.answer.as_str(), e.example_type.as_str()), ("4", "arith"));
    }

    #[test]
    fn answer_or_ground_truth_field_wins_over_the_final_answer_rule() {
        let e = parse(r#"{"prompt": "q", "completion": "so it is 12", "ground_truth": " 12 "}"#).unwrap();
        assert_eq!(e.answer, "12");
        let e = parse(r#"{"prompt": "q", "completion": "twelve", "answer": 12, "ground_truth": "12"}"#).unwrap();
        assert_eq!(e.answer, "12");
        let e = parse(r#"{"context": "q", "response": "r", "ground_truth": 7.5}"#).unwrap();
        assert_eq!(e.answer, "7.5");
        let err = parse(r#"{"prompt": "q", "completion": "r", "answer": "1", "ground_truth": "2"}"#).unwrap_err();
        assert_eq!(err.kind(), "conflicting_answers");
        assert!(err.to_string().contains("ground_truth"), "{err}");
        let err = parse(r#"{"prompt": "q", "completion": "r", "ground_truth": ["2"]}"#).unwrap_err();
        assert_eq!(err, wrong("ground_truth", "a string or a number"));
    }

    #[test]
    fn every_bad_trl_line_has_a_reason_naming_the_field() {
        let cases = [
            (r#"{"prompt": "q"}"#, "missing_field", "completion"),
            (r#"{"prompt": 3, "completion": "r"}"#, "wrong_type", "prompt"),
            (r#"{"prompt": "q", "completion": [{"role": "assistant", "content": "r"}]}"#, "wrong_type", "completion"),
            (r#"{"prompt": [{"role": "user", "content": "q"}], "completion": "r"}"#, "wrong_type", "completion"),
            (
                r#"{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "r"}, {"role": "assistant", "content": "s"}]}"#,
                "bad_completion",
                "2 messages",
            ),
            (r#"{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user", "content": "r"}]}"#, "bad_completion", "\"user\""),
            (r#"{"prompt": [{"role": "user", "content": "q"}], "completion": []}"#, "bad_completion", "0 messages"),
            (r#"{"prompt": [{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}], "completion": [{"role": "assistant", "content": "r"}]}"#, "unknown_role", "prompt[1]"),
            (r#"{"prompt": [{"role": "user"}], "completion": [{"role": "assistant", "content": "r"}]}"#, "missing_field", "prompt[].content"),
            (r#"{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": 5}]}"#, "wrong_type", "completion[0].content"),
            (r#"{"prompt": [], "completion": [{"role": "assistant", "content": "r"}]}"#, "empty_prompt", "empty prompt"),
            (r#"{"prompt": "  ", "completion": "r"}"#, "empty_prompt", "empty prompt"),
            (r#"{"prompt": "q", "completion": " "}"#, "empty_response", "empty response"),
            (r#"{"prompt": "q", "completion": "r", "messages": []}"#, "ambiguous_format", r#"both "messages" and "prompt""#),
            (r#"{"context": "q", "response": "r", "prompt": "q"}"#, "ambiguous_format", r#"both "context" and "prompt""#),
            (r#"{"completion": "r"}"#, "missing_field", "context, messages or prompt"),
        ];
        for (line, kind, says) in cases {
            let err = parse(line).expect_err(line);
            assert_eq!(err.kind(), kind, "{line}: {err}");
            assert!(err.to_string().contains(says), "{line}: {err}");
        }
        // The paper's and the messages format keep their messages.
        let err = parse(r#"{"context":"q","messages":[],"response":"r"}"#).unwrap_err();
        assert_eq!(err.to_string(), r#"has both "context" and "messages"; use one format"#);
        let err = parse(r#"{"messages":[{"role":"bot","content":"q"}]}"#).unwrap_err();
        assert_eq!(err.to_string(), r#"messages[0]: unknown role "bot" (expected system, user or assistant)"#);
    }
}

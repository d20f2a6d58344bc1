//! The paper's `context` string ("User: ...\nAssistant: ...") as chat messages.
//!
//! The one rule, also behind `crate::tokenizer::context_to_messages`: a line starting with `User:`,
//! `Assistant:` or `System:` begins a new message; other lines continue the current one; text
//! before any prefix (or without any prefix at all) is a user message.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

const PREFIXES: [(&str, &str); 3] = [
    ("User:", "user"),
    ("Assistant:", "assistant"),
    ("System:", "system"),
];

/// Splits a context into messages; contents are trimmed, messages left empty are dropped.
pub fn parse_context(context: &str) -> Vec<Message> {
    let mut messages: Vec<(String, Vec<&str>)> = Vec::new();
    for line in context.lines() {
        let prefixed = PREFIXES
            .iter()
            .find_map(|(p, role)| line.strip_prefix(p).map(|rest| (*role, rest)));
        match (prefixed, messages.last_mut()) {
            (Some((role, rest)), _) => messages.push((role.to_string(), vec![rest])),
            (None, Some((_, lines))) => lines.push(line),
            (None, None) => messages.push(("user".to_string(), vec![line])),
        }
    }
    messages
        .into_iter()
        .map(|(role, lines)| Message {
            role,
            content: lines.join("\n").trim().to_string(),
        })
        .filter(|m| !m.content.is_empty())
        .collect()
}

/// The inverse for messages whose lines do not themselves start with a role prefix.
pub fn format_context(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| {
            let prefix = match m.role.as_str() {
                "assistant" => "Assistant:",
                "system" => "System:",
                _ => "User:",
            };
            format!("{prefix} {}", m.content)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_turn_with_continuations() {
        let ctx =
            "System: Be brief.\nUser: What is 2+2?\nAssistant: 4\nUser: And times 3?\nShow steps.";
        assert_eq!(
            parse_context(ctx),
            vec![
                Message::new("system", "Be brief."),
                Message::new("user", "What is 2+2?"),
                Message::new("assistant", "4"),
                Message::new("user", "And times 3?\nShow steps."),
            ]
        );
        assert_eq!(
            parse_context(&format_context(&parse_context(ctx))),
            parse_context(ctx)
        );
    }

    #[test]
    fn unprefixed_text_is_one_user_message() {
        assert_eq!(
            parse_context("Just a question\nover two lines"),
            vec![Message::new("user", "Just a question\nover two lines")]
        );
        assert_eq!(
            parse_context("Preamble\nAssistant: hi"),
            vec![
                Message::new("user", "Preamble"),
                Message::new("assistant", "hi")
            ]
        );
        // A prefix only counts at the start of a line.
        assert_eq!(
            parse_context("Say User: hi"),
            vec![Message::new("user", "Say User: hi")]
        );
        assert!(parse_context("  \nUser:   \n").is_empty());
    }
}

//! An example as the model sees it: chat-templated prompt tokens, then response tokens.
//!
//! The learner's SFT labels, its validation loss and the prompts it leases to rollout workers all
//! come from here, so training and sampling agree on where the prompt ends; and so does the
//! `max_seq_len` filter ([`ExampleEncoder::seq_len`]) of both `train` and `data check`.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{format_context, Example, Message};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Token ids of one example, split where generation would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExample {
    /// The templated prompt, ending with the assistant-turn opener (the generation prompt).
    pub prompt: Vec<u32>,
    /// The response and the template's end-of-turn marker: what the model should generate.
    pub response: Vec<u32>,
}

impl EncodedExample {
    /// Prompt + response tokens.
    pub fn len(&self) -> usize {
        self.prompt.len() + self.response.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The prompt text: the model's chat template with the generation prompt, or (for a model that
/// ships no template) the paper's `User: ...` context followed by `Assistant:`.
pub fn prompt_text(tokenizer: &Tokenizer, messages: &[Message]) -> Result<String, TokenizerError> {
    match tokenizer.apply_chat_template(messages, true) {
        Err(TokenizerError::NoChatTemplate) => Ok(format!("{}\nAssistant:", format_context(messages))),
        other => other,
    }
}

/// Encodes `example`. The response text is what the template renders after the generation prompt
/// for the assistant turn, cut after the end-of-turn (eos) marker, so a model trained on it learns
/// to stop where the sampler stops. Whatever the template puts before the response's content
/// (Qwen3's empty `<think></think>` block) joins the prompt, as Qwen3's `enable_thinking=False`
/// generation prompt does: the workers sample after it. Templates that do not render the
/// response verbatim fall back to `response + eos`.
pub fn encode_example(tokenizer: &Tokenizer, example: &Example) -> Result<EncodedExample, TokenizerError> {
    let mut prompt = prompt_text(tokenizer, &example.messages)?;
    let eos = tokenizer.eos_token().unwrap_or("");
    let mut turn = example.messages.clone();
    turn.push(Message::new("assistant", example.response.clone()));
    let full = match tokenizer.apply_chat_template(&turn, false) {
        Ok(full) => Some(full),
        Err(TokenizerError::NoChatTemplate) => None,
        Err(e) => return Err(e),
    };
    let content = example.response.trim();
    let rendered = full.as_deref().and_then(|f| f.strip_prefix(prompt.as_str())).and_then(|rest| {
        let start = rest.find(content)?;
        let end = start + content.len();
        let stop = match (!eos.is_empty()).then(|| rest[end..].find(eos)).flatten() {
            Some(at) => end + at + eos.len(),
            None => rest.len(),
        };
        Some((rest[..start].to_string(), rest[start..stop].to_string()))
    });
    let response = match rendered {
        Some((preamble, response)) => {
            prompt.push_str(&preamble);
            response
        }
        None if full.is_none() => format!(" {}{eos}", example.response),
        None => format!("{}{eos}", example.response),
    };
    Ok(EncodedExample { prompt: tokenizer.encode(&prompt, false)?, response: tokenizer.encode(&response, false)? })
}


/// [`encode_example`] with a cache keyed by content, so a growing dataset is only tokenised for
/// what is new. Single-threaded (the cache is a `RefCell`).
pub struct ExampleEncoder {
    tokenizer: Tokenizer,
    cache: RefCell<HashMap<[u8; 32], EncodedExample>>,
}

impl ExampleEncoder {
    pub fn new(tokenizer: Tokenizer) -> Self {
        Self { tokenizer, cache: RefCell::new(HashMap::new()) }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn encode(&self, example: &Example) -> Result<EncodedExample, TokenizerError> {
        let key = example.content_key();
        if let Some(e) = self.cache.borrow().get(&key) {
            return Ok(e.clone());
        }
        let encoded = encode_example(&self.tokenizer, example)?;
        self.cache.borrow_mut().insert(key, encoded.clone());
        Ok(encoded)
    }

    /// The length the dataset's `max_seq_len` filter compares: prompt + response tokens as SFT
    /// trains on them. An example the tokenizer rejects counts as over any limit (it is filtered
    /// and reported as too long) rather than stopping a run.
    pub fn seq_len(&self, example: &Example) -> usize {
        match self.encode(example) {
            Ok(e) => e.len(),
            Err(e) => {
                tracing::warn!(
                    id = example.id.as_deref().unwrap_or("(no id)"),
                    error = %e,
                    "example cannot be tokenised: filtered as too long"
                );
                usize::MAX
            }
        }
    }
}

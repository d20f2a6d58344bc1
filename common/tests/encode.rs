//! Example encoding with the real Qwen3 tokenizer and chat template (committed fixture).

use std::path::Path;

use asrl_common::data::{encode_example, parse_value, prompt_text, Message};
use asrl_common::tokenizer::Tokenizer;

fn qwen3() -> Tokenizer {
    Tokenizer::from_hf_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-qwen3")).unwrap()
}

#[test]
fn prompt_ends_at_the_generation_prompt_and_response_ends_at_eos() {
    let tok = qwen3();
    let response = "<|thinking|>\n[LOGIC]\n2 + 2 = 4\n[/LOGIC]\n[INTUITION]\nSmall.\n[/INTUITION]\n<|/thinking|>\n4";
    let ex = parse_value(&serde_json::json!({
        "context": "User: What is 2+2?\nAssistant: Let me think.\nUser: And the answer?",
        "response": response,
        "type": "multi_turn"
    }))
    .unwrap();
    let enc = encode_example(&tok, &ex).unwrap();
    let prompt = tok.decode(&enc.prompt, false).unwrap();
    let resp = tok.decode(&enc.response, false).unwrap();
    // Qwen3 renders an empty think block before a final assistant turn: it belongs to the prompt.
    assert!(prompt.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "{prompt:?}");
    assert!(prompt.contains("Let me think."), "{prompt:?}");
    assert_eq!(resp, format!("{response}<|im_end|>"));
    assert!(prompt.starts_with(&prompt_text(&tok, &ex.messages).unwrap()));
    // The response's last token is the eos the sampler stops at.
    assert!(tok.eos_token_ids().contains(enc.response.last().unwrap()), "{:?}", enc.response.last());
    assert_eq!(enc.len(), enc.prompt.len() + enc.response.len());
}

#[test]
fn prompt_text_of_a_single_user_turn_matches_the_template() {
    let tok = qwen3();
    let msgs = [Message::new("user", "Hi")];
    assert_eq!(prompt_text(&tok, &msgs).unwrap(), tok.apply_chat_template(&msgs, true).unwrap());
}

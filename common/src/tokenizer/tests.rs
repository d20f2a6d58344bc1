use super::*;
use candle_core::quantized::gguf_file;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> serde_json::Value {
    let path = repo().join("tests/fixtures/tokenizer_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture json")
}

fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
    serde_json::from_value(v.clone()).expect("messages")
}

fn check_chat(tok: &Tokenizer, cases: &serde_json::Value) {
    let cases = cases.as_array().expect("cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let msgs = messages(&case["messages"]);
        let agp = case["add_generation_prompt"].as_bool().expect("bool");
        let got = tok.apply_chat_template(&msgs, agp).expect("render");
        assert_eq!(got, case["expected"].as_str().expect("str"), "case {} agp={agp}", case["name"]);
    }
}

#[test]
fn qwen3_chat_template_matches_transformers() {
    // The fixture dir carries the template as chat_template.jinja (transformers 5 layout).
    let tok = Tokenizer::from_hf_dir(&repo().join("tests/fixtures/tiny-qwen3")).unwrap();
    check_chat(&tok, &reference()["qwen3_chat"]);
}

#[test]
fn qwen3_chat_template_from_tokenizer_config() {
    let dir = repo().join("assets/qwen3-tokenizer");
    if !dir.join("tokenizer.json").exists() {
        eprintln!("skipping: {} absent (scripts/fetch-assets.sh)", dir.display());
        return;
    }
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    check_chat(&tok, &reference()["qwen3_chat"]);
    assert_eq!(tok.eos_token_ids(), &[151645]);
}

#[test]
fn qwen3_encode_matches_transformers() {
    let tok = Tokenizer::from_hf_dir(&repo().join("tests/fixtures/tiny-qwen3")).unwrap();
    for case in reference()["qwen3_encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text, true).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), text);
    }
    assert_eq!(tok.vocab_size(), 151669);
    // eos from tokenizer_config merged with generation_config's list, deduplicated.
    assert_eq!(tok.eos_token_ids(), &[151645, 151643]);
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let path = repo().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipping: {} absent (scripts/fetch-assets.sh)", path.display());
        return;
    }
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let tok = Tokenizer::from_gguf(&content).unwrap();
    let r = reference();
    for case in r["smollm2_gguf_encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, want, "{text:?}");
        let plain = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&plain, true).unwrap(), case["decoded_skip_special"].as_str().unwrap());
    }
    check_chat(&tok, &r["smollm2_gguf_chat"]);
    assert_eq!(tok.eos_token_ids(), &[r["smollm2_gguf_eos_token_id"].as_u64().unwrap() as u32]);
    assert_eq!(tok.vocab_size(), r["smollm2_gguf_vocab_size"].as_u64().unwrap() as usize);
}

fn write_dir(template: Option<&str>, generation_config: Option<&str>) -> tempfile::TempDir {
    let src = repo().join("tests/fixtures/tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let mut cfg = serde_json::json!({"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"});
    if let Some(t) = template {
        cfg["chat_template"] = t.into();
    }
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    if let Some(g) = generation_config {
        std::fs::write(dir.path().join("generation_config.json"), g).unwrap();
    }
    dir
}

#[test]
fn template_helpers_follow_transformers() {
    let tmpl = "{{ bos_token }}{% for m in messages %}{{ m.content.strip().upper() }}|{{ m | tojson }}\n{% endfor %}\
                {% if messages[-1].role != 'user' %}{{ raise_exception('last must be user') }}{% endif %}";
    let dir = write_dir(Some(tmpl), None);
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    let out = tok.apply_chat_template(&[ChatMessage::new("user", " a<b> é ")], false).unwrap();
    // python: json.dumps({...}, ensure_ascii=False) keeps `<`, `>` and non-ASCII as they are.
    assert_eq!(out, "<|im_start|>A<B> É|{\"role\": \"user\", \"content\": \" a<b> é \"}\n");
    let err = tok.apply_chat_template(&[ChatMessage::new("assistant", "x")], false).unwrap_err();
    assert!(err.to_string().contains("last must be user"), "{err}");

    // json.dumps({"a": [1, 2.5, None, True], "b": {}}, indent=2)
    let tmpl = "{{ {'b': {'y': 1}, 'a': [1, 2.5, none, true], 'c': []} | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}";
    let dir = write_dir(Some(tmpl), None);
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    let out = tok.apply_chat_template(&[], false).unwrap();
    assert_eq!(
        out,
        "{\n  \"b\": {\n    \"y\": 1\n  },\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"c\": []\n}|{\"a\": 2, \"b\": 1}"
    );
    assert!(err.to_string().contains("last must be user"), "{err}");
}

#[test]
fn missing_template_and_bad_files_are_named() {
    let dir = write_dir(None, Some(r#"{"eos_token_id": [2, 0]}"#));
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(tok.eos_token_ids(), &[2, 0]);
    assert!(matches!(tok.apply_chat_template(&[], true), Err(TokenizerError::NoChatTemplate)));

    let dir = write_dir(None, Some(r#"{"eos_token_id": "two"}"#));
    let err = Tokenizer::from_hf_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("generation_config.json") && err.contains("eos_token_id"), "{err}");

    let dir = write_dir(Some("{% for %}"), None);
    assert!(matches!(Tokenizer::from_hf_dir(dir.path()), Err(TokenizerError::Template(_))));

    let err = Tokenizer::from_hf_dir(Path::new("/nonexistent/model")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/model/tokenizer.json"), "{err}");
}

#[test]
fn context_single_prefixed_turn() {
    assert_eq!(context_to_messages("User: What is 2+2?"), vec![ChatMessage::new("user", "What is 2+2?")]);
}

#[test]
fn context_multi_turn_with_continuations() {
    let ctx = "System: Be brief.\nUser: Add these:\n3 and 4\nAssistant: 7\n\nUser: Now 5+6?";
    assert_eq!(
        context_to_messages(ctx),
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Add these:\n3 and 4"),
            ChatMessage::new("assistant", "7"),
            ChatMessage::new("user", "Now 5+6?"),
        ]
    );
}

#[test]
fn context_without_prefix_is_one_user_message() {
    assert_eq!(
        context_to_messages("\nSolve x + 1 = 3.\nShow work: User notes\n"),
        vec![ChatMessage::new("user", "Solve x + 1 = 3.\nShow work: User notes")]
    );
    assert!(context_to_messages("  \n ").is_empty());
    // A prefix only counts at the start of a line.
    assert_eq!(context_to_messages("Say User: hi"), vec![ChatMessage::new("user", "Say User: hi")]);
}

#[test]
fn context_text_before_first_prefix_is_a_user_message() {
    assert_eq!(
        context_to_messages("Preamble\nAssistant: ok"),
        vec![ChatMessage::new("user", "Preamble"), ChatMessage::new("assistant", "ok")]
    );
}

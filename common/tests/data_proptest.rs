//! The parser never panics, whatever the bytes.

use std::io::Write;

use asrl_common::config::DataConfig;
use asrl_common::data::{load, parse_context, parse_line, parse_value};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("User: hi\nAssistant: yo")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("context".to_string()),
            Just("response".to_string()),
            Just("messages".to_string()),
            Just("prompt".to_string()),
            Just("completion".to_string()),
            Just("ground_truth".to_string()),
            Just("role".to_string()),
            Just("content".to_string()),
            Just("answer".to_string()),
            Just("id".to_string()),
            Just("type".to_string()),
            "[a-z]{1,4}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), limit in 1usize..500) {
        let _ = parse_line(&bytes, limit);
    }

    #[test]
    fn random_json_never_panics_and_valid_examples_round_trip(v in json_value()) {
        if let Ok(example) = parse_value(&v) {
            prop_assert!(!example.response.trim().is_empty());
            prop_assert!(!example.messages.is_empty());
            prop_assert_eq!(parse_value(&example.to_json()).unwrap(), example);
        }
        let _ = parse_line(v.to_string().as_bytes(), 1 << 20);
    }

    #[test]
    fn random_contexts_never_panic(text in "(User: |Assistant: |System: |\n|[a-z ]{0,8}){0,12}") {
        for m in parse_context(&text) {
            prop_assert!(!m.content.is_empty());
            prop_assert!(matches!(m.role.as_str(), "user" | "assistant" | "system"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_files_never_panic_and_every_line_is_accounted_for(
        lines in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            Just(br#"{"context":"q","response":"r"}"#.to_vec()),
        ], 0..20),
        trailing_newline in any::<bool>(),
    ) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.into_iter().filter(|&b| b != b'\n').collect()).collect();
        let mut bytes = lines.join(&b'\n');
        if trailing_newline && !lines.is_empty() {
            bytes.push(b'\n');
        }
        file.write_all(&bytes).unwrap();
        let cfg = DataConfig { max_line_bytes: 60, ..Default::default() };
        let r = load(file.path(), &cfg, &|_| 0).unwrap().report;
        prop_assert_eq!(r.lines, r.counts.total() + r.duplicates + r.bad_count());
        prop_assert!(r.lines + r.blank_lines + r.pending_lines.len() <= lines.len().max(1));
    }
}

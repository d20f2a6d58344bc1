//! Small pieces: sizes, shard plans, names, the q/k permutation, pre-tokenizer names.

use serde_json::json;

use super::super::gguf_vocab::pre_name_for_tests as pre_name;
use super::super::gguf_writer::permute_rows;
use super::super::weights::plan_shards;
use super::*;
use crate::model::{expected_tensor_shapes, Arch};

#[test]
fn sizes_parse_like_transformers() {
    assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
    assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
    assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
    assert_eq!(parse_size("1.5kb").unwrap(), 1500);
    assert_eq!(parse_size("12345").unwrap(), 12345);
    for bad in ["", "GB", "5 parsecs", "0", "-1GB", "1e9"] {
        let e = parse_size(bad).unwrap_err().to_string();
        assert!(e.contains("is not a byte count"), "{bad:?}: {e}");
    }
}

#[test]
fn shards_follow_huggingface_hub() {
    assert_eq!(plan_shards(&[3, 3, 3], 10), vec![vec![0, 1, 2]]);
    assert_eq!(plan_shards(&[4, 4, 4], 10), vec![vec![0, 1], vec![2]]);
    // An oversized tensor gets its own shard; the current shard carries on after it.
    assert_eq!(plan_shards(&[2, 20, 3, 6], 10), vec![vec![1], vec![0, 2], vec![3]]);
    assert_eq!(plan_shards(&[10, 10], 10), vec![vec![0], vec![1]]);
}

#[test]
fn every_weight_has_a_llama_cpp_name() {
    for arch in [Arch::Qwen3, Arch::Llama] {
        let cfg = crate::model::tests::tiny_config(arch, false);
        let names: Vec<String> = expected_tensor_shapes(&cfg).iter().map(|(n, _)| gguf_name(n).unwrap()).collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
    assert_eq!(gguf_name("model.layers.12.self_attn.o_proj.weight").unwrap(), "blk.12.attn_output.weight");
    assert_eq!(gguf_name("model.layers.0.self_attn.k_norm.weight").unwrap(), "blk.0.attn_k_norm.weight");
    assert_eq!(gguf_name("model.layers.3.post_attention_layernorm.weight").unwrap(), "blk.3.ffn_norm.weight");
    assert_eq!(gguf_name("model.embed_tokens.weight").unwrap(), "token_embd.weight");
    assert_eq!(gguf_name("lm_head.weight").unwrap(), "output.weight");
    assert!(gguf_name("model.layers.x.mlp.up_proj.weight").is_none());
    assert!(gguf_name("model.rotary_emb.inv_freq").is_none());
}

/// llama.cpp pairs rotary dims (2i, 2i+1); HF pairs (i, i + d/2). Per head, row r of the first
/// half goes to 2r and row r of the second half to 2r + 1.
#[test]
fn permutation_interleaves_rotary_halves() {
    let (heads, rows, cols) = (2usize, 8usize, 3usize);
    let w = Tensor::arange(0f32, (rows * cols) as f32, &Device::Cpu).unwrap().reshape((rows, cols)).unwrap();
    let p = permute_rows(&w, heads).unwrap().to_vec2::<f32>().unwrap();
    let w = w.to_vec2::<f32>().unwrap();
    let order = [0, 2, 1, 3, 4, 6, 5, 7];
    for (i, &src) in order.iter().enumerate() {
        assert_eq!(p[i], w[src], "row {i}");
    }
    assert!(permute_rows(&Tensor::zeros((6, 2), DType::F32, &Device::Cpu).unwrap(), 2).is_err());
}

#[test]
fn pre_tokenizers_map_to_llama_cpp_names() {
    assert_eq!(pre_name(&json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})), Some("gpt-2"));
    let seq = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
    };
    let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    assert_eq!(pre_name(&seq(qwen2)), Some("qwen2"));
    assert_eq!(pre_name(&seq(llama3)), Some("llama-bpe"));
    assert_eq!(pre_name(&seq(r"\s+")), None);
    assert_eq!(pre_name(&json!({"type": "ByteLevel", "use_regex": false})), None);
    assert_eq!(pre_name(&json!({"type": "Metaspace"})), None);
}

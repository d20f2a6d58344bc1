use super::*;
use candle_core::quantized::{GgmlDType, QTensor};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn unpermute_inverts_llama_cpp_permutation() {
    let (n_head, d, inp) = (3usize, 2usize, 5usize);
    let w = Tensor::arange(0f32, (n_head * 2 * d * inp) as f32, &Device::Cpu).unwrap().reshape((n_head * 2 * d, inp)).unwrap();
    // convert_hf_to_gguf: w.reshape(n_head, 2, d, in).swapaxes(1, 2)
    let permuted = w.reshape((n_head, 2, d, inp)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((n_head * 2 * d, inp)).unwrap();
    assert_ne!(permuted.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    let back = unpermute_rows(&permuted, n_head).unwrap();
    assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    assert!(unpermute_rows(&w, 4).is_err());
}

#[test]
fn names_map_to_hf() {
    assert_eq!(hf_name("blk.12.attn_output.weight").unwrap(), "model.layers.12.self_attn.o_proj.weight");
    assert_eq!(hf_name("blk.0.attn_k_norm.weight").unwrap(), "model.layers.0.self_attn.k_norm.weight");
    assert_eq!(hf_name("blk.3.ffn_norm.weight").unwrap(), "model.layers.3.post_attention_layernorm.weight");
    assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
    assert!(hf_name("rope_freqs.weight").is_none());
    assert!(hf_name("blk.x.attn_q.weight").is_none());
}

/// A tiny llama GGUF written in-test: q/k permuted as convert_hf_to_gguf does, metadata as llama.cpp writes it.
fn write_tiny_llama(path: &Path, extra_tensor: Option<&str>) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let (hidden, heads, kv, ff, vocab) = (8usize, 2usize, 1usize, 12usize, 4usize);
    let hd = hidden / heads;
    let mut hf: Vec<(String, Tensor)> = Vec::new();
    let mut gg: Vec<(String, Tensor)> = Vec::new();
    let mut seed = 0f32;
    let mut mk = |shape: &[usize]| {
        seed += 1.0;
        let n: usize = shape.iter().product();
        Tensor::arange(0f32, n as f32, &dev).unwrap().affine(0.01, seed as f64).unwrap().sin().unwrap().reshape(shape).unwrap()
    };
    let permute = |w: &Tensor, n: usize| {
        let (o, i) = w.dims2().unwrap();
        w.reshape((n, 2, o / n / 2, i)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((o, i)).unwrap()
    };
    let embed = mk(&[vocab, hidden]);
    hf.push(("model.embed_tokens.weight".into(), embed.clone()));
    gg.push(("token_embd.weight".into(), embed));
    let q = mk(&[heads * hd, hidden]);
    gg.push(("blk.0.attn_q.weight".into(), permute(&q, heads)));
    hf.push(("model.layers.0.self_attn.q_proj.weight".into(), q));
    let k = mk(&[kv * hd, hidden]);
    gg.push(("blk.0.attn_k.weight".into(), permute(&k, kv)));
    hf.push(("model.layers.0.self_attn.k_proj.weight".into(), k));
    for (g, h, shape) in [
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", vec![kv * hd, hidden]),
        ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", vec![hidden, heads * hd]),
        ("blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight", vec![ff, hidden]),
        ("blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight", vec![ff, hidden]),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", vec![hidden, ff]),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", vec![hidden]),
        ("blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight", vec![hidden]),
        ("output_norm.weight", "model.norm.weight", vec![hidden]),
        ("output.weight", "lm_head.weight", vec![vocab, hidden]),
    ] {
        let t = mk(&shape);
        hf.push((h.into(), t.clone()));
        gg.push((g.into(), t));
    }
    if let Some(name) = extra_tensor {
        gg.push((name.into(), mk(&[hidden])));
    }
    let s = |x: &str| Value::String(x.into());
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(hidden as u32)),
        ("llama.feed_forward_length", Value::U32(ff as u32)),
        ("llama.attention.head_count", Value::U32(heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(kv as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.tokens", Value::Array(vec![s("a"), s("b"), s("ab"), s("<|end|>")])),
        ("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1), Value::I32(1), Value::I32(1), Value::I32(3)])),
        ("tokenizer.ggml.merges", Value::Array(vec![s("a b")])),
        ("tokenizer.ggml.eos_token_id", Value::U32(3)),
        ("tokenizer.chat_template", s("{% for m in messages %}{{ m.content }}{% endfor %}")),
    ];
    let qts: Vec<(String, QTensor)> =
        gg.iter().map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::F32).unwrap())).collect();
    let mut f = File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &md.iter().map(|(k, v)| (*k, v)).collect::<Vec<_>>(),
        &qts.iter().map(|(n, q)| (n.as_str(), q)).collect::<Vec<_>>(),
    )
    .unwrap();
    hf.into_iter().collect()
}

#[test]
fn reads_in_test_llama_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let want = write_tiny_llama(&path, None);
    let (cfg, tensors, tok) = read_gguf(&path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        cfg,
        ModelConfig {
            arch: Arch::Llama,
            vocab_size: 4,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            max_position_embeddings: 64,
        }
    );
    assert_eq!(tensors.len(), want.len());
    for (name, t) in &want {
        let got = tensors.get(name).unwrap_or_else(|| panic!("missing {name}"));
        let diff = (got - t).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
    assert_eq!(tok.encode("ab<|end|>", false).unwrap(), vec![2, 3]);
    assert_eq!(tok.eos_token_ids(), &[3]);

    let bf = read_gguf(&path, &Device::Cpu, DType::BF16).unwrap().1;
    assert!(bf.values().all(|t| t.dtype() == DType::BF16));
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra.gguf");
    write_tiny_llama(&path, Some("rope_freqs.weight"));
    let err = read_gguf(&path, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("extra.gguf") && err.contains("rope_freqs.weight"), "{err}");

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let err = read_gguf(&junk, &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("junk.gguf"), "{err}");

    let err = read_gguf(&dir.path().join("absent.gguf"), &Device::Cpu, DType::F32).unwrap_err().to_string();
    assert!(err.contains("absent.gguf"), "{err}");
}

#[test]
fn smollm2_matches_transformers_dequantisation() {
    let path = repo().join("assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipping: {} absent (scripts/fetch-assets.sh)", path.display());
        return;
    }
    let refp = repo().join("tests/fixtures/gguf_reference.json");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(refp).unwrap()).unwrap();
    let (cfg, tensors, _) = read_gguf(&path, &Device::Cpu, DType::F32).unwrap();
    let c = &r["config"];
    assert_eq!(cfg.arch, Arch::Llama);
    assert_eq!(cfg.vocab_size as u64, c["vocab_size"].as_u64().unwrap());
    assert_eq!(cfg.hidden_size as u64, c["hidden_size"].as_u64().unwrap());
    assert_eq!(cfg.intermediate_size as u64, c["intermediate_size"].as_u64().unwrap());
    assert_eq!(cfg.num_hidden_layers as u64, c["num_hidden_layers"].as_u64().unwrap());
    assert_eq!(cfg.num_attention_heads as u64, c["num_attention_heads"].as_u64().unwrap());
    assert_eq!(cfg.num_key_value_heads as u64, c["num_key_value_heads"].as_u64().unwrap());
    assert_eq!(cfg.max_position_embeddings as u64, c["max_position_embeddings"].as_u64().unwrap());
    assert_eq!(cfg.rope_theta, c["rope_theta"].as_f64().unwrap());
    assert!((cfg.rms_norm_eps - c["rms_norm_eps"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(cfg.head_dim, 64);
    assert_eq!(cfg.tie_word_embeddings, r["tied"].as_bool().unwrap());
    assert!(!tensors.contains_key("lm_head.weight"));
    assert_eq!(tensors.len(), 2 + 9 * 30);

    let close = |a: f64, b: f64, tol: f64, what: &str| assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
    for (name, want) in r["tensors"].as_object().unwrap() {
        let t = tensors.get(name).unwrap_or_else(|| panic!("missing {name}")).to_dtype(DType::F64).unwrap();
        let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        let t2 = if t.rank() == 1 { t.unsqueeze(0).unwrap() } else { t.clone() };
        close(t.sum_all().unwrap().to_scalar().unwrap(), want["sum"].as_f64().unwrap(), 1e-6, name);
        close(t.abs().unwrap().sum_all().unwrap().to_scalar().unwrap(), want["abs_sum"].as_f64().unwrap(), 1e-6, name);
        let rows: Vec<f64> = t2.sum(1).unwrap().to_vec1().unwrap();
        for (i, w) in want["row_sums_first_64"].as_array().unwrap().iter().enumerate() {
            close(rows[i], w.as_f64().unwrap(), 1e-6, &format!("{name} row sum {i}"));
        }
        for (row, vals) in want["rows"].as_object().unwrap() {
            let row: usize = row.parse().unwrap();
            let got: Vec<f64> = t2.get(row).unwrap().narrow(0, 0, 8.min(t2.dim(1).unwrap())).unwrap().to_vec1().unwrap();
            for (g, w) in got.iter().zip(vals.as_array().unwrap()) {
                assert_eq!(*g as f32, w.as_f64().unwrap() as f32, "{name} row {row}");
            }
        }
    }
}

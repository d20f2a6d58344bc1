//! Reading a llama.cpp GGUF file as a plain (dequantised) HF-named model: tensors renamed to HF
//! names, llama's q/k row permutation undone, `ModelConfig` from metadata, tokenizer from metadata.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::{DType, Device, Tensor};

use super::{Arch, ModelConfig};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable GGUF file: {source}", path.display())]
    Format { path: PathBuf, source: candle_core::Error },
    #[error("{}: missing metadata key `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },
    #[error("{}: metadata key `{key}`: {message}", path.display())]
    BadKey { path: PathBuf, key: String, message: String },
    #[error("{}: architecture `{arch}` is not supported (llama, qwen3)", path.display())]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error("{}: tensor `{name}` has no Llama/Qwen3 counterpart", path.display())]
    UnknownTensor { path: PathBuf, name: String },
    #[error("{}: tensor `{name}`: {source}", path.display())]
    Tensor { path: PathBuf, name: String, source: candle_core::Error },
    #[error("{}: tensor `{name}` has shape {got:?}, expected {expected:?}", path.display())]
    TensorShape { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{}: {source}", path.display())]
    Tokenizer { path: PathBuf, source: TokenizerError },
}

/// Reads `path`, dequantises every tensor to `dtype` on `device` and returns the config, the
/// HF-named tensors (no `lm_head.weight` when the embeddings are tied) and the tokenizer.
pub fn read_gguf(
    path: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(ModelConfig, HashMap<String, Tensor>, Tokenizer), GgufError> {
    let file = File::open(path).map_err(|source| GgufError::Io { path: path.into(), source })?;
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|source| GgufError::Format { path: path.into(), source })?;
    let tokenizer =
        Tokenizer::from_gguf(&content).map_err(|source| GgufError::Tokenizer { path: path.into(), source })?;
    let config = config_from_metadata(path, &content, tokenizer.vocab_size())?;

    let mut tensors = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = hf_name(name).ok_or_else(|| GgufError::UnknownTensor { path: path.into(), name: name.clone() })?;
        let terr = |source| GgufError::Tensor { path: path.into(), name: name.clone(), source };
        let q = content.tensor(&mut reader, name, device).map_err(terr)?;
        let mut t = q.dequantize(device).map_err(terr)?;
        if config.arch == Arch::Llama {
            if name.ends_with(".attn_q.weight") {
                t = unpermute_rows(&t, config.num_attention_heads).map_err(terr)?;
            } else if name.ends_with(".attn_k.weight") {
                t = unpermute_rows(&t, config.num_key_value_heads).map_err(terr)?;
            }
        }
        tensors.insert(hf, t.to_dtype(dtype).map_err(terr)?);
    }
    let embed = "model.embed_tokens.weight";
    match tensors.get(embed) {
        None => return Err(GgufError::UnknownTensor { path: path.into(), name: "token_embd.weight (missing)".into() }),
        Some(t) if t.dims() != [config.vocab_size, config.hidden_size] => {
            return Err(GgufError::TensorShape {
                path: path.into(),
                name: "token_embd.weight".into(),
                expected: vec![config.vocab_size, config.hidden_size],
                got: t.dims().to_vec(),
            })
        }
        Some(_) => {}
    }
    Ok((config, tensors, tokenizer))
}

/// llama.cpp name -> HF name; `None` for tensors this decoder has no place for.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let module = rest.strip_suffix(".weight")?;
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.weight"))
}

/// convert_hf_to_gguf reorders q/k rows per head for llama.cpp's interleaved RoPE:
/// `w.reshape(n_head, 2, d, in).swapaxes(1, 2)`. The decoder uses HF's rotate-half, so invert it.
fn unpermute_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if n_head == 0 || out % (2 * n_head) != 0 {
        candle_core::bail!("{out} rows do not split into {n_head} heads of rotary pairs");
    }
    let d = out / n_head / 2;
    w.reshape((n_head, d, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

fn config_from_metadata(path: &Path, content: &gguf_file::Content, vocab: usize) -> Result<ModelConfig, GgufError> {
    let md = &content.metadata;
    let get = |key: &str| md.get(key);
    let arch_name = get("general.architecture")
        .ok_or_else(|| GgufError::MissingKey { path: path.into(), key: "general.architecture".into() })?
        .to_string()
        .map_err(|e| GgufError::BadKey { path: path.into(), key: "general.architecture".into(), message: e.to_string() })?
        .clone();
    let arch = match arch_name.as_str() {
        "llama" => Arch::Llama,
        "qwen3" => Arch::Qwen3,
        _ => return Err(GgufError::UnsupportedArch { path: path.into(), arch: arch_name }),
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let bad = |k: &str, e: String| GgufError::BadKey { path: path.into(), key: key(k), message: e };
    let opt_usize = |k: &str| -> Result<Option<usize>, GgufError> {
        match get(&key(k)) {
            None => Ok(None),
            Some(v) => value_usize(v).map(Some).ok_or_else(|| bad(k, format!("expected a non-negative integer, got {v:?}"))),
        }
    };
    let usize_key = |k: &str| -> Result<usize, GgufError> {
        opt_usize(k)?.ok_or_else(|| GgufError::MissingKey { path: path.into(), key: key(k) })
    };
    let opt_f64 = |k: &str| -> Result<Option<f64>, GgufError> {
        match get(&key(k)) {
            None => Ok(None),
            Some(v) => v.to_f64().or_else(|_| v.to_f32().map(f64::from)).map(Some).map_err(|e| bad(k, e.to_string())),
        }
    };

    let hidden_size = usize_key("embedding_length")?;
    let num_attention_heads = usize_key("attention.head_count")?;
    let num_key_value_heads = opt_usize("attention.head_count_kv")?.unwrap_or(num_attention_heads);
    let head_dim = match opt_usize("attention.key_length")? {
        Some(d) => d,
        None if num_attention_heads > 0 => hidden_size / num_attention_heads,
        None => return Err(bad("attention.head_count", "must be positive".into())),
    };
    // f32 metadata: 1e-5 arrives as 9.99999974e-6; round to f32's precision so it matches HF's config.
    let rms_norm_eps = opt_f64("attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| GgufError::MissingKey { path: path.into(), key: key("attention.layer_norm_rms_epsilon") })?;
    let rms_norm_eps = format!("{:e}", rms_norm_eps as f32).parse().unwrap_or(rms_norm_eps);
    let default_theta = match arch {
        Arch::Llama => 10_000.0,
        Arch::Qwen3 => 1_000_000.0,
    };
    Ok(ModelConfig {
        arch,
        vocab_size: vocab,
        hidden_size,
        intermediate_size: usize_key("feed_forward_length")?,
        num_hidden_layers: usize_key("block_count")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rope_theta: opt_f64("rope.freq_base")?.unwrap_or(default_theta),
        rms_norm_eps,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        max_position_embeddings: usize_key("context_length")?,
    })
}

fn value_usize(v: &Value) -> Option<usize> {
    match v {
        Value::U8(x) => Some(*x as usize),
        Value::U16(x) => Some(*x as usize),
        Value::U32(x) => Some(*x as usize),
        Value::U64(x) => usize::try_from(*x).ok(),
        Value::I8(x) => usize::try_from(*x).ok(),
        Value::I16(x) => usize::try_from(*x).ok(),
        Value::I32(x) => usize::try_from(*x).ok(),
        Value::I64(x) => usize::try_from(*x).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
}

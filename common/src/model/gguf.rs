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
    Tensor { path: PathBuf, name: String, source: Box<candle_core::Error> },
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
        let terr = |source| GgufError::Tensor { path: path.into(), name: name.clone(), source: Box::new(source) };
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
mod tests;

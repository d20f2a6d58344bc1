//! A llama.cpp / Ollama GGUF file of a (merged) model: llama.cpp tensor names, Llama q/k rows
//! permuted for llama.cpp's interleaved RoPE, the hyper-parameters llama.cpp reads, and the
//! tokenizer + chat template in the metadata. Written with candle's GGUF writer (GGUF v2).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::gguf_vocab::gguf_vocab;
use super::tokenizer_files::SpecialTokens;
use super::ExportError;
use crate::model::{Arch, Model};
use crate::tokenizer::Tokenizer;

/// Tensor type of the 2-D weights of an exported GGUF (1-D norm weights are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    /// 8-bit blocks of 32; a weight whose rows are not a multiple of 32 is written as f16.
    Q8_0,
}

impl GgufType {
    /// `f32`, `f16` or `q8_0` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, ExportError> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            _ => Err(ExportError::Option(format!("GGUF type {s:?} is not supported (expected f16, q8_0 or f32)"))),
        }
    }

    /// The name used in file names (`<name>-q8_0.gguf`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
        }
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_ALL_F32, _MOSTLY_F16, _MOSTLY_Q8_0).
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
        }
    }
}

/// HF name -> llama.cpp name (the inverse of the reader's mapping); `None` for unknown tensors.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let module = match rest.strip_suffix(".weight")? {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{module}.weight"))
}

/// convert_hf_to_gguf's q/k permutation for llama.cpp's interleaved RoPE:
/// `w.reshape(n_head, 2, d, in).swapaxes(1, 2)`.
pub(crate) fn permute_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if n_head == 0 || out % (2 * n_head) != 0 {
        candle_core::bail!("{out} rows do not split into {n_head} heads of rotary pairs");
    }
    let d = out / n_head / 2;
    w.reshape((n_head, 2, d, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// Writes `model` as a GGUF of type `ty` to `path`. Returns notes for the user (per-tensor
/// fallbacks from q8_0 to f16).
pub(crate) fn write_gguf(
    path: &Path,
    model: &Model,
    tokenizer: &Tokenizer,
    special: &SpecialTokens,
    name: &str,
    ty: GgufType,
) -> Result<Vec<String>, ExportError> {
    let cfg = model.config();
    let mut fallbacks = Vec::new();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (hf, t) in model.named_tensors()? {
        let gg = gguf_name(&hf).ok_or_else(|| ExportError::Unsupported(format!("tensor `{hf}` has no llama.cpp name")))?;
        let err = ExportError::tensor(&gg);
        let mut t = t.to_device(&Device::Cpu).and_then(|t| t.to_dtype(DType::F32)).map_err(err)?;
        if cfg.arch == Arch::Llama {
            let heads = match hf.rsplit('.').nth(1) {
                Some("q_proj") => Some(cfg.num_attention_heads),
                Some("k_proj") => Some(cfg.num_key_value_heads),
                _ => None,
            };
            if let Some(h) = heads {
                t = permute_rows(&t, h).map_err(ExportError::tensor(&gg))?;
            }
        }
        let dtype = if t.rank() == 1 {
            GgmlDType::F32
        } else if ty == GgufType::Q8_0 && t.dims()[t.rank() - 1] % GgmlDType::Q8_0.block_size() != 0 {
            fallbacks.push(gg.clone());
            GgmlDType::F16
        } else {
            ty.ggml()
        };
        // A row view of a stacked projection shares its parent's storage, which `quantize`
        // would read whole: give it its own.
        let t = t.force_contiguous().map_err(ExportError::tensor(&gg))?;
        let q = QTensor::quantize(&t, dtype).map_err(ExportError::tensor(&gg))?;
        tensors.push((gg, q));
    }

    let metadata = metadata(model, tokenizer, special, name, ty)?;
    let file = File::create(path).map_err(|e| ExportError::io(path, e))?;
    let mut w = BufWriter::new(file);
    gguf_file::write(
        &mut w,
        &metadata.iter().map(|(k, v)| (k.as_str(), v)).collect::<Vec<_>>(),
        &tensors.iter().map(|(n, q)| (n.as_str(), q)).collect::<Vec<_>>(),
    )
    .map_err(|e| ExportError::io(path, std::io::Error::other(e.to_string())))?;
    let file = w.into_inner().map_err(|e| ExportError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| ExportError::io(path, e))?;

    let mut notes = Vec::new();
    if !fallbacks.is_empty() {
        let shown: Vec<&str> = fallbacks.iter().take(4).map(String::as_str).collect();
        let more = if fallbacks.len() > shown.len() { format!(", ... ({} in all)", fallbacks.len()) } else { String::new() };
        notes.push(format!(
            "{}: {} weight(s) with rows not a multiple of 32 written as f16 instead of q8_0: {}{more}",
            path.display(),
            fallbacks.len(),
            shown.join(", ")
        ));
    }
    Ok(notes)
}

/// The metadata llama.cpp's loader reads, with the types convert_hf_to_gguf writes them in
/// (llama.cpp checks the types).
fn metadata(
    model: &Model,
    tokenizer: &Tokenizer,
    special: &SpecialTokens,
    name: &str,
    ty: GgufType,
) -> Result<Vec<(String, gguf_file::Value)>, ExportError> {
    use gguf_file::Value as V;
    let cfg = model.config();
    let arch = match cfg.arch {
        Arch::Qwen3 => "qwen3",
        Arch::Llama => "llama",
    };
    let u32_of = |field: &str, x: usize| {
        u32::try_from(x).map(V::U32).map_err(|_| ExportError::Option(format!("{field} = {x} does not fit GGUF's u32")))
    };
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        ("general.name".into(), V::String(name.into())),
        ("general.file_type".into(), V::U32(ty.file_type())),
        ("general.quantization_version".into(), V::U32(2)),
    ];
    for (key, field, x) in [
        ("context_length", "max_position_embeddings", cfg.max_position_embeddings),
        ("embedding_length", "hidden_size", cfg.hidden_size),
        ("block_count", "num_hidden_layers", cfg.num_hidden_layers),
        ("feed_forward_length", "intermediate_size", cfg.intermediate_size),
        ("attention.head_count", "num_attention_heads", cfg.num_attention_heads),
        ("attention.head_count_kv", "num_key_value_heads", cfg.num_key_value_heads),
        ("attention.key_length", "head_dim", cfg.head_dim),
        ("attention.value_length", "head_dim", cfg.head_dim),
        ("rope.dimension_count", "head_dim", cfg.head_dim),
        ("vocab_size", "vocab_size", cfg.vocab_size),
    ] {
        md.push((format!("{arch}.{key}"), u32_of(field, x)?));
    }
    md.push((format!("{arch}.attention.layer_norm_rms_epsilon"), V::F32(cfg.rms_norm_eps as f32)));
    md.push((format!("{arch}.rope.freq_base"), V::F32(cfg.rope_theta as f32)));

    let vocab = gguf_vocab(tokenizer, cfg.vocab_size)?;
    let strings = |v: Vec<String>| V::Array(v.into_iter().map(V::String).collect());
    md.push(("tokenizer.ggml.model".into(), V::String("gpt2".into())));
    md.push(("tokenizer.ggml.pre".into(), V::String(vocab.pre.into())));
    md.push(("tokenizer.ggml.tokens".into(), strings(vocab.tokens)));
    md.push(("tokenizer.ggml.token_type".into(), V::Array(vocab.token_types.into_iter().map(V::I32).collect())));
    md.push(("tokenizer.ggml.merges".into(), strings(vocab.merges)));
    if let Some(id) = special.bos_id() {
        md.push(("tokenizer.ggml.bos_token_id".into(), V::U32(id)));
    }
    if let Some(&id) = special.eos_ids.first() {
        md.push(("tokenizer.ggml.eos_token_id".into(), V::U32(id)));
    }
    if let Some(id) = special.pad_id() {
        md.push(("tokenizer.ggml.padding_token_id".into(), V::U32(id)));
    }
    md.push(("tokenizer.ggml.add_bos_token".into(), V::Bool(special.add_bos)));
    if let Some(t) = tokenizer.chat_template() {
        md.push(("tokenizer.chat_template".into(), V::String(t)));
    }
    Ok(md)
}

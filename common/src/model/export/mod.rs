//! Exporting a (merged) model people can serve: a Hugging Face model directory that
//! transformers, vLLM and our own loader read as-is, and optionally a llama.cpp GGUF file.
//!
//! - `weights`: safetensors, sharded with an index above a size threshold.
//! - `hf_config`: config.json; `tokenizer_files`: tokenizer.json, tokenizer_config.json (chat
//!   template, special tokens), generation_config.json.
//! - `gguf_writer` + `gguf_vocab`: the GGUF file with tokenizer and chat template in its metadata.
//! - `base`: what is carried over from the base model's files.

mod base;
mod error;
mod gguf_vocab;
mod gguf_writer;
mod hf_config;
mod tokenizer_files;
mod weights;

use std::path::{Path, PathBuf};

use candle_core::DType;

pub use base::BaseMetadata;
pub use error::ExportError;
pub use gguf_writer::{gguf_name, GgufType};
pub use weights::{parse_size, DEFAULT_MAX_SHARD_SIZE};

use super::Model;
use crate::tokenizer::Tokenizer;

/// How to write an export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// dtype of the safetensors weights: f32, bf16 or f16.
    pub dtype: DType,
    /// Shard the safetensors above this many bytes (transformers' default: 5 GB).
    pub max_shard_size: u64,
    /// Also write `<name>-<type>.gguf`.
    pub gguf: Option<GgufType>,
    /// `general.name` of the GGUF and the stem of its file name.
    pub name: String,
}

/// One file an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// What an export wrote, and anything the user should know (e.g. q8_0 fallbacks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub files: Vec<ExportedFile>,
    pub notes: Vec<String>,
}

/// Writes the HF model files of `model` + `tokenizer` (and the GGUF file when asked) into the
/// existing directory `out`. `model` is what gets written, typically `base.merge(&adapter)`.
pub fn export_model(
    model: &Model,
    tokenizer: &Tokenizer,
    base: &BaseMetadata,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    if !matches!(opts.dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Err(ExportError::Option(format!("export dtype {:?} is not supported (f32, bf16 or f16)", opts.dtype)));
    }
    if opts.max_shard_size == 0 {
        return Err(ExportError::Option("max shard size must be at least one byte".into()));
    }
    let cfg = model.config();
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(ExportError::Tokenizer(format!(
            "the tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            cfg.vocab_size
        )));
    }
    let special = tokenizer_files::SpecialTokens::of(tokenizer, base);
    let mut paths = weights::write_weights(out, &model.named_tensors()?, opts.dtype, opts.max_shard_size)?;
    let config_path = out.join("config.json");
    tokenizer_files::write_json(&config_path, &hf_config::config_json(cfg, opts.dtype, &special), true)?;
    paths.push(config_path);
    paths.extend(tokenizer_files::write_tokenizer_files(out, tokenizer, &special, base, cfg.max_position_embeddings)?);
    let mut notes = Vec::new();
    if let Some(ty) = opts.gguf {
        let path = out.join(gguf_file_name(&opts.name, ty));
        notes.extend(gguf_writer::write_gguf(&path, model, tokenizer, &special, &opts.name, ty)?);
        paths.push(path);
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::metadata(&path).map_err(|e| ExportError::io(&path, e))?.len();
        files.push(ExportedFile { path, bytes });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ExportReport { files, notes })
}

/// `<name>-<type>.gguf`.
pub fn gguf_file_name(name: &str, ty: GgufType) -> String {
    format!("{name}-{}.gguf", ty.as_str())
}

#[cfg(test)]
mod tests;

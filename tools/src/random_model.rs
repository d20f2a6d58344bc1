//! `asrl-tools random-model`: an HF model directory with seeded random weights of a named shape
//! and the tokenizer files of another HF dir, which transformers and our loader both read. The
//! GPU check (`scripts/gpu-check.sh`) benchmarks and compares on it without any download.

use std::path::PathBuf;

use anyhow::{ensure, Context};
use asrl_common::config::WeightDtype;
use asrl_common::model::export::{export_model, BaseMetadata, ExportOptions, DEFAULT_MAX_SHARD_SIZE};
use asrl_common::model::{Model, ModelConfig};
use asrl_common::tokenizer::Tokenizer;
use candle_core::Device;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shape {
    /// Qwen3-0.6B: 28 layers, hidden 1024, 16/8 heads of 128, intermediate 3072, vocab 151,936, tied.
    #[value(name = "qwen3-0.6b")]
    Qwen3_0_6b,
    /// Qwen3-0.6B's vocabulary and head layout at toy size (2 layers, hidden 64, 4/2 heads of 16):
    /// rehearsals on CPU.
    #[value(name = "qwen3-mini")]
    Qwen3Mini,
}

impl Shape {
    pub fn config(self) -> ModelConfig {
        let full = ModelConfig::qwen3_0_6b();
        match self {
            Shape::Qwen3_0_6b => full,
            Shape::Qwen3Mini => ModelConfig {
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                head_dim: 16,
                ..full
            },
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RandomModelArgs {
    #[arg(long, value_enum)]
    pub shape: Shape,
    /// HF dir whose tokenizer files (and chat template, special tokens) are copied.
    #[arg(long)]
    pub tokenizer_from: PathBuf,
    /// dtype of the written weights.
    #[arg(long, value_enum, ignore_case = true, default_value = "f32")]
    pub dtype: WeightDtype,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created; existing files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &RandomModelArgs) -> anyhow::Result<()> {
    let src = &args.tokenizer_from;
    let tokenizer = Tokenizer::from_hf_dir(src).with_context(|| format!("tokenizer of {}", src.display()))?;
    let base = BaseMetadata::read(src, &tokenizer).with_context(|| format!("metadata of {}", src.display()))?;
    let cfg = args.shape.config();
    ensure!(
        tokenizer.vocab_size() <= cfg.vocab_size,
        "{}: the tokenizer has {} tokens, more than the shape's vocabulary of {}",
        src.display(),
        tokenizer.vocab_size(),
        cfg.vocab_size
    );
    let dtype = args.dtype.to_candle();
    let model = Model::random(cfg, &Device::Cpu, dtype, args.seed)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let opts = ExportOptions { dtype, max_shard_size: DEFAULT_MAX_SHARD_SIZE, gguf: None, name: "random".into() };
    let report = export_model(&model, &tokenizer, &base, &args.out, &opts)?;
    let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
    println!("random {:?} model ({dtype:?}) -> {} ({:.1} MB)", args.shape, args.out.display(), bytes as f64 / 1e6);
    Ok(())
}

//! The benchmarks, each printing the figures its `scripts/bench-*.sh` parses.

pub mod adapter_push;
pub mod decode;
pub mod generate;
pub mod memory;
pub mod sft;

use asrl_common::model::{Arch, ModelConfig};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LoRA training throughput and peak RSS, SFT or GRPO steps (scripts/bench-sft.sh).
    Sft(sft::SftArgs),
    /// KV-cached group sampling throughput (scripts/bench-generate.sh).
    Generate(generate::GenerateArgs),
    /// Batched decode steps alone, `--rows` sequences at a time (no sampling).
    Decode(decode::DecodeArgs),
    /// Adapter download over loopback gRPC, reassembled and verified (scripts/bench-adapter-push.sh).
    AdapterPush(adapter_push::AdapterPushArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Sft(args) => sft::run(args),
        BenchCommand::Generate(args) => generate::run(&args),
        BenchCommand::Decode(args) => decode::run(&args),
        BenchCommand::AdapterPush(args) => adapter_push::run(&args),
    }
}

/// SmolLM2-135M's shape, for runs without the asset.
pub fn smollm2_135m() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: 64,
        rope_theta: 100_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: true,
        max_position_embeddings: 8192,
    }
}

/// Qwen3-0.6B's shape (28 layers, hidden 1024, 16/8 heads of 128, vocab 151,936, tied).
pub fn qwen3_0_6b() -> ModelConfig {
    ModelConfig {
        arch: Arch::Qwen3,
        vocab_size: 151_936,
        hidden_size: 1024,
        intermediate_size: 3072,
        num_hidden_layers: 28,
        num_attention_heads: 16,
        num_key_value_heads: 8,
        head_dim: 128,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        max_position_embeddings: 40_960,
    }
}

/// A model shape a benchmark can build with random weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchShape {
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    #[value(name = "qwen3-0.6b")]
    Qwen3_0_6b,
}

impl BenchShape {
    pub fn config(self) -> ModelConfig {
        match self {
            BenchShape::Smollm2_135m => smollm2_135m(),
            BenchShape::Qwen3_0_6b => qwen3_0_6b(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchShape::Smollm2_135m => "smollm2-135m",
            BenchShape::Qwen3_0_6b => "qwen3-0.6b",
        }
    }
}

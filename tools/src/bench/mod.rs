//! The benchmarks, each printing the figures its `scripts/bench-*.sh` parses.

pub mod adapter_push;
pub mod decode;
pub mod generate;
pub mod sft;

use asrl_common::model::{Arch, ModelConfig};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LoRA SFT throughput: forward, backward and AdamW (scripts/bench-sft.sh).
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

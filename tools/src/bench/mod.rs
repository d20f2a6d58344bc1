//! The benchmarks, each printing the figures its `scripts/bench-*.sh` parses.

pub mod adapter_push;
pub mod decode;
pub mod floor;
pub mod generate;
pub mod memory;
pub mod sft;

use asrl_common::model::ModelConfig;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LoRA training throughput and peak RSS, SFT or GRPO steps (scripts/bench-sft.sh).
    Sft(sft::SftArgs),
    /// The dense products of one LoRA SFT step alone: the floor under its time on this machine.
    Floor(floor::FloorArgs),
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
        BenchCommand::Floor(args) => floor::run(&args),
        BenchCommand::Generate(args) => generate::run(&args),
        BenchCommand::Decode(args) => decode::run(&args),
        BenchCommand::AdapterPush(args) => adapter_push::run(&args),
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
            BenchShape::Smollm2_135m => ModelConfig::smollm2_135m(),
            BenchShape::Qwen3_0_6b => ModelConfig::qwen3_0_6b(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchShape::Smollm2_135m => "smollm2-135m",
            BenchShape::Qwen3_0_6b => "qwen3-0.6b",
        }
    }
}

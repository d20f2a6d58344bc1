//! The benchmarks, each printing the figures its `scripts/bench-*.sh` parses.

pub mod adapter_push;
pub mod generate;
pub mod sft;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// LoRA SFT throughput: forward, backward and AdamW (scripts/bench-sft.sh).
    Sft(sft::SftArgs),
    /// KV-cached group sampling throughput (scripts/bench-generate.sh).
    Generate(generate::GenerateArgs),
    /// Adapter download over loopback gRPC, reassembled and verified (scripts/bench-adapter-push.sh).
    AdapterPush(adapter_push::AdapterPushArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Sft(args) => sft::run(args),
        BenchCommand::Generate(args) => generate::run(&args),
        BenchCommand::AdapterPush(args) => adapter_push::run(&args),
    }
}

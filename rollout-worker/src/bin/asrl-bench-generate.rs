//! Generation throughput: one prompt, `-n` samples of exactly `--max-new-tokens` tokens each
//! (eos ignored, like transformers' `min_new_tokens`), KV-cached group sampling as the rollout
//! worker runs it. Prints tokens/s; `scripts/bench-generate.sh` compares it with transformers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use asrl_common::config::SamplingParams;
use asrl_common::device::parse_device;
use asrl_common::sample::sample_group_until;
use asrl_common::model::load;
use asrl_common::tokenizer::ChatMessage;
use candle_core::DType;
use clap::Parser;

#[derive(Parser)]
#[command(name = "asrl-bench-generate", about = "Measure KV-cached group sampling throughput")]
struct Args {
    /// HF model dir or .gguf file (dequantised).
    #[arg(long)]
    model: PathBuf,
    /// Samples per group.
    #[arg(short, long, default_value_t = 6)]
    n: usize,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Timed groups (after one untimed warm-up group).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// User message, rendered with the model's chat template.
    #[arg(long, default_value = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?")]
    prompt: String,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => anyhow::bail!("--dtype {other:?}: expected f32, bf16 or f16"),
    };
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");
    let t0 = Instant::now();
    let loaded = load(&args.model, &device, dtype).with_context(|| format!("loading {}", args.model.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let tokenizer = &loaded.tokenizer;
    let prompt = tokenizer.apply_chat_template(&[ChatMessage::new("user", args.prompt.clone())], true)?;
    let prompt_ids = tokenizer.encode(&prompt, false)?;
    let params = |seed, max_new_tokens| SamplingParams {
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens,
        seed,
    };
    // No stop ids: every sample runs to the length limit.
    sample_group_until(&loaded.model, None, tokenizer, &prompt_ids, &params(args.seed, 8.min(args.max_new_tokens)), &[])?;

    let mut total_tokens = 0usize;
    let t = Instant::now();
    for r in 0..args.repeats {
        let out = sample_group_until(&loaded.model, None, tokenizer, &prompt_ids, &params(args.seed + 1 + r as u64, args.max_new_tokens), &[])?;
        total_tokens += out.iter().map(|c| c.tokens.len()).sum::<usize>();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "model {} | device {} {:?} | load {load_s:.2}s | prompt {} tokens | {} groups x {} samples x {} new tokens",
        loaded.name, args.device, dtype, prompt_ids.len(), args.repeats, args.n, args.max_new_tokens
    );
    println!("generated {total_tokens} tokens in {secs:.3}s");
    println!("tokens_per_s={:.2}", total_tokens as f64 / secs);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

//! `asrl-rollout-worker generate`: one sampled group for one prompt, outside the training loop.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use asrl_common::config::SamplingParams;
use asrl_common::device::parse_device;
use asrl_common::sample::{sample_group_until, FinishReason};
use asrl_common::model::{load, parse_dtype, LoraAdapter};
use asrl_common::tokenizer::ChatMessage;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// HF model directory or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT LoRA adapter directory; merged into the weights before sampling.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The user message (or, with --raw, the exact model input).
    #[arg(long)]
    pub prompt: String,
    /// Use the prompt as-is instead of wrapping it in the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Completions to sample.
    #[arg(short = 'n', long = "n", default_value_t = 6)]
    pub n: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 300)]
    pub max_new_tokens: usize,
    /// Sampler seed (the same seed gives the same completions).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not stop at eos tokens: always sample --max-new-tokens (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print `{"completions":[{"tokens":[...],"text":"...","logprobs":[...],"finish":"eos"|"length"}]}`.
    #[arg(long)]
    pub json: bool,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let params = SamplingParams {
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
    };
    params.validate()?;
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let loaded = load(&args.model, &device, dtype)?;
    let model = match &args.adapter {
        Some(dir) => {
            let adapter = LoraAdapter::load_peft(dir, loaded.model.config(), &device)?;
            loaded.model.merge(&adapter)?
        }
        None => loaded.model,
    };
    let text = if args.raw {
        args.prompt.clone()
    } else {
        let msg = ChatMessage { role: "user".into(), content: args.prompt.clone() };
        loaded.tokenizer.apply_chat_template(&[msg], true)?
    };
    let prompt_ids = loaded.tokenizer.encode(&text, false)?;
    if prompt_ids.is_empty() {
        bail!("--prompt has no tokens");
    }
    let start = Instant::now();
    let stop: &[u32] = if args.ignore_eos { &[] } else { loaded.tokenizer.eos_token_ids() };
    let group = sample_group_until(&model, None, &loaded.tokenizer, &prompt_ids, &params, stop)?;
    let secs = start.elapsed().as_secs_f64();
    let produced: usize = group.iter().map(|c| c.tokens.len()).sum();
    eprintln!(
        "generated {produced} tokens ({} x up to {}) after a {}-token prompt in {secs:.2}s: {:.1} tok/s",
        params.n,
        params.max_new_tokens,
        prompt_ids.len(),
        produced as f64 / secs
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        let completions: Vec<_> = group
            .iter()
            .map(|c| {
                serde_json::json!({
                    "tokens": c.tokens, "text": c.text, "logprobs": c.logprobs,
                    "finish": match c.finish { FinishReason::Eos => "eos", FinishReason::Length => "length" },
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::json!({ "completions": completions })).context("writing to stdout")?;
    } else {
        for (i, c) in group.iter().enumerate() {
            writeln!(out, "--- completion {} ({:?}, {} tokens)\n{}", i + 1, c.finish, c.tokens.len(), c.text)
                .context("writing to stdout")?;
        }
    }
    Ok(())
}

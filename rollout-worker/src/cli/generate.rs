//! `asrl-rollout-worker generate`: one sampled group for one prompt, outside the training loop.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use asrl_common::cli::{ModelArgs, SamplingArgs};
use asrl_common::sample::{sample_group_until, FinishReason};
use asrl_common::tokenizer::ChatMessage;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a.required(true)))]
#[command(mut_arg("adapter", |a| a.help("PEFT LoRA adapter directory; merged into the weights before sampling")))]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user message (or, with --raw, the exact model input).
    #[arg(long)]
    pub prompt: String,
    /// Use the prompt as-is instead of wrapping it in the chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Do not stop at eos tokens: always sample --max-new-tokens (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print `{"completions":[{"tokens":[...],"text":"...","logprobs":[...],"finish":"eos"|"length"}]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let params = args.sampling.params();
    params.validate()?;
    let loaded = args.model.load_merged()?;
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
    let group = sample_group_until(&loaded.model, None, &loaded.tokenizer, &prompt_ids, &params, stop)?;
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

//! `asrl-learner score`: per-token log-probs of a text under a model (+ optional PEFT adapter).
//! A quick way to check a model/adapter against transformers by hand.

use std::path::PathBuf;

use anyhow::Context;
use asrl_common::device::parse_device;
use asrl_common::model::{load, token_logprobs, LoraAdapter};
use asrl_common::tokenizer::context_to_messages;
use candle_core::{DType, Tensor};

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// HF model dir or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// PEFT adapter dir (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Text to score, tokenized as is (no special tokens added).
    #[arg(long, conflicts_with = "context")]
    pub text: Option<String>,
    /// A `User: ...\nAssistant: ...` context, rendered with the model's chat template.
    #[arg(long)]
    pub context: Option<String>,
    /// Softmax temperature of the log-probs.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object `{"ids", "tokens", "logprobs", "sum"}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ScoreArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let loaded = load(&args.model, &device, DType::F32).with_context(|| format!("loading {}", args.model.display()))?;
    let adapter = args
        .adapter
        .as_ref()
        .map(|dir| LoraAdapter::load_peft(dir, loaded.model.config(), &device))
        .transpose()?;
    let text = match (&args.text, &args.context) {
        (Some(t), None) => t.clone(),
        (None, Some(c)) => loaded.tokenizer.apply_chat_template(&context_to_messages(c), false)?,
        _ => anyhow::bail!("give exactly one of --text or --context"),
    };
    let ids = loaded.tokenizer.encode(&text, false)?;
    anyhow::ensure!(ids.len() >= 2, "the text has {} token(s); scoring needs at least 2", ids.len());
    let input = Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?;
    let logits = loaded.model.forward(&input, adapter.as_ref())?;
    let n = ids.len();
    let lp: Vec<f32> =
        token_logprobs(&logits.narrow(1, 0, n - 1)?, &input.narrow(1, 1, n - 1)?, args.temperature)?.squeeze(0)?.to_vec1()?;
    let tokens: Vec<String> =
        ids.iter().map(|&id| loaded.tokenizer.decode(&[id], false)).collect::<Result<_, _>>()?;
    let sum: f64 = lp.iter().map(|&x| x as f64).sum();
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids, "tokens": tokens, "logprobs": lp, "sum": sum }));
    } else {
        println!("{:>8}  {:>10}  token", "id", "logprob");
        println!("{:>8}  {:>10}  {:?}", ids[0], "", tokens[0]);
        for i in 1..n {
            println!("{:>8}  {:>10.5}  {:?}", ids[i], lp[i - 1], tokens[i]);
        }
        println!("sum {sum:.5} over {} tokens", n - 1);
    }
    Ok(())
}

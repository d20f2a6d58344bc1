//! `asrl-learner score`: log p(tokens[i] | tokens[<i]) of a text, through the training path.

use std::io::Write;

use anyhow::{bail, Context};
use asrl_common::cli::ModelArgs;
use asrl_common::model::token_logprobs;
use candle_core::Tensor;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a.required(true)))]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to score, tokenised without special tokens.
    #[arg(long)]
    pub text: String,
    /// Print `{"tokens":[...],"logprobs":[null, ...]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let (loaded, adapter) = args.model.load()?;
    let device = loaded.model.device().clone();
    let tokens = loaded.tokenizer.encode(&args.text, false)?;
    if tokens.is_empty() {
        bail!("--text has no tokens");
    }
    let mut logprobs: Vec<Option<f32>> = vec![None];
    if tokens.len() > 1 {
        let n = tokens.len();
        let input = Tensor::new(&tokens[..n - 1], &device)?.unsqueeze(0)?;
        let target = Tensor::new(&tokens[1..], &device)?.unsqueeze(0)?;
        let logits = loaded.model.forward(&input, adapter.as_ref())?;
        let lp = token_logprobs(&logits, &target, 1.0)?.squeeze(0)?.to_vec1::<f32>()?;
        logprobs.extend(lp.into_iter().map(Some));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({ "tokens": tokens, "logprobs": logprobs });
        writeln!(out, "{v}").context("writing to stdout")?;
    } else {
        for (i, (t, lp)) in tokens.iter().zip(&logprobs).enumerate() {
            let piece = loaded.tokenizer.decode(&[*t], false)?;
            let lp = lp.map(|x| format!("{x:.6}")).unwrap_or_else(|| "-".into());
            writeln!(out, "{i}\t{t}\t{lp}\t{piece:?}").context("writing to stdout")?;
        }
    }
    Ok(())
}

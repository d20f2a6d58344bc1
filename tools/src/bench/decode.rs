//! `asrl-tools bench decode`: the decode step alone — a 43-token prefill, its cache copied into
//! 6 rows, then one token per row per step — on SmolLM2-135M's shape (random weights) or
//! `--model`. What `bench generate` measures end to end, without sampling.

use std::time::Instant;

use anyhow::Context;
use asrl_common::cli::ModelArgs;
use asrl_common::model::{load, Model};
use candle_core::Tensor;

use super::smollm2_135m;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a.help("HF model dir or .gguf file [default: random weights of SmolLM2-135M's shape]")))]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed decode steps.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
}

pub fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    args.model.no_adapter("the benchmark times the base model")?;
    let dev = args.model.device.open()?;
    let dtype = args.model.dtype().to_candle();
    let model = match &args.model.model {
        Some(p) => load(p, &dev, dtype).with_context(|| format!("loading {}", p.display()))?.model,
        None => Model::random(smollm2_135m(), &dev, dtype, 0)?,
    };
    let prompt: Vec<u32> = (0..43).map(|i| 100 + i).collect();
    let mut cache = model.new_cache_with_capacity(43 + 512);
    let s = Instant::now();
    model.forward_cached_last(&Tensor::new(prompt.as_slice(), &dev)?.unsqueeze(0)?, &mut cache, None)?;
    println!("prefill 43: {:.1} ms", s.elapsed().as_secs_f64() * 1e3);
    cache.repeat_batch(6)?;
    let s = Instant::now();
    for i in 0..args.steps {
        let ids = Tensor::from_vec(vec![200u32 + i; 6], (6, 1), &dev)?;
        model.forward_cached_last(&ids, &mut cache, None)?;
    }
    let ms = s.elapsed().as_secs_f64() * 1e3 / args.steps as f64;
    println!("decode step (6 rows): {ms:.1} ms -> {:.1} tok/s", 6000.0 / ms);
    Ok(())
}

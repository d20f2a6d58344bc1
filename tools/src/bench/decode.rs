//! `asrl-tools bench decode`: the batched decode step alone — a 43-token prefill read by
//! `--rows` sequences, then one token per row per step — on SmolLM2-135M's shape (random
//! weights) or `--model`. What `bench generate` measures end to end, without sampling.

use std::time::Instant;

use anyhow::Context;
use asrl_common::cli::ModelArgs;
use asrl_common::model::{load, Model, ModelConfig};
use candle_core::Tensor;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a.help("HF model dir or .gguf file [default: random weights of SmolLM2-135M's shape]")))]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed decode steps.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Sequences per step.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub rows: u32,
}

pub fn run(args: &DecodeArgs) -> anyhow::Result<()> {
    args.model.no_adapter("the benchmark times the base model")?;
    let dev = args.model.device.open()?;
    let dtype = args.model.dtype().to_candle();
    let model = match &args.model.model {
        Some(p) => load(p, &dev, dtype).with_context(|| format!("loading {}", p.display()))?.model,
        None => Model::random(ModelConfig::smollm2_135m(), &dev, dtype, 0)?,
    };
    let prompt: Vec<u32> = (0..43).map(|i| 100 + i).collect();
    let rows = args.rows as usize;
    let mut prefill = model.new_cache_with_capacity(43);
    let s = Instant::now();
    model.forward_cached_last(&Tensor::new(prompt.as_slice(), &dev)?.unsqueeze(0)?, &mut prefill, None)?;
    println!("prefill 43: {:.1} ms", s.elapsed().as_secs_f64() * 1e3);
    let mut cache = model.new_batch_cache(1, 43, rows, args.steps as usize)?;
    cache.set_prompt(0, &prefill)?;
    for slot in 0..rows {
        cache.start_sequence(slot, 0)?;
    }
    let slots: Vec<usize> = (0..rows).collect();
    let s = Instant::now();
    for i in 0..args.steps {
        model.decode_step(&vec![200 + i; rows], &slots, &mut cache, None)?;
    }
    let ms = s.elapsed().as_secs_f64() * 1e3 / args.steps as f64;
    println!("decode step ({rows} rows): {ms:.1} ms -> {:.1} tok/s", rows as f64 * 1000.0 / ms);
    Ok(())
}

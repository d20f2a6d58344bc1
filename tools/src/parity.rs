//! `asrl-tools parity`: what `scripts/gpu_check/torch_side.py` compares with transformers/PEFT
//! on the same device. For one model, dtype and device it writes into `--out`:
//!
//! - `parity.json`: the seeded token ids, their log-probs under the base model and under a
//!   seeded LoRA adapter (B ≠ 0; both the scoring path and the training path), and greedy tokens;
//! - `adapter/`: that adapter in PEFT format (PEFT loads it for the reference);
//! - `grads.safetensors`: d sum(log-probs) / d every LoRA matrix (f32), from the training engine
//!   (`Model::train_forward` + `Tape::backward`), keyed by PEFT names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use asrl_common::cli::ModelArgs;
use asrl_common::config::{LoraConfig, SamplingParams};
use asrl_common::model::{LoraAdapter, Model, ScoringBatch, TrainOptions};
use asrl_common::sample::{sample_groups_until, GroupRequest};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a.required(true)))]
pub struct ParityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Scored sequence: this many seeded random token ids.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..))]
    pub len: u32,
    /// Seed of the token ids and of the adapter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rank of the seeded adapter (alpha = 2·rank, all 7 projections).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub rank: u32,
    /// Greedy tokens generated after the first `--greedy-prompt` ids (0: no greedy check).
    #[arg(long, default_value_t = 16)]
    pub greedy_tokens: usize,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub greedy_prompt: u32,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
}

/// A seeded adapter whose B matrices are non-zero, so that it changes the log-probs and every
/// gradient (PEFT's init has B = 0, which would hide errors in A's gradient).
fn seeded_adapter(rank: usize, model: &Model, seed: u64) -> anyhow::Result<LoraAdapter> {
    let cfg = LoraConfig { r: rank, alpha: 2.0 * rank as f64, ..Default::default() };
    let adapter = LoraAdapter::new(&cfg, model.config(), model.device(), seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for (name, var) in adapter.vars() {
        if name.contains("lora_B") {
            let v: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-0.05f32..0.05)).collect();
            var.set(&Tensor::from_vec(v, var.shape(), model.device())?)?;
        }
    }
    Ok(adapter)
}

/// Row 0 of a dense (1, t) log-prob tensor, without its unscored last column.
fn scored_row(dense: &Tensor) -> anyhow::Result<Vec<f32>> {
    let mut row: Vec<f32> = dense.get(0)?.to_dtype(DType::F32)?.to_vec1()?;
    row.pop();
    Ok(row)
}

pub fn run(args: &ParityArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let (loaded, adapter) = args.model.load()?;
    ensure!(adapter.is_none(), "--adapter is not used here: the check makes its own seeded adapter");
    let load_s = t0.elapsed().as_secs_f64();
    let model = &loaded.model;
    let device = model.device().clone();
    let vocab = model.config().vocab_size.min(loaded.tokenizer.vocab_size()) as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let ids: Vec<u32> = (0..args.len).map(|_| rng.random_range(0..vocab)).collect();
    let labels: Vec<bool> = (0..ids.len()).map(|j| j > 0).collect();
    let batch = ScoringBatch::new(&[(&ids, &labels)], &device)?;
    let adapter = seeded_adapter(args.rank as usize, model, args.seed)?;

    let t = Instant::now();
    let base = scored_row(&model.score_logprobs(&batch, None, 1.0)?)?;
    let lora = scored_row(&model.score_logprobs(&batch, Some(&adapter), 1.0)?)?;
    let score_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (dense, tape) = model.train_forward(&batch, &adapter, &TrainOptions::default())?;
    let train = scored_row(&dense)?;
    // d sum(log-probs): ones at the scored positions.
    let grads = tape.backward(batch.mask())?;
    let mut named = HashMap::new();
    for (name, g) in grads.iter() {
        named.insert(name.to_string(), g.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
    }
    let grad_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let prompt = &ids[..(args.greedy_prompt as usize).min(ids.len())];
    let greedy = if args.greedy_tokens == 0 {
        Vec::new()
    } else {
        let params = SamplingParams { n: 1, temperature: 0.0, max_new_tokens: args.greedy_tokens, ..Default::default() };
        let request = GroupRequest { prompt_ids: prompt, params };
        // No stop ids: exactly `greedy_tokens` arg-max tokens, eos included if it wins.
        let mut groups = sample_groups_until(model, None, &loaded.tokenizer, &[request], 1, &[])?;
        groups.pop().and_then(|mut g| g.pop()).context("no greedy completion")?.tokens
    };
    let greedy_s = t.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    adapter.save_peft(&args.out.join("adapter"), &loaded.name)?;
    let grads_path = args.out.join("grads.safetensors");
    candle_core::safetensors::save(&named, &grads_path).with_context(|| format!("writing {}", grads_path.display()))?;
    let report = json!({
        "model": loaded.name,
        "device": args.model.device.to_string(),
        "dtype": format!("{:?}", model.dtype()).to_lowercase(),
        "rank": args.rank,
        "alpha": 2 * args.rank,
        "tokens": ids,
        "base_logprobs": base,
        "lora_logprobs": lora,
        "train_logprobs": train,
        "greedy_prompt": prompt,
        "greedy_tokens": greedy,
        "seconds": { "load": load_s, "score": score_s, "train_forward_backward": grad_s, "greedy": greedy_s },
    });
    let path = args.out.join("parity.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    println!("parity: {} tokens, {} LoRA gradients, {} greedy tokens -> {}", ids.len(), grads.len(), greedy.len(), args.out.display());
    Ok(())
}

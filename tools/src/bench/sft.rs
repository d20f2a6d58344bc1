//! `asrl-tools bench sft`: LoRA SFT throughput of the training core — forward, backward and
//! AdamW on one sequence per step — on SmolLM2-135M (or a random model of its shape).
//! `scripts/bench-sft.sh` compares it with PEFT.

use std::time::Instant;

use anyhow::{bail, Context};
use asrl_common::cli::ModelArgs;
use asrl_common::config::{LoraConfig, TrainConfig};
use asrl_common::model::{load, LoraAdapter, Model};
use asrl_common::phase::Phase;
use asrl_learner::training::{LoraPolicy, Policy, SftExample, Trainer, TrainerLog};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::smollm2_135m;

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a
    .default_value("assets/SmolLM2-135M-Instruct.Q4_1.gguf")
    .help(".gguf file or HF dir; when it does not exist a random model of SmolLM2-135M's shape is used")))]
pub struct SftArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// LoRA rank (alpha = 2·rank, all 7 projections).
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// Timed optimiser steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
}

pub fn run(args: SftArgs) -> anyhow::Result<()> {
    if args.seq < 2 || args.rank == 0 || args.steps == 0 {
        bail!("--seq must be >= 2, --rank and --steps >= 1");
    }
    args.model.no_adapter("the benchmark trains a fresh adapter")?;
    let device = args.model.device.open()?;
    let (path, dtype) = (args.model.model_path()?, args.model.dtype().to_candle());
    let (model, source) = if path.exists() {
        let loaded = load(path, &device, dtype).with_context(|| format!("loading {}", path.display()))?;
        (loaded.model, path.display().to_string())
    } else {
        (Model::random(smollm2_135m(), &device, dtype, 0)?, "random init, SmolLM2-135M shape".into())
    };
    let cfg = model.config().clone();
    let lora = LoraConfig { r: args.rank, alpha: 2.0 * args.rank as f64, ..Default::default() };
    let adapter = LoraAdapter::new(&lora, &cfg, &device, 0)?;
    let policy = LoraPolicy::new(model, adapter, source.clone());

    let mut tc = TrainConfig::default();
    tc.sft.grad_accum_steps = 1;
    tc.sft.max_seq_len = args.seq;
    let mut trainer = Trainer::new(policy, tc, 1.0, 1, 0, TrainerLog::disabled())?;
    trainer.begin_phase(0, Phase::Sft, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokens: Vec<u32> = (0..args.seq).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    // Every token after the first is a label, like `labels = input_ids` in the PEFT reference.
    let example = SftExample { tokens: tokens.clone(), label_mask: vec![true; args.seq] };

    trainer.sft_micro_step(std::slice::from_ref(&example))?;
    let start = Instant::now();
    for _ in 0..args.steps {
        let m = trainer
            .sft_micro_step(std::slice::from_ref(&example))?
            .context("grad_accum_steps = 1 steps on every micro-batch")?;
        if !m.core.applied {
            bail!("a benchmark step was skipped (non-finite loss)");
        }
    }
    let step_s = start.elapsed().as_secs_f64() / args.steps as f64;

    // Forward alone, for the backward/forward ratio.
    let ids = Tensor::new(tokens.as_slice(), &device)?.unsqueeze(0)?;
    let start = Instant::now();
    for _ in 0..args.steps {
        trainer.policy().logits(&ids, true)?.sum_all()?.to_scalar::<f32>()?;
    }
    let fwd_s = start.elapsed().as_secs_f64() / args.steps as f64;

    // candle's matmul backward also forms x^T·grad for the frozen base weights (and the tied
    // vocab projection): time exactly those products at this sequence length.
    let mut shapes: Vec<(usize, usize)> = Vec::new();
    for t in asrl_common::config::LoraTarget::ALL {
        shapes.push(cfg.projection_shape(t));
    }
    let seq = args.seq;
    let mk = |r: usize, c: usize| Tensor::ones((r, c), DType::F32, &device);
    let start = Instant::now();
    for &(out, inp) in &shapes {
        let (xt, g) = (mk(inp, seq)?, mk(seq, out)?);
        for _ in 0..cfg.num_hidden_layers {
            xt.matmul(&g)?.sum_all()?.to_scalar::<f32>()?;
        }
    }
    let (xt, g) = (mk(cfg.hidden_size, seq)?, mk(seq, cfg.vocab_size)?);
    xt.matmul(&g)?.sum_all()?.to_scalar::<f32>()?;
    let frozen_s = start.elapsed().as_secs_f64();

    let tps = args.seq as f64 / step_s;
    println!("model: {source}");
    println!(
        "lora: r={} alpha={} modules=7 trainable_params={}",
        args.rank,
        2 * args.rank,
        trainer.policy().adapter().num_parameters()
    );
    println!("seq={} steps={} threads={}", args.seq, args.steps, candle_core::utils::get_num_threads());
    println!("step_seconds={step_s:.3} forward_seconds={fwd_s:.3}");
    println!(
        "frozen_weight_grad_seconds={frozen_s:.3} ({:.0}% of a step, computed and discarded)",
        100.0 * frozen_s / step_s
    );
    println!("candle_tokens_per_second={tps:.1}");
    Ok(())
}

//! `asrl-tools bench sft`: LoRA training throughput and peak resident memory of the learner's
//! trainer — forward, backward and AdamW through `Trainer` — on a random model of SmolLM2-135M's
//! or Qwen3-0.6B's shape (or a real model with `--model`). `--mode sft` trains on one sequence
//! with every token a label; `--mode grpo` runs one GRPO micro-batch of G completions after a
//! shared prompt, so only completion tokens are scored. `scripts/bench-sft.sh` compares it
//! with PEFT, each side in its own process.

mod workload;

use std::time::Instant;

use anyhow::{bail, Context};
use asrl_common::cli::ModelArgs;
use asrl_common::config::{ActivationCheckpointing, EngineConfig, LoraConfig, TrainConfig};
use asrl_common::model::{load, LayerBytes, LoraAdapter, Model, WeightPacking};
use asrl_learner::training::{LoraPolicy, Policy, Trainer, TrainerLog};

use super::{memory, BenchShape};
use workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// One sequence of `--seq` tokens, all labels.
    Sft,
    /// One micro-batch of `--group-size` completions of `--completion-tokens` after a
    /// `--prompt-tokens` prompt, through the GRPO loss (completion tokens scored).
    Grpo,
}

/// `[engine] activation_checkpointing`, as a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointingArg {
    Off,
    On,
    Auto,
}

impl CheckpointingArg {
    fn to_config(self) -> ActivationCheckpointing {
        match self {
            CheckpointingArg::Off => ActivationCheckpointing::Off,
            CheckpointingArg::On => ActivationCheckpointing::On,
            CheckpointingArg::Auto => ActivationCheckpointing::Auto,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CheckpointingArg::Off => "off",
            CheckpointingArg::On => "on",
            CheckpointingArg::Auto => "auto",
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(mut_arg("model", |a| a
    .help(".gguf file or HF dir to train on instead of a random model of --shape")))]
pub struct SftArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Shape of the random model (throughput does not depend on the weights).
    #[arg(long, value_enum, default_value = "smollm2-135m", conflicts_with = "model")]
    pub shape: BenchShape,
    #[arg(long, value_enum, default_value = "sft")]
    pub mode: BenchMode,
    /// SFT: tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// GRPO: completions in the micro-batch.
    #[arg(long, default_value_t = 6)]
    pub group_size: usize,
    /// GRPO: prompt tokens before each completion.
    #[arg(long, default_value_t = 1700)]
    pub prompt_tokens: usize,
    /// GRPO: tokens per completion.
    #[arg(long, default_value_t = 300)]
    pub completion_tokens: usize,
    /// LoRA rank (alpha = 2·rank, all 7 projections).
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// Timed optimiser steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Activation checkpointing of the training engine (`[engine]` in the config).
    #[arg(long, value_enum, default_value = "auto")]
    pub checkpointing: CheckpointingArg,
    /// Activation budget of `--checkpointing auto`, MiB per micro-batch.
    #[arg(long, default_value_t = EngineConfig::default().activation_budget_mib)]
    pub budget_mib: usize,
    /// GRPO: run the group's prompt once for all completions (`[engine] share_prompts`).
    /// tok/s still counts every row's prompt, as a trainer without sharing runs them.
    #[arg(long, value_enum, default_value = "on")]
    pub share_prompts: OnOff,
    /// Frozen projections packed once for the CPU product kernel (`[engine] weight_packing`).
    #[arg(long, value_enum, default_value = "auto")]
    pub weight_packing: WeightPacking,
}

/// A boolean flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// What one run measured (`run` prints it in the lines bench-sft.sh parses).
#[derive(Debug, Clone)]
pub struct SftReport {
    pub source: String,
    pub trainable_params: usize,
    pub mode: &'static str,
    pub rows: usize,
    pub tokens_per_row: usize,
    pub scored_tokens: usize,
    /// Tokens the training forward runs on (fewer than rows × tokens_per_row with shared prompts).
    pub forward_tokens: usize,
    pub num_layers: usize,
    /// Layers whose activations the engine keeps under `--checkpointing` (the rest replay).
    pub saved_layers: usize,
    pub layer_bytes: LayerBytes,
    /// Packed copies of the frozen projections held after the steps (`--weight-packing`), MiB.
    pub packed_weight_mib: f64,
    pub step_seconds: f64,
    /// One scoring forward (no gradients) of the same batch.
    pub forward_seconds: f64,
    /// rows × tokens_per_row / step_seconds.
    pub tokens_per_second: f64,
    /// GRPO: the first step's mean behaviour KL, ~0 since the behaviour log-probs are the
    /// adapter's own (a check that they line up with the completion tokens).
    pub first_behaviour_kl: Option<f64>,
    pub model_rss_mib: Option<f64>,
    /// High-water mark since the model was built (Linux).
    pub train_peak_rss_mib: Option<f64>,
    /// The whole process's peak.
    pub peak_rss_mib: f64,
}

pub fn run(args: SftArgs) -> anyhow::Result<()> {
    let r = measure(&args)?;
    println!("model: {}", r.source);
    println!("lora: r={} alpha={} modules=7 trainable_params={}", args.rank, 2 * args.rank, r.trainable_params);
    println!(
        "mode={} rows={} tokens_per_row={} scored_tokens={} forward_tokens={} share_prompts={} steps={} warmup={} threads={}",
        r.mode,
        r.rows,
        r.tokens_per_row,
        r.scored_tokens,
        r.forward_tokens,
        args.share_prompts == OnOff::On,
        args.steps,
        args.warmup,
        candle_core::utils::get_num_threads()
    );
    println!(
        "checkpointing={} budget_mib={} saved_layers={}/{} (estimate per layer: saved {:.0} MiB, checkpointed {:.1} MiB)",
        args.checkpointing.name(),
        args.budget_mib,
        r.saved_layers,
        r.num_layers,
        r.layer_bytes.saved as f64 / (1 << 20) as f64,
        r.layer_bytes.checkpointed as f64 / (1 << 20) as f64
    );
    println!("weight_packing={} packed_weight_mib={:.0}", format!("{:?}", args.weight_packing).to_lowercase(), r.packed_weight_mib);
    if let Some(kl) = r.first_behaviour_kl {
        println!("first_step_behaviour_kl={kl:.2e}");
    }
    println!("step_seconds={:.3} forward_seconds={:.3} (one scoring forward, no gradients)", r.step_seconds, r.forward_seconds);
    println!("candle_tokens_per_second={:.1}", r.tokens_per_second);
    let mib = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    println!(
        "model_rss_mib={} train_peak_rss_mib={} (since the model was built)",
        mib(r.model_rss_mib),
        mib(r.train_peak_rss_mib)
    );
    println!("peak_rss_mib={:.0}", r.peak_rss_mib);
    Ok(())
}

/// Builds the model and the trainer, then times `--warmup` + `--steps` optimiser steps.
pub fn measure(args: &SftArgs) -> anyhow::Result<SftReport> {
    if args.rank == 0 || args.steps == 0 {
        bail!("--rank and --steps must be >= 1");
    }
    args.model.no_adapter("the benchmark trains a fresh adapter")?;
    let device = args.model.device.open()?;
    let dtype = args.model.dtype().to_candle();
    let (model, source) = match &args.model.model {
        Some(path) => {
            let loaded = load(path, &device, dtype).with_context(|| format!("loading {}", path.display()))?;
            (loaded.model, path.display().to_string())
        }
        None => (Model::random(args.shape.config(), &device, dtype, 0)?, format!("random init, {} shape", args.shape.name())),
    };
    // The weights are in memory: what follows is training.
    let model_rss = memory::rss_mib();
    let load_peak = memory::peak_rss_mib();
    let reset = memory::reset_peak();

    let cfg = model.config().clone();
    let lora = LoraConfig { r: args.rank, alpha: 2.0 * args.rank as f64, ..Default::default() };
    let adapter = LoraAdapter::new(&lora, &cfg, &device, 0)?;
    let engine = EngineConfig {
        activation_checkpointing: args.checkpointing.to_config(),
        activation_budget_mib: args.budget_mib,
        share_prompts: args.share_prompts == OnOff::On,
        weight_packing: args.weight_packing,
    };
    let checkpointing = engine.checkpointing();
    let policy = LoraPolicy::new(model, adapter, source.clone())
        .with_checkpointing(checkpointing)
        .with_prompt_sharing(engine.share_prompts)
        .with_weight_packing(engine.weight_packing);
    let workload = Workload::new(args, cfg.vocab_size)?;

    let mut tc = TrainConfig::default();
    tc.sft.grad_accum_steps = 1;
    tc.sft.max_seq_len = workload.tokens_per_row();
    tc.grpo.micro_batch_size = workload.rows();
    tc.grpo.mu = 1;
    let mut trainer = Trainer::new(policy, tc, 1.0, args.completion_tokens, 0, TrainerLog::disabled())?;

    let batch = workload.scoring_batch(&device)?;
    let batch = if engine.share_prompts { batch } else { batch.unshared() };
    let layer_bytes = trainer.policy().model().train_layer_bytes(&batch, Some(trainer.policy().adapter()));
    // One scoring forward (no gradients): the forward's cost, and GRPO's behaviour log-probs.
    let start = Instant::now();
    let logprobs = trainer.policy().score(&batch, 1.0, true)?;
    let forward_seconds = start.elapsed().as_secs_f64();
    let mut workload = workload.with_behaviour(&logprobs)?;

    workload.begin(&mut trainer, args.warmup + args.steps)?;
    let mut first_behaviour_kl = None;
    for _ in 0..args.warmup {
        let kl = workload.step(&mut trainer)?;
        first_behaviour_kl = first_behaviour_kl.or(kl);
    }
    let start = Instant::now();
    for _ in 0..args.steps {
        let kl = workload.step(&mut trainer)?;
        first_behaviour_kl = first_behaviour_kl.or(kl);
    }
    let step_seconds = start.elapsed().as_secs_f64() / args.steps as f64;
    let train_peak_rss_mib = memory::peak_since_reset_mib().filter(|_| reset);
    // ru_maxrss and VmHWM round differently; the process peak is at least either.
    let peak_rss_mib = memory::peak_rss_mib().max(load_peak).max(train_peak_rss_mib.unwrap_or(0.0));

    let (rows, tokens_per_row) = (workload.rows(), workload.tokens_per_row());
    Ok(SftReport {
        source,
        trainable_params: trainer.policy().adapter().num_parameters(),
        mode: workload.name(),
        rows,
        tokens_per_row,
        scored_tokens: batch.num_scored(),
        forward_tokens: batch.forward_tokens(),
        num_layers: cfg.num_hidden_layers,
        saved_layers: checkpointing.saved_layers(cfg.num_hidden_layers, layer_bytes),
        layer_bytes,
        packed_weight_mib: trainer.policy().model().packed_weight_bytes_held() as f64 / (1 << 20) as f64,
        step_seconds,
        forward_seconds,
        tokens_per_second: (rows * tokens_per_row) as f64 / step_seconds,
        first_behaviour_kl,
        model_rss_mib: model_rss,
        train_peak_rss_mib,
        peak_rss_mib,
    })
}

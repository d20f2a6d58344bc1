//! Memory and speed sanity of the training engine against the autograd path (not a benchmark:
//! no timing asserts). One SFT-like forward + backward on a random model:
//!
//! ```text
//! cargo test --release -p asrl-common --test engine_memory -- --ignored --nocapture
//! ASRL_ENGINE_SHAPE=qwen3-0.6b ASRL_ENGINE_SEQ=2000 ASRL_ENGINE_ROWS=1 ASRL_ENGINE_COMPOSITE=0 \
//!     ASRL_ENGINE_CHECKPOINTING=on|off|both|none ASRL_ENGINE_REPEAT=1 ASRL_ENGINE_SCORED=300 \
//!     cargo test --release ...
//! ```
//!
//! Peak RSS per phase is VmHWM from /proc/self/status after resetting it (writing 5 to
//! /proc/self/clear_refs), so the phases can share one process; "+x MB" is above the RSS
//! before the phase (the model's weights).

use std::time::Instant;

use asrl_common::config::LoraConfig;
use asrl_common::model::{
    token_logprobs, Checkpointing, LoraAdapter, Model, ModelConfig, ScoringBatch, TrainOptions, WeightPacking,
};
use candle_core::{DType, Device, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn status_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kb: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB");
    kb / 1024.0
}

/// Runs `f`, printing its seconds and peak RSS (absolute and above the RSS before it).
fn measure<T>(name: &str, f: impl FnOnce() -> T) -> T {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = status_mb("VmRSS:");
    let start = Instant::now();
    let out = f();
    let secs = start.elapsed().as_secs_f64();
    let peak = status_mb("VmHWM:");
    println!("{name:<34} {secs:>8.2} s   peak RSS {peak:>8.0} MB (+{:.0} MB)", peak - before);
    out
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
#[ignore = "memory/speed sanity on a 135M-parameter random model; run in release with --nocapture"]
fn engine_vs_composite_forward_backward() {
    let shape = env("ASRL_ENGINE_SHAPE", "smollm2");
    let cfg = match shape.as_str() {
        "qwen3-0.6b" => ModelConfig::qwen3_0_6b(),
        _ => ModelConfig::smollm2_135m(),
    };
    let seq: usize = env("ASRL_ENGINE_SEQ", "256").parse().expect("ASRL_ENGINE_SEQ");
    let rows: usize = env("ASRL_ENGINE_ROWS", "1").parse().expect("ASRL_ENGINE_ROWS");
    let run_composite = env("ASRL_ENGINE_COMPOSITE", "1") == "1";
    let dev = Device::Cpu;
    let model = measure("random model", || Model::random(cfg.clone(), &dev, DType::F32, 0).unwrap());
    let lora = LoraConfig { r: 32, alpha: 64.0, ..Default::default() };
    let adapter = LoraAdapter::new(&lora, &cfg, &dev, 0).unwrap();
    println!(
        "shape {shape}, {rows} x {seq} tokens, r 32, 7 modules, f32, {} threads",
        candle_core::utils::get_num_threads()
    );

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokens: Vec<Vec<u32>> =
        (0..rows).map(|_| (0..seq).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()).collect();
    // GRPO-like batches score only each row's last ASRL_ENGINE_SCORED tokens (the completion).
    let scored: usize = env("ASRL_ENGINE_SCORED", &seq.to_string()).parse().expect("ASRL_ENGINE_SCORED");
    let labels: Vec<bool> = (0..seq).map(|j| j > 0 && j + scored >= seq).collect();
    let pairs: Vec<(&[u32], &[bool])> = tokens.iter().map(|t| (t.as_slice(), labels.as_slice())).collect();
    let batch = ScoringBatch::new(&pairs, &dev).unwrap();
    println!("{} scored positions", batch.num_scored());
    let bytes = model.train_layer_bytes(&batch, Some(&adapter));
    println!(
        "estimate per layer: saved {:.0} MB, checkpointed {:.1} MB",
        bytes.saved as f64 / 1e6,
        bytes.checkpointed as f64 / 1e6
    );

    let engine = |ckpt: Checkpointing| {
        // Unpacked weights: the figures are the tape's and the passes' memory, not the packed
        // copies' (`engine.weight_packing`, a fixed +2× the projections when on).
        let opts = TrainOptions { temperature: 1.0, checkpointing: ckpt, weight_packing: WeightPacking::Off };
        let (lp, tape) = model.train_forward(&batch, &adapter, &opts).unwrap();
        let lp_var = Var::from_tensor(&lp).unwrap();
        let loss = (lp_var.as_tensor() * batch.mask()).unwrap().sum_all().unwrap().neg().unwrap();
        let dl = loss.backward().unwrap().get(lp_var.as_tensor()).unwrap().clone();
        let grads = tape.backward(&dl).unwrap();
        (lp, grads.into_tensors())
    };
    let modes: Vec<Checkpointing> = match env("ASRL_ENGINE_CHECKPOINTING", "both").as_str() {
        "on" => vec![Checkpointing::On],
        "off" => vec![Checkpointing::Off],
        "none" => vec![],
        _ => vec![Checkpointing::Off, Checkpointing::On],
    };
    let repeat = env("ASRL_ENGINE_REPEAT", "2") != "1";
    let mut engine_lp = None;
    for ckpt in modes {
        let (lp, _) = measure(&format!("engine fwd+bwd ({ckpt:?}), 1st"), || engine(ckpt));
        if repeat {
            measure(&format!("engine fwd+bwd ({ckpt:?}), 2nd"), || engine(ckpt));
        }
        engine_lp = Some(lp);
    }
    measure("engine score_logprobs (no grad)", || model.score_logprobs(&batch, Some(&adapter), 1.0).unwrap());

    if run_composite {
        let composite = || {
            let ids = batch.ids();
            let t = seq;
            let logits = model.forward(ids, Some(&adapter)).unwrap().narrow(1, 0, t - 1).unwrap().contiguous().unwrap();
            let lp = token_logprobs(&logits, &ids.narrow(1, 1, t - 1).unwrap(), 1.0).unwrap();
            let mask = batch.mask().narrow(1, 0, t - 1).unwrap();
            let store = (&lp * &mask).unwrap().sum_all().unwrap().neg().unwrap().backward().unwrap();
            let n = adapter.vars().iter().filter(|(_, v)| store.get(v.as_tensor()).is_some()).count();
            (lp.detach(), n)
        };
        let (lp, n) = measure("composite fwd+bwd (autograd), 1st", composite);
        measure("composite fwd+bwd (autograd), 2nd", composite);
        assert_eq!(n, adapter.vars().len());
        if let Some(e) = engine_lp {
            let e = e.narrow(1, 0, seq - 1).unwrap();
            let d = (e - lp).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            println!("max |engine - composite| log-prob: {d:.2e}");
        }
    }
}

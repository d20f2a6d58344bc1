//! Parity against the torch/TRL fixtures and trainer behaviour on a tiny bigram policy.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use asrl_common::config::{AdvantageScaling, LossAggregation, TrainConfig};
use asrl_common::model::token_logprobs;
use asrl_common::phase::Phase;
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, RolloutGroup, ScoredCompletion};
use asrl_common::sample::{Completion, FinishReason};

use super::advantage::compute_advantages;
use super::losses::{grpo_loss, sft_loss, AggregationTotals, GrpoBatch, GrpoLossParams};
use super::optim::{clip_grad_norm, AdamW, AdamWParams};
use super::policy::assign_by_name;
use super::*;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/training").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("dim") as usize).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 1e-7;
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

fn assert_scalar(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-5 * want.abs() + 1e-7, "{what}: got {got}, want {want}");
}

#[test]
fn sft_loss_and_gradient_match_transformers() {
    let f = fixture("sft_loss.json");
    let shape = dims(&f["shape"]);
    let dev = Device::Cpu;
    let logits = Var::from_vec(floats(&f["logits"]), (shape[0], shape[1], shape[2]), &dev).unwrap();
    let ids: Vec<u32> = f["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let ids = Tensor::from_vec(ids, (shape[0], shape[1]), &dev).unwrap();
    let mask = Tensor::from_vec(floats(&f["label_mask"]), (shape[0], shape[1]), &dev).unwrap();
    let out = sft_loss(logits.as_tensor(), &ids, &mask).unwrap();
    assert_eq!(out.tokens as u64, f["tokens"].as_u64().unwrap());
    let mean = (&out.nll_sum / out.tokens as f64).unwrap();
    assert_scalar(f64::from(mean.to_scalar::<f32>().unwrap()), f["loss"].as_f64().unwrap(), "sft loss");
    let grads = mean.backward().unwrap();
    let g = grads.get(logits.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_close(&g, &floats(&f["grad_logits"]), "sft grad");
}

#[test]
fn grpo_losses_and_gradients_match_trl() {
    let f = fixture("grpo_loss.json");
    let s = dims(&f["shape"]);
    let (b, t, v) = (s[0], s[1], s[2]);
    let dev = Device::Cpu;
    let targets: Vec<u32> = f["targets"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let targets = Tensor::from_vec(targets, (b, t), &dev).unwrap();
    let mask = Tensor::from_vec(floats(&f["mask"]), (b, t), &dev).unwrap();
    let behaviour = Tensor::from_vec(floats(&f["behaviour_logprobs"]), (b, t), &dev).unwrap();
    let reference = Tensor::from_vec(floats(&f["ref_logprobs"]), (b, t), &dev).unwrap();

    // Advantages from the rewards, as TRL computed them.
    let rewards: Vec<f64> = floats(&f["rewards"]).iter().map(|&x| f64::from(x)).collect();
    let groups: Vec<Vec<f64>> = rewards.chunks(f["group_size"].as_u64().unwrap() as usize).map(<[f64]>::to_vec).collect();
    let adv = compute_advantages(&groups, AdvantageScaling::Group, 1e-4);
    let adv: Vec<f32> = adv.per_group.concat().iter().map(|&x| x as f32).collect();
    assert_close(&adv, &floats(&f["advantages"]), "advantages");
    let advantages = Tensor::from_vec(floats(&f["advantages"]), b, &dev).unwrap();

    let mask_sum: f64 = floats(&f["mask"]).iter().map(|&x| f64::from(x)).sum();
    let totals = AggregationTotals {
        sequences: b,
        tokens: mask_sum as usize,
        max_new_tokens: f["max_completion_length"].as_u64().unwrap() as usize,
    };
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name = format!("{} beta={} delta={}", case["loss_type"], case["beta"], case["delta"]);
        let aggregation = match case["loss_type"].as_str().unwrap() {
            "grpo" => LossAggregation::Grpo,
            "dapo" => LossAggregation::Dapo,
            "dr_grpo" => LossAggregation::DrGrpo,
            other => panic!("unknown loss type {other}"),
        };
        let params = GrpoLossParams {
            epsilon_low: f["epsilon_low"].as_f64().unwrap(),
            epsilon_high: f["epsilon_high"].as_f64().unwrap(),
            ratio_cap: case["delta"].as_f64(),
            beta: case["beta"].as_f64().unwrap(),
        };
        let logits = Var::from_vec(floats(&f["logits"]), (b, t, v), &dev).unwrap();
        let logprobs = token_logprobs(logits.as_tensor(), &targets, f["temperature"].as_f64().unwrap()).unwrap();
        let batch = GrpoBatch {
            logprobs: &logprobs,
            behaviour_logprobs: &behaviour,
            ref_logprobs: Some(&reference),
            advantages: &advantages,
            mask: &mask,
        };
        let (loss, stats) = grpo_loss(&batch, &params, aggregation, &totals).unwrap();
        assert_scalar(f64::from(loss.to_scalar::<f32>().unwrap()), case["loss"].as_f64().unwrap(), &name);
        assert_eq!(stats.clipped_low as u64, case["clipped_low"].as_u64().unwrap(), "{name} low clips");
        assert_eq!(stats.clipped_high as u64, case["clipped_high"].as_u64().unwrap(), "{name} high clips");
        let grads = loss.backward().unwrap();
        let g = grads.get(logits.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close(&g, &floats(&case["grad_logits"]), &name);
    }
}

#[test]
fn adamw_and_clipping_match_torch() {
    let f = fixture("adamw.json");
    let dev = Device::Cpu;
    let shapes: Vec<Vec<usize>> = f["shapes"].as_array().unwrap().iter().map(dims).collect();
    let vars: Vec<(String, Var)> = shapes
        .iter()
        .zip(f["init"].as_array().unwrap())
        .enumerate()
        .map(|(i, (s, init))| (format!("p{i}"), Var::from_vec(floats(init), s.clone(), &dev).unwrap()))
        .collect();
    let p = AdamWParams {
        beta1: f["beta1"].as_f64().unwrap(),
        beta2: f["beta2"].as_f64().unwrap(),
        eps: f["eps"].as_f64().unwrap(),
        weight_decay: f["weight_decay"].as_f64().unwrap(),
    };
    let mut opt = AdamW::new(vars.clone(), p).unwrap();
    for (k, step) in f["steps"].as_array().unwrap().iter().enumerate() {
        let mut grads: Vec<Tensor> = step["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&shapes)
            .map(|(g, s)| Tensor::from_vec(floats(g), s.clone(), &dev).unwrap())
            .collect();
        let norm = clip_grad_norm(&mut grads, f["max_grad_norm"].as_f64().unwrap()).unwrap();
        assert_scalar(norm, step["pre_clip_norm"].as_f64().unwrap(), &format!("step {k} norm"));
        opt.step(&grads, f["lr"].as_f64().unwrap()).unwrap();
        for ((name, var), want) in vars.iter().zip(step["params"].as_array().unwrap()) {
            let got = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_close(&got, &floats(want), &format!("step {k} {name}"));
        }
    }
}

#[test]
fn adamw_state_round_trips_exactly() {
    let dev = Device::Cpu;
    let mk = || vec![("a".to_string(), Var::from_vec(vec![1f32, -2.0, 3.0], 3, &dev).unwrap())];
    let p = AdamWParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let grads = |k: f32| vec![Tensor::from_vec(vec![0.1 * k, -0.3, 0.2 * k], 3, &dev).unwrap()];
    let (va, vb) = (mk(), mk());
    let mut a = AdamW::new(va.clone(), p).unwrap();
    for k in 0..3 {
        a.step(&grads(k as f32), 1e-2).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    a.save(&dir.path().join("opt.safetensors")).unwrap();
    vb[0].1.set(va[0].1.as_tensor()).unwrap();
    let mut b = AdamW::new(vb.clone(), p).unwrap();
    b.load(&dir.path().join("opt.safetensors")).unwrap();
    assert_eq!(b.step_count(), 3);
    a.step(&grads(5.0), 1e-2).unwrap();
    b.step(&grads(5.0), 1e-2).unwrap();
    assert_eq!(va[0].1.as_tensor().to_vec1::<f32>().unwrap(), vb[0].1.as_tensor().to_vec1::<f32>().unwrap());
    // A different parameter set is rejected by name.
    let mut c = AdamW::new(vec![("b".to_string(), Var::zeros(3, DType::F32, &dev).unwrap())], p).unwrap();
    let err = c.load(&dir.path().join("opt.safetensors")).unwrap_err().to_string();
    assert!(err.contains("m.b"), "{err}");
}

/// A bigram model: logits(next | token) = row `token` of (base + delta). `delta` is the adapter.
pub(super) struct Bigram {
    base: Tensor,
    delta: Var,
    device: Device,
    /// Makes every forward return NaN logits (fault injection).
    pub poison: Cell<bool>,
}

impl Bigram {
    pub(super) fn new(vocab: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let base: Vec<f32> = (0..vocab * vocab).map(|_| rng.random_range(-1.0..1.0)).collect();
        let device = Device::Cpu;
        Self {
            base: Tensor::from_vec(base, (vocab, vocab), &device).unwrap(),
            delta: Var::zeros((vocab, vocab), DType::F32, &device).unwrap(),
            device,
            poison: Cell::new(false),
        }
    }

    fn table(&self, adapter: bool) -> candle_core::Result<Tensor> {
        if adapter {
            &self.base + self.delta.as_tensor()
        } else {
            Ok(self.base.clone())
        }
    }

    pub(super) fn probs_after(&self, token: u32) -> Vec<f32> {
        let row = self.table(true).unwrap().get(token as usize).unwrap();
        candle_nn::ops::softmax_last_dim(&row.unsqueeze(0).unwrap()).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
    }

    pub(super) fn delta_values(&self) -> Vec<f32> {
        self.delta.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }
}

impl Policy for Bigram {
    fn logits(&self, input_ids: &Tensor, adapter: bool) -> Result<Tensor, TrainError> {
        let (b, t) = input_ids.dims2()?;
        let table = self.table(adapter)?;
        let v = table.dim(1)?;
        let out = table.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, t, v))?;
        Ok(if self.poison.get() { (out * f64::NAN)? } else { out })
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn vocab_size(&self) -> usize {
        self.base.dim(0).unwrap_or(0)
    }
    fn trainable(&self) -> Vec<(String, Var)> {
        vec![("delta".into(), self.delta.clone())]
    }
    fn save_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        let map: HashMap<String, Tensor> = [("delta".to_string(), self.delta.as_tensor().clone())].into();
        candle_core::safetensors::save(&map, dir.join("delta.safetensors"))?;
        Ok(())
    }
    fn load_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        let path = dir.join("delta.safetensors");
        let map = candle_core::safetensors::load(&path, &self.device)?;
        assign_by_name(&self.trainable(), map, &path)
    }
}

fn test_config(ckpt: PathBuf) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.optimiser.lr = 0.05;
    cfg.sft.grad_accum_steps = 2;
    cfg.sft.max_seq_len = 16;
    cfg.grpo.micro_batch_size = 3;
    cfg.checkpoint.dir = ckpt;
    cfg
}

fn sft_data() -> Vec<SftExample> {
    vec![
        SftExample::from_prompt_response(&[1, 2], &[3, 4, 5]),
        SftExample::from_prompt_response(&[2], &[6, 7]),
        SftExample::from_prompt_response(&[7, 1, 1], &[2, 0]),
        SftExample::from_prompt_response(&[4], &[5, 6, 7, 3]),
    ]
}

#[test]
fn sft_accumulation_is_the_token_mean_over_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let data = sft_data();
    // 4 micro-batches of 1, accumulated...
    let mut cfg = test_config(dir.path().join("a"));
    cfg.sft.grad_accum_steps = 4;
    let mut a = Trainer::new(Bigram::new(8, 1), cfg, 1.0, 8, 0, TrainerLog::disabled()).unwrap();
    a.begin_phase(0, Phase::Sft, 0).unwrap();
    let mut steps = Vec::new();
    for ex in &data {
        steps.extend(a.sft_micro_step(std::slice::from_ref(ex)).unwrap());
    }
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].micro_batches, 4);
    assert_eq!(steps[0].tokens, 11);
    // ...equal one padded micro-batch of 4.
    let mut cfg = test_config(dir.path().join("b"));
    cfg.sft.grad_accum_steps = 1;
    cfg.sft.micro_batch_size = 4;
    let mut b = Trainer::new(Bigram::new(8, 1), cfg, 1.0, 8, 0, TrainerLog::disabled()).unwrap();
    b.begin_phase(0, Phase::Sft, 0).unwrap();
    let m = b.sft_micro_step(&data).unwrap().expect("one step");
    assert_scalar(m.loss, steps[0].loss, "loss");
    assert_scalar(m.grad_norm, steps[0].grad_norm, "grad norm");
    assert_close(&a.policy().delta_values(), &b.policy().delta_values(), "adapter");
}

#[test]
fn sft_memorises_and_skips_too_long_examples() {
    let dir = tempfile::tempdir().unwrap();
    let sink_path = dir.path().join("metrics.jsonl");
    let mut cfg = test_config(dir.path().join("ckpt"));
    cfg.optimiser.lr = 0.1;
    let mut t = Trainer::new(
        Bigram::new(8, 2),
        cfg,
        1.0,
        8,
        0,
        TrainerLog::to_file(&sink_path).unwrap(),
    )
    .unwrap();
    t.begin_phase(0, Phase::Sft, 0).unwrap();
    let data = [SftExample::from_prompt_response(&[1], &[2, 3, 4]), SftExample::from_prompt_response(&[5], &[6, 7])];
    let long = SftExample::from_prompt_response(&[1; 10], &[2; 10]);
    let mut losses = Vec::new();
    for _ in 0..60 {
        for ex in &data {
            if let Some(m) = t.sft_micro_step(std::slice::from_ref(ex)).unwrap() {
                losses.push(m.loss);
            }
        }
    }
    assert!(t.sft_micro_step(std::slice::from_ref(&long)).unwrap().is_none());
    let phase = t.end_phase().unwrap();
    assert_eq!(phase.skipped_too_long, 1);
    assert_eq!(t.state().total_skipped_too_long, 1);
    assert!(losses[0] > 1.0, "initial loss {}", losses[0]);
    assert!(*losses.last().unwrap() < 0.1, "final loss {:?}", losses.last());
    let lines = std::fs::read_to_string(&sink_path).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for key in ["kind", "epoch", "phase", "step", "loss", "tokens", "grad_norm", "lr"] {
        assert!(first.get(key).is_some(), "metrics line lacks {key}: {first}");
    }
    assert_eq!(first["kind"], "sft_step");
    let last: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "phase");
    assert_eq!(last["steps"], 60);
}

/// Samples `n` completions of `len` tokens from the bigram with their log-probs; reward = share
/// of tokens equal to `target`.
fn sample_group(
    p: &Bigram,
    prompt: &[u32],
    n: usize,
    len: usize,
    target: u32,
    version: AdapterVersion,
    rng: &mut ChaCha8Rng,
) -> RolloutGroup {
    let completions = (0..n)
        .map(|_| {
            let mut prev = *prompt.last().unwrap();
            let (mut tokens, mut lps) = (Vec::new(), Vec::new());
            for _ in 0..len {
                let probs = p.probs_after(prev);
                let u: f32 = rng.random();
                let mut acc = 0.0;
                let mut pick = probs.len() - 1;
                for (i, q) in probs.iter().enumerate() {
                    acc += q;
                    if u < acc {
                        pick = i;
                        break;
                    }
                }
                tokens.push(pick as u32);
                lps.push(probs[pick].ln());
                prev = pick as u32;
            }
            let reward = tokens.iter().filter(|&&x| x == target).count() as f64 / len as f64;
            ScoredCompletion {
                completion: Completion { tokens, logprobs: lps, text: String::new(), finish: FinishReason::Length },
                reward: Reward { total: reward, components: BTreeMap::from([("target".to_string(), reward)]) },
            }
        })
        .collect();
    RolloutGroup { prompt_id: "p".into(), prompt_tokens: prompt.into(), adapter_version: version, worker_id: 1, completions }
}

#[test]
fn grpo_raises_a_rule_reward() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path().to_path_buf());
    cfg.optimiser.lr = 0.2;
    let mut t = Trainer::new(Bigram::new(6, 3), cfg, 1.0, 5, 0, TrainerLog::disabled()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    t.begin_phase(0, Phase::Grpo, 30).unwrap();
    let mut rewards = Vec::new();
    for _ in 0..30 {
        let groups: Vec<RolloutGroup> = (0..4)
            .map(|i| sample_group(t.policy(), &[i as u32 + 1], 6, 5, 0, t.adapter_version(), &mut rng))
            .collect();
        let m = t.grpo_step(&groups).unwrap();
        assert!(m[0].applied);
        rewards.push(m[0].reward_mean);
    }
    let early: f64 = rewards[..5].iter().sum::<f64>() / 5.0;
    let late: f64 = rewards[25..].iter().sum::<f64>() / 5.0;
    assert!(late > early + 0.3, "reward did not rise: early {early}, late {late}");
    assert_eq!(t.state().phase_step, 30);
}

#[test]
fn grpo_drops_stale_completions_and_runs_mu_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path().to_path_buf());
    cfg.grpo.mu = 2;
    cfg.grpo.max_staleness = 1;
    let mut t = Trainer::new(Bigram::new(6, 4), cfg, 1.0, 5, 0, TrainerLog::disabled()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    t.begin_phase(0, Phase::Grpo, 10).unwrap();
    let g = sample_group(t.policy(), &[1], 4, 5, 0, AdapterVersion::INITIAL, &mut rng);
    let m = t.grpo_step(std::slice::from_ref(&g)).unwrap();
    assert_eq!(m.len(), 2);
    assert!(m[0].lr > m[1].lr, "GRPO LR decays: {} then {}", m[0].lr, m[1].lr);
    // The second pass is off-policy relative to the behaviour log-probs.
    assert!(m[1].behaviour_kl > 0.0);
    assert_eq!(t.adapter_version(), AdapterVersion::after_steps(2));
    // Sampled with the initial adapter, now two steps later with max_staleness 1: all dropped, nothing learnt.
    let before = t.policy().delta_values();
    let m = t.grpo_step(std::slice::from_ref(&g)).unwrap();
    assert_eq!(m[0].stale_dropped, 4);
    assert_eq!(m[0].tokens, 0);
    assert!(!m[0].applied, "no step without a learning signal");
    assert_eq!(t.state().total_stale_dropped, 4);
    assert_eq!(t.policy().delta_values(), before);
}

#[test]
fn nan_batch_leaves_adapter_untouched_and_too_many_abort() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(Bigram::new(6, 5), test_config(dir.path().to_path_buf()), 1.0, 5, 0, TrainerLog::disabled()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    t.begin_phase(0, Phase::Grpo, 10).unwrap();
    let good = sample_group(t.policy(), &[2], 4, 5, 0, AdapterVersion::INITIAL, &mut rng);
    t.grpo_step(std::slice::from_ref(&good)).unwrap();
    let before = t.policy().delta_values();
    let mut bad = sample_group(t.policy(), &[2], 4, 5, 0, t.adapter_version(), &mut rng);
    bad.completions[1].completion.logprobs[2] = f32::NAN;
    let m = t.grpo_step(std::slice::from_ref(&bad)).unwrap();
    assert!(!m[0].applied);
    assert_eq!(t.policy().delta_values(), before);
    assert_eq!(t.state().total_nonfinite, 1);
    assert_eq!(t.adapter_version(), AdapterVersion::after_steps(1));
    // A good step resets the run; then 5 bad ones in a row are an error.
    t.grpo_step(std::slice::from_ref(&good)).unwrap();
    assert_eq!(t.state().consecutive_nonfinite, 0);
    for k in 1..=5 {
        let r = t.grpo_step(std::slice::from_ref(&bad));
        if k < 5 {
            r.unwrap();
        } else {
            assert!(matches!(r, Err(TrainError::NonFiniteRun { count: 5 })), "{:?}", r.err());
        }
    }

    // SFT: a poisoned micro-batch is dropped before backward.
    let mut s = Trainer::new(Bigram::new(6, 5), test_config(dir.path().join("s")), 1.0, 5, 0, TrainerLog::disabled()).unwrap();
    s.begin_phase(0, Phase::Sft, 0).unwrap();
    let ex = SftExample::from_prompt_response(&[1], &[2, 3]);
    s.policy().poison.set(true);
    assert!(s.sft_micro_step(std::slice::from_ref(&ex)).unwrap().is_none());
    s.policy().poison.set(false);
    assert_eq!(s.state().total_nonfinite, 1);
    assert!(s.sft_flush().unwrap().is_none(), "the poisoned micro-batch left nothing to apply");
    assert!(s.policy().delta_values().iter().all(|&x| x == 0.0));
}

fn run_sft(t: &mut Trainer<Bigram>, micro_batches: usize) {
    let data = sft_data();
    for i in 0..micro_batches {
        t.sft_micro_step(std::slice::from_ref(&data[i % data.len()])).unwrap();
    }
}

#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |sub: &str| {
        Trainer::new(Bigram::new(8, 9), test_config(dir.path().join(sub)), 1.0, 4, 42, TrainerLog::disabled()).unwrap()
    };
    let mut straight = mk("straight");
    straight.begin_phase(0, Phase::Sft, 0).unwrap();
    run_sft(&mut straight, 8);
    straight.end_phase().unwrap();
    straight.begin_phase(0, Phase::Grpo, 8).unwrap();
    for i in 0..8 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + i);
        let g = sample_group(straight.policy(), &[3], 4, 4, 0, straight.adapter_version(), &mut rng);
        straight.grpo_step(&[g]).unwrap();
    }

    let mut first = mk("split");
    first.begin_phase(0, Phase::Sft, 0).unwrap();
    run_sft(&mut first, 8);
    first.end_phase().unwrap();
    first.begin_phase(0, Phase::Grpo, 8).unwrap();
    for i in 0..4 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + i);
        let g = sample_group(first.policy(), &[3], 4, 4, 0, first.adapter_version(), &mut rng);
        first.grpo_step(&[g]).unwrap();
    }
    let _: u64 = first.rng_mut().random();
    first.set_dataset_position(serde_json::json!({"offset": 4}));
    let saved_state = first.state().clone();
    first.save_checkpoint().unwrap();
    let rng_next: u64 = first.rng_mut().random();
    drop(first);

    let mut second = mk("split");
    assert!(second.resume().unwrap());
    assert_eq!(second.state().phase, Phase::Grpo);
    assert_eq!(second.state().phase_step, saved_state.phase_step);
    assert_eq!(second.state().global_step, saved_state.global_step);
    assert_eq!(second.state().dataset_position["offset"], 4);
    assert_eq!(second.rng_mut().random::<u64>(), rng_next);
    for i in 4..8 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + i);
        let g = sample_group(second.policy(), &[3], 4, 4, 0, second.adapter_version(), &mut rng);
        second.grpo_step(&[g]).unwrap();
    }
    assert_eq!(second.state().global_step, straight.state().global_step);
    assert_eq!(second.adapter_version(), straight.adapter_version());
    assert_close(&second.policy().delta_values(), &straight.policy().delta_values(), "resumed adapter");
}

#[test]
fn checkpoint_refuses_pending_accumulation() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(Bigram::new(8, 1), test_config(dir.path().to_path_buf()), 1.0, 4, 0, TrainerLog::disabled()).unwrap();
    t.begin_phase(0, Phase::Sft, 0).unwrap();
    t.sft_micro_step(&sft_data()[..1]).unwrap();
    assert!(matches!(t.save_checkpoint(), Err(TrainError::PendingAccumulation(1))));
    t.sft_flush().unwrap();
    t.save_checkpoint().unwrap();
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(Bigram::new(8, 1), test_config(dir.path().to_path_buf()), 1.0, 4, 0, TrainerLog::disabled()).unwrap();
    t.begin_phase(0, Phase::Grpo, 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut g = sample_group(t.policy(), &[1], 2, 3, 0, AdapterVersion::INITIAL, &mut rng);
    g.completions[1].completion.logprobs.pop();
    let err = t.grpo_step(&[g.clone()]).unwrap_err().to_string();
    assert!(err.contains("group 0 completion 1"), "{err}");
    g.completions[1].completion.logprobs.push(-1.0);
    g.completions[0].completion.tokens[0] = 99;
    let err = t.grpo_step(&[g]).unwrap_err().to_string();
    assert!(err.contains("group 0 completion 0: token 0 is 99"), "{err}");
}

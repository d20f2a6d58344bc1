//! Trainer behaviour on the bigram policy: accumulation, learning, staleness, non-finite steps,
//! checkpoints and resume, input errors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use asrl_common::phase::Phase;
use asrl_common::rollout::{AdapterVersion, RolloutGroup};

use super::bigram::{run_sft, sample_group, sft_data, test_config, Bigram};
use super::{assert_close, assert_scalar};
use crate::training::*;

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
    assert_eq!(steps[0].core.tokens, 11);
    // ...equal one padded micro-batch of 4.
    let mut cfg = test_config(dir.path().join("b"));
    cfg.sft.grad_accum_steps = 1;
    cfg.sft.micro_batch_size = 4;
    let mut b = Trainer::new(Bigram::new(8, 1), cfg, 1.0, 8, 0, TrainerLog::disabled()).unwrap();
    b.begin_phase(0, Phase::Sft, 0).unwrap();
    let m = b.sft_micro_step(&data).unwrap().expect("one step");
    assert_scalar(m.core.loss, steps[0].core.loss, "loss");
    assert_scalar(m.core.grad_norm, steps[0].core.grad_norm, "grad norm");
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
                losses.push(m.core.loss);
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
        assert!(m[0].core.applied);
        rewards.push(m[0].reward_mean);
    }
    let early: f64 = rewards[..5].iter().sum::<f64>() / 5.0;
    let late: f64 = rewards[25..].iter().sum::<f64>() / 5.0;
    assert!(late > early + 0.3, "reward did not rise: early {early}, late {late}");
    assert_eq!(t.state().phase_step, 30);
}

#[test]
fn sft_and_grpo_steps_use_their_own_peak_lr() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path().to_path_buf());
    cfg.optimiser.lr = 0.1;
    cfg.optimiser.grpo_lr = Some(0.02);
    cfg.sft.grad_accum_steps = 1;
    let mut t = Trainer::new(Bigram::new(6, 3), cfg, 1.0, 5, 0, TrainerLog::disabled()).unwrap();
    t.begin_phase(0, Phase::Sft, 0).unwrap();
    let ex = SftExample::from_prompt_response(&[1], &[2, 3]);
    let sft = t.sft_micro_step(std::slice::from_ref(&ex)).unwrap().expect("one step");
    assert_eq!(sft.core.lr, 0.1);
    t.end_phase().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    t.begin_phase(0, Phase::Grpo, 10).unwrap();
    let g = sample_group(t.policy(), &[1], 4, 5, 0, t.adapter_version(), &mut rng);
    let grpo = t.grpo_step(std::slice::from_ref(&g)).unwrap();
    assert!((grpo[0].core.lr - 0.02).abs() < 1e-15, "GRPO starts at grpo_lr: {}", grpo[0].core.lr);
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
    assert!(m[0].core.lr > m[1].core.lr, "GRPO LR decays: {} then {}", m[0].core.lr, m[1].core.lr);
    // The second pass is off-policy relative to the behaviour log-probs.
    assert!(m[1].behaviour_kl > 0.0);
    assert_eq!(t.adapter_version(), AdapterVersion::after_steps(2));
    // Sampled with the initial adapter, now two steps later with max_staleness 1: all dropped, nothing learnt.
    let before = t.policy().delta_values();
    let m = t.grpo_step(std::slice::from_ref(&g)).unwrap();
    assert_eq!(m[0].stale_dropped, 4);
    assert_eq!(m[0].core.tokens, 0);
    assert!(!m[0].core.applied, "no step without a learning signal");
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
    assert!(!m[0].core.applied);
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
    assert!(second.resume().unwrap().is_some());
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


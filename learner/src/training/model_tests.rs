//! The trainer on a real (tiny, randomly initialised) decoder with a LoRA adapter.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};

use asrl_common::config::{LoraConfig, SamplingParams, TrainConfig};
use asrl_common::model::{random_tensors, Arch, LoraAdapter, Model, ModelConfig};
use asrl_common::phase::Phase;
use asrl_common::reward::Reward;
use asrl_common::rollout::{RolloutGroup, ScoredCompletion};
use asrl_common::sample::sample_group;
use asrl_common::tokenizer::Tokenizer;

use super::*;

fn tiny(vocab: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        max_position_embeddings: 128,
    }
}

/// HF-style init (std 0.02) caps the tied logits of a 32-wide model at about ±0.6 after the
/// final RMS norm, which LoRA cannot change: the embedding is scaled up so targets are reachable.
fn policy(vocab: usize, seed: u64) -> LoraPolicy {
    let cfg = tiny(vocab);
    let mut tensors = random_tensors(&cfg, seed).unwrap();
    let embed = tensors.remove("model.embed_tokens.weight").unwrap();
    tensors.insert("model.embed_tokens.weight".into(), (embed * 8.0).unwrap());
    let model = Model::from_tensors(cfg.clone(), tensors, &Device::Cpu, DType::F32).unwrap();
    let lora = LoraConfig { r: 8, alpha: 16.0, ..Default::default() };
    let adapter = LoraAdapter::new(&lora, &cfg, &Device::Cpu, seed + 1).unwrap();
    LoraPolicy::new(model, adapter, "tiny-random")
}

/// Word-level tokenizer `<unk>`=0, `</s>`=1 (eos), `w{i}`=i, written as an HF dir.
fn tokenizer(dir: &Path, vocab: usize) -> Tokenizer {
    let mut words = serde_json::Map::new();
    words.insert("<unk>".into(), 0.into());
    words.insert("</s>".into(), 1.into());
    for i in 2..vocab {
        words.insert(format!("w{i}"), i.into());
    }
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "</s>"}"#).unwrap();
    Tokenizer::from_hf_dir(dir).unwrap()
}

fn sft_set() -> Vec<SftExample> {
    vec![
        SftExample::from_prompt_response(&[2, 3], &[7, 9, 11, 4, 1]),
        SftExample::from_prompt_response(&[2, 5, 6], &[12, 30, 8, 1]),
        SftExample::from_prompt_response(&[3], &[20, 21, 22, 23, 24, 1]),
        SftExample::from_prompt_response(&[4, 4], &[9, 9, 15, 1]),
    ]
}

#[test]
fn sft_memorises_a_small_set_with_lora() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::default();
    cfg.optimiser.lr = 2e-2;
    cfg.sft.grad_accum_steps = 2;
    cfg.sft.micro_batch_size = 2;
    cfg.checkpoint.dir = dir.path().to_path_buf();
    let mut t = Trainer::new(policy(32, 1), cfg, 1.0, 8, 0, TrainerLog::disabled()).unwrap();
    t.begin_phase(0, Phase::Sft, 0).unwrap();
    let data = sft_set();
    let (before, label_tokens) = t.eval_loss(&data, 3).unwrap();
    assert_eq!(label_tokens, 5 + 4 + 6 + 4, "every response token is a label");
    let mut losses = Vec::new();
    for _ in 0..80 {
        for mb in data.chunks(2) {
            if let Some(m) = t.sft_micro_step(mb).unwrap() {
                assert!(m.core.applied);
                losses.push(m.core.loss);
            }
        }
    }
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(first > 2.0, "a random model starts high: {first}");
    // The frozen tied head and final norm bound the logit margin, so the loss floors near 0.2;
    // memorisation shows in greedy predictions of every response token.
    assert!(last < 0.35, "response loss after 80 steps: {last} (first {first})");
    // Validation loss is the same token-weighted NLL, independent of micro-batching.
    let (after, _) = t.eval_loss(&data, 1).unwrap();
    let (after_batched, _) = t.eval_loss(&data, 4).unwrap();
    assert!(after < 0.35 && before > 2.0, "eval loss {before} -> {after}");
    assert!((after - after_batched).abs() < 1e-4, "{after} vs {after_batched}");
    assert!(t.eval_loss(&[], 4).unwrap().0.is_nan());
    for ex in &data {
        let ids = candle_core::Tensor::new(ex.tokens.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = t.policy().logits(&ids, true).unwrap().squeeze(0).unwrap();
        let pred: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        for i in 1..ex.tokens.len() {
            if ex.label_mask[i] {
                assert_eq!(pred[i - 1], ex.tokens[i], "example {:?} position {i}", ex.tokens);
            }
        }
    }
}

#[test]
fn grpo_raises_a_rule_reward_on_a_lora_model() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = 16;
    let tok = tokenizer(dir.path(), vocab);
    let target = 5u32;
    let mut cfg = TrainConfig::default();
    cfg.optimiser.lr = 3e-2;
    cfg.grpo.micro_batch_size = 16;
    cfg.checkpoint.dir = dir.path().join("ckpt");
    let params = SamplingParams { n: 8, temperature: 1.0, top_p: 1.0, max_new_tokens: 8, seed: 0 };
    let steps = 15u64;
    let mut t = Trainer::new(policy(vocab, 3), cfg, params.temperature, params.max_new_tokens, 0, TrainerLog::disabled())
        .unwrap();
    t.begin_phase(0, Phase::Grpo, steps).unwrap();
    let mut rewards = Vec::new();
    for step in 0..steps {
        let groups: Vec<RolloutGroup> = (0..4u64)
            .map(|g| {
                let prompt = [2 + g as u32, 3, 4];
                let p = SamplingParams { seed: step * 100 + g, ..params.clone() };
                let pol = t.policy();
                let completions = sample_group(pol.model(), Some(pol.adapter()), &tok, &prompt, &p).unwrap();
                let completions = completions
                    .into_iter()
                    .map(|c| {
                        let reward = c.tokens.iter().filter(|&&x| x == target).count() as f64 / params.max_new_tokens as f64;
                        ScoredCompletion {
                            completion: c,
                            reward: Reward { total: reward, components: BTreeMap::from([("target".into(), reward)]) },
                        }
                    })
                    .collect();
                RolloutGroup {
                    prompt_id: format!("g{g}"),
                    prompt_tokens: prompt.to_vec().into(),
                    adapter_version: t.adapter_version(),
                    worker_id: 1,
                    completions,
                }
            })
            .collect();
        let m = t.grpo_step(&groups).unwrap();
        // On-policy: the recomputed log-probs equal the sampler's, nothing is clipped.
        assert!(m[0].behaviour_kl < 1e-4, "on-policy KL {}", m[0].behaviour_kl);
        rewards.push(m[0].reward_mean);
    }
    let early = rewards[..3].iter().sum::<f64>() / 3.0;
    let late = rewards[rewards.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(late > early + 0.2, "mean reward did not rise: {rewards:?}");
}

#[test]
fn lora_checkpoint_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |sub: &str| {
        let mut cfg = TrainConfig::default();
        cfg.optimiser.lr = 1e-2;
        cfg.sft.grad_accum_steps = 1;
        cfg.sft.micro_batch_size = 2;
        cfg.checkpoint.dir = dir.path().join(sub);
        Trainer::new(policy(32, 5), cfg, 1.0, 8, 0, TrainerLog::disabled()).unwrap()
    };
    let data = sft_set();
    let batches: Vec<&[SftExample]> = data.chunks(2).cycle().take(6).collect();
    let mut straight = mk("a");
    straight.begin_phase(0, Phase::Sft, 0).unwrap();
    for b in &batches {
        straight.sft_micro_step(b).unwrap();
    }
    let mut first = mk("b");
    first.begin_phase(0, Phase::Sft, 0).unwrap();
    for b in &batches[..3] {
        first.sft_micro_step(b).unwrap();
    }
    let ckpt = first.save_checkpoint().unwrap();
    assert!(ckpt.join("adapter/adapter_config.json").is_file());
    assert!(ckpt.join("adapter/adapter_model.safetensors").is_file());
    drop(first);
    let mut second = mk("b");
    assert!(second.resume().unwrap().is_some());
    for b in &batches[3..] {
        second.sft_micro_step(b).unwrap();
    }
    assert_eq!(second.state().global_step, 6);
    for ((name, a), (_, b)) in straight.policy().trainable().iter().zip(second.policy().trainable()) {
        let a: Vec<f32> = a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 + 1e-5 * x.abs(), "{name}: {x} vs {y}");
        }
    }
}

/// The autograd reference path of the same LoRA policy: only `logits` is forwarded, so the
/// trainer goes through `Policy`'s default `score`/`score_for_training`.
struct AutogradLora(LoraPolicy);

impl Policy for AutogradLora {
    fn logits(&self, ids: &candle_core::Tensor, adapter: bool) -> Result<candle_core::Tensor, TrainError> {
        self.0.logits(ids, adapter)
    }
    fn device(&self) -> &Device {
        self.0.device()
    }
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn trainable(&self) -> Vec<(String, candle_core::Var)> {
        self.0.trainable()
    }
    fn save_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        self.0.save_adapter(dir)
    }
    fn load_adapter(&self, dir: &Path) -> Result<(), TrainError> {
        self.0.load_adapter(dir)
    }
}

fn adapter_values(vars: &[(String, candle_core::Var)]) -> Vec<Vec<f32>> {
    vars.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

/// Adam turns gradients into steps of about ±lr whatever their size, so float noise in a
/// near-zero gradient element moves it by a visible fraction of lr: the adapters are compared at
/// 1e-3, the per-step losses and gradient norms (which carry the gradients' size) at 1e-4.
fn assert_same_adapter(engine: &[(String, candle_core::Var)], reference: &[(String, candle_core::Var)], what: &str) {
    for ((name, a), b) in engine.iter().zip(adapter_values(reference)) {
        let a = a.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        assert!(err < 1e-3, "{what}: {name} differs by {err:e} (relative)");
    }
}

fn assert_same_steps(engine: &[(f64, f64)], reference: &[(f64, f64)], what: &str) {
    assert_eq!(engine.len(), reference.len(), "{what}: step counts");
    for (i, ((la, ga), (lb, gb))) in engine.iter().zip(reference).enumerate() {
        assert!((la - lb).abs() <= 1e-4 * lb.abs().max(1e-3), "{what} step {i}: loss {la} vs {lb}");
        assert!((ga - gb).abs() <= 1e-4 * gb.abs().max(1e-6), "{what} step {i}: grad norm {ga} vs {gb}");
    }
}

/// The fused engine and the autograd path drive the trainer to the same adapter: SFT steps with
/// masked prompts and right padding, then GRPO steps at temperature 0.7 with the PPO clip, the
/// ratio cap and a KL term to the base model (whose reference log-probs also come from the
/// engine's no-grad path); with each group's prompt run once (the default) and per completion.
#[test]
fn engine_and_autograd_paths_train_the_same_adapter() {
    use asrl_common::model::Checkpointing;
    // Each GRPO micro-batch is one group: its completions share their prompt unless turned off.
    for (checkpointing, share_prompts) in [(Checkpointing::Off, true), (Checkpointing::On, true), (Checkpointing::Off, false)] {
        let mut cfg = TrainConfig::default();
        cfg.optimiser.lr = 5e-2;
        cfg.sft.grad_accum_steps = 2;
        cfg.grpo.beta = 0.05;
        cfg.grpo.micro_batch_size = 3;
        cfg.grpo.epsilon_low = 0.05;
        cfg.grpo.epsilon_high = 0.05;
        cfg.grpo.ratio_cap = 1.2;
        let engine = policy(32, 5).with_checkpointing(checkpointing).with_prompt_sharing(share_prompts);
        let mut fused = Trainer::new(engine, cfg.clone(), 0.7, 8, 0, TrainerLog::disabled()).unwrap();
        let mut reference = Trainer::new(AutogradLora(policy(32, 5)), cfg, 0.7, 8, 0, TrainerLog::disabled()).unwrap();
        assert_same_adapter(&fused.policy().trainable(), &reference.policy().trainable(), "initial");

        let steps: Vec<_> = [&mut fused as &mut dyn SftStepper, &mut reference].map(|t| t.sft(&sft_set())).into();
        assert_same_steps(&steps[0], &steps[1], "SFT");
        assert_same_adapter(&fused.policy().trainable(), &reference.policy().trainable(), "after SFT");
        let data = sft_set();
        let (a, _) = fused.eval_loss(&data, 3).unwrap();
        let (b, _) = reference.eval_loss(&data, 3).unwrap();
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "validation loss {a} vs {b}");

        // Behaviour log-probs off by a little from the current policy, so ratios hit the clip.
        let groups = vec![
            group(&[2, 3], &[(&[7, 9, 1], 1.0, -2.0), (&[4, 4, 4, 4], 0.0, -1.5), (&[8], 0.5, -3.0)]),
            group(&[5], &[(&[6, 6, 1], -0.5, -2.5), (&[9, 10, 11, 12, 13], 1.0, -1.0), (&[1], 0.0, -0.5)]),
        ];
        let steps: Vec<_> = [&mut fused as &mut dyn SftStepper, &mut reference].map(|t| t.grpo(&groups)).into();
        assert_same_steps(&steps[0], &steps[1], "GRPO");
        assert_same_adapter(&fused.policy().trainable(), &reference.policy().trainable(), "after GRPO");
    }
}

/// One trainer of either policy, stepped the same way; returns each step's (loss, grad norm).
trait SftStepper {
    fn sft(&mut self, data: &[SftExample]) -> Vec<(f64, f64)>;
    fn grpo(&mut self, groups: &[RolloutGroup]) -> Vec<(f64, f64)>;
}

impl<P: Policy> SftStepper for Trainer<P> {
    fn sft(&mut self, data: &[SftExample]) -> Vec<(f64, f64)> {
        self.begin_phase(0, Phase::Sft, 0).unwrap();
        let mut steps = Vec::new();
        for _ in 0..2 {
            for mb in data.chunks(3) {
                if let Some(m) = self.sft_micro_step(mb).unwrap() {
                    assert!(m.core.applied);
                    steps.push((m.core.loss, m.core.grad_norm));
                }
            }
        }
        self.end_phase().unwrap();
        steps
    }

    fn grpo(&mut self, groups: &[RolloutGroup]) -> Vec<(f64, f64)> {
        self.begin_phase(0, Phase::Grpo, 2).unwrap();
        let mut steps = Vec::new();
        for _ in 0..2 {
            for m in self.grpo_step(groups).unwrap() {
                assert!(m.core.applied);
                assert!(m.clip_low_fraction + m.clip_high_fraction > 0.0, "the clip is exercised");
                steps.push((m.core.loss, m.core.grad_norm));
            }
        }
        self.end_phase().unwrap();
        steps
    }
}

/// A group sampled at the trainer's current adapter version: (tokens, reward, behaviour lp).
fn group(prompt: &[u32], completions: &[(&[u32], f64, f32)]) -> RolloutGroup {
    RolloutGroup {
        prompt_id: format!("{prompt:?}"),
        prompt_tokens: prompt.to_vec().into(),
        adapter_version: asrl_common::rollout::AdapterVersion::INITIAL,
        worker_id: 0,
        completions: completions
            .iter()
            .map(|(tokens, reward, lp)| ScoredCompletion {
                completion: asrl_common::sample::Completion {
                    tokens: tokens.to_vec(),
                    logprobs: vec![*lp; tokens.len()],
                    text: String::new(),
                    finish: asrl_common::sample::FinishReason::Eos,
                },
                reward: Reward { total: *reward, components: BTreeMap::new() },
            })
            .collect(),
    }
}

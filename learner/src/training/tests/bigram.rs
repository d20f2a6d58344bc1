//! A bigram policy small enough to train in a test, and the data the trainer tests feed it.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use asrl_common::config::TrainConfig;
use asrl_common::reward::Reward;
use asrl_common::rollout::{AdapterVersion, RolloutGroup, ScoredCompletion};
use asrl_common::sample::{Completion, FinishReason};

use crate::training::policy::assign_by_name;
use crate::training::{Policy, SftExample, TrainError, Trainer};

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

pub(super) fn test_config(ckpt: PathBuf) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.optimiser.lr = 0.05;
    cfg.sft.grad_accum_steps = 2;
    cfg.sft.max_seq_len = 16;
    cfg.grpo.micro_batch_size = 3;
    cfg.checkpoint.dir = ckpt;
    cfg
}

pub(super) fn sft_data() -> Vec<SftExample> {
    vec![
        SftExample::from_prompt_response(&[1, 2], &[3, 4, 5]),
        SftExample::from_prompt_response(&[2], &[6, 7]),
        SftExample::from_prompt_response(&[7, 1, 1], &[2, 0]),
        SftExample::from_prompt_response(&[4], &[5, 6, 7, 3]),
    ]
}

/// Samples `n` completions of `len` tokens from the bigram with their log-probs; reward = share
/// of tokens equal to `target`.
pub(super) fn sample_group(
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

pub(super) fn run_sft(t: &mut Trainer<Bigram>, micro_batches: usize) {
    let data = sft_data();
    for i in 0..micro_batches {
        t.sft_micro_step(std::slice::from_ref(&data[i % data.len()])).unwrap();
    }
}


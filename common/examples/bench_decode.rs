//! Decode-step timing on a model of SmolLM2-135M's shape (random weights, or --model PATH).
//! Usage: cargo run --release -p asrl-common --example bench_decode [-- MODEL]
use std::time::Instant;

use asrl_common::model::{load, Arch, Model, ModelConfig};
use candle_core::{DType, Device, Tensor};

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let model = match std::env::args().nth(1) {
        Some(p) => load(std::path::Path::new(&p), &dev, DType::F32)?.model,
        None => {
            let cfg = ModelConfig {
                arch: Arch::Llama, vocab_size: 49152, hidden_size: 576, intermediate_size: 1536,
                num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, head_dim: 64,
                rope_theta: 100000.0, rms_norm_eps: 1e-5, tie_word_embeddings: true, max_position_embeddings: 8192,
            };
            Model::random(cfg, &dev, DType::F32, 0)?
        }
    };
    let prompt: Vec<u32> = (0..43).map(|i| 100 + i).collect();
    let mut cache = model.new_cache_with_capacity(43 + 128);
    let s = Instant::now();
    model.forward_cached_last(&Tensor::new(prompt.as_slice(), &dev)?.unsqueeze(0)?, &mut cache, None)?;
    println!("prefill 43: {:.1} ms", s.elapsed().as_secs_f64() * 1e3);
    cache.repeat_batch(6)?;
    let steps = 32;
    let s = Instant::now();
    for i in 0..steps {
        let ids = Tensor::from_vec(vec![200u32 + i; 6], (6, 1), &dev)?;
        model.forward_cached_last(&ids, &mut cache, None)?;
    }
    let ms = s.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!("decode step (6 rows): {ms:.1} ms -> {:.1} tok/s", 6000.0 / ms);
    Ok(())
}

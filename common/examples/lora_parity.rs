//! Parity helper for `tests/parity/check_model.py` (not part of the product): makes a seeded
//! LoRA adapter with non-zero B for an HF model dir, saves it in PEFT format, and writes the
//! gradient of sum(log p(tokens[i] | tokens[<i])) w.r.t. every LoRA matrix.
//!
//! Usage: cargo run -p asrl-common --example lora_parity -- MODEL_DIR OUT_DIR "TEXT"

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use asrl_common::config::LoraConfig;
use asrl_common::model::{load, token_logprobs, LoraAdapter};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, out_dir, text] = args.as_slice() else {
        bail!("usage: lora_parity MODEL_DIR OUT_DIR TEXT");
    };
    let (model_dir, out_dir) = (PathBuf::from(model_dir), PathBuf::from(out_dir));
    let dev = Device::Cpu;
    let loaded = load(&model_dir, &dev, DType::F32)?;
    let cfg = LoraConfig { r: 4, alpha: 8.0, ..Default::default() };
    let adapter = LoraAdapter::new(&cfg, loaded.model.config(), &dev, 1)?;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (name, var) in adapter.vars() {
        if name.contains("lora_B") {
            let v: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-0.05f32..0.05)).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &dev)?)?;
        }
    }
    adapter.save_peft(&out_dir.join("adapter"), "tiny")?;
    let tokens = loaded.tokenizer.encode(text, false)?;
    let n = tokens.len();
    if n < 2 {
        bail!("TEXT needs at least two tokens");
    }
    let input = Tensor::new(&tokens[..n - 1], &dev)?.unsqueeze(0)?;
    let target = Tensor::new(&tokens[1..], &dev)?.unsqueeze(0)?;
    let logits = loaded.model.forward(&input, Some(&adapter))?;
    let grads = token_logprobs(&logits, &target, 1.0)?.sum_all()?.backward()?;
    let mut out = HashMap::new();
    for (name, var) in adapter.vars() {
        let g = grads.get(var.as_tensor()).with_context(|| format!("no gradient for {name}"))?;
        out.insert(name, g.clone());
    }
    candle_core::safetensors::save(&out, out_dir.join("grads.safetensors"))?;
    Ok(())
}

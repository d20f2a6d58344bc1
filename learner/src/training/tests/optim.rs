//! The optimiser's fused CPU path against its candle-op path, and a timing on a real adapter.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use asrl_common::config::LoraConfig;
use asrl_common::model::{LoraAdapter, ModelConfig};

use crate::training::optim::{clip_coefficient, grad_norm_with, AdamW, AdamWParams, OptimKernel};

use super::{assert_close, assert_scalar};

fn random_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0)).collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The trainer's step: norm of the accumulated gradients / divisor, clip, scaled update.
fn trainer_step(opt: &mut AdamW, grads: &[Tensor], kernel: OptimKernel, divisor: f64, lr: f64) -> (f64, f64) {
    let norm = grad_norm_with(grads, kernel).unwrap() / divisor;
    let coef = clip_coefficient(norm, 1.0);
    opt.step_scaled(grads, lr, coef / divisor).unwrap();
    (norm, coef)
}

#[test]
fn fused_cpu_step_equals_candle_ops_with_clipping() {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shapes: [&[usize]; 4] = [&[17, 5], &[5, 33], &[64], &[3, 4, 5]];
    let init: Vec<Vec<f32>> = shapes.iter().map(|s| random_vec(&mut rng, s.iter().product(), 1.0)).collect();
    let vars = |tag: &str| -> Vec<(String, Var)> {
        shapes
            .iter()
            .zip(&init)
            .enumerate()
            .map(|(i, (s, x))| (format!("{tag}{i}"), Var::from_vec(x.clone(), s.to_vec(), &dev).unwrap()))
            .collect()
    };
    let p = AdamWParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    let (fused_vars, ops_vars) = (vars("p"), vars("p"));
    let mut fused = AdamW::with_kernel(fused_vars.clone(), p, OptimKernel::Fused).unwrap();
    let mut ops = AdamW::with_kernel(ops_vars.clone(), p, OptimKernel::CandleOps).unwrap();
    let divisor = 7.0;
    for step in 0..6 {
        let grads: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let x = random_vec(&mut rng, s.iter().product(), 40.0);
                if i == 1 {
                    // A transposed (non-contiguous) gradient, as a matmul backward can produce.
                    Tensor::from_vec(x, (s[1], s[0]), &dev).unwrap().t().unwrap()
                } else {
                    Tensor::from_vec(x, s.to_vec(), &dev).unwrap()
                }
            })
            .collect();
        let lr = 1e-2 / (step + 1) as f64;
        let (norm_f, coef_f) = trainer_step(&mut fused, &grads, OptimKernel::Fused, divisor, lr);
        let (norm_o, coef_o) = trainer_step(&mut ops, &grads, OptimKernel::CandleOps, divisor, lr);
        assert!(coef_f < 0.5, "step {step}: clipping must be active (coefficient {coef_f})");
        assert_scalar(norm_f, norm_o, &format!("step {step} norm"));
        assert_scalar(coef_f, coef_o, &format!("step {step} clip coefficient"));
        for ((name, a), (_, b)) in fused_vars.iter().zip(&ops_vars) {
            assert_close(&flat(a.as_tensor()), &flat(b.as_tensor()), &format!("step {step} {name}"));
        }
    }
    assert_eq!(fused.step_count(), 6);
    // The moments agree too, through the checkpoint format both paths share.
    let dir = tempfile::tempdir().unwrap();
    let (fa, oa) = (dir.path().join("fused.safetensors"), dir.path().join("ops.safetensors"));
    fused.save(&fa).unwrap();
    ops.save(&oa).unwrap();
    let (fm, om) = (candle_core::safetensors::load(&fa, &dev).unwrap(), candle_core::safetensors::load(&oa, &dev).unwrap());
    assert_eq!(fm.len(), 2 * shapes.len() + 1);
    for (key, t) in &fm {
        if t.dtype() == DType::F32 {
            assert_close(&flat(t), &flat(&om[key]), key);
        }
    }
    // Reloading fused state into a fused optimiser continues identically.
    let mut resumed = AdamW::with_kernel(vars("p"), p, OptimKernel::Fused).unwrap();
    resumed.load(&fa).unwrap();
    assert_eq!(resumed.step_count(), 6);
}

#[test]
#[ignore = "timing of one optimiser step on SmolLM2-135M's r=32 adapter; run with --nocapture"]
fn optimiser_step_timing_smollm2_r32() {
    let dev = Device::Cpu;
    let lora = LoraConfig { r: 32, alpha: 64.0, ..Default::default() };
    let adapter = LoraAdapter::new(&lora, &ModelConfig::smollm2_135m(), &dev, 0).unwrap();
    let vars = adapter.vars();
    let n: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let p = AdamWParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let grads: Vec<Tensor> = vars
        .iter()
        .map(|(_, v)| Tensor::from_vec(random_vec(&mut rng, v.elem_count(), 1.0), v.shape(), &dev).unwrap())
        .collect();
    let reps = 5;
    for kernel in [OptimKernel::Fused, OptimKernel::CandleOps] {
        let mut opt = AdamW::with_kernel(vars.clone(), p, kernel).unwrap();
        let start = Instant::now();
        for _ in 0..reps {
            let (norm, _) = trainer_step(&mut opt, &grads, kernel, 256.0, 1e-4);
            assert!(norm.is_finite());
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
        println!("{kernel:?}: {} tensors, {n} params: norm + clip + step {ms:.1} ms", vars.len());
    }
}

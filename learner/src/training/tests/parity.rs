//! Losses, advantages and AdamW against the torch/TRL fixtures in tests/fixtures/training.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;

use asrl_common::config::{AdvantageScaling, LossAggregation};
use asrl_common::model::token_logprobs;

use crate::training::advantage::compute_advantages;
use crate::training::losses::{grpo_loss, sft_loss, AggregationTotals, GrpoBatch, GrpoLossParams};
use crate::training::optim::{clip_coefficient, grad_norm_with, AdamW, AdamWParams, OptimKernel};
use super::{assert_close, assert_scalar};

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
    for kernel in [OptimKernel::Fused, OptimKernel::CandleOps] {
        adamw_and_clipping_match_torch_with(kernel);
    }
}

fn adamw_and_clipping_match_torch_with(kernel: OptimKernel) {
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
    let mut opt = AdamW::with_kernel(vars.clone(), p, kernel).unwrap();
    for (k, step) in f["steps"].as_array().unwrap().iter().enumerate() {
        let grads: Vec<Tensor> = step["grads"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&shapes)
            .map(|(g, s)| Tensor::from_vec(floats(g), s.clone(), &dev).unwrap())
            .collect();
        let norm = grad_norm_with(&grads, kernel).unwrap();
        assert_scalar(norm, step["pre_clip_norm"].as_f64().unwrap(), &format!("{kernel:?} step {k} norm"));
        let coef = clip_coefficient(norm, f["max_grad_norm"].as_f64().unwrap());
        opt.step_scaled(&grads, f["lr"].as_f64().unwrap(), coef).unwrap();
        for ((name, var), want) in vars.iter().zip(step["params"].as_array().unwrap()) {
            let got = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_close(&got, &floats(want), &format!("{kernel:?} step {k} {name}"));
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

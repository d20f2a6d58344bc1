//! AdamW with inspectable state (torch.optim.AdamW semantics) and global grad-norm clipping.
//!
//! candle_nn's AdamW keeps its moments private, so a checkpoint could not resume it exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};

use super::TrainError;

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// One optimiser over a fixed, named list of `Var`s.
pub struct AdamW {
    params: AdamWParams,
    step: u64,
    slots: Vec<Slot>,
}

const STEP_KEY: &str = "__step__";

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self, TrainError> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
                let v = m.clone();
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(Self { params, step: 0, slots })
    }

    /// Optimiser steps taken so far (torch's `state['step']`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.slots.iter().map(|s| &s.var)
    }

    /// One AdamW update; `grads[i]` belongs to the i-th var. torch order: decay, moments,
    /// bias-corrected step `lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<(), TrainError> {
        if grads.len() != self.slots.len() {
            return Err(TrainError::Shape(format!(
                "AdamW::step: {} gradients for {} parameters",
                grads.len(),
                self.slots.len()
            )));
        }
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2_sqrt = (1.0 - p.beta2.powi(t)).sqrt();
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            let g = g.to_dtype(DType::F32)?;
            slot.m = ((&slot.m * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            slot.v = ((&slot.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((slot.v.sqrt()? / bc2_sqrt)? + p.eps)?;
            let update = ((&slot.m / denom)? * (lr / bc1))?;
            let w = slot.var.as_tensor().detach();
            let w = if p.weight_decay != 0.0 { (w * (1.0 - lr * p.weight_decay))? } else { w };
            slot.var.set(&(w - update)?)?;
        }
        Ok(())
    }

    /// Moments (`m.<name>`, `v.<name>`) and the step count, as safetensors.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            map.insert(format!("m.{}", s.name), s.m.clone());
            map.insert(format!("v.{}", s.name), s.v.clone());
        }
        let dev = self.slots.first().map(|s| s.m.device().clone()).unwrap_or(candle_core::Device::Cpu);
        map.insert(STEP_KEY.into(), Tensor::new(&[self.step as i64], &dev)?);
        candle_core::safetensors::save(&map, path)
            .map_err(|source| TrainError::Tensors { path: path.to_path_buf(), source })
    }

    /// Restores state written by [`AdamW::save`]; every parameter must be present with its shape.
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let dev = self.slots.first().map(|s| s.m.device().clone()).unwrap_or(candle_core::Device::Cpu);
        let mut map = candle_core::safetensors::load(path, &dev)
            .map_err(|source| TrainError::Tensors { path: path.to_path_buf(), source })?;
        let bad = |what: String| TrainError::checkpoint(path, what);
        let step = map.remove(STEP_KEY).ok_or_else(|| bad(format!("missing tensor {STEP_KEY}")))?;
        let step = step.to_vec1::<i64>()?.first().copied().ok_or_else(|| bad("empty step".into()))?;
        for s in &mut self.slots {
            for (key, dst) in [(format!("m.{}", s.name), &mut s.m), (format!("v.{}", s.name), &mut s.v)] {
                let t = map.remove(&key).ok_or_else(|| bad(format!("missing tensor {key}")))?;
                if t.dims() != dst.dims() {
                    return Err(bad(format!("tensor {key} has shape {:?}, expected {:?}", t.dims(), dst.dims())));
                }
                *dst = t.to_dtype(DType::F32)?;
            }
        }
        if let Some(extra) = map.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        self.step = u64::try_from(step).map_err(|_| bad(format!("negative step {step}")))?;
        Ok(())
    }
}

/// Global L2 norm of all gradients (f64 accumulation). Non-finite when any element is.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64, TrainError> {
    let mut sq = 0.0f64;
    for g in grads {
        sq += f64::from(g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(sq.sqrt())
}

/// torch `clip_grad_norm_`: scales every gradient by min(1, max_norm / (norm + 1e-6)).
/// Returns the pre-clip norm. `max_norm <= 0` only measures.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64, TrainError> {
    let norm = grad_norm(grads)?;
    if max_norm > 0.0 && norm.is_finite() {
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
}

//! AdamW with inspectable state (torch.optim.AdamW semantics) and global grad-norm clipping.
//!
//! candle_nn's AdamW keeps its moments private, so a checkpoint could not resume it exactly.
//!
//! A step costs one host sync (the global gradient norm) and one pass per parameter: CPU f32
//! parameters keep their moments in host memory and are updated in place by a slice loop
//! ([`cpu`]); other devices and dtypes use candle ops, which queue without syncing. The
//! accumulation divisor and the clip coefficient reach the update as one gradient scale, so
//! the gradients themselves are never rewritten.

mod cpu;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::TrainError;

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// How the optimiser computes: fused slice loops where the tensor allows, or candle ops only
/// (the reference the fused path is tested against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimKernel {
    #[default]
    Fused,
    CandleOps,
}

/// First and second moments of one parameter.
enum Moments {
    /// A CPU f32 contiguous parameter: updated in place together with these.
    Host { m: Vec<f32>, v: Vec<f32> },
    Tensors { m: Tensor, v: Tensor },
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
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
        Self::with_kernel(vars, params, OptimKernel::Fused)
    }

    pub fn with_kernel(vars: Vec<(String, Var)>, params: AdamWParams, kernel: OptimKernel) -> Result<Self, TrainError> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let moments = if kernel == OptimKernel::Fused && cpu::fusable(var.as_tensor()) {
                    Moments::Host { m: vec![0.0; var.elem_count()], v: vec![0.0; var.elem_count()] }
                } else {
                    let zeros = || Tensor::zeros(var.shape(), DType::F32, var.device());
                    Moments::Tensors { m: zeros()?, v: zeros()? }
                };
                Ok(Slot { name, var, moments })
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

    /// One AdamW update; `grads[i]` belongs to the i-th var.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<(), TrainError> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// One AdamW update on the gradients `grad_scale · grads[i]` (the accumulation divisor and
    /// the clip coefficient, applied in the same pass). torch order: decoupled decay, moments,
    /// bias-corrected step `lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)`.
    pub fn step_scaled(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        if grads.len() != self.slots.len() {
            return Err(TrainError::Shape(format!(
                "AdamW::step: {} gradients for {} parameters",
                grads.len(),
                self.slots.len()
            )));
        }
        for (slot, g) in self.slots.iter().zip(grads) {
            if g.dims() != slot.var.dims() {
                return Err(TrainError::Shape(format!(
                    "AdamW::step: gradient of {} has shape {:?}, the parameter {:?}",
                    slot.name,
                    g.dims(),
                    slot.var.dims()
                )));
            }
        }
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2_sqrt = (1.0 - p.beta2.powi(t)).sqrt();
        let decay = 1.0 - lr * p.weight_decay;
        let consts = cpu::StepConsts {
            grad_scale: grad_scale as f32,
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            one_minus_beta1: (1.0 - p.beta1) as f32,
            one_minus_beta2: (1.0 - p.beta2) as f32,
            bc2_sqrt: bc2_sqrt as f32,
            eps: p.eps as f32,
            step_size: (lr / bc1) as f32,
            decay: decay as f32,
        };
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            match &mut slot.moments {
                Moments::Host { m, v } => cpu::adamw_update(slot.var.as_tensor(), g, m, v, consts)?,
                Moments::Tensors { m, v } => {
                    let mut g = g.to_dtype(DType::F32)?;
                    if grad_scale != 1.0 {
                        g = (g * grad_scale)?;
                    }
                    *m = ((&*m * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
                    *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2_sqrt)? + p.eps)?;
                    let update = ((&*m / denom)? * (lr / bc1))?;
                    let w = slot.var.as_tensor().detach().to_dtype(DType::F32)?;
                    let w = if p.weight_decay != 0.0 { (w * decay)? } else { w };
                    slot.var.set(&(w - update)?.to_dtype(slot.var.dtype())?)?;
                }
            }
        }
        Ok(())
    }

    fn device(&self) -> Device {
        self.slots.first().map(|s| s.var.device().clone()).unwrap_or(Device::Cpu)
    }

    /// Moments (`m.<name>`, `v.<name>`) and the step count, as safetensors.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            let (m, v) = match &s.moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, s.var.shape(), &Device::Cpu)?,
                    Tensor::from_slice(v, s.var.shape(), &Device::Cpu)?,
                ),
                Moments::Tensors { m, v } => (m.clone(), v.clone()),
            };
            map.insert(format!("m.{}", s.name), m);
            map.insert(format!("v.{}", s.name), v);
        }
        map.insert(STEP_KEY.into(), Tensor::new(&[self.step as i64], &self.device())?);
        candle_core::safetensors::save(&map, path)
            .map_err(|source| TrainError::Tensors { path: path.to_path_buf(), source })
    }

    /// Restores state written by [`AdamW::save`]; every parameter must be present with its shape.
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let mut map = candle_core::safetensors::load(path, &self.device())
            .map_err(|source| TrainError::Tensors { path: path.to_path_buf(), source })?;
        let bad = |what: String| TrainError::checkpoint(path, what);
        let step = map.remove(STEP_KEY).ok_or_else(|| bad(format!("missing tensor {STEP_KEY}")))?;
        let step = step.to_vec1::<i64>()?.first().copied().ok_or_else(|| bad("empty step".into()))?;
        let mut take = |key: String, dims: &[usize]| -> Result<Tensor, TrainError> {
            let t = map.remove(&key).ok_or_else(|| bad(format!("missing tensor {key}")))?;
            if t.dims() != dims {
                return Err(bad(format!("tensor {key} has shape {:?}, expected {dims:?}", t.dims())));
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let mut restored = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let m = take(format!("m.{}", s.name), s.var.dims())?;
            let v = take(format!("v.{}", s.name), s.var.dims())?;
            restored.push(match s.moments {
                Moments::Host { .. } => {
                    Moments::Host { m: m.flatten_all()?.to_vec1()?, v: v.flatten_all()?.to_vec1()? }
                }
                Moments::Tensors { .. } => Moments::Tensors { m, v },
            });
        }
        if let Some(extra) = map.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        for (s, moments) in self.slots.iter_mut().zip(restored) {
            s.moments = moments;
        }
        self.step = u64::try_from(step).map_err(|_| bad(format!("negative step {step}")))?;
        Ok(())
    }
}

/// Global L2 norm of all gradients (f64 accumulation), with one host sync. Non-finite when any
/// element is.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64, TrainError> {
    grad_norm_with(grads, OptimKernel::Fused)
}

/// [`grad_norm`] with CPU f32 gradients summed by a slice loop (`Fused`) or by candle ops.
pub fn grad_norm_with(grads: &[Tensor], kernel: OptimKernel) -> Result<f64, TrainError> {
    let mut host = 0f64;
    let mut queued = Vec::new();
    for g in grads {
        let summed = match kernel {
            OptimKernel::Fused => cpu::sum_squares(g)?,
            OptimKernel::CandleOps => None,
        };
        match summed {
            Some(s) => host += s,
            None => queued.push(g.to_dtype(DType::F32)?.sqr()?.sum_all()?),
        }
    }
    if !queued.is_empty() {
        host += f64::from(Tensor::stack(&queued, 0)?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(host.sqrt())
}

/// torch `clip_grad_norm_`'s factor for gradients of global norm `norm`:
/// min(1, max_norm / (norm + 1e-6)); 1 when `max_norm <= 0` (measure only) or the norm is not finite.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm.is_finite() {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

//! Trainable LoRA adapters: f32 `Var` pairs (A, B) per adapted projection, PEFT-named.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dropout::DropoutMasks;
use super::{ModelConfig, ModelError};
use crate::config::{LoraConfig, LoraTarget};

/// One adapted projection: `delta(x) = scale · (x Aᵀ) Bᵀ`.
struct LoraPair {
    a: Var, // (r, in)
    b: Var, // (out, r)
}

/// LoRA matrices for every (layer, target) of a [`LoraConfig`], keyed by PEFT names
/// (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`).
pub struct LoraAdapter {
    cfg: LoraConfig,
    layers: Vec<BTreeMap<LoraTarget, LoraPair>>,
    /// Dropout on the LoRA input is applied only while training (and only if `dropout > 0`).
    training: bool,
    /// Draws one seed per training forward; the masks derive from it ([`DropoutMasks`]).
    dropout_rng: Mutex<ChaCha8Rng>,
}

/// The dropout seed stream of an adapter made with `seed` (stream 1: init draws use stream 0).
fn dropout_stream(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("config", &self.cfg)
            .field("layers", &self.layers.len())
            .field("training", &self.training)
            .finish()
    }
}

/// PEFT's key for one LoRA matrix (`which` is `"A"` or `"B"`).
pub fn peft_key(layer: usize, target: LoraTarget, which: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{which}.weight",
        target.parent(),
        target.module_name()
    )
}

pub(crate) fn validate_lora_config(cfg: &LoraConfig, origin: &str) -> Result<(), ModelError> {
    if cfg.r == 0 {
        return Err(ModelError::adapter(origin, "r must be > 0"));
    }
    if !(cfg.alpha.is_finite() && cfg.alpha > 0.0) {
        return Err(ModelError::adapter(origin, format!("lora_alpha must be > 0, got {}", cfg.alpha)));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(ModelError::adapter(origin, format!("lora_dropout must be in [0, 1), got {}", cfg.dropout)));
    }
    if cfg.target_modules.is_empty() {
        return Err(ModelError::adapter(origin, "target_modules is empty"));
    }
    Ok(())
}

fn targets(cfg: &LoraConfig) -> Vec<LoraTarget> {
    let mut t = cfg.target_modules.clone();
    t.sort();
    t.dedup();
    t
}

impl LoraAdapter {
    /// PEFT init: A ~ kaiming_uniform(a=√5) = U(-1/√in, 1/√in), B = 0. Deterministic for `seed`.
    pub fn new(cfg: &LoraConfig, model: &ModelConfig, device: &Device, seed: u64) -> Result<Self, ModelError> {
        validate_lora_config(cfg, "lora config")?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(model.num_hidden_layers);
        for _ in 0..model.num_hidden_layers {
            let mut m = BTreeMap::new();
            for t in targets(cfg) {
                let (out, inp) = model.projection_shape(t);
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..cfg.r * inp).map(|_| rng.random_range(-bound..bound) as f32).collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.r, inp), device)?)?;
                let b = Var::zeros((out, cfg.r), DType::F32, device)?;
                m.insert(t, LoraPair { a, b });
            }
            layers.push(m);
        }
        Ok(Self { cfg: cfg.clone(), layers, training: false, dropout_rng: Mutex::new(dropout_stream(seed)) })
    }

    /// Builds an adapter from PEFT-named tensors (any float dtype; stored as f32 `Var`s).
    /// Every expected key must be present with its exact shape and no other key may appear.
    pub(crate) fn from_named_tensors(
        tensors: HashMap<String, Tensor>,
        cfg: &LoraConfig,
        model: &ModelConfig,
        device: &Device,
        origin: &str,
    ) -> Result<Self, ModelError> {
        validate_lora_config(cfg, origin)?;
        // PEFT drops the adapter name (`.default`) on save, but accept it from older writers.
        let mut tensors: HashMap<String, Tensor> =
            tensors.into_iter().map(|(k, v)| (k.replace(".default.weight", ".weight"), v)).collect();
        let mut take = |key: String, shape: (usize, usize)| -> Result<Var, ModelError> {
            let t = tensors
                .remove(&key)
                .ok_or_else(|| ModelError::adapter(origin, format!("missing tensor `{key}`")))?;
            if t.dims() != [shape.0, shape.1] {
                return Err(ModelError::adapter(
                    origin,
                    format!("tensor `{key}` has shape {:?}, the base model needs {:?}", t.dims(), [shape.0, shape.1]),
                ));
            }
            Ok(Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?)
        };
        let mut layers = Vec::with_capacity(model.num_hidden_layers);
        for i in 0..model.num_hidden_layers {
            let mut m = BTreeMap::new();
            for t in targets(cfg) {
                let (out, inp) = model.projection_shape(t);
                let a = take(peft_key(i, t, "A"), (cfg.r, inp))?;
                let b = take(peft_key(i, t, "B"), (out, cfg.r))?;
                m.insert(t, LoraPair { a, b });
            }
            layers.push(m);
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(ModelError::adapter(
                origin,
                format!("unexpected tensor `{extra}` (not a LoRA matrix of this base model and config)"),
            ));
        }
        Ok(Self { cfg: cfg.clone(), layers, training: false, dropout_rng: Mutex::new(dropout_stream(0)) })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    /// Every trainable matrix with its PEFT name, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut v = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (t, p) in layer {
                v.push((peft_key(i, *t, "A"), p.a.clone()));
                v.push((peft_key(i, *t, "B"), p.b.clone()));
            }
        }
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    pub fn num_parameters(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Turns LoRA-input dropout on (training) or off (evaluation, sampling). Off by default.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Restarts the dropout seed stream: the forwards that follow draw the same masks as after
    /// any other call with this `seed` (for reproducible or resumed training, and tests).
    pub fn seed_dropout(&self, seed: u64) {
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) = dropout_stream(seed);
    }

    /// The masks of one forward pass when dropout is active (training and `dropout > 0`);
    /// each call advances the seed stream.
    pub(crate) fn next_dropout(&self) -> Option<DropoutMasks> {
        if !(self.training && self.cfg.dropout > 0.0) {
            return None;
        }
        let mut rng = self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner());
        Some(DropoutMasks::draw(&mut rng, self.cfg.dropout))
    }

    /// Projection `target`'s (A, B) in layer `layer`, when adapted.
    pub(crate) fn pair(&self, layer: usize, target: LoraTarget) -> Option<(&Var, &Var)> {
        self.layers.get(layer).and_then(|l| l.get(&target)).map(|p| (&p.a, &p.b))
    }

    /// alpha / r.
    pub(crate) fn scale(&self) -> f64 {
        self.cfg.scale()
    }

    /// `scale · (x Aᵀ) Bᵀ` for `x` of shape (n, in), or `None` when `target` is not adapted.
    /// Computed in f32 whatever the base dtype, returned in `x`'s dtype. `dropout`: this
    /// forward's masks and the sequence length `x`'s rows are laid out in.
    pub(crate) fn delta(
        &self,
        layer: usize,
        target: LoraTarget,
        x: &Tensor,
        dropout: Option<(&DropoutMasks, usize)>,
    ) -> Result<Option<Tensor>, ModelError> {
        let Some(p) = self.layers.get(layer).and_then(|l| l.get(&target)) else { return Ok(None) };
        let mut xf = x.to_dtype(DType::F32)?;
        if let Some((masks, t)) = dropout {
            let (n, width) = xf.dims2()?;
            xf = (xf * masks.mask(layer, target, t, n, width, x.device())?)?;
        }
        let y = xf.matmul(&p.a.as_tensor().t()?)?.matmul(&p.b.as_tensor().t()?)?;
        Ok(Some((y * self.cfg.scale())?.to_dtype(x.dtype())?))
    }

    /// `scale · B A` (out, in) in f32, for merging.
    pub(crate) fn merged_delta(&self, layer: usize, target: LoraTarget) -> Result<Option<Tensor>, ModelError> {
        let Some(p) = self.layers.get(layer).and_then(|l| l.get(&target)) else { return Ok(None) };
        Ok(Some((p.b.as_tensor().matmul(p.a.as_tensor())? * self.cfg.scale())?))
    }

    /// Errors unless this adapter was made for `model`'s shape (layer count and projection sizes).
    pub(crate) fn check_fits(&self, model: &ModelConfig) -> Result<(), ModelError> {
        if self.layers.len() != model.num_hidden_layers {
            return Err(ModelError::adapter(
                "adapter",
                format!("has {} layers, the base model has {}", self.layers.len(), model.num_hidden_layers),
            ));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            for (t, p) in layer {
                let (out, inp) = model.projection_shape(*t);
                if p.a.dims() != [self.cfg.r, inp] || p.b.dims() != [out, self.cfg.r] {
                    return Err(ModelError::adapter(
                        "adapter",
                        format!(
                            "`{}` / `{}` have shapes {:?} / {:?}, the base model needs {:?} / {:?}",
                            peft_key(i, *t, "A"),
                            peft_key(i, *t, "B"),
                            p.a.dims(),
                            p.b.dims(),
                            [self.cfg.r, inp],
                            [out, self.cfg.r]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

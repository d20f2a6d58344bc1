//! Randomly initialised weights, for tests and benchmarks without a checkpoint.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::transformer::expected_tensor_shapes;
use super::{Model, ModelConfig, ModelError};

/// HF-named tensors for `cfg`: projections/embeddings ~ U(-0.035, 0.035) (std ≈ 0.02, like HF's
/// init), norm weights 1 ± 0.1 so that they matter in tests. Deterministic for `seed`.
pub fn random_tensors(cfg: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in expected_tensor_shapes(cfg) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if shape.len() == 1 {
            (0..n).map(|_| 1.0 + rng.random_range(-0.1f32..0.1)).collect()
        } else {
            (0..n).map(|_| rng.random_range(-0.035f32..0.035)).collect()
        };
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

impl Model {
    /// A model of shape `cfg` with [`random_tensors`] weights.
    pub fn random(cfg: ModelConfig, device: &Device, dtype: DType, seed: u64) -> Result<Model, ModelError> {
        let tensors = random_tensors(&cfg, seed)?;
        Model::from_tensors_named(cfg, tensors, device, dtype, "random init")
    }
}

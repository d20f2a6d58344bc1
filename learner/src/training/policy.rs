//! What the trainer needs from a model: logits with and without the adapter, and the adapter's
//! trainable `Var`s. Keeps the training math testable on tiny hand-made policies.

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use super::TrainError;

pub trait Policy {
    /// Logits (batch, seq, vocab) f32 for right-padded `input_ids` (batch, seq) u32.
    /// `adapter = false` is the frozen reference policy (GRPO's KL term).
    fn logits(&self, input_ids: &Tensor, adapter: bool) -> Result<Tensor, TrainError>;
    fn device(&self) -> &Device;
    fn vocab_size(&self) -> usize;
    /// The trainable parameters, sorted by name (optimiser slots follow this order).
    fn trainable(&self) -> Vec<(String, Var)>;
    /// Writes the adapter to `dir` (PEFT layout for LoRA).
    fn save_adapter(&self, dir: &Path) -> Result<(), TrainError>;
    /// Overwrites the trainable `Var`s in place with an adapter written by `save_adapter`, so the
    /// optimiser's references stay valid.
    fn load_adapter(&self, dir: &Path) -> Result<(), TrainError>;
}

/// Copies `loaded` tensors into `vars` by name; every var must be present with its shape.
pub fn assign_by_name(
    vars: &[(String, Var)],
    mut loaded: std::collections::HashMap<String, Tensor>,
    source: &Path,
) -> Result<(), TrainError> {
    for (name, var) in vars {
        let t = loaded.remove(name).ok_or_else(|| TrainError::checkpoint(source, format!("missing tensor {name}")))?;
        if t.dims() != var.dims() {
            return Err(TrainError::checkpoint(
                source,
                format!("tensor {name} has shape {:?}, expected {:?}", t.dims(), var.dims()),
            ));
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

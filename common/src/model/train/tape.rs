//! The tape a training forward leaves behind, and the backward that consumes it.

use candle_core::{DType, Tensor};

use super::layer::{self, HeadSaved, LayerSaved};
use super::plan::Plan;
use crate::model::ModelError;

/// What one layer left for the backward.
pub(super) enum LayerTape {
    Saved(Box<LayerSaved>),
    /// Checkpointed: the layer input; the forward is replayed (saving) in the backward.
    Input(Tensor),
}

/// The saved state of one [`Model::train_forward`](crate::model::Model::train_forward),
/// consumed by [`Tape::backward`]. Owns what it needs (the model's tensors are shared, not
/// copied), so it borrows nothing.
pub struct Tape {
    pub(super) plan: Plan,
    /// Index = layer; popped from the top in the backward.
    pub(super) layers: Vec<LayerTape>,
    /// `None` when the batch scores nothing.
    pub(super) head: Option<HeadSaved>,
    pub(super) dense_dims: (usize, usize),
    pub(super) dense_index: Tensor,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("layers", &self.layers.len())
            .field("saved_layers", &self.saved_layers())
            .field("dense_dims", &self.dense_dims)
            .finish()
    }
}

impl Tape {
    /// Layers kept fully saved (the others are checkpointed).
    pub fn saved_layers(&self) -> usize {
        self.layers.iter().filter(|l| matches!(l, LayerTape::Saved(_))).count()
    }

    /// Gradients of every LoRA matrix for `dlogprobs`, the gradient of the loss with respect to
    /// the (b, t) log-probs `train_forward` returned (any float dtype; unscored positions are
    /// ignored). Runs layer by layer from the top; each layer's saved tensors are freed as soon
    /// as its backward is done. No gradient is formed for frozen weights or the embedding.
    pub fn backward(self, dlogprobs: &Tensor) -> Result<LoraGrads, ModelError> {
        asrl_ops::on_pool(|| self.backward_here(dlogprobs))
    }

    fn backward_here(self, dlogprobs: &Tensor) -> Result<LoraGrads, ModelError> {
        let Tape { plan, mut layers, head, dense_dims, dense_index } = self;
        if dlogprobs.dims() != [dense_dims.0, dense_dims.1] {
            return Err(ModelError::Input(format!(
                "log-prob gradient has shape {:?}, the log-probs were {:?}",
                dlogprobs.dims(),
                [dense_dims.0, dense_dims.1]
            )));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; plan.var_names.len()];
        if let Some(head) = head {
            let dlp = dlogprobs.to_dtype(DType::F32)?.flatten_all()?.index_select(&dense_index, 0)?;
            let mut dx = layer::head_backward(&plan, head, &dlp)?;
            while let Some(entry) = layers.pop() {
                let i = layers.len();
                let saved = match entry {
                    LayerTape::Saved(s) => *s,
                    LayerTape::Input(x) => layer::forward(&plan, i, &x, true)?.1.expect("saving forward returns saved"),
                };
                match layer::backward(&plan, i, saved, dx, i > 0, &mut grads)? {
                    Some(d) => dx = d,
                    None => break,
                }
            }
        }
        let device = &plan.model.device;
        let grads = grads
            .into_iter()
            .zip(&plan.var_shapes)
            .map(|(g, shape)| match g {
                Some(g) => Ok(g),
                None => Tensor::zeros(shape.as_slice(), DType::F32, device),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LoraGrads { names: plan.var_names, grads })
    }
}

/// One f32 gradient per adapter `Var`, in the order of
/// [`LoraAdapter::vars`](crate::model::LoraAdapter::vars) (sorted PEFT names), so an optimiser
/// that keeps its slots in that order can add them by index.
#[derive(Debug, Clone)]
pub struct LoraGrads {
    names: Vec<String>,
    grads: Vec<Tensor>,
}

impl LoraGrads {
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The gradient of `vars()[index]`.
    pub fn get(&self, index: usize) -> Option<&Tensor> {
        self.grads.get(index)
    }

    /// The PEFT names, in `vars()` order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// (name, gradient) in `vars()` order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.grads)
    }

    pub fn into_tensors(self) -> Vec<Tensor> {
        self.grads
    }
}

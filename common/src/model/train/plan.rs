//! Everything a forward (and its replay in the backward) reads besides activations: the frozen
//! weights, the adapter's matrices as plain tensors, this pass's dropout seed, the batch layout
//! and the RoPE tables.

use std::collections::HashMap;
use std::sync::Arc;

use asrl_ops::attention::RowGather;
use asrl_ops::lora_linear::{Lora, PackedProjection};
use asrl_ops::rope::RopeTables;
use candle_core::Tensor;

use super::batch::ScoringBatch;
use super::packing::PackedLayers;
use crate::config::LoraTarget;
use crate::model::dropout::DropoutMasks;
use crate::model::weights::Stack;
use crate::model::{peft_key, LoraAdapter, Model, ModelError};

/// One adapted projection: its op-side pair and the indices of A and B in
/// [`LoraAdapter::vars`].
#[derive(Clone)]
struct Pair {
    lora: Lora,
    a_index: usize,
    b_index: usize,
}

pub(super) struct Plan {
    /// A cheap clone (reference-counted tensors), so a tape outlives no borrow.
    pub model: Model,
    /// Per layer, indexed like `LoraTarget::ALL`.
    pairs: Vec<[Option<Pair>; 7]>,
    /// Names and shapes of the adapter's vars, in `vars()` order.
    pub var_names: Vec<String>,
    pub var_shapes: Vec<Vec<usize>>,
    pub dropout: Option<DropoutMasks>,
    pub rope: RopeTables,
    /// Rows and forward width; `lens` are the positions each row's forward needs.
    pub b: usize,
    pub t: usize,
    pub lens: Vec<usize>,
    /// (b·t) u32: the forward's input ids.
    input: Tensor,
    /// Set when the batch's shared prompts run once (one packed row): attention's rows.
    pub attention_rows: Option<RowGather>,
    pub forward_index: Tensor,
    pub targets: Tensor,
    pub temperature: f64,
    /// The frozen projections packed for the CPU kernel, when this pass uses them.
    pub packed: Option<Arc<PackedLayers>>,
}

impl Plan {
    pub fn new(
        model: &Model,
        batch: &ScoringBatch,
        adapter: Option<&LoraAdapter>,
        dropout: Option<DropoutMasks>,
        temperature: f64,
    ) -> Result<Self, ModelError> {
        let cfg = &model.cfg;
        if batch.max_id() as usize >= cfg.vocab_size {
            return Err(ModelError::Input(format!(
                "token id {} is out of the vocabulary (size {})",
                batch.max_id(),
                cfg.vocab_size
            )));
        }
        if !batch.ids().device().same_device(&model.device) {
            return Err(ModelError::Input(format!(
                "scoring batch is on {:?}, the model on {:?}",
                batch.ids().device(),
                model.device
            )));
        }
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(ModelError::Input(format!("temperature must be >= 0, got {temperature}")));
        }
        let mut pairs: Vec<[Option<Pair>; 7]> = (0..cfg.num_hidden_layers).map(|_| Default::default()).collect();
        let (mut var_names, mut var_shapes) = (Vec::new(), Vec::new());
        if let Some(a) = adapter {
            a.check_fits(cfg)?;
            let vars = a.vars();
            let index: HashMap<&str, usize> = vars.iter().enumerate().map(|(k, (n, _))| (n.as_str(), k)).collect();
            for (i, layer) in pairs.iter_mut().enumerate() {
                for t in LoraTarget::ALL {
                    let Some((va, vb)) = a.pair(i, t) else { continue };
                    // Detached: the ops must not record a candle graph on the adapter's Vars.
                    let lora = Lora { a: va.as_tensor().detach(), b: vb.as_tensor().detach(), scale: a.scale() };
                    let (a_index, b_index) = (index[peft_key(i, t, "A").as_str()], index[peft_key(i, t, "B").as_str()]);
                    layer[t as usize] = Some(Pair { lora, a_index, b_index });
                }
            }
            var_shapes = vars.iter().map(|(_, v)| v.dims().to_vec()).collect();
            var_names = vars.into_iter().map(|(n, _)| n).collect();
        }
        let shared = batch.shared_layout(dropout.is_some());
        let (b, t, lens, input, forward_index, (cos, sin)) = match shared {
            Some(s) => {
                let n = s.tokens();
                (1, n, vec![n], s.input.clone(), s.forward_index.clone(), model.rope_at(s.positions.iter().copied())?)
            }
            None => {
                let t = batch.forward_t();
                let lens = batch.forward_lens().to_vec();
                (batch.dims().0, t, lens, batch.input().clone(), batch.forward_index().clone(), model.rope_tables_f32(0, t)?)
            }
        };
        Ok(Plan {
            model: model.clone(),
            pairs,
            var_names,
            var_shapes,
            dropout,
            rope: RopeTables::new(&cos, &sin)?,
            b,
            t,
            lens,
            input,
            attention_rows: shared.map(|s| s.rows.clone()),
            forward_index,
            targets: batch.targets().clone(),
            // T = 0 (greedy sampling) is scored at T = 1, like the sampler's log-probs.
            temperature: if temperature == 0.0 { 1.0 } else { temperature },
            packed: None,
        })
    }

    /// Layer `layer`'s stacked projection `s` packed for the CPU kernel, when this pass uses them.
    pub fn packed(&self, layer: usize, s: Stack) -> Option<Arc<PackedProjection>> {
        self.packed.as_ref().map(|p| p[layer][s.index()].clone())
    }

    pub fn lora(&self, layer: usize, t: LoraTarget) -> Option<&Lora> {
        self.pairs[layer][t as usize].as_ref().map(|p| &p.lora)
    }

    /// Indices of (A, B) in [`LoraAdapter::vars`] order.
    pub fn var_index(&self, layer: usize, t: LoraTarget) -> Option<(usize, usize)> {
        self.pairs[layer][t as usize].as_ref().map(|p| (p.a_index, p.b_index))
    }

    /// This pass's dropout mask for the LoRA input `x` (b·t, in) of an adapted projection.
    pub fn mask(&self, layer: usize, t: LoraTarget, x: &Tensor) -> Result<Option<Tensor>, ModelError> {
        match (&self.dropout, self.lora(layer, t)) {
            (Some(d), Some(_)) => {
                let (n, width) = x.dims2()?;
                Ok(Some(d.mask(layer, t, self.t, n, width, x.device())?))
            }
            _ => Ok(None),
        }
    }

    /// (b·t, hidden) embeddings of the forward's input ids.
    pub fn embed(&self) -> Result<Tensor, ModelError> {
        Ok(self.model.embed.index_select(&self.input, 0)?)
    }

    /// Tokens the forward runs on, and the (row × width) slots attention runs on.
    pub fn tokens(&self) -> (usize, usize) {
        let n = self.b * self.t;
        (n, self.attention_rows.as_ref().map_or(n, RowGather::slots))
    }
}

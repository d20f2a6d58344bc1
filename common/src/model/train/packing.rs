//! Frozen projection weights packed once for the CPU product kernel
//! (`asrl_ops::lora_linear::PackedProjection`): the fused LoRA linear then skips the copy of W
//! into the kernel's layout that each of its products with W otherwise makes (two per
//! projection per training step, forward and backward; ~5 % of a SmolLM2 step at 256 tokens).
//! The price is memory: the copies hold every projection twice more (the forward's and the
//! backward's layout), +810 MiB at SmolLM2-135M's shape in f32, +3.3 GiB at Qwen3-0.6B's.

use std::sync::{Arc, Mutex};

use asrl_ops::lora_linear::PackedProjection;
use candle_core::DType;

use super::Checkpointing;
use crate::model::weights::Stack;
use crate::model::{Model, ModelConfig, ModelError};

/// When the training forward uses packed copies of the frozen projection weights
/// (`engine.weight_packing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum WeightPacking {
    /// Never; copies made earlier are dropped.
    Off,
    /// Always (CPU f32 models on a CPU with AVX2 and FMA; elsewhere there is nothing to pack).
    On,
    /// While memory is not short: with checkpointing `Off`; with `Auto`, while every batch so
    /// far had every layer keep its activations and those plus the copies fit the budget; never
    /// with `On`. The first batch that does not fit drops the copies, and this model packs no
    /// more under `Auto` (no re-packing, ~1 s at SmolLM2's size, each time batches alternate).
    #[default]
    Auto,
}

/// Per layer, per stacked projection in [`Stack::ALL`] order.
pub(crate) type PackedLayers = Vec<[Arc<PackedProjection>; 4]>;

/// A model's packed copies, made on first use and shared by its clones (weights never change in
/// place; [`Model::merge`] gives the merged model a fresh cache).
#[derive(Clone, Default)]
pub(crate) struct PackedCache(Arc<Mutex<CacheState>>);

#[derive(Default)]
struct CacheState {
    layers: Option<Arc<PackedLayers>>,
    /// `Auto` found a batch that did not fit: it packs no more.
    auto_gave_up: bool,
}

impl PackedCache {
    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The copies, if made.
    pub(crate) fn get(&self) -> Option<Arc<PackedLayers>> {
        self.state().layers.clone()
    }

    /// The copies, made now if needed; `None` when the model's weights cannot be packed (not
    /// CPU f32, or a CPU without the kernel).
    fn ensure(&self, model: &Model) -> Result<Option<Arc<PackedLayers>>, ModelError> {
        if let Some(layers) = self.get() {
            return Ok(Some(layers));
        }
        // Packed outside the lock: packing runs rayon tasks, and a thread waiting on them may
        // pick up another task that asks for the lock.
        let made = pack(model)?.map(Arc::new);
        let mut state = self.state();
        if state.layers.is_none() {
            state.layers = made;
        }
        Ok(state.layers.clone())
    }
}

fn pack(model: &Model) -> Result<Option<PackedLayers>, ModelError> {
    if !model.device.is_cpu() || model.dtype != DType::F32 {
        return Ok(None);
    }
    let mut layers = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        let mut packed = Vec::with_capacity(4);
        for s in Stack::ALL {
            let w = layer.stacked(s).contiguous()?;
            let (out, inp) = w.dims2()?;
            let data = w.flatten_all()?.to_vec1::<f32>()?;
            match PackedProjection::pack(&data, out, inp) {
                Some(p) => packed.push(Arc::new(p)),
                None => return Ok(None),
            }
        }
        layers.push(packed.try_into().expect("four stacks"));
    }
    Ok(Some(layers))
}

/// Bytes the copies take for a model of this shape (f32, rows padded to the kernel's panels).
pub fn packed_weight_bytes(cfg: &ModelConfig) -> usize {
    let pad = |rows: usize| rows.div_ceil(16) * 16;
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    // Each stack (out × in) once as W (rows out) and once as Wᵀ (rows in).
    let stack = |out: usize, inp: usize| 4 * (pad(out) * inp + pad(inp) * out);
    cfg.num_hidden_layers * (stack(q + 2 * kv, h) + stack(h, q) + stack(2 * i, h) + stack(h, i))
}

impl Model {
    /// Bytes of packed copies this model holds now (0 when none).
    pub fn packed_weight_bytes_held(&self) -> usize {
        self.packed.get().map_or(0, |p| p.iter().flat_map(|l| l.iter()).map(|s| s.bytes()).sum())
    }

    /// The packed copies this training forward uses under `packing`, given how many of its
    /// layers keep their activations (`saved_layers`, each `saved_bytes`) under `checkpointing`.
    pub(super) fn packed_for_training(
        &self,
        packing: WeightPacking,
        checkpointing: Checkpointing,
        saved_layers: usize,
        saved_bytes: usize,
    ) -> Result<Option<Arc<PackedLayers>>, ModelError> {
        let layers = self.cfg.num_hidden_layers;
        let wanted = match packing {
            WeightPacking::Off => false,
            WeightPacking::On => true,
            WeightPacking::Auto => {
                let fits = match checkpointing {
                    Checkpointing::Off => true,
                    Checkpointing::On => false,
                    Checkpointing::Auto { budget_bytes } => {
                        saved_layers == layers
                            && layers.saturating_mul(saved_bytes).saturating_add(packed_weight_bytes(&self.cfg))
                                <= budget_bytes
                    }
                };
                let mut state = self.packed.state();
                state.auto_gave_up |= !fits;
                !state.auto_gave_up
            }
        };
        if wanted {
            self.packed.ensure(self)
        } else {
            self.packed.state().layers = None;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny_config;
    use crate::model::{random_tensors, Arch};
    use candle_core::Device;

    fn model() -> Model {
        let cfg = tiny_config(Arch::Qwen3, true);
        Model::from_tensors(cfg.clone(), random_tensors(&cfg, 3).unwrap(), &Device::Cpu, DType::F32).unwrap()
    }

    #[test]
    fn a_stack_indexes_its_place_in_the_list() {
        for (i, s) in Stack::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i, "{s:?}");
        }
    }

    #[test]
    fn bytes_are_what_the_copies_hold() {
        let m = model();
        let Some(p) = m.packed_for_training(WeightPacking::On, Checkpointing::Off, 0, 0).unwrap() else { return };
        let held: usize = p.iter().flat_map(|l| l.iter()).map(|s| s.bytes()).sum();
        assert_eq!(held, packed_weight_bytes(&m.cfg));
        assert_eq!(m.packed_weight_bytes_held(), held);
    }

    /// (packing, checkpointing, saved layers, bytes per saved layer) → packed?, each on a fresh
    /// model.
    #[test]
    fn the_policy_packs_only_where_memory_allows() {
        if model().packed_for_training(WeightPacking::On, Checkpointing::Off, 0, 0).unwrap().is_none() {
            return; // no kernel on this CPU: nothing is ever packed
        }
        let cfg = model().cfg;
        let l = cfg.num_hidden_layers;
        let need = packed_weight_bytes(&cfg);
        let budget = |b| Checkpointing::Auto { budget_bytes: b };
        let table = [
            (WeightPacking::Off, Checkpointing::Off, l, 0, false),
            (WeightPacking::On, Checkpointing::On, 0, 0, true),
            (WeightPacking::Auto, Checkpointing::Off, l, 1 << 30, true),
            (WeightPacking::Auto, Checkpointing::On, 0, 0, false),
            (WeightPacking::Auto, budget(need + l * 100), l, 100, true),
            (WeightPacking::Auto, budget(need + l * 100 - 1), l, 100, false),
            (WeightPacking::Auto, budget(usize::MAX), l - 1, 100, false),
        ];
        for (packing, ckpt, saved, bytes, want) in table {
            let m = model();
            let got = m.packed_for_training(packing, ckpt, saved, bytes).unwrap();
            assert_eq!(got.is_some(), want, "{packing:?} {ckpt:?} saved {saved} × {bytes}");
            assert_eq!(m.packed.get().is_some(), want, "cache after {packing:?} {ckpt:?}");
        }
    }

    /// Auto drops the copies at the first batch that does not fit and packs no more; `On` and
    /// `Off` still decide for themselves.
    #[test]
    fn auto_gives_up_at_the_first_batch_that_does_not_fit() {
        let m = model();
        let l = m.cfg.num_hidden_layers;
        let fits = Checkpointing::Auto { budget_bytes: usize::MAX };
        let Some(_) = m.packed_for_training(WeightPacking::Auto, fits, l, 100).unwrap() else { return };
        assert!(m.packed_for_training(WeightPacking::Auto, fits, l - 1, 100).unwrap().is_none());
        assert!(m.packed.get().is_none(), "the copies were dropped");
        assert!(m.packed_for_training(WeightPacking::Auto, fits, l, 100).unwrap().is_none(), "auto packed again");
        assert!(m.packed_for_training(WeightPacking::On, fits, l, 100).unwrap().is_some());
        assert!(m.packed_for_training(WeightPacking::Off, fits, l, 100).unwrap().is_none());
    }

    #[test]
    fn clones_share_the_copies_and_a_merged_model_starts_without() {
        let m = model();
        let Some(p) = m.packed_for_training(WeightPacking::On, Checkpointing::Off, 0, 0).unwrap() else { return };
        let c = m.clone();
        assert!(Arc::ptr_eq(&p, &c.packed.get().expect("a clone sees the copies")));
        let adapter = crate::model::LoraAdapter::new(&crate::config::LoraConfig::default(), &m.cfg, &Device::Cpu, 1).unwrap();
        assert!(m.merge(&adapter).unwrap().packed.get().is_none());
    }
}

//! The KV cache of a batched decode over many prompts (a rollout lease).
//!
//! Two regions per layer, both token-major `(slots · capacity, kv_heads · head_dim)`:
//! - prompt slots: one prompt's prefill each, stored once and read by all of its samples (no
//!   copy per sample);
//! - sequence slots: one sample's generated positions each, bound to a prompt slot.
//!
//! A decode step writes each row's new key/value at its own position (one scatter per layer)
//! and attends over its prompt slot's positions followed by its sequence slot's. Slots are
//! reused as sequences finish and prompts are admitted, so rows never move: nothing is copied
//! when a sequence leaves the batch.
//!
//! Memory: both regions are allocated once, at their maximum size, when the cache is created
//! (a lease knows its prompts and `max_new_tokens` up front). That bounds a lease's memory by
//! `prompt_slots · prompt_capacity + seq_slots · seq_capacity` positions before the first
//! step, fails early rather than mid-lease when it does not fit, and never copies on growth;
//! growing in blocks would save memory only for sequences that stop early, which a worker
//! cannot count on.

use candle_core::{DType, Device, Tensor};

use super::kernels::RowSpan;
use super::{KvCache, ModelConfig, ModelError};

struct LayerBuffers {
    prompt_k: Tensor,
    prompt_v: Tensor,
    seq_k: Tensor,
    seq_v: Tensor,
}

#[derive(Debug, Clone, Copy)]
struct Sequence {
    prompt: usize,
    len: usize,
}

pub struct BatchKvCache {
    layers: Vec<LayerBuffers>,
    prompt_capacity: usize,
    seq_capacity: usize,
    /// Cached length of each prompt slot (`None`: never filled).
    prompts: Vec<Option<usize>>,
    /// The sequence held by each sequence slot (`None`: free).
    seqs: Vec<Option<Sequence>>,
    width: usize,
}

impl BatchKvCache {
    pub(crate) fn new(
        cfg: &ModelConfig,
        dtype: DType,
        device: &Device,
        (prompt_slots, prompt_capacity): (usize, usize),
        (seq_slots, seq_capacity): (usize, usize),
    ) -> Result<Self, ModelError> {
        if prompt_slots == 0 || prompt_capacity == 0 || seq_slots == 0 || seq_capacity == 0 {
            return Err(ModelError::Input(format!(
                "batch KV cache needs slots and capacity: {prompt_slots} prompt slots × {prompt_capacity}, \
                 {seq_slots} sequence slots × {seq_capacity}"
            )));
        }
        let width = cfg.num_key_value_heads * cfg.head_dim;
        let zeros = |rows: usize| Tensor::zeros((rows, width), dtype, device);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                Ok(LayerBuffers {
                    prompt_k: zeros(prompt_slots * prompt_capacity)?,
                    prompt_v: zeros(prompt_slots * prompt_capacity)?,
                    seq_k: zeros(seq_slots * seq_capacity)?,
                    seq_v: zeros(seq_slots * seq_capacity)?,
                })
            })
            .collect::<Result<Vec<_>, candle_core::Error>>()?;
        Ok(Self {
            layers,
            prompt_capacity,
            seq_capacity,
            prompts: vec![None; prompt_slots],
            seqs: vec![None; seq_slots],
            width,
        })
    }

    pub fn prompt_slots(&self) -> usize {
        self.prompts.len()
    }

    pub fn seq_slots(&self) -> usize {
        self.seqs.len()
    }

    /// Positions a sequence slot can hold (generated tokens fed back).
    pub fn seq_capacity(&self) -> usize {
        self.seq_capacity
    }

    /// Generated positions cached for the sequence in `slot` (`None`: the slot is free).
    pub fn seq_len(&self, slot: usize) -> Option<usize> {
        self.seqs.get(slot).copied().flatten().map(|s| s.len)
    }

    /// Stores a batch-1 prefill in prompt slot `slot` (replacing what was there). No live
    /// sequence may still read the slot.
    pub fn set_prompt(&mut self, slot: usize, prefill: &KvCache) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Input(format!("batch KV cache prompt slot {slot}: {m}")));
        if slot >= self.prompts.len() {
            return err(format!("out of range ({} slots)", self.prompts.len()));
        }
        if self.seqs.iter().flatten().any(|s| s.prompt == slot) {
            return err("a live sequence still reads it".into());
        }
        let len = prefill.len();
        if len == 0 || len > self.prompt_capacity || prefill.batch_size() != Some(1) {
            return err(format!(
                "needs a batch-1 prefill of 1..={} positions, got {len} positions in {:?} rows",
                self.prompt_capacity,
                prefill.batch_size()
            ));
        }
        if prefill.num_layers() != self.layers.len() {
            return err(format!("prefill has {} layers, the cache {}", prefill.num_layers(), self.layers.len()));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let Some((k, v)) = prefill.layer_kv(i)? else { return err(format!("prefill layer {i} is empty")) };
            // (1, kv, len, hd) -> (len, kv·hd), token-major like the buffers.
            let rows = |t: Tensor| t.transpose(1, 2)?.contiguous()?.reshape((len, self.width));
            layer.prompt_k.slice_set(&rows(k)?, 0, slot * self.prompt_capacity)?;
            layer.prompt_v.slice_set(&rows(v)?, 0, slot * self.prompt_capacity)?;
        }
        self.prompts[slot] = Some(len);
        Ok(())
    }

    /// Binds the free sequence slot `slot` to the filled prompt slot `prompt` (length 0).
    pub fn start_sequence(&mut self, slot: usize, prompt: usize) -> Result<(), ModelError> {
        match (self.seqs.get(slot), self.prompts.get(prompt)) {
            (Some(None), Some(Some(_))) => {
                self.seqs[slot] = Some(Sequence { prompt, len: 0 });
                Ok(())
            }
            _ => Err(ModelError::Input(format!(
                "batch KV cache: cannot start sequence slot {slot} on prompt slot {prompt} (slot busy, or \
                 prompt not filled, or out of range)"
            ))),
        }
    }

    /// Frees sequence slot `slot` (its positions are overwritten by the next sequence).
    pub fn end_sequence(&mut self, slot: usize) {
        if let Some(s) = self.seqs.get_mut(slot) {
            *s = None;
        }
    }

    /// Each row's attention span for a step that appends one position to `slots` (distinct,
    /// live, not full).
    pub(crate) fn spans(&self, slots: &[usize]) -> Result<Vec<RowSpan>, ModelError> {
        let mut seen = vec![false; self.seqs.len()];
        let mut spans = Vec::with_capacity(slots.len());
        for &slot in slots {
            let seq = match self.seqs.get(slot) {
                Some(Some(seq)) if !seen[slot] => *seq,
                _ => {
                    return Err(ModelError::Input(format!(
                        "batch KV cache: sequence slot {slot} is free, repeated or out of range"
                    )))
                }
            };
            seen[slot] = true;
            if seq.len >= self.seq_capacity {
                return Err(ModelError::Input(format!(
                    "batch KV cache: sequence slot {slot} is full ({} positions)",
                    self.seq_capacity
                )));
            }
            spans.push(RowSpan {
                prompt_start: seq.prompt * self.prompt_capacity,
                prompt_len: self.prompts[seq.prompt].unwrap_or(0),
                gen_start: slot * self.seq_capacity,
                gen_len: seq.len + 1,
            });
        }
        Ok(spans)
    }

    /// Positions (prompt + generated) of each row before the step: its new token's position.
    pub(crate) fn positions(spans: &[RowSpan]) -> Vec<usize> {
        spans.iter().map(|s| s.prompt_len + s.gen_len - 1).collect()
    }

    /// The scatter index writing each row's new position: (rows, kv·hd) u32.
    pub(crate) fn write_index(&self, spans: &[RowSpan], device: &Device) -> Result<Tensor, ModelError> {
        let ids: Vec<u32> = spans
            .iter()
            .flat_map(|s| std::iter::repeat_n((s.gen_start + s.gen_len - 1) as u32, self.width))
            .collect();
        Ok(Tensor::from_vec(ids, (spans.len(), self.width), device)?)
    }

    /// Writes the step's keys/values (rows, kv·hd) of `layer` at `index` ([`Self::write_index`])
    /// and returns the layer's (prompt k, prompt v, generated k, generated v) buffers.
    #[allow(clippy::type_complexity)]
    pub(crate) fn write(
        &self,
        layer: usize,
        index: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<((&Tensor, &Tensor), (&Tensor, &Tensor)), ModelError> {
        let l = &self.layers[layer];
        l.seq_k.scatter_set(index, &k.contiguous()?, 0)?;
        l.seq_v.scatter_set(index, &v.contiguous()?, 0)?;
        Ok(((&l.prompt_k, &l.prompt_v), (&l.seq_k, &l.seq_v)))
    }

    /// Counts the step's new position in every row's sequence.
    pub(crate) fn advance(&mut self, slots: &[usize]) {
        for &slot in slots {
            if let Some(Some(s)) = self.seqs.get_mut(slot) {
                s.len += 1;
            }
        }
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

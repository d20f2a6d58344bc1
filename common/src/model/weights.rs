//! The decoder's weight layout: projections that share an input are stored stacked by rows.

use candle_core::Tensor;

use super::{ModelConfig, ModelError};
use crate::config::LoraTarget;

/// One decoder layer's frozen weights. The projections that share an input are stored stacked
/// by rows (q|k|v and gate|up), the layout the fused LoRA linear op takes; single projections
/// are row views of them ([`Layer::proj`]), never copies.
#[derive(Clone)]
pub(super) struct Layer {
    pub(super) input_norm: Tensor,
    pub(super) post_norm: Tensor,
    pub(super) q_norm: Option<Tensor>,
    pub(super) k_norm: Option<Tensor>,
    /// (q + 2·kv, hidden): q_proj rows, then k_proj, then v_proj.
    pub(super) qkv: Tensor,
    /// (hidden, q).
    pub(super) o: Tensor,
    /// (2·intermediate, hidden): gate_proj rows, then up_proj.
    pub(super) gate_up: Tensor,
    /// (hidden, intermediate).
    pub(super) down: Tensor,
}

/// Where a projection's rows sit: (which stacked tensor, first row, rows).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stack {
    Qkv,
    O,
    GateUp,
    Down,
}

impl Stack {
    /// A layer's stacked tensors, in declaration order.
    pub(super) const ALL: [Stack; 4] = [Stack::Qkv, Stack::O, Stack::GateUp, Stack::Down];

    /// Position in [`Stack::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The stacked tensor holding `t` and its row range there.
pub(super) fn proj_rows(cfg: &ModelConfig, t: LoraTarget) -> (Stack, usize, usize) {
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let i = cfg.intermediate_size;
    match t {
        LoraTarget::Q => (Stack::Qkv, 0, q),
        LoraTarget::K => (Stack::Qkv, q, kv),
        LoraTarget::V => (Stack::Qkv, q + kv, kv),
        LoraTarget::O => (Stack::O, 0, cfg.hidden_size),
        LoraTarget::Gate => (Stack::GateUp, 0, i),
        LoraTarget::Up => (Stack::GateUp, i, i),
        LoraTarget::Down => (Stack::Down, 0, cfg.hidden_size),
    }
}

/// The projections stacked in each tensor, in row order.
pub(super) fn stack_members(s: Stack) -> &'static [LoraTarget] {
    match s {
        Stack::Qkv => &[LoraTarget::Q, LoraTarget::K, LoraTarget::V],
        Stack::O => &[LoraTarget::O],
        Stack::GateUp => &[LoraTarget::Gate, LoraTarget::Up],
        Stack::Down => &[LoraTarget::Down],
    }
}

impl Layer {
    pub(super) fn stacked(&self, s: Stack) -> &Tensor {
        match s {
            Stack::Qkv => &self.qkv,
            Stack::O => &self.o,
            Stack::GateUp => &self.gate_up,
            Stack::Down => &self.down,
        }
    }

    pub(super) fn stacked_mut(&mut self, s: Stack) -> &mut Tensor {
        match s {
            Stack::Qkv => &mut self.qkv,
            Stack::O => &mut self.o,
            Stack::GateUp => &mut self.gate_up,
            Stack::Down => &mut self.down,
        }
    }

    /// Projection `t`'s weight (out, in): a row view of its stacked tensor (no copy).
    pub(super) fn proj(&self, cfg: &ModelConfig, t: LoraTarget) -> Result<Tensor, ModelError> {
        let (s, start, rows) = proj_rows(cfg, t);
        let w = self.stacked(s);
        Ok(if start == 0 && rows == w.dim(0)? { w.clone() } else { w.narrow(0, start, rows)? })
    }
}

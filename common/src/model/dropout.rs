//! Seeded LoRA dropout masks.
//!
//! PEFT drops the LoRA input of each adapted projection with its own mask. Here a mask entry is
//! a pure function of (forward seed, layer, projection, batch row, position, column): the
//! ChaCha8 stream `layer·7 + projection` of the forward seed, read at word
//! `(row·2²⁴ + position)·width + column`. So the composite path and the training engine draw
//! identical masks for one seed, activation checkpointing can redraw a layer's masks instead of
//! keeping them, and a token's mask does not depend on how wide the batch is padded.

use candle_core::{Device, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ModelError;
use crate::config::LoraTarget;

/// Positions per row in the word index (2²⁴ = 16M tokens per sequence).
const POS_BITS: u32 = 24;

/// The dropout of one forward pass: probability `p` and the seed its masks derive from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DropoutMasks {
    pub seed: u64,
    pub p: f64,
}

impl DropoutMasks {
    /// Draws a forward seed from `rng`.
    pub(crate) fn draw(rng: &mut ChaCha8Rng, p: f64) -> Self {
        DropoutMasks { seed: rng.next_u64(), p }
    }

    /// The (b·t, width) f32 mask, entries 0 or 1/(1−p), for input rows laid out (b, t)
    /// row-major: row i is batch row i / t at position i % t.
    pub(crate) fn mask(
        &self,
        layer: usize,
        target: LoraTarget,
        t: usize,
        n: usize,
        width: usize,
        device: &Device,
    ) -> Result<Tensor, ModelError> {
        if t == 0 || !n.is_multiple_of(t) || t >= 1 << POS_BITS {
            return Err(ModelError::Input(format!("dropout mask: {n} rows are not whole sequences of {t} positions")));
        }
        let mut base = ChaCha8Rng::seed_from_u64(self.seed);
        base.set_stream((layer * LoraTarget::ALL.len() + target as usize) as u64);
        let (drop_p, scale) = (self.p as f32, (1.0 / (1.0 - self.p)) as f32);
        let mut out = vec![0f32; n * width];
        out.par_chunks_mut(width.max(1)).enumerate().for_each(|(i, row)| {
            let (r, p) = ((i / t) as u128, (i % t) as u128);
            let mut rng = base.clone();
            rng.set_word_pos(((r << POS_BITS) + p) * width as u128);
            for v in row.iter_mut() {
                *v = if rng.random::<f32>() >= drop_p { scale } else { 0.0 };
            }
        });
        Ok(Tensor::from_vec(out, (n, width), device)?)
    }
}

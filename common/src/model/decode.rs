//! One decode step for a batch of sequences of different prompts and lengths (a rollout
//! lease): every row feeds one token at its own position and attends over its own prompt and
//! generated positions in a [`BatchKvCache`].
//!
//! On CPU f32 every product goes through the dot-product kernels, whose result for a row does
//! not depend on the other rows: a sequence decodes to the same bits alone or in any batch
//! (with `adapter: None`; an unmerged adapter's low-rank product goes through gemm). Other
//! devices and dtypes use candle's ops (cuBLAS on CUDA) and a masked attention.

use candle_core::Tensor;

use super::kernels::{self, RowSpan};
use super::transformer::Path;
use super::weights::{proj_rows, Layer};
use super::{BatchKvCache, LoraAdapter, Model, ModelError};
use crate::config::LoraTarget;

impl Model {
    /// A batch cache for `prompt_slots` prompts of up to `prompt_capacity` tokens and
    /// `seq_slots` sequences of up to `seq_capacity` generated positions, allocated now.
    pub fn new_batch_cache(
        &self,
        prompt_slots: usize,
        prompt_capacity: usize,
        seq_slots: usize,
        seq_capacity: usize,
    ) -> Result<BatchKvCache, ModelError> {
        BatchKvCache::new(&self.cfg, self.dtype, &self.device, (prompt_slots, prompt_capacity), (seq_slots, seq_capacity))
    }

    /// Feeds `tokens[i]` to the sequence in slot `slots[i]` (at position prompt + generated
    /// so far), appends its key/value, and returns the next-token logits (rows, vocab) f32.
    pub fn decode_step(
        &self,
        tokens: &[u32],
        slots: &[usize],
        cache: &mut BatchKvCache,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Tensor, ModelError> {
        if tokens.is_empty() || tokens.len() != slots.len() {
            return Err(ModelError::Input(format!("decode step: {} tokens for {} sequence slots", tokens.len(), slots.len())));
        }
        if cache.num_layers() != self.cfg.num_hidden_layers {
            return Err(ModelError::Input(format!(
                "batch KV cache has {} layers, the model {}",
                cache.num_layers(),
                self.cfg.num_hidden_layers
            )));
        }
        if let Some(a) = adapter {
            a.check_fits(&self.cfg)?;
        }
        let b = tokens.len();
        let ids = Tensor::from_vec(tokens.to_vec(), (b, 1), &self.device)?;
        self.check_ids(&ids)?;
        let spans = cache.spans(slots)?;
        let (cos, sin) = self.rope_at(BatchKvCache::positions(&spans).into_iter())?;
        let (cos, sin) = (cos.to_dtype(self.dtype)?, sin.to_dtype(self.dtype)?);
        let index = cache.write_index(&spans, &self.device)?;

        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?; // (b, hidden)
        for (i, layer) in self.layers.iter().enumerate() {
            let h = self.norm(&x, &layer.input_norm, Path::Infer)?;
            let attn = self.batch_attention(&h, layer, i, (&cos, &sin), cache, (&index, &spans), adapter)?;
            x = (x + attn)?;
            let h = self.norm(&x, &layer.post_norm, Path::Infer)?;
            let [gate, up] = self.decode_stacked(&h, layer, i, [LoraTarget::Gate, LoraTarget::Up], adapter)?;
            let mlp = self.decode_linear(&(gate.silu()? * up)?, layer, i, LoraTarget::Down, adapter)?;
            x = (x + mlp)?;
        }
        cache.advance(slots);
        let x = self.norm(&x, &self.norm, Path::Infer)?;
        let logits = match kernels::decode_matmul_t(&x, &self.lm_head)? {
            Some(y) => y,
            None => x.matmul(&self.lm_head.t()?)?,
        };
        Ok(logits.to_dtype(candle_core::DType::F32)?)
    }

    /// `x Wᵀ` (+ the adapter's update) with the row-independent kernel where it applies.
    fn decode_linear(
        &self,
        x: &Tensor,
        layer: &Layer,
        i: usize,
        t: LoraTarget,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Tensor, ModelError> {
        let w = layer.proj(&self.cfg, t)?;
        let y = match kernels::decode_matmul_t(x, &w)? {
            Some(y) => y,
            None => x.matmul(&w.t()?)?,
        };
        match adapter.map(|a| a.delta(i, t, x, None)).transpose()?.flatten() {
            Some(d) => Ok((y + d)?),
            None => Ok(y),
        }
    }

    /// [`Self::decode_linear`] for projections that share one stacked weight (q|k|v,
    /// gate|up), in its row order: one kernel call over the whole stack, then column views.
    /// The same bits as one call per projection (each output depends on its weight row alone).
    fn decode_stacked<const N: usize>(
        &self,
        x: &Tensor,
        layer: &Layer,
        i: usize,
        targets: [LoraTarget; N],
        adapter: Option<&LoraAdapter>,
    ) -> Result<[Tensor; N], ModelError> {
        let (stack, _, _) = proj_rows(&self.cfg, targets[0]);
        let fused = kernels::decode_matmul_t(x, layer.stacked(stack))?;
        let mut out = Vec::with_capacity(N);
        for t in targets {
            let (s, start, rows) = proj_rows(&self.cfg, t);
            debug_assert_eq!(s, stack, "{t:?} is not in the stack of {:?}", targets[0]);
            out.push(match &fused {
                Some(y) => match adapter.map(|a| a.delta(i, t, x, None)).transpose()?.flatten() {
                    Some(d) => (y.narrow(1, start, rows)? + d)?,
                    None => y.narrow(1, start, rows)?,
                },
                None => self.decode_linear(x, layer, i, t, adapter)?,
            });
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!("one tensor per target")))
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_attention(
        &self,
        x: &Tensor,
        layer: &Layer,
        i: usize,
        (cos, sin): (&Tensor, &Tensor),
        cache: &BatchKvCache,
        (index, spans): (&Tensor, &[RowSpan]),
        adapter: Option<&LoraAdapter>,
    ) -> Result<Tensor, ModelError> {
        let (nh, nkv, hd) = (self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim);
        let b = spans.len();
        // Rows as the rope kernel's time axis: one position per row.
        let [q, k, v] = self.decode_stacked(x, layer, i, [LoraTarget::Q, LoraTarget::K, LoraTarget::V], adapter)?;
        let q = q.contiguous()?.reshape((1, b, nh, hd))?;
        let k = k.contiguous()?.reshape((1, b, nkv, hd))?;
        let v = v.contiguous()?.reshape((b, nkv * hd))?;
        let (q, k) = match (&layer.q_norm, &layer.k_norm) {
            (Some(qn), Some(kn)) => (self.norm(&q, qn, Path::Infer)?, self.norm(&k, kn, Path::Infer)?),
            _ => (q, k),
        };
        let q = candle_nn::rotary_emb::rope_thd(&q.contiguous()?, cos, sin)?.reshape((b, nh, hd))?;
        let k = candle_nn::rotary_emb::rope_thd(&k.contiguous()?, cos, sin)?.reshape((b, nkv * hd))?;
        let (prompt, gen) = cache.write(i, index, &k, &v)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let out = match kernels::batch_decode_attention(&q, prompt, gen, spans, scale as f32)? {
            Some(out) => out,
            None => masked_attention(&q, prompt, gen, spans, scale)?,
        };
        self.decode_linear(&out, layer, i, LoraTarget::O, adapter)
    }
}

/// The attention of [`kernels::batch_decode_attention`] with candle ops (any device/dtype):
/// each row's prompt and generated keys are gathered up to the longest row's, the rest masked.
pub(crate) fn masked_attention(
    q: &Tensor,
    (pk, pv): (&Tensor, &Tensor),
    (gk, gv): (&Tensor, &Tensor),
    spans: &[RowSpan],
    scale: f64,
) -> Result<Tensor, ModelError> {
    let (b, nh, hd) = q.dims3()?;
    let nkv = pk.dim(1)? / hd;
    let device = q.device();
    let lp = spans.iter().map(|s| s.prompt_len).max().unwrap_or(0);
    let lg = spans.iter().map(|s| s.gen_len).max().unwrap_or(0);
    // Row r's positions [start, start + len), padded with its last valid one (masked below).
    let gather = |buf: &Tensor, width: usize, start: fn(&RowSpan) -> usize, len: fn(&RowSpan) -> usize| -> Result<Tensor, ModelError> {
        let idx: Vec<u32> = spans
            .iter()
            .flat_map(|s| (0..width).map(move |j| (start(s) + j.min(len(s).saturating_sub(1))) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, b * width, device)?;
        Ok(buf.index_select(&idx, 0)?.reshape((b, width, nkv, hd))?.transpose(1, 2)?)
    };
    let mut keys = Vec::new();
    let mut values = Vec::new();
    if lp > 0 {
        keys.push(gather(pk, lp, |s| s.prompt_start, |s| s.prompt_len)?);
        values.push(gather(pv, lp, |s| s.prompt_start, |s| s.prompt_len)?);
    }
    keys.push(gather(gk, lg, |s| s.gen_start, |s| s.gen_len)?);
    values.push(gather(gv, lg, |s| s.gen_start, |s| s.gen_len)?);
    let k = Tensor::cat(&keys, 2)?.contiguous()?; // (b, nkv, lp + lg, hd)
    let v = Tensor::cat(&values, 2)?.contiguous()?;
    let mask: Vec<f32> = spans
        .iter()
        .flat_map(|s| {
            let prompt = (0..lp).map(move |j| if j < s.prompt_len { 0.0 } else { f32::NEG_INFINITY });
            let gen = (0..lg).map(move |j| if j < s.gen_len { 0.0 } else { f32::NEG_INFINITY });
            prompt.chain(gen)
        })
        .collect();
    let mask = Tensor::from_vec(mask, (b, 1, 1, lp + lg), device)?.to_dtype(q.dtype())?;
    let g = nh / nkv;
    let q = q.reshape((b, nkv, g, hd))?;
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
    Ok(probs.matmul(&v)?.reshape((b, nh * hd))?)
}

#[cfg(test)]
mod tests;

//! Single-position attention for a batched decode step whose rows sit at different positions:
//! each row attends over its prompt's cached keys (shared by the prompt's samples) followed by
//! its own generated keys, both read in place from the batch cache's token-major buffers.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::{dot, ModelError};

/// Where one row's keys/values are: `prompt_len` positions from position-row `prompt_start`
/// of the prompt buffers, then `gen_len` positions from `gen_start` of the generated buffers
/// (rows of `kv_heads · head_dim` values each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowSpan {
    pub prompt_start: usize,
    pub prompt_len: usize,
    pub gen_start: usize,
    pub gen_len: usize,
}

/// CPU f32 attention of `q` (b, heads, hd) against per-row spans of the prompt buffers
/// `pk`, `pv` and generated buffers `gk`, `gv` (each contiguous (positions, kv_heads·hd)).
/// Returns (b, heads·hd); `None` = not applicable (other device or dtype).
/// One task per (row, kv head); each row's result depends on its own span only.
pub(crate) fn batch_decode_attention(
    q: &Tensor,
    (pk, pv): (&Tensor, &Tensor),
    (gk, gv): (&Tensor, &Tensor),
    spans: &[RowSpan],
    scale: f32,
) -> Result<Option<Tensor>, ModelError> {
    let all = [q, pk, pv, gk, gv];
    if !q.device().is_cpu() || all.iter().any(|t| t.dtype() != DType::F32) {
        return Ok(None);
    }
    let (b, nh, hd) = q.dims3()?;
    let (_, width) = pk.dims2()?;
    if b != spans.len() || width == 0 || width % hd != 0 || nh % (width / hd) != 0 {
        return Err(ModelError::Input(format!(
            "batch attention: q {:?} with cache rows of {width} values and {} spans",
            q.dims(),
            spans.len()
        )));
    }
    let nkv = width / hd;
    let g = nh / nkv;
    let q = q.contiguous()?;
    let guards = all.map(|t| t.storage_and_layout());
    let mut slices: Vec<&[f32]> = Vec::with_capacity(5);
    for (storage, layout) in &guards {
        let Storage::Cpu(c) = &**storage else { return Ok(None) };
        let Some((o0, o1)) = layout.contiguous_offsets() else { return Ok(None) };
        slices.push(&c.as_slice::<f32>()?[o0..o1]);
    }
    let [qv, pkv, pvv, gkv, gvv] = slices[..] else { unreachable!("five tensors") };
    for s in spans {
        if (s.prompt_start + s.prompt_len) * width > pkv.len().min(pvv.len())
            || (s.gen_start + s.gen_len) * width > gkv.len().min(gvv.len())
            || s.prompt_len + s.gen_len == 0
        {
            return Err(ModelError::Input(format!("batch attention: span {s:?} is outside the cache buffers")));
        }
    }
    let mut out = vec![0f32; b * nh * hd];
    out.par_chunks_mut(g * hd).enumerate().for_each(|(blk, o)| {
        let (bi, h) = (blk / nkv, blk % nkv);
        let s = spans[bi];
        // Position j's key/value row for this kv head: prompt positions first, then generated.
        let at = |start: usize, j: usize| {
            let base = (start + j) * width + h * hd;
            base..base + hd
        };
        let len = s.prompt_len + s.gen_len;
        let mut p = vec![0f32; len];
        for j in 0..g {
            let qh = &qv[(bi * nh + h * g + j) * hd..(bi * nh + h * g + j + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (l, pl) in p.iter_mut().enumerate() {
                let key = if l < s.prompt_len {
                    &pkv[at(s.prompt_start, l)]
                } else {
                    &gkv[at(s.gen_start, l - s.prompt_len)]
                };
                *pl = dot(qh, key) * scale;
                max = max.max(*pl);
            }
            let mut sum = 0f32;
            for pl in p.iter_mut() {
                *pl = (*pl - max).exp();
                sum += *pl;
            }
            let oh = &mut o[j * hd..(j + 1) * hd];
            for (l, pl) in p.iter().enumerate() {
                let val = if l < s.prompt_len {
                    &pvv[at(s.prompt_start, l)]
                } else {
                    &gvv[at(s.gen_start, l - s.prompt_len)]
                };
                let w = pl / sum;
                for (od, vd) in oh.iter_mut().zip(val) {
                    *od += w * vd;
                }
            }
        }
    });
    drop(guards);
    Ok(Some(Tensor::from_vec(out, (b, nh * hd), q.device())?))
}

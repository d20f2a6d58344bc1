//! Single-position attention for a batched decode step whose rows sit at different positions:
//! each row attends over its prompt's cached keys (shared by the prompt's samples) followed by
//! its own generated keys, both read in place from the batch cache's token-major buffers.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::ModelError;

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
        let q = &qv[(bi * nh + h * g) * hd..(bi * nh + (h + 1) * g) * hd];
        let segs = [
            Segment::rows((pkv, pvv), s.prompt_start, s.prompt_len, width, h * hd),
            Segment::rows((gkv, gvv), s.gen_start, s.gen_len, width, h * hd),
        ];
        attend(q, &segs, hd, scale, o);
    });
    drop(guards);
    Ok(Some(Tensor::from_vec(out, (b, nh * hd), q.device())?))
}

/// `len` key and value rows of one kv head, `stride` values apart from the start of `keys` / `vals`.
#[derive(Clone, Copy)]
pub(super) struct Segment<'a> {
    pub keys: &'a [f32],
    pub vals: &'a [f32],
    pub len: usize,
    pub stride: usize,
}

impl<'a> Segment<'a> {
    pub const EMPTY: Segment<'static> = Segment { keys: &[], vals: &[], len: 0, stride: 0 };

    /// The column block from `col` of position rows `start..start + len` (rows of `width`).
    fn rows((keys, vals): (&'a [f32], &'a [f32]), start: usize, len: usize, width: usize, col: usize) -> Self {
        if len == 0 {
            return Segment::EMPTY;
        }
        let (from, to) = (start * width + col, (start + len) * width);
        Segment { keys: &keys[from..to], vals: &vals[from..to], len, stride: width }
    }
}

asrl_ops::avx2_dispatch! {
    /// `out[j] = softmax(q_j · Kᵀ · scale) V` for the query heads `q` (g × hd) of one kv head,
    /// over the positions of `segs` in order. The same arithmetic in the same order on every CPU
    /// path (AVX2 only widens the lanes; Rust does not contract or reassociate), so the bits
    /// match the portable build.
    pub(super) fn attend(q: &[f32], segs: &[Segment; 2], hd: usize, scale: f32, out: &mut [f32]) => attend_impl
}

/// Each key and value row is read once for all g heads (not once per head); every head's
/// scores, softmax and weighted sum still run over the positions in order.
#[inline(always)]
pub(super) fn attend_impl(q: &[f32], segs: &[Segment; 2], hd: usize, scale: f32, out: &mut [f32]) {
    let g = q.len() / hd;
    let len: usize = segs.iter().map(|s| s.len).sum();
    let mut p = vec![0f32; g * len];
    let mut max = vec![f32::NEG_INFINITY; g];
    let mut l0 = 0;
    for s in segs {
        for l in 0..s.len {
            let key = &s.keys[l * s.stride..l * s.stride + hd];
            // The rows are strided (other kv heads in between): fetch keys a few positions
            // ahead, and this position's values for the weighted sum below.
            prefetch(&s.keys[(l + PREFETCH_AHEAD).min(s.len - 1) * s.stride..][..hd]);
            prefetch(&s.vals[l * s.stride..][..hd]);
            for (j, qh) in q.chunks_exact(hd).enumerate() {
                let v = asrl_ops::dot(qh, key) * scale;
                p[j * len + l0 + l] = v;
                max[j] = max[j].max(v);
            }
        }
        l0 += s.len;
    }
    let mut sum = vec![0f32; g];
    for (j, pj) in p.chunks_exact_mut(len).enumerate() {
        for pl in pj.iter_mut() {
            *pl = (*pl - max[j]).exp();
            sum[j] += *pl;
        }
    }
    let mut l0 = 0;
    for s in segs {
        for l in 0..s.len {
            let val = &s.vals[l * s.stride..l * s.stride + hd];
            for (j, oh) in out.chunks_exact_mut(hd).enumerate() {
                let w = p[j * len + l0 + l] / sum[j];
                for (od, vd) in oh.iter_mut().zip(val) {
                    *od += w * vd;
                }
            }
        }
        l0 += s.len;
    }
}

/// Positions ahead to prefetch keys.
const PREFETCH_AHEAD: usize = 4;

/// Brings the cache lines of `row` towards L1 (no effect on results).
#[inline(always)]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..row.len()).step_by(16) {
        // SAFETY: a prefetch of an address inside `row` has no side effects.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(row.as_ptr().add(line).cast()) };
    }
}

//! CPU kernels for the decode step: the skinny products `x Wᵀ` (a few rows of `x`) and
//! single-position attention against cached keys/values.
//!
//! gemm packs the whole weight for such shapes and runs at a fraction of memory bandwidth
//! (SmolLM2's 49152×576 vocabulary projection for 6 rows: ~45 ms). Here each weight panel is
//! streamed once and multiplied into all rows of `x` as an outer product ([`outer`]). Every
//! output is accumulated in the same order whatever the other rows are, so a row's result
//! never depends on which rows share the call (batched sampling relies on it), which gemm's
//! row-count-dependent blocking does not promise. Inference only: no backward.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::ModelError;

mod batch_attention;
mod outer;

use batch_attention::{attend, Segment};
pub(crate) use batch_attention::{batch_decode_attention, RowSpan};

/// Up to this many rows of `x` the outer-product kernel beats gemm (a prefill's few tokens).
pub(crate) const MAX_ROWS: usize = 16;

/// Rows a batched decode step sends through the kernel rather than gemm: past 16 rows gemm
/// is about as fast, but its result for a row depends on the row count, and batched
/// sampling promises the same tokens alone or in any batch.
pub(crate) const MAX_DECODE_ROWS: usize = 1024;

/// `x Wᵀ` for CPU f32 `x` (n, in) with n <= MAX_ROWS and contiguous `w` (out, in);
/// `None` when the inputs do not qualify (then use `matmul`).
pub(crate) fn skinny_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ModelError> {
    outer_matmul_t(x, w, MAX_ROWS)
}

/// [`skinny_matmul_t`] for a batched decode step: up to [`MAX_DECODE_ROWS`] rows.
pub(crate) fn decode_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ModelError> {
    outer_matmul_t(x, w, MAX_DECODE_ROWS)
}

fn outer_matmul_t(x: &Tensor, w: &Tensor, max_rows: usize) -> Result<Option<Tensor>, ModelError> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let (Ok((n, k)), Ok((out, k2))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    if n > max_rows || k != k2 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (Storage::Cpu(xc), Storage::Cpu(wc)) = (&*xs, &*ws) else { return Ok(None) };
    let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets()) else {
        return Ok(None);
    };
    let xv = &xc.as_slice::<f32>()?[x0..x1];
    let wv = &wc.as_slice::<f32>()?[w0..w1];
    if k == 0 || n == 0 {
        return Ok(None);
    }
    let mut y = vec![0f32; n * out];
    outer::matmul_t(xv, wv, k, n, &mut y);
    drop((xs, ws));
    Ok(Some(Tensor::from_vec(y, (n, out), x.device())?))
}

/// Single-position attention against cached keys/values, for CPU f32:
/// `q` (b, heads, hd) contiguous; `k`, `v` (b, kv_heads, len, hd) views of the cache buffers
/// (rows contiguous). Returns (b, heads·hd). One task per (row, kv head) instead of candle's
/// per-head gemm calls, whose dispatch cost dominates at these sizes. `None` = not applicable.
pub(crate) fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Option<Tensor>, ModelError> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return Ok(None);
    }
    let (Ok((b, nh, hd)), Ok((b2, nkv, len, hd2))) = (q.dims3(), k.dims4()) else { return Ok(None) };
    if b != b2 || hd != hd2 || v.dims() != k.dims() || nkv == 0 || nh % nkv != 0 {
        return Ok(None);
    }
    let g = nh / nkv;
    let q = q.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(qc), Storage::Cpu(kc), Storage::Cpu(vc)) = (&*qs, &*ks, &*vs) else { return Ok(None) };
    let rows_ok = |st: &[usize]| st.len() == 4 && st[3] == 1 && st[2] == hd;
    if !rows_ok(kl.stride()) || kl.stride() != vl.stride() {
        return Ok(None);
    }
    let Some((q0, q1)) = ql.contiguous_offsets() else { return Ok(None) };
    let qv = &qc.as_slice::<f32>()?[q0..q1];
    let (kv_all, vv_all) = (&kc.as_slice::<f32>()?[kl.start_offset()..], &vc.as_slice::<f32>()?[vl.start_offset()..]);
    let (sb, sh) = (kl.stride()[0], kl.stride()[1]);
    // Every (row, kv head) block must lie inside the buffers.
    let last = (b - 1) * sb + (nkv - 1) * sh + len * hd;
    if kv_all.len() < last || vv_all.len() < last {
        return Ok(None);
    }
    let mut out = vec![0f32; b * nh * hd];
    out.par_chunks_mut(g * hd).enumerate().for_each(|(blk, o)| {
        let (bi, h) = (blk / nkv, blk % nkv);
        let base = bi * sb + h * sh;
        let seg = Segment { keys: &kv_all[base..base + len * hd], vals: &vv_all[base..base + len * hd], len, stride: hd };
        attend(&qv[(bi * nh + h * g) * hd..(bi * nh + (h + 1) * g) * hd], &[seg, Segment::EMPTY], hd, scale, o);
    });
    drop((qs, ks, vs));
    Ok(Some(Tensor::from_vec(out, (b, nh * hd), q.device())?))
}

#[cfg(test)]
mod tests;

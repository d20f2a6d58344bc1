//! CPU kernels for the decode step: the skinny products `x Wᵀ` (a few rows of `x`) and
//! single-position attention against cached keys/values.
//!
//! gemm packs the whole weight for such shapes and runs at a fraction of memory bandwidth
//! (SmolLM2's 49152×576 vocabulary projection for 6 rows: ~45 ms). Here each weight row is
//! loaded once and multiplied into blocks of up to 6 rows of `x` (AVX2/FMA when the CPU has
//! it), so the step is bound by streaming the weights. Every row of `x` is accumulated in the
//! same order whatever the other rows are, so a row's result never depends on which rows
//! share the call (batched sampling relies on it). Inference only: no backward.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::ModelError;
pub(crate) use asrl_ops::dot;

mod batch_attention;

pub(crate) use batch_attention::{batch_decode_attention, RowSpan};

/// Up to this many rows of `x` the dot-product kernel beats gemm (a prefill's few tokens).
pub(crate) const MAX_ROWS: usize = 16;

/// Rows a batched decode step sends through the kernel rather than gemm: past 16 rows gemm
/// is about as fast, but its result for a row depends on the row count, and batched
/// sampling promises the same tokens alone or in any batch.
pub(crate) const MAX_DECODE_ROWS: usize = 1024;

/// Output rows per parallel task (keeps rayon overhead small next to the work).
const CHUNK: usize = 64;

/// `x Wᵀ` for CPU f32 `x` (n, in) with n <= MAX_ROWS and contiguous `w` (out, in);
/// `None` when the inputs do not qualify (then use `matmul`).
pub(crate) fn skinny_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ModelError> {
    dot_matmul_t(x, w, MAX_ROWS)
}

/// [`skinny_matmul_t`] for a batched decode step: up to [`MAX_DECODE_ROWS`] rows.
pub(crate) fn decode_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ModelError> {
    dot_matmul_t(x, w, MAX_DECODE_ROWS)
}

fn dot_matmul_t(x: &Tensor, w: &Tensor, max_rows: usize) -> Result<Option<Tensor>, ModelError> {
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
    // (out, n) so that each task owns a contiguous block; transposed once at the end.
    let mut y = vec![0f32; out * n];
    y.par_chunks_mut(CHUNK * n).enumerate().for_each(|(c, block)| {
        let rows = block.len() / n;
        let w_block = &wv[c * CHUNK * k..(c * CHUNK + rows) * k];
        dot_block(w_block, xv, k, n, block);
    });
    drop((xs, ws));
    let y = Tensor::from_vec(y, (out, n), x.device())?;
    Ok(Some(if n == 1 { y.reshape((1, out))? } else { y.t()?.contiguous()? }))
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
        let keys = &kv_all[base..base + len * hd];
        let vals = &vv_all[base..base + len * hd];
        let mut p = vec![0f32; len];
        for j in 0..g {
            let qh = &qv[(bi * nh + h * g + j) * hd..(bi * nh + h * g + j + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (l, pl) in p.iter_mut().enumerate() {
                *pl = dot(qh, &keys[l * hd..(l + 1) * hd]) * scale;
                max = max.max(*pl);
            }
            let mut sum = 0f32;
            for pl in p.iter_mut() {
                *pl = (*pl - max).exp();
                sum += *pl;
            }
            let oh = &mut o[j * hd..(j + 1) * hd];
            for (l, pl) in p.iter().enumerate() {
                let w = pl / sum;
                for (od, vd) in oh.iter_mut().zip(&vals[l * hd..(l + 1) * hd]) {
                    *od += w * vd;
                }
            }
        }
    });
    drop((qs, ks, vs));
    Ok(Some(Tensor::from_vec(out, (b, nh * hd), q.device())?))
}

/// `dst[r * n + b] = w[r] · x[b]` for the weight rows `w` (rows × k) and `x` (n × k).
fn dot_block(w: &[f32], x: &[f32], k: usize, n: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the target features; lengths are checked inside.
        unsafe { avx::dot_block(w, x, k, n, dst) };
        return;
    }
    for (r, d) in dst.chunks_mut(n).enumerate() {
        for (b, y) in d.iter_mut().enumerate() {
            *y = dot(&w[r * k..(r + 1) * k], &x[b * k..(b + 1) * k]);
        }
    }
}


#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Two weight rows at a time against up to 6 rows of x: 12 accumulators, and each
    /// x load feeds two FMAs (the kernel is load-port bound otherwise).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_block(w: &[f32], x: &[f32], k: usize, n: usize, dst: &mut [f32]) {
        let rows = dst.len() / n;
        assert!(w.len() >= rows * k && x.len() >= n * k && dst.len() == rows * n);
        let mut r = 0;
        while r < rows {
            let w0 = w.as_ptr().add(r * k);
            // An odd last row is paired with itself.
            let w1 = if r + 1 < rows { w0.add(k) } else { w0 };
            let mut b = 0;
            while b < n {
                let m = (n - b).min(6);
                let xp = x.as_ptr().add(b * k);
                let mut o0 = [0f32; 6];
                let mut o1 = [0f32; 6];
                match m {
                    1 => pair::<1>(w0, w1, xp, k, &mut o0, &mut o1),
                    2 => pair::<2>(w0, w1, xp, k, &mut o0, &mut o1),
                    3 => pair::<3>(w0, w1, xp, k, &mut o0, &mut o1),
                    4 => pair::<4>(w0, w1, xp, k, &mut o0, &mut o1),
                    5 => pair::<5>(w0, w1, xp, k, &mut o0, &mut o1),
                    _ => pair::<6>(w0, w1, xp, k, &mut o0, &mut o1),
                }
                dst[r * n + b..r * n + b + m].copy_from_slice(&o0[..m]);
                if r + 1 < rows {
                    dst[(r + 1) * n + b..(r + 1) * n + b + m].copy_from_slice(&o1[..m]);
                }
                b += m;
            }
            r += 2;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(a: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)))
    }

    /// `o0[j] = w0 · x[j]`, `o1[j] = w1 · x[j]` for j < M (x rows are k apart).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn pair<const M: usize>(
        w0: *const f32,
        w1: *const f32,
        x: *const f32,
        k: usize,
        o0: &mut [f32; 6],
        o1: &mut [f32; 6],
    ) {
        let mut a0 = [_mm256_setzero_ps(); M];
        let mut a1 = [_mm256_setzero_ps(); M];
        let mut i = 0;
        while i + 8 <= k {
            let v0 = _mm256_loadu_ps(w0.add(i));
            let v1 = _mm256_loadu_ps(w1.add(i));
            for j in 0..M {
                let xv = _mm256_loadu_ps(x.add(j * k + i));
                a0[j] = _mm256_fmadd_ps(v0, xv, a0[j]);
                a1[j] = _mm256_fmadd_ps(v1, xv, a1[j]);
            }
            i += 8;
        }
        for j in 0..M {
            let (mut s0, mut s1) = (hsum(a0[j]), hsum(a1[j]));
            for t in i..k {
                let xv = *x.add(j * k + t);
                s0 += *w0.add(t) * xv;
                s1 += *w1.add(t) * xv;
            }
            o0[j] = s0;
            o1[j] = s1;
        }
    }
}

#[cfg(test)]
mod tests;

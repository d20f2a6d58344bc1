//! A CPU kernel for the decode step's skinny products `x Wᵀ` (a few rows of `x`).
//!
//! gemm packs the whole weight for such shapes and runs at a fraction of memory bandwidth
//! (SmolLM2's 49152×576 vocabulary projection for 6 rows: ~45 ms). Here each weight row is
//! loaded once and multiplied into up to 4 rows of `x` at a time (AVX2/FMA when the CPU has
//! it), so the step is bound by streaming the weights. Inference only: no backward.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::ModelError;

/// Up to this many rows of `x` the dot-product kernel beats gemm.
pub(crate) const MAX_ROWS: usize = 16;

/// Output rows per parallel task (keeps rayon overhead small next to the work).
const CHUNK: usize = 64;

/// `x Wᵀ` for CPU f32 `x` (n, in) with n <= MAX_ROWS and contiguous `w` (out, in);
/// `None` when the inputs do not qualify (then use `matmul`).
pub(crate) fn skinny_matmul_t(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ModelError> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let (Ok((n, k)), Ok((out, k2))) = (x.dims2(), w.dims2()) else { return Ok(None) };
    if n > MAX_ROWS || k != k2 {
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
        for (r, dst) in block.chunks_mut(n).enumerate() {
            let row = &wv[(c * CHUNK + r) * k..(c * CHUNK + r + 1) * k];
            dot_rows(row, xv, k, dst);
        }
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

/// `dst[b] = row · x[b]` for every row `b` of `x` (row-major, `dst.len()` rows of `k`).
fn dot_rows(row: &[f32], x: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the target features; slices are bounds-checked inside.
        unsafe { avx::dot_rows(row, x, k, dst) };
        return;
    }
    for (b, d) in dst.iter_mut().enumerate() {
        *d = dot(row, &x[b * k..(b + 1) * k]);
    }
}

/// Portable dot product with 8 independent lanes (vectorisable, and accurate like a tree sum).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    // Written with plain locals and raw pointers so that even the dev profile (opt-level 1)
    // keeps the accumulators in registers.

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(row: &[f32], x: &[f32], k: usize, dst: &mut [f32]) {
        let n = dst.len();
        assert!(row.len() >= k && x.len() >= n * k);
        let w = row.as_ptr();
        let mut b = 0;
        while n - b >= 4 {
            let xp = x.as_ptr().add(b * k);
            let r = dot4(w, xp, xp.add(k), xp.add(2 * k), xp.add(3 * k), k);
            dst[b..b + 4].copy_from_slice(&r);
            b += 4;
        }
        while n - b >= 2 {
            let xp = x.as_ptr().add(b * k);
            let r = dot2(w, xp, xp.add(k), k);
            dst[b..b + 2].copy_from_slice(&r);
            b += 2;
        }
        if b < n {
            dst[b] = dot1(w, x.as_ptr().add(b * k), k);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(a: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot4(w: *const f32, x0: *const f32, x1: *const f32, x2: *const f32, x3: *const f32, k: usize) -> [f32; 4] {
        let (mut a0, mut a1, mut a2, mut a3) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= k {
            let wv = _mm256_loadu_ps(w.add(i));
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0.add(i)), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1.add(i)), a1);
            a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2.add(i)), a2);
            a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3.add(i)), a3);
            i += 8;
        }
        let mut r = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
        while i < k {
            let wi = *w.add(i);
            r[0] += wi * *x0.add(i);
            r[1] += wi * *x1.add(i);
            r[2] += wi * *x2.add(i);
            r[3] += wi * *x3.add(i);
            i += 1;
        }
        r
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot2(w: *const f32, x0: *const f32, x1: *const f32, k: usize) -> [f32; 2] {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= k {
            let wv = _mm256_loadu_ps(w.add(i));
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0.add(i)), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1.add(i)), a1);
            i += 8;
        }
        let mut r = [hsum(a0), hsum(a1)];
        while i < k {
            let wi = *w.add(i);
            r[0] += wi * *x0.add(i);
            r[1] += wi * *x1.add(i);
            i += 1;
        }
        r
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot1(w: *const f32, x0: *const f32, k: usize) -> f32 {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= k {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), _mm256_loadu_ps(x0.add(i)), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i + 8)), _mm256_loadu_ps(x0.add(i + 8)), a1);
            i += 16;
        }
        let mut r = hsum(_mm256_add_ps(a0, a1));
        while i < k {
            r += *w.add(i) * *x0.add(i);
            i += 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_matmul() {
        let d = Device::Cpu;
        for (n, k, out) in [(1, 37, 130), (6, 576, 200), (16, 64, 65), (7, 1536, 9), (3, 5, 70)] {
            let x = Tensor::randn(0f32, 1., (n, k), &d).unwrap();
            let w = Tensor::randn(0f32, 1., (out, k), &d).unwrap();
            let fast = super::skinny_matmul_t(&x, &w).unwrap().unwrap();
            let slow = x.matmul(&w.t().unwrap()).unwrap();
            let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-3, "{n}x{k}x{out}: {diff}");
        }
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..21).map(|i| 1.0 - i as f32 * 0.1).collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((super::dot(&a, &b) - expected).abs() < 1e-4);
        // Decode attention against a strided cache view equals softmax(q kᵀ · s) v.
        let (b, nkv, g, len, cap, hd) = (2, 2, 3, 5, 8, 16);
        let kb = Tensor::randn(0f32, 1., (b, nkv, cap, hd), &d).unwrap();
        let vb = Tensor::randn(0f32, 1., (b, nkv, cap, hd), &d).unwrap();
        let (k, v) = (kb.narrow(2, 0, len).unwrap(), vb.narrow(2, 0, len).unwrap());
        let q = Tensor::randn(0f32, 1., (b, nkv * g, hd), &d).unwrap();
        let fast = super::decode_attention(&q, &k, &v, 0.25).unwrap().unwrap();
        let qg = q.reshape((b, nkv, g, hd)).unwrap();
        let s = (qg.matmul(&k.t().unwrap()).unwrap() * 0.25).unwrap();
        let slow = candle_nn::ops::softmax_last_dim(&s).unwrap().matmul(&v).unwrap().reshape((b, nkv * g * hd)).unwrap();
        let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "attention: {diff}");
        let big = Tensor::zeros((17, 4), candle_core::DType::F32, &d).unwrap();
        assert!(super::skinny_matmul_t(&big, &Tensor::zeros((3, 4), candle_core::DType::F32, &d).unwrap()).unwrap().is_none());
    }
}

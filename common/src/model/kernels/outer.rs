//! `y = x Wᵀ` for a few rows of `x` as a packed outer product.
//!
//! Every output is accumulated in one f32 lane as `acc = fma(x[b][i], w[o][i], acc)` for
//! `i = 0..k` in order, starting from 0. Its bits therefore depend on row `b` of `x` and row
//! `o` of `W` alone: not on the tile, the task split, the other rows of `x`, or the instruction
//! set (the AVX2 path and the scalar `mul_add` path agree bit for bit). Batched sampling
//! relies on it: a sequence decodes to the same tokens alone or in any batch.
//!
//! Each task takes a panel of [`NR`] weight rows, transposes it into a k × NR buffer (so one
//! load gives NR outputs' weights at one `i`), and multiplies it into tiles of up to [`MR`]
//! rows of `x`. The next panel's weight rows are prefetched during the first tile, so the
//! step streams the weights from memory while it computes.

use rayon::prelude::*;
use std::cell::RefCell;

/// Outputs per panel: two 8-lane registers.
pub(super) const NR: usize = 16;
/// Rows of `x` per tile: 6 × 2 accumulators, 2 panel loads and a broadcast fit 16 registers.
const MR: usize = 6;
/// Fused multiply-adds a task should carry at least, so rayon's per-task cost stays small.
const TASK_FMAS: usize = 1 << 17;

thread_local! {
    /// The transposed panel, kept per worker thread so each call does not allocate it.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y[b * out + o] = Σ_i x[b * k + i] · w[o * k + i]` for `x` (n, k), `w` (out, k), `y` (n, out).
pub(super) fn matmul_t(x: &[f32], w: &[f32], k: usize, n: usize, y: &mut [f32]) {
    assert!(k > 0 && w.len().is_multiple_of(k) && x.len() == n * k, "x {} / w {} values for k {k}, {n} rows", x.len(), w.len());
    let out = w.len() / k;
    assert_eq!(y.len(), n * out, "y holds (n, out)");
    let simd = asrl_ops::has_avx2_fma();
    let panels = out.div_ceil(NR);
    let per_task = TASK_FMAS.div_ceil(n * k * NR).max(1);
    let dst = Out(y.as_mut_ptr());
    (0..panels).into_par_iter().with_min_len(per_task).for_each(|p| {
        let o0 = p * NR;
        let cols = (out - o0).min(NR);
        let rows = &w[o0 * k..(o0 + cols) * k];
        // The next panel, for the prefetch (rayon hands a thread neighbouring panels).
        let next = &w[(o0 + cols) * k..((o0 + cols + NR) * k).min(w.len())];
        // SAFETY: tasks write disjoint column ranges o0..o0 + cols of the n rows of `y`.
        let y = unsafe { OutCols::new(dst, out, o0, cols) };
        if simd {
            #[cfg(target_arch = "x86_64")]
            PANEL.with_borrow_mut(|buf| {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { avx::panel(rows, next, x, k, n, y, buf) }
            });
        } else {
            scalar_panel(rows, x, k, n, y);
        }
    });
}

/// The reference order, for CPUs without AVX2/FMA (and the tests): the same bits as the SIMD path.
pub(super) fn scalar_panel(rows: &[f32], x: &[f32], k: usize, n: usize, y: OutCols) {
    for b in 0..n {
        let xb = &x[b * k..(b + 1) * k];
        for (j, wo) in rows.chunks_exact(k).enumerate() {
            let acc = xb.iter().zip(wo).fold(0f32, |acc, (&xi, &wi)| xi.mul_add(wi, acc));
            // SAFETY: b < n and j < cols, the bounds OutCols was made for.
            unsafe { y.write(b, j, acc) };
        }
    }
}

/// The output buffer, shared by the tasks.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write through it only via OutCols, whose column ranges are disjoint.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Columns o0..o0 + cols of a row-major (n, ld) output.
#[derive(Clone, Copy)]
pub(super) struct OutCols {
    base: *mut f32,
    ld: usize,
    cols: usize,
}

impl OutCols {
    /// # Safety
    /// `dst` must point at an (n, ld) buffer that outlives the use, `o0 + cols <= ld`, and no
    /// one else may write these columns meanwhile.
    unsafe fn new(dst: Out, ld: usize, o0: usize, cols: usize) -> Self {
        Self { base: unsafe { dst.0.add(o0) }, ld, cols }
    }

    /// Columns of a whole (n, cols) buffer.
    #[cfg(test)]
    pub(super) fn whole(y: &mut [f32], cols: usize) -> Self {
        Self { base: y.as_mut_ptr(), ld: cols, cols }
    }

    /// # Safety
    /// `b` must be a row of the buffer and `j < cols`.
    #[inline]
    unsafe fn write(&self, b: usize, j: usize, v: f32) {
        debug_assert!(j < self.cols);
        unsafe { *self.base.add(b * self.ld + j) = v };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::{OutCols, MR, NR};

    /// One panel: `rows` (cols × k, cols <= NR) against all n rows of `x`, prefetching `next`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel(rows: &[f32], next: &[f32], x: &[f32], k: usize, n: usize, y: OutCols, buf: &mut Vec<f32>) {
        let cols = rows.len() / k;
        assert!(cols <= NR && cols == y.cols && x.len() >= n * k);
        buf.resize(k * NR, 0.0);
        unsafe { pack(rows, k, cols, buf) };
        // One cache line of the next panel per `i` of the first tile: a full panel is NR · k
        // floats = k lines.
        let lines = (next.len() * 4).div_ceil(64).min(k);
        let mut b = 0;
        while b < n {
            let m = (n - b).min(MR);
            let (xp, pf) = (unsafe { x.as_ptr().add(b * k) }, if b == 0 { lines } else { 0 });
            let (p, nx) = (buf.as_ptr(), next.as_ptr().cast::<i8>());
            unsafe {
                match m {
                    1 => tile::<1>(p, xp, k, nx, pf, y, b),
                    2 => tile::<2>(p, xp, k, nx, pf, y, b),
                    3 => tile::<3>(p, xp, k, nx, pf, y, b),
                    4 => tile::<4>(p, xp, k, nx, pf, y, b),
                    5 => tile::<5>(p, xp, k, nx, pf, y, b),
                    _ => tile::<6>(p, xp, k, nx, pf, y, b),
                }
            }
            b += m;
        }
    }

    /// `buf[i * NR + j] = rows[j * k + i]`, zero for j >= cols (those lanes are never stored).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack(rows: &[f32], k: usize, cols: usize, buf: &mut [f32]) {
        assert!(rows.len() == cols * k && buf.len() >= k * NR);
        let mut i = 0;
        if cols == NR {
            while i + 8 <= k {
                for h in 0..NR / 8 {
                    let base = unsafe { rows.as_ptr().add(h * 8 * k + i) };
                    let r: [__m256; 8] = std::array::from_fn(|j| unsafe { _mm256_loadu_ps(base.add(j * k)) });
                    let t = unsafe { transpose8(r) };
                    for (j, v) in t.into_iter().enumerate() {
                        unsafe { _mm256_storeu_ps(buf.as_mut_ptr().add((i + j) * NR + h * 8), v) };
                    }
                }
                i += 8;
            }
        }
        for ii in i..k {
            for j in 0..NR {
                buf[ii * NR + j] = if j < cols { rows[j * k + ii] } else { 0.0 };
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// Rows b0..b0 + M of `y` (x rows k apart from `x`) for the panel's outputs; prefetches
    /// `pf` lines from `next` on the way.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const M: usize>(
        panel: *const f32,
        x: *const f32,
        k: usize,
        next: *const i8,
        pf: usize,
        y: OutCols,
        b0: usize,
    ) {
        let mut a0 = [_mm256_setzero_ps(); M];
        let mut a1 = [_mm256_setzero_ps(); M];
        for i in 0..k {
            if i < pf {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(i * 64));
            }
            let (p0, p1) = unsafe { (_mm256_loadu_ps(panel.add(i * NR)), _mm256_loadu_ps(panel.add(i * NR + 8))) };
            for b in 0..M {
                let xv = unsafe { _mm256_broadcast_ss(&*x.add(b * k + i)) };
                a0[b] = _mm256_fmadd_ps(xv, p0, a0[b]);
                a1[b] = _mm256_fmadd_ps(xv, p1, a1[b]);
            }
        }
        for b in 0..M {
            let row = unsafe { y.base.add((b0 + b) * y.ld) };
            if y.cols == NR {
                unsafe {
                    _mm256_storeu_ps(row, a0[b]);
                    _mm256_storeu_ps(row.add(8), a1[b]);
                }
            } else {
                let mut t = [0f32; NR];
                unsafe {
                    _mm256_storeu_ps(t.as_mut_ptr(), a0[b]);
                    _mm256_storeu_ps(t.as_mut_ptr().add(8), a1[b]);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), row, y.cols);
                }
            }
        }
    }
}

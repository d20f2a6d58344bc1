//! Frozen weights packed once into the panels of gemm-f32's FMA microkernel, and their product.
//!
//! `gemm` copies the weight operand of every product into its microkernel's panel layout
//! before it multiplies. For a frozen projection that copy is the same at every call, and on 2
//! cores it is ~6 % of a SmolLM2 training step at 256 tokens (`perf`: the packing routines
//! 8 % of the samples, most of them the weights'). [`PackedWeight`] makes the copy once;
//! [`matmul_packed`] drives the same microkernel over it, in gemm's loop order, so the results
//! are those of [`matmul`](super::matmul) (the same products summed in the same order).
//!
//! Layout of M (rows × depth): depth blocks of ≤ [`KC_MAX`], and in each block 16-row panels
//! of kb × 16 floats, element (r, d) of a panel at `d·16 + r` (rows past the end are zero).
//! The product dst (t × rows) = x (t × depth) · Mᵀ runs as gemm runs a row-major product,
//! transposed: dstᵀ = M · xᵀ with M the packed left operand and xᵀ read in place.

use rayon::prelude::*;

use super::{Mat, MatMut};

/// Rows of a panel: the microkernel's 2 × 8 lanes.
const MR: usize = 16;
/// Columns (tokens) of a microkernel tile.
const NR: usize = 6;
/// Deepest block, as gemm picks for these shapes (a 16 × kb panel stays in L1).
const KC_MAX: usize = 512;
/// Tokens per outer chunk: a chunk's kb × NC slice of x stays in L2.
const NC: usize = 512;
/// Below this many multiply-adds a product runs on one thread (gemm's threshold).
const THREADING_THRESHOLD: usize = 48 * 48 * 256;

/// Whether this CPU runs the microkernel (x86-64 with AVX2 and FMA).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && super::has_avx2_fma()
}

/// A matrix M (rows × depth) in the microkernel's panel layout.
pub struct PackedWeight {
    rows: usize,
    depth: usize,
    kc: usize,
    data: Vec<f32>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight({} × {}, kc {})", self.rows, self.depth, self.kc)
    }
}

impl PackedWeight {
    /// Packs the view `m`; `None` where the microkernel cannot run ([`available`]).
    pub fn pack(m: Mat) -> Option<Self> {
        if !available() {
            return None;
        }
        let (rows, depth) = m.dims();
        let kc = depth.div_ceil(depth.div_ceil(KC_MAX).max(1)).max(1);
        let padded = rows.div_ceil(MR) * MR;
        let mut data = vec![0f32; padded * depth];
        // Panels are independent: each (block, panel) is one contiguous kb × 16 piece.
        let mut pieces: Vec<(usize, usize, &mut [f32])> = Vec::new();
        let mut rest = data.as_mut_slice();
        let mut d0 = 0;
        while d0 < depth {
            let kb = kc.min(depth - d0);
            for p in 0..padded / MR {
                let (piece, tail) = rest.split_at_mut(kb * MR);
                pieces.push((d0, p, piece));
                rest = tail;
            }
            d0 += kb;
        }
        let (src, rs, cs) = m.raw();
        pieces.into_par_iter().for_each(|(d0, p, piece)| {
            let live = MR.min(rows - p * MR);
            if rs == 1 {
                // M's columns are contiguous (M = Wᵀ of a row-major W): 16-float runs.
                for (d, lane) in piece.chunks_exact_mut(MR).enumerate() {
                    let at = p * MR + (d0 + d) * cs;
                    lane[..live].copy_from_slice(&src[at..at + live]);
                }
            } else {
                for r in 0..live {
                    let row = (p * MR + r) * rs;
                    for (d, lane) in piece.chunks_exact_mut(MR).enumerate() {
                        lane[r] = src[row + (d0 + d) * cs];
                    }
                }
            }
        });
        Some(PackedWeight { rows, depth, kc, data })
    }

    /// (rows, depth) of M.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.depth)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    /// Offset of panel `p` of the block starting at depth `d0` (`kb` deep).
    fn panel(&self, d0: usize, kb: usize, p: usize) -> usize {
        self.rows.div_ceil(MR) * MR * d0 + p * MR * kb
    }
}

/// A frozen projection weight W (out × in) packed for both of its products in training:
/// `x·Wᵀ` in the forward (M = W) and `dy·W` in the backward (M = Wᵀ). Twice W's bytes.
#[derive(Debug)]
pub struct PackedProjection {
    pub(crate) forward: PackedWeight,
    pub(crate) backward: PackedWeight,
}

impl PackedProjection {
    /// `w` (out × in) row-major; `None` where the microkernel cannot run ([`available`]).
    pub fn pack(w: &[f32], out: usize, inp: usize) -> Option<Self> {
        let m = Mat::rows(w, out, inp, inp);
        Some(PackedProjection { forward: PackedWeight::pack(m)?, backward: PackedWeight::pack(m.t())? })
    }

    /// (out, in) of W.
    pub fn dims(&self) -> (usize, usize) {
        self.forward.dims()
    }

    /// Bytes held (both orientations).
    pub fn bytes(&self) -> usize {
        self.forward.bytes() + self.backward.bytes()
    }
}

/// The destination's base address, shared by the tasks that write its disjoint panels.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
// SAFETY: tasks write disjoint elements (their own panels' columns) and the caller's borrow of
// the destination outlives them (rayon's join/scope waits).
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

/// `dst = (accumulate ? dst : 0) + x·Mᵀ` for x (t × depth) with contiguous rows, on `threads`
/// rayon threads (1 inside rayon tasks). Panics on mismatched shapes.
pub fn matmul_packed(mut dst: MatMut, accumulate: bool, x: Mat, w: &PackedWeight, threads: usize) {
    let (t, depth) = x.dims();
    let (xv, xs, xcs) = x.raw();
    assert!(
        depth == w.depth && dst.dims() == (t, w.rows) && (xcs == 1 || depth <= 1),
        "matmul_packed shapes: x ({t} × {depth}, column stride {xcs}) · Mᵀ ({} × {}) into {:?}",
        w.depth,
        w.rows,
        dst.dims()
    );
    let (dv, ds) = dst.raw();
    if t == 0 || w.rows == 0 {
        return;
    }
    if depth == 0 {
        if !accumulate {
            for r in 0..t {
                dv[r * ds..r * ds + w.rows].fill(0.0);
            }
        }
        return;
    }
    let panels = w.rows.div_ceil(MR);
    let parts = if t * w.rows * depth < THREADING_THRESHOLD { 1 } else { threads.clamp(1, panels) };
    let base = DstPtr(dv.as_mut_ptr());
    let run = |part: usize| {
        let (p0, p1) = (part * panels / parts, (part + 1) * panels / parts);
        // SAFETY: the views were bounds-checked on construction and the shapes agree (above):
        // tile (tokens c..c+nn, panel p) writes dst rows c..c+nn, columns p·16..p·16+mm with
        // p·16 + mm ≤ w.rows, and reads x rows c..c+nn, columns d0..d0+kb ≤ depth, and a whole
        // padded kb × 16 panel of `w`. Parts own disjoint panels, so no element is written twice.
        unsafe { run_panels(base, ds, accumulate, xv.as_ptr(), xs, t, w, p0, p1) }
    };
    if parts == 1 {
        run(0);
    } else {
        (0..parts).into_par_iter().for_each(run);
    }
}

/// Panels p0..p1 of the product, gemm's loop order: token chunks, depth blocks, token groups of
/// 6, then panels (a panel's block comes from memory once per chunk, then from cache).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_panels(
    dst: DstPtr,
    ds: usize,
    accumulate: bool,
    x: *const f32,
    xs: usize,
    t: usize,
    w: &PackedWeight,
    p0: usize,
    p1: usize,
) {
    use gemm_f32::microkernel::fma::f32 as uk;
    let dst = dst.0;
    let mut c0 = 0;
    while c0 < t {
        let cn = NC.min(t - c0);
        let mut d0 = 0;
        while d0 < w.depth {
            let kb = w.kc.min(w.depth - d0);
            // 0: dst = acc; 1: dst += acc.
            let status: u8 = if d0 == 0 && !accumulate { 0 } else { 1 };
            let mut j = 0;
            while j < cn {
                let nn = NR.min(cn - j);
                for p in p0..p1 {
                    let mm = MR.min(w.rows - p * MR);
                    let kernel = uk::UKR[mm.div_ceil(8) - 1][nn - 1];
                    kernel(
                        mm,
                        nn,
                        kb,
                        dst.add((c0 + j) * ds + p * MR),
                        w.data.as_ptr().add(w.panel(d0, kb, p)),
                        x.add((c0 + j) * xs + d0),
                        ds as isize,
                        1,
                        MR as isize,
                        1,
                        xs as isize,
                        0.0,
                        1.0,
                        status,
                        false,
                        false,
                        false,
                        std::ptr::null(),
                    );
                }
                j += nn;
            }
            d0 += kb;
        }
        c0 += cn;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn run_panels(_: DstPtr, _: usize, _: bool, _: *const f32, _: usize, _: usize, _: &PackedWeight, _: usize, _: usize) {
    unreachable!("PackedWeight::pack returns None off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::matmul;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed) * 2654435761) % 1999) as f32 / 1000.0 - 1.0).collect()
    }

    /// dst = (acc ? dst : 0) + x · Mᵀ through gemm and through the packed kernel, M given as
    /// W (rows × depth) itself or as the transpose of a (depth × rows) matrix.
    fn compare(t: usize, rows: usize, depth: usize, transposed: bool, accumulate: bool, threads: usize) {
        let src = values(rows * depth, 7);
        let m = if transposed { Mat::rows(&src, depth, rows, rows).t() } else { Mat::rows(&src, rows, depth, depth) };
        let Some(packed) = PackedWeight::pack(m) else {
            assert!(!available(), "pack refused on a CPU that runs the microkernel");
            return;
        };
        assert_eq!(packed.dims(), (rows, depth));
        // x rows padded to a wider stride, dst a column block of a wider buffer that holds values.
        let xw = depth + 3;
        let x = values(t * xw, 11);
        let xm = Mat::rows(&x, t, depth, xw);
        let (dw, off) = (rows + 5, 2);
        let mut want = values(t * dw, 3);
        let mut got = want.clone();
        matmul(MatMut::rows(&mut want[off..], t, rows, dw), accumulate, xm, m.t(), 1.0, threads);
        matmul_packed(MatMut::rows(&mut got[off..], t, rows, dw), accumulate, xm, &packed, threads);
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            let tol = 1e-5 * (1.0 + a.abs()) * (depth as f32).sqrt().max(1.0);
            assert!((a - b).abs() <= tol, "t {t} rows {rows} depth {depth} acc {accumulate}: element {i}: gemm {a}, packed {b}");
        }
    }

    #[test]
    fn matches_gemm_over_edge_shapes() {
        // Rows off the 16-row panels, tokens off the 6-token tiles and past one 512-token chunk,
        // depth in one block and in two, both orientations of M, overwrite and accumulate.
        for &(t, rows, depth) in &[(1, 16, 1), (6, 37, 70), (13, 48, 600), (700, 20, 33), (257, 96, 1100)] {
            for transposed in [false, true] {
                for accumulate in [false, true] {
                    for threads in [1, 3] {
                        compare(t, rows, depth, transposed, accumulate, threads);
                    }
                }
            }
        }
    }

    #[test]
    fn zero_depth_zeroes_or_keeps_the_destination() {
        let Some(packed) = PackedWeight::pack(Mat::rows(&[], 2, 0, 0)) else { return };
        let mut dst = vec![1f32; 2 * 3];
        matmul_packed(MatMut::rows(&mut dst, 2, 2, 3), true, Mat::rows(&[], 2, 0, 0), &packed, 1);
        assert_eq!(dst, [1.0; 6]);
        matmul_packed(MatMut::rows(&mut dst, 2, 2, 3), false, Mat::rows(&[], 2, 0, 0), &packed, 1);
        assert_eq!(dst, [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "matmul_packed shapes")]
    fn a_mismatched_depth_is_refused() {
        let w = values(32 * 8, 1);
        let Some(packed) = PackedWeight::pack(Mat::rows(&w, 32, 8, 8)) else { panic!("matmul_packed shapes (no microkernel here)") };
        let x = values(4 * 9, 2);
        let mut dst = vec![0f32; 4 * 32];
        matmul_packed(MatMut::rows(&mut dst, 4, 32, 32), false, Mat::rows(&x, 4, 9, 9), &packed, 1);
    }

    #[test]
    fn bytes_count_the_padded_panels() {
        let w = values(20 * 10, 1);
        if let Some(p) = PackedWeight::pack(Mat::rows(&w, 20, 10, 10)) {
            assert_eq!(p.bytes(), 32 * 10 * 4);
        }
    }
}

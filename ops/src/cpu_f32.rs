//! Raw-slice access and strided products for the fused CPU f32 kernels.
//!
//! The kernels read candle's CPU storage in place (no copy) through [`CpuF32`], write into plain
//! `Vec<f32>`s and wrap those as tensors at the end. Dense products go through the `gemm` crate
//! (the one candle's CPU matmul calls) with explicit strides, so column blocks of a wider matrix
//! and transposed operands need no copy; [`Mat`] / [`gemm`] check every stride against the
//! slice length, which keeps the one `unsafe` call sound.

use candle_core::{CpuStorage, Device, Shape, Storage, StorageRef, Tensor};

use crate::{OpError, Result};

/// Elements per rayon task for the streaming kernels: large enough that scheduling is noise,
/// small enough that 16+ threads all get work at the engine's sizes.
pub(crate) const TASK_ELEMS: usize = 1 << 15;

/// Rows of length `row_len` per rayon task (at least one).
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMS / row_len.max(1)).max(1)
}

/// A contiguous CPU f32 tensor's elements, borrowed from its storage.
pub(crate) struct CpuF32<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    /// Fails (naming `op` and `what`) unless `t` is a contiguous f32 tensor on the CPU.
    pub(crate) fn new(t: &'a Tensor, op: &'static str, what: &str) -> Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(OpError::shape(op, format!("{what} must be contiguous for the fused CPU kernel")));
        };
        if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
            return Err(OpError::shape(op, format!("{what} must be a CPU f32 tensor, got {:?} on {:?}", t.dtype(), t.device())));
        }
        Ok(CpuF32 { storage, start, end })
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => unreachable!("checked in CpuF32::new"),
        }
    }
}

/// A CPU f32 tensor made from a kernel's output buffer.
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// A strided (rows × cols) view of a slice: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major (rows × cols) starting at `data[0]`, rows `stride` apart (a column block of a
    /// wider matrix when `stride > cols`).
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Mat { data, rows, cols, rs: stride, cs: 1 }
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Index one past the last element the view reads (0 when empty).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// `dst = (accumulate ? dst : 0) + scale · lhs · rhs` where `dst` is row-major (lhs.rows ×
/// rhs.cols) with rows `dst_stride` apart. Multithreaded like candle's matmul.
pub(crate) fn gemm(dst: &mut [f32], dst_stride: usize, accumulate: bool, lhs: Mat, rhs: Mat, scale: f32) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "gemm: inner dimensions differ");
    assert!(lhs.extent() <= lhs.data.len() && rhs.extent() <= rhs.data.len(), "gemm: operand view out of bounds");
    let dst_view = Mat { data: &[], rows: m, cols: n, rs: dst_stride, cs: 1 };
    assert!(dst_view.extent() <= dst.len() && (m <= 1 || dst_stride >= n), "gemm: destination view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: every index the three views touch is inside its slice (asserted above), the
    // destination rows do not overlap (dst_stride >= n) and `dst` is borrowed mutably, so it
    // aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop over the same views.
    fn naive(lhs: Mat, rhs: Mat) -> Vec<f32> {
        let mut out = vec![0f32; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                out[i * rhs.cols + j] =
                    (0..lhs.cols).map(|p| lhs.data[i * lhs.rs + p * lhs.cs] * rhs.data[p * rhs.rs + j * rhs.cs]).sum();
            }
        }
        out
    }

    #[test]
    fn strided_views_and_accumulation_match_a_naive_product() {
        let a: Vec<f32> = (0..7 * 9).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let b: Vec<f32> = (0..9 * 13).map(|i| ((i * 17 % 7) as f32 - 3.0) / 2.0).collect();
        // Columns 2..7 of a (7 × 9) matrix, times a transposed (4 × 5) block of a 13-wide one.
        let lhs = Mat::rows(&a[2..], 7, 5, 9);
        let rhs = Mat::rows(&b, 4, 5, 13).t(); // (5 × 4): element (p, j) = b[j·13 + p]
        let want = naive(lhs, rhs);
        // Written into columns 3..7 of a (7 × 10) buffer that already holds ones, scaled by 0.5.
        let mut dst = vec![1f32; 7 * 10];
        gemm(&mut dst[3..], 10, true, lhs, rhs, 0.5);
        for i in 0..7 {
            for j in 0..10 {
                let expect = if (3..7).contains(&j) { 1.0 + 0.5 * want[i * 4 + j - 3] } else { 1.0 };
                assert!((dst[i * 10 + j] - expect).abs() < 1e-5, "({i}, {j}): {} vs {expect}", dst[i * 10 + j]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_past_the_slice_is_refused() {
        let a = vec![0f32; 10];
        let mut dst = vec![0f32; 4];
        gemm(&mut dst, 2, false, Mat::rows(&a, 2, 5, 6), Mat::rows(&a, 5, 2, 2), 1.0);
    }
}

//! Strided f32 matrix views and their product on top of the `gemm` crate.
//!
//! The views check their reach against the slice when they are made and their fields are
//! private to this module, so every [`Mat`] and [`MatMut`] stays inside its slice: that, with
//! the shape check in [`matmul`], is what keeps the one `unsafe` call sound.

/// Index one past the last element a (rows × cols) view with strides (rs, cs) reaches: 0 when
/// empty, `None` when that overflows.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(rs)?.checked_add((cols - 1).checked_mul(cs)?)?.checked_add(1)
}

/// A read-only (rows × cols) view of a slice: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Panics if the view reaches past `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        let end = extent(rows, cols, rs, cs);
        assert!(
            end.is_some_and(|e| e <= data.len()),
            "matrix view ({rows} × {cols}, strides {rs}, {cs}) out of bounds of a slice of {}",
            data.len()
        );
        Mat { data, rows, cols, rs, cs }
    }

    /// Row-major (rows × cols) starting at `data[0]`, rows `stride` apart (a column block of a
    /// wider matrix when `stride > cols`).
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Self::new(data, rows, cols, stride, 1)
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// (rows, cols).
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The slice, row stride and column stride: what `packed` hands the microkernel.
    pub(super) fn raw(&self) -> (&'a [f32], usize, usize) {
        (self.data, self.rs, self.cs)
    }
}

/// A writable row-major (rows × cols) view of a slice, rows `stride` apart.
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    /// Panics if the view reaches past `data` or its rows overlap (`stride < cols`), which
    /// would let gemm's threads write one element twice.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Self {
        let end = extent(rows, cols, stride, 1);
        assert!(
            end.is_some_and(|e| e <= data.len()) && (rows <= 1 || stride >= cols),
            "destination view ({rows} × {cols}, row stride {stride}) out of bounds of a slice of {} or overlapping",
            data.len()
        );
        MatMut { data, rows, cols, rs: stride }
    }

    /// (rows, cols).
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The slice and row stride: what `packed` hands the microkernel.
    pub(super) fn raw(&mut self) -> (&mut [f32], usize) {
        (self.data, self.rs)
    }
}

/// `dst = (accumulate ? dst : 0) + scale · a·b`, on `threads` rayon threads (1 inside rayon
/// tasks: single-threaded).
pub fn matmul(dst: MatMut, accumulate: bool, a: Mat, b: Mat, scale: f32, threads: usize) {
    assert!(
        a.cols == b.rows && dst.rows == a.rows && dst.cols == b.cols,
        "matmul shapes: ({} × {}) · ({} × {}) into ({} × {})",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        dst.rows,
        dst.cols
    );
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst.data[r * dst.rs..r * dst.rs + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the three views were bounds-checked on construction and the shapes agree, so
    // every index gemm touches is inside its slice; the destination rows do not overlap and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
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
    fn naive(a: Mat, b: Mat) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs]).sum();
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
        for threads in [1, 3] {
            // Written into columns 3..7 of a (7 × 10) buffer that already holds ones, scaled by 0.5.
            let mut dst = vec![1f32; 7 * 10];
            matmul(MatMut::rows(&mut dst[3..], 7, 4, 10), true, lhs, rhs, 0.5, threads);
            for i in 0..7 {
                for j in 0..10 {
                    let expect = if (3..7).contains(&j) { 1.0 + 0.5 * want[i * 4 + j - 3] } else { 1.0 };
                    assert!((dst[i * 10 + j] - expect).abs() < 1e-5, "({i}, {j}): {} vs {expect}", dst[i * 10 + j]);
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps_the_destination() {
        let mut dst = vec![1f32; 2 * 3];
        matmul(MatMut::rows(&mut dst, 2, 2, 3), true, Mat::rows(&[], 2, 0, 0), Mat::rows(&[], 0, 2, 2), 1.0, 1);
        assert_eq!(dst, [1.0; 6]);
        matmul(MatMut::rows(&mut dst, 2, 2, 3), false, Mat::rows(&[], 2, 0, 0), Mat::rows(&[], 0, 2, 2), 1.0, 1);
        assert_eq!(dst, [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_past_the_slice_is_refused() {
        Mat::rows(&[0f32; 10], 2, 5, 6);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_whose_extent_overflows_is_refused() {
        Mat::new(&[0f32; 10], 3, 2, usize::MAX / 2, 1);
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn overlapping_destination_rows_are_refused() {
        MatMut::rows(&mut [0f32; 10], 3, 4, 3);
    }

    #[test]
    #[should_panic(expected = "matmul shapes")]
    fn mismatched_shapes_are_refused() {
        let a = [0f32; 12];
        let mut dst = [0f32; 9];
        matmul(MatMut::rows(&mut dst, 3, 3, 3), false, Mat::rows(&a, 3, 4, 4), Mat::rows(&a, 3, 3, 3), 1.0, 1);
    }
}

//! Slice-level helpers of the fused CPU f32 kernels.
//!
//! The kernels read candle's CPU storage in place (no copy) through [`CpuF32`], write into
//! plain `Vec<f32>`s and wrap those as tensors at the end ([`tensor`]). Dense products go
//! through [`matmul`], a bounds-checked wrapper of the `gemm` crate (the one candle's CPU matmul
//! calls) with explicit strides, so column blocks of a wider matrix and transposed operands
//! need no copy. [`simd`] holds the lane-parallel reductions and the vectorised `exp` of the
//! softmax-heavy kernels.

/// Defines `fn $name(args) -> ret` that runs the portable body `$body` (an `#[inline(always)]`
/// fn with the same arguments) compiled once more with AVX2 + FMA when the CPU has them, so its
/// lane loops become 8-wide; elsewhere the portable build of the same body runs. Exported for
/// the decode kernels of `asrl-common`.
#[macro_export]
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::has_avx2_fma() {
                    // SAFETY: the CPU supports the enabled target features.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod matmul;
mod packed;
mod simd;
mod slice;

pub use matmul::{matmul, Mat, MatMut};
pub use packed::{matmul_packed, PackedProjection};
pub use simd::{dot, has_avx2_fma};
pub(crate) use simd::{exp_affine_sum, max, sigmoid_lane};
pub(crate) use slice::{tensor, CpuF32};

/// Elements per rayon task for the streaming kernels: large enough that scheduling is noise,
/// small enough that 16+ threads all get work at the engine's sizes.
pub(crate) const TASK_ELEMS: usize = 1 << 15;

/// Rows of length `row_len` per rayon task (at least one).
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (TASK_ELEMS / row_len.max(1)).max(1)
}

//! A CPU kernel for the decode step's skinny products `x Wᵀ` (a few rows of `x`).
//!
//! gemm packs the whole weight for such shapes and runs at a fraction of memory bandwidth
//! (SmolLM2's 49152×576 vocabulary projection for 6 rows: ~45 ms); streaming each weight row
//! once through candle's AVX dot product is bandwidth-bound instead. Inference only: the
//! result has no backward.

use candle_core::cpu::kernels::VecOps;
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
            for (b, d) in dst.iter_mut().enumerate() {
                let xr = &xv[b * k..(b + 1) * k];
                // SAFETY: both slices hold exactly k floats and `d` is one valid f32.
                unsafe { f32::vec_dot(row.as_ptr(), xr.as_ptr(), d, k) };
            }
        }
    });
    drop((xs, ws));
    let y = Tensor::from_vec(y, (out, n), x.device())?;
    Ok(Some(if n == 1 { y.reshape((1, out))? } else { y.t()?.contiguous()? }))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_matmul() {
        let d = Device::Cpu;
        for (n, k, out) in [(1, 37, 130), (6, 576, 200), (16, 64, 65)] {
            let x = Tensor::randn(0f32, 1., (n, k), &d).unwrap();
            let w = Tensor::randn(0f32, 1., (out, k), &d).unwrap();
            let fast = super::skinny_matmul_t(&x, &w).unwrap().unwrap();
            let slow = x.matmul(&w.t().unwrap()).unwrap();
            let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-3, "{n}x{k}x{out}: {diff}");
        }
        let big = Tensor::zeros((17, 4), candle_core::DType::F32, &d).unwrap();
        assert!(super::skinny_matmul_t(&big, &Tensor::zeros((3, 4), candle_core::DType::F32, &d).unwrap()).unwrap().is_none());
    }
}

//! The composite path: the same chunking with candle ops on any device and dtype. The product
//! runs in w's dtype (h is cast to it), the softmax algebra in f32; dh returns in h's dtype.

use candle_core::{DType, Tensor, D};

use super::LogprobSaved;
use crate::Result;

/// f32 z = h_c Wᵀ / T for one chunk of rows.
fn scaled_logits(hc: &Tensor, w: &Tensor, temperature: f64) -> Result<Tensor> {
    let z = hc.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(DType::F32)?;
    Ok(if temperature != 1.0 { (z / temperature)? } else { z })
}

/// lp (m) and lse (m), f32.
pub(super) fn forward(h: &Tensor, w: &Tensor, targets: &Tensor, temperature: f64, chunk: usize) -> Result<(Tensor, Tensor)> {
    let m = h.dim(0)?;
    let (mut lps, mut lses) = (Vec::new(), Vec::new());
    for start in (0..m).step_by(chunk) {
        let rows = chunk.min(m - start);
        let z = scaled_logits(&h.narrow(0, start, rows)?, w, temperature)?;
        let max = z.max_keepdim(D::Minus1)?;
        let lse = (z.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?;
        let picked = z.gather(&targets.narrow(0, start, rows)?.unsqueeze(1)?, D::Minus1)?;
        lps.push((picked - &lse)?.squeeze(1)?);
        lses.push(lse.squeeze(1)?);
    }
    if lps.is_empty() {
        let empty = Tensor::zeros(0, DType::F32, h.device())?;
        return Ok((empty.clone(), empty));
    }
    Ok((Tensor::cat(&lps, 0)?, Tensor::cat(&lses, 0)?))
}

/// dh (m, d) in h's dtype from dlp (m) f32.
pub(super) fn backward(saved: &LogprobSaved, dlp: &Tensor) -> Result<Tensor> {
    let (h, w, t) = (&saved.h, &saved.w, saved.temperature);
    let (m, d) = h.dims2()?;
    let mut dhs = Vec::new();
    for start in (0..m).step_by(saved.chunk_rows) {
        let rows = saved.chunk_rows.min(m - start);
        let z = scaled_logits(&h.narrow(0, start, rows)?, w, t)?;
        let p = z.broadcast_sub(&saved.lse.narrow(0, start, rows)?.unsqueeze(1)?)?.exp()?;
        let coef = (dlp.narrow(0, start, rows)? / t)?.unsqueeze(1)?;
        let ys = saved.targets.narrow(0, start, rows)?.unsqueeze(1)?;
        // (dlp/T)·(onehot(y) − p)
        let dz = p.broadcast_mul(&coef.neg()?)?.scatter_add(&ys, &coef, 1)?;
        dhs.push(dz.to_dtype(w.dtype())?.matmul(w)?.to_dtype(h.dtype())?);
    }
    if dhs.is_empty() {
        return Ok(Tensor::zeros((0, d), h.dtype(), h.device())?);
    }
    Ok(Tensor::cat(&dhs, 0)?)
}

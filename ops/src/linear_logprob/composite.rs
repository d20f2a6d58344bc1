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

/// lp (m) and lse (m), f32; with `expectation`, also E_p[W] (m, d) f32.
pub(super) fn forward(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    temperature: f64,
    chunk: usize,
    expectation: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (m, d) = h.dims2()?;
    let (mut lps, mut lses, mut es) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..m).step_by(chunk) {
        let rows = chunk.min(m - start);
        let z = scaled_logits(&h.narrow(0, start, rows)?, w, temperature)?;
        let max = z.max_keepdim(D::Minus1)?;
        let lse = (z.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?;
        let picked = z.gather(&targets.narrow(0, start, rows)?.unsqueeze(1)?, D::Minus1)?;
        lps.push((picked - &lse)?.squeeze(1)?);
        if expectation {
            let p = z.broadcast_sub(&lse)?.exp()?;
            es.push(p.to_dtype(w.dtype())?.matmul(w)?.to_dtype(DType::F32)?);
        }
        lses.push(lse.squeeze(1)?);
    }
    if lps.is_empty() {
        let empty = Tensor::zeros(0, DType::F32, h.device())?;
        let e = if expectation { Some(Tensor::zeros((0, d), DType::F32, h.device())?) } else { None };
        return Ok((empty.clone(), empty, e));
    }
    let e = if expectation { Some(Tensor::cat(&es, 0)?) } else { None };
    Ok((Tensor::cat(&lps, 0)?, Tensor::cat(&lses, 0)?, e))
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

/// dh (m, d) in h's dtype from the saved E_p[W]: (dlp/T)·(W_y − E_p[W]), no vocabulary product.
pub(super) fn expectation_backward(saved: &LogprobSaved, e: &Tensor, dlp: &Tensor) -> Result<Tensor> {
    let wy = saved.w.index_select(&saved.targets, 0)?.to_dtype(DType::F32)?;
    let coef = (dlp / saved.temperature)?.unsqueeze(1)?;
    Ok((wy - e)?.broadcast_mul(&coef)?.to_dtype(saved.h.dtype())?)
}

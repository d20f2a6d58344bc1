//! The composite path: candle tensor ops on any device and float dtype (CUDA with cuBLAS).
//!
//! Queries are taken `chunk` rows at a time against the keys they can see (0..end of chunk),
//! so the f32 scores of one chunk, (b, nh, chunk, ≤ t), bound the memory. Products run in the
//! input dtype (tensor cores; cuBLAS accumulates in f32); masking, softmax and the dS algebra
//! in f32; dK/dV accumulate over chunks in f32. Rows past the longest length are skipped.

use candle_core::{DType, Tensor, D};

use super::{row_mask, AttentionSaved, Dims};
use crate::Result;

/// (b, t, nh, hd) in q's dtype and lse (b, nh, t) f32.
pub(super) fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    d: Dims,
    scale: f64,
    lens: Option<&[usize]>,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    let Dims { b, t, nh, hd, .. } = d;
    let t_eff = lens.map_or(t, |l| l.iter().copied().max().unwrap_or(0));
    let (kh, vh) = (heads_major(k)?, heads_major(v)?);
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for c0 in (0..t_eff).step_by(chunk) {
        let c = chunk.min(t_eff - c0);
        let l = c0 + c;
        let qc = group_rows(&q.narrow(1, c0, c)?, d)?;
        let (kl, vl) = (kh.narrow(2, 0, l)?.contiguous()?, vh.narrow(2, 0, l)?.contiguous()?);
        let s = masked_scores(&qc, &kl, d, c0, c, scale)?;
        let max = s.max_keepdim(D::Minus1)?;
        let e = s.broadcast_sub(&max)?.exp()?;
        let sum = e.sum_keepdim(D::Minus1)?;
        let p = e.broadcast_div(&sum)?;
        let oc = p.to_dtype(q.dtype())?.matmul(&vl)?; // (b, nkv, g·c, hd)
        outs.push(oc.reshape((b, nh, c, hd))?.transpose(1, 2)?);
        lses.push((max + sum.log()?)?.reshape((b, nh, c))?);
    }
    let mut o = cat_or_empty(&outs, 1, (b, 0, nh, hd), q.dtype(), q)?.pad_with_zeros(1, 0, t - t_eff)?;
    if let Some(lens) = lens {
        o = o.broadcast_mul(&row_mask(lens, t, q)?)?;
    }
    let lse = cat_or_empty(&lses, 2, (b, nh, 0), DType::F32, q)?.pad_with_zeros(2, 0, t - t_eff)?;
    Ok((o.contiguous()?, lse.contiguous()?))
}

/// dq, dk, dv in the input dtype; `grad_o` is contiguous in the output's dtype.
pub(super) fn backward(saved: &AttentionSaved, grad_o: &Tensor, d: Dims, lens: Option<&[usize]>) -> Result<(Tensor, Tensor, Tensor)> {
    let Dims { b, t, nh, nkv, hd } = d;
    let (q, dtype, scale, chunk) = (&saved.q, saved.q.dtype(), saved.scale, saved.query_chunk);
    let t_eff = lens.map_or(t, |l| l.iter().copied().max().unwrap_or(0));
    // Padding rows must not feed the gradient: they are outputs the forward zeroed.
    let grad_o = match lens {
        Some(lens) => grad_o.broadcast_mul(&row_mask(lens, t, grad_o)?)?,
        None => grad_o.clone(),
    };
    let (kh, vh) = (heads_major(&saved.k)?, heads_major(&saved.v)?);
    let mut dk = Tensor::zeros((b, nkv, t, hd), DType::F32, q.device())?;
    let mut dv = dk.clone();
    let mut dqs = Vec::new();
    for c0 in (0..t_eff).step_by(chunk) {
        let c = chunk.min(t_eff - c0);
        let l = c0 + c;
        let qc = group_rows(&q.narrow(1, c0, c)?, d)?;
        let doc = group_rows(&grad_o.narrow(1, c0, c)?, d)?;
        let oc = group_rows(&saved.o.narrow(1, c0, c)?, d)?;
        let lse = saved.lse.narrow(2, c0, c)?.reshape((b, nkv, nh / nkv * c, 1))?;
        let (kl, vl) = (kh.narrow(2, 0, l)?.contiguous()?, vh.narrow(2, 0, l)?.contiguous()?);
        let dsum = (doc.to_dtype(DType::F32)? * oc.to_dtype(DType::F32)?)?.sum_keepdim(D::Minus1)?;
        let p = masked_scores(&qc, &kl, d, c0, c, scale)?.broadcast_sub(&lse)?.exp()?;
        let dv_l = p.to_dtype(dtype)?.t()?.matmul(&doc)?.to_dtype(DType::F32)?;
        let dp = doc.matmul(&vl.t()?)?.to_dtype(DType::F32)?;
        let ds = ((p * dp.broadcast_sub(&dsum)?)? * scale)?.to_dtype(dtype)?;
        let dk_l = ds.t()?.matmul(&qc)?.to_dtype(DType::F32)?;
        dk = (dk + dk_l.pad_with_zeros(2, 0, t - l)?)?;
        dv = (dv + dv_l.pad_with_zeros(2, 0, t - l)?)?;
        dqs.push(ds.matmul(&kl)?.reshape((b, nh, c, hd))?.transpose(1, 2)?);
    }
    let dq = cat_or_empty(&dqs, 1, (b, 0, nh, hd), dtype, q)?.pad_with_zeros(1, 0, t - t_eff)?.contiguous()?;
    let back = |x: Tensor| -> Result<Tensor> { Ok(x.transpose(1, 2)?.to_dtype(dtype)?.contiguous()?) };
    Ok((dq, back(dk)?, back(dv)?))
}

/// (b, t, n, hd) -> (b, n, t, hd) contiguous.
fn heads_major(x: &Tensor) -> Result<Tensor> {
    Ok(x.transpose(1, 2)?.contiguous()?)
}

/// (b, c, nh, hd) -> (b, nkv, g·c, hd): the g query heads of a kv head become extra rows
/// (head-major), so GQA needs no copies of k and v.
fn group_rows(x: &Tensor, d: Dims) -> Result<Tensor> {
    let (b, c) = (x.dim(0)?, x.dim(1)?);
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, d.nkv, d.group() * c, d.hd))?)
}

/// f32 scale·q kᵀ with −∞ above the diagonal, (b, nkv, g·c, l) for queries c0..c0+c.
fn masked_scores(qc: &Tensor, kl: &Tensor, d: Dims, c0: usize, c: usize, scale: f64) -> Result<Tensor> {
    let (b, l) = (qc.dim(0)?, kl.dim(2)?);
    let s = (qc.matmul(&kl.t()?)?.to_dtype(DType::F32)? * scale)?;
    let dev = qc.device();
    let qi = Tensor::arange(c0 as u32, (c0 + c) as u32, dev)?.reshape((c, 1))?;
    let kj = Tensor::arange(0u32, l as u32, dev)?.reshape((1, l))?;
    let visible = kj.broadcast_le(&qi)?;
    let mask = visible.where_cond(&Tensor::zeros((c, l), DType::F32, dev)?, &Tensor::full(f32::NEG_INFINITY, (c, l), dev)?)?;
    Ok(s.reshape((b, d.nkv, d.group(), c, l))?.broadcast_add(&mask)?.reshape((b, d.nkv, d.group() * c, l))?)
}

/// `Tensor::cat`, or an empty tensor of `empty` shape on `on`'s device when there is nothing
/// to join (every row has length 0).
fn cat_or_empty<S: Into<candle_core::Shape>>(parts: &[Tensor], dim: usize, empty: S, dtype: DType, on: &Tensor) -> Result<Tensor> {
    if parts.is_empty() {
        return Ok(Tensor::zeros(empty, dtype, on.device())?);
    }
    Ok(Tensor::cat(parts, dim)?)
}

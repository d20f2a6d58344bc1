//! RMSNorm over the last dimension, with statistics in f32 as in HF's `Qwen3RMSNorm` /
//! `LlamaRMSNorm`.
//!
//! Forward, for each row x ∈ ℝᵈ (any leading shape: (n, hidden) for the layer norms,
//! (b, t, heads, head_dim) for Qwen3's per-head q/k norms):
//!
//! ```text
//! rstd = 1 / sqrt(mean(x²) + eps)          (f32)
//! x̂    = x · rstd                          (f32, then cast to the input dtype)
//! y    = w ⊙ x̂
//! ```
//!
//! Backward, with g = dy ⊙ w (the gradient reaching x̂):
//!
//! ```text
//! dx = rstd · (g − x̂ · mean(g ⊙ x̂))
//! ```
//!
//! since ∂x̂ᵢ/∂xⱼ = rstd·(δᵢⱼ − x̂ᵢx̂ⱼ/d). The weight is frozen: no dw. Saved: x and rstd
//! (one f32 per row).

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::cpu::{dot, rows_per_task, tensor, CpuF32};
use crate::{Backend, OpError, Result};

const OP: &str = "rms_norm";

/// What [`backward`] reads.
#[derive(Debug, Clone)]
pub struct RmsNormSaved {
    backend: Backend,
    x: Tensor,
    w: Tensor,
    /// 1 / sqrt(mean(x²) + eps) per row, f32, shape (rows,).
    rstd: Tensor,
}

impl RmsNormSaved {
    /// The per-row reciprocal RMS, shape (rows,) where rows = elements / last dim.
    pub fn rstd(&self) -> &Tensor {
        &self.rstd
    }
}

/// `w ⊙ x / sqrt(mean(x²) + eps)` over the last dim of `x`; `w` has that dim's size and
/// `x`'s dtype. The backend follows [`Backend::for_tensor`]`(x)`.
pub fn forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, RmsNormSaved)> {
    forward_on(Backend::for_tensor(x), x, w, eps)
}

/// [`forward`] on a chosen backend; [`backward`] then runs on the same one.
pub fn forward_on(backend: Backend, x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, RmsNormSaved)> {
    let (rows, d) = check(x, w)?;
    let (y, rstd) = match backend {
        Backend::FusedCpu => {
            let (x, w) = (x.contiguous()?, w.contiguous()?);
            let (y, rstd) = {
                let (xs, ws) = (CpuF32::new(&x, OP, "x")?, CpuF32::new(&w, OP, "w")?);
                fused_forward(xs.as_slice(), ws.as_slice(), d, eps as f32)
            };
            (tensor(y, x.shape())?, tensor(rstd, rows)?)
        }
        Backend::Composite => {
            let xf = x.to_dtype(DType::F32)?;
            let std = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
            let y = xf.broadcast_div(&std)?.to_dtype(x.dtype())?.broadcast_mul(w)?;
            (y, std.recip()?.reshape(rows)?)
        }
    };
    Ok((y, RmsNormSaved { backend, x: x.clone(), w: w.clone(), rstd }))
}

/// dx for the upstream gradient `dy` (shape and dtype of x).
pub fn backward(saved: &RmsNormSaved, dy: &Tensor) -> Result<Tensor> {
    backward_impl(saved, dy, None)
}

/// `residual + dx`: the backward of a pre-norm block, whose input also feeds the residual path,
/// in one pass (no separate add and its buffer). `residual` has x's shape and dtype.
pub fn backward_add(saved: &RmsNormSaved, dy: &Tensor, residual: &Tensor) -> Result<Tensor> {
    if residual.shape() != saved.x.shape() || residual.dtype() != saved.x.dtype() {
        return Err(OpError::shape(
            OP,
            format!("residual is {:?} {:?} but x was {:?} {:?}", residual.dims(), residual.dtype(), saved.x.dims(), saved.x.dtype()),
        ));
    }
    backward_impl(saved, dy, Some(residual))
}

fn backward_impl(saved: &RmsNormSaved, dy: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    let RmsNormSaved { backend, x, w, rstd } = saved;
    if dy.shape() != x.shape() || dy.dtype() != x.dtype() {
        return Err(OpError::shape(
            OP,
            format!("dy is {:?} {:?} but x was {:?} {:?}", dy.dims(), dy.dtype(), x.dims(), x.dtype()),
        ));
    }
    let d = x.dim(D::Minus1)?;
    match backend {
        Backend::FusedCpu => {
            let (x, w, dy) = (x.contiguous()?, w.contiguous()?, dy.contiguous()?);
            let residual = residual.map(|r| r.contiguous()).transpose()?;
            let dx = {
                let (xs, ws, rs, dys) = (
                    CpuF32::new(&x, OP, "x")?,
                    CpuF32::new(&w, OP, "w")?,
                    CpuF32::new(rstd, OP, "rstd")?,
                    CpuF32::new(&dy, OP, "dy")?,
                );
                let res = residual.as_ref().map(|r| CpuF32::new(r, OP, "residual")).transpose()?;
                let res = res.as_ref().map(|r| r.as_slice());
                fused_backward(xs.as_slice(), ws.as_slice(), rs.as_slice(), dys.as_slice(), res, d)
            };
            tensor(dx, x.shape())
        }
        Backend::Composite => {
            let mut keep = x.dims().to_vec();
            *keep.last_mut().expect("x has a last dim") = 1;
            let rstd = rstd.reshape(keep)?;
            // The cast of x̂ to the input dtype passes the gradient through as is, so g is
            // formed in the input dtype (as autograd does) and the rest in f32.
            let g = dy.broadcast_mul(w)?.to_dtype(DType::F32)?;
            let xhat = x.to_dtype(DType::F32)?.broadcast_mul(&rstd)?;
            let m = (&g * &xhat)?.mean_keepdim(D::Minus1)?;
            let dx = (g - xhat.broadcast_mul(&m)?)?.broadcast_mul(&rstd)?.to_dtype(x.dtype())?;
            Ok(match residual {
                Some(r) => (r + dx)?,
                None => dx,
            })
        }
    }
}

/// The composite forward in differentiable candle ops (today's training formula).
pub fn reference(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    check(x, w)?;
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    Ok(y.to_dtype(x.dtype())?.broadcast_mul(w)?)
}

/// (rows, d) for a valid pair.
fn check(x: &Tensor, w: &Tensor) -> Result<(usize, usize)> {
    let d = match x.dims().last() {
        Some(&d) if d > 0 => d,
        _ => return Err(OpError::shape(OP, format!("x must have a non-empty last dim, got shape {:?}", x.dims()))),
    };
    if w.dims() != [d] || w.dtype() != x.dtype() {
        return Err(OpError::shape(
            OP,
            format!("w must be ({d},) {:?} to match x {:?}, got {:?} {:?}", x.dtype(), x.dims(), w.dims(), w.dtype()),
        ));
    }
    Ok((x.elem_count() / d, d))
}

fn fused_forward(x: &[f32], w: &[f32], d: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / d;
    let mut y = vec![0f32; x.len()];
    let mut rstd = vec![0f32; rows];
    let per = rows_per_task(d);
    y.par_chunks_mut(per * d).zip(rstd.par_chunks_mut(per)).zip(x.par_chunks(per * d)).for_each(|((y, rstd), x)| {
        for ((y, r), x) in y.chunks_exact_mut(d).zip(rstd.iter_mut()).zip(x.chunks_exact(d)) {
            *r = 1.0 / (dot(x, x) / d as f32 + eps).sqrt();
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = x * *r * w;
            }
        }
    });
    (y, rstd)
}

/// dx, or `residual + dx` in the same pass.
fn fused_backward(x: &[f32], w: &[f32], rstd: &[f32], dy: &[f32], residual: Option<&[f32]>, d: usize) -> Vec<f32> {
    // Starting from the residual makes the sum one `+=` per element.
    let mut dx = residual.map_or_else(|| vec![0f32; x.len()], <[f32]>::to_vec);
    let per = rows_per_task(d);
    dx.par_chunks_mut(per * d).zip(x.par_chunks(per * d)).zip(dy.par_chunks(per * d)).zip(rstd.par_chunks(per)).for_each(
        |(((dx, x), dy), rstd)| {
            for (((dx, x), dy), &r) in dx.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(dy.chunks_exact(d)).zip(rstd) {
                // mean(g ⊙ x̂) = rstd · Σ dy·w·x / d
                let m = r * dot3(dy, w, x) / d as f32;
                for (((dx, x), dy), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                    *dx += r * (dy * w - x * r * m);
                }
            }
        },
    );
    dx
}

/// Σ aᵢbᵢcᵢ, laid out like [`dot`].
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tail: f32 =
        ac.remainder().iter().zip(bc.remainder()).zip(cc.remainder()).map(|((x, y), z)| x * y * z).sum();
    for ((x, y), z) in ac.zip(bc).zip(cc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l] * z[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

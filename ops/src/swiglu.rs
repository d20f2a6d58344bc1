//! SwiGLU gating of the MLP, read from the fused gate|up projection's output.
//!
//! With gu = [g | u] (…, 2I), gate in columns [0, I) and up in [I, 2I), σ the logistic sigmoid:
//!
//! ```text
//! h = silu(g) ⊙ u,    silu(g) = g·σ(g)
//! ```
//!
//! Backward, using silu'(g) = σ(g) + g·σ(g)(1 − σ(g)) = σ(g)(1 + g(1 − σ(g))):
//!
//! ```text
//! dg = dh ⊙ u ⊙ σ(g)(1 + g(1 − σ(g)))
//! du = dh ⊙ silu(g)
//! ```
//!
//! returned side by side as dgu, the gradient of the fused projection's output. Saved: gu.
//! Like PyTorch, the composite path evaluates silu and its derivative in f32 and rounds the
//! activation to the input dtype before the product with u.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::avx2_dispatch;
use crate::cpu::{rows_per_task, sigmoid_lane, tensor, CpuF32};
use crate::{Backend, OpError, Result};

const OP: &str = "swiglu";

/// What [`backward`] reads.
#[derive(Debug, Clone)]
pub struct SwigluSaved {
    backend: Backend,
    gu: Tensor,
}

/// `silu(g) ⊙ u` for `gu` (…, 2I); the backend follows [`Backend::for_tensor`]`(gu)`.
pub fn forward(gu: &Tensor) -> Result<(Tensor, SwigluSaved)> {
    forward_on(Backend::for_tensor(gu), gu)
}

/// [`forward`] on a chosen backend; [`backward`] then runs on the same one.
pub fn forward_on(backend: Backend, gu: &Tensor) -> Result<(Tensor, SwigluSaved)> {
    let i = inner(gu)?;
    let h = match backend {
        Backend::FusedCpu => {
            let gu = gu.contiguous()?;
            let h = {
                let s = CpuF32::new(&gu, OP, "gu")?;
                fused_forward(s.as_slice(), i)
            };
            tensor(h, half_shape(&gu, i))?
        }
        Backend::Composite => {
            let (g, u) = split(gu, i)?;
            (g.to_dtype(DType::F32)?.silu()?.to_dtype(gu.dtype())? * u)?
        }
    };
    Ok((h, SwigluSaved { backend, gu: gu.clone() }))
}

/// dgu (…, 2I) for the upstream gradient `dh` (…, I).
pub fn backward(saved: &SwigluSaved, dh: &Tensor) -> Result<Tensor> {
    let SwigluSaved { backend, gu } = saved;
    let i = inner(gu)?;
    if dh.dims() != half_shape(gu, i) || dh.dtype() != gu.dtype() {
        return Err(OpError::shape(
            OP,
            format!("dh must be {:?} {:?} for gu {:?}, got {:?} {:?}", half_shape(gu, i), gu.dtype(), gu.dims(), dh.dims(), dh.dtype()),
        ));
    }
    match backend {
        Backend::FusedCpu => {
            let (gu, dh) = (gu.contiguous()?, dh.contiguous()?);
            let dgu = {
                let (s, d) = (CpuF32::new(&gu, OP, "gu")?, CpuF32::new(&dh, OP, "dh")?);
                fused_backward(s.as_slice(), d.as_slice(), i)
            };
            tensor(dgu, gu.shape())
        }
        Backend::Composite => {
            let dt = gu.dtype();
            let (g, u) = split(gu, i)?;
            let gf = g.to_dtype(DType::F32)?;
            let sig = (gf.neg()?.exp()? + 1.0)?.recip()?;
            let du = (dh * gf.silu()?.to_dtype(dt)?)?;
            let slope = (&sig * ((&gf * sig.affine(-1.0, 1.0)?)? + 1.0)?)?;
            let dg = ((dh * u)?.to_dtype(DType::F32)? * slope)?.to_dtype(dt)?;
            Ok(Tensor::cat(&[&dg, &du], D::Minus1)?)
        }
    }
}

/// The forward in differentiable candle ops (today's training formula: silu in the input dtype).
pub fn reference(gu: &Tensor) -> Result<Tensor> {
    let (g, u) = split(gu, inner(gu)?)?;
    Ok((g.silu()? * u)?)
}

/// I, half the last dim.
fn inner(gu: &Tensor) -> Result<usize> {
    match gu.dims().last() {
        Some(&w) if w > 0 && w % 2 == 0 => Ok(w / 2),
        _ => Err(OpError::shape(OP, format!("gu must end in an even, non-zero dim (gate | up), got {:?}", gu.dims()))),
    }
}

fn half_shape(gu: &Tensor, i: usize) -> Vec<usize> {
    let mut dims = gu.dims().to_vec();
    *dims.last_mut().expect("checked by inner") = i;
    dims
}

fn split(gu: &Tensor, i: usize) -> Result<(Tensor, Tensor)> {
    Ok((gu.narrow(D::Minus1, 0, i)?, gu.narrow(D::Minus1, i, i)?))
}

fn fused_forward(gu: &[f32], i: usize) -> Vec<f32> {
    let mut h = vec![0f32; gu.len() / 2];
    let per = rows_per_task(2 * i);
    h.par_chunks_mut(per * i).zip(gu.par_chunks(per * 2 * i)).for_each(|(h, gu)| {
        for (h, gu) in h.chunks_exact_mut(i).zip(gu.chunks_exact(2 * i)) {
            let (g, u) = gu.split_at(i);
            forward_row(h, g, u);
        }
    });
    h
}

fn fused_backward(gu: &[f32], dh: &[f32], i: usize) -> Vec<f32> {
    let mut dgu = vec![0f32; gu.len()];
    let per = rows_per_task(2 * i);
    dgu.par_chunks_mut(per * 2 * i).zip(gu.par_chunks(per * 2 * i)).zip(dh.par_chunks(per * i)).for_each(
        |((dgu, gu), dh)| {
            for ((dgu, gu), dh) in dgu.chunks_exact_mut(2 * i).zip(gu.chunks_exact(2 * i)).zip(dh.chunks_exact(i)) {
                let (g, u) = gu.split_at(i);
                let (dg, du) = dgu.split_at_mut(i);
                backward_row(dg, du, g, u, dh);
            }
        },
    );
    dgu
}

avx2_dispatch! {
    /// One row of h = silu(g) ⊙ u. The sigmoid's `exp` is the vectorised one: libm's scalar
    /// `expf` made this op 2 % of a training step.
    fn forward_row(h: &mut [f32], g: &[f32], u: &[f32]) => forward_row_impl
}

#[inline(always)]
fn forward_row_impl(h: &mut [f32], g: &[f32], u: &[f32]) {
    for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
        *h = g * sigmoid_lane(g) * u;
    }
}

avx2_dispatch! {
    /// One row of the backward: dg = dh ⊙ u ⊙ σ(g)(1 + g(1 − σ(g))), du = dh ⊙ silu(g).
    fn backward_row(dg: &mut [f32], du: &mut [f32], g: &[f32], u: &[f32], dh: &[f32]) => backward_row_impl
}

#[inline(always)]
fn backward_row_impl(dg: &mut [f32], du: &mut [f32], g: &[f32], u: &[f32], dh: &[f32]) {
    for ((((dg, du), &g), &u), &dh) in dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(dh) {
        let s = sigmoid_lane(g);
        *dg = dh * u * s * (1.0 + g * (1.0 - s));
        *du = dh * g * s;
    }
}

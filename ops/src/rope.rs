//! Rotary position embedding, HF's non-interleaved ("rotate_half") form, for (b, t, heads,
//! head_dim) inputs at positions 0..t.
//!
//! With x = [x₁ | x₂] split into halves of head_dim/2 and tables c = cos(p·θ), s = sin(p·θ)
//! of shape (t, head_dim/2):
//!
//! ```text
//! y₁ = x₁ ⊙ c − x₂ ⊙ s
//! y₂ = x₁ ⊙ s + x₂ ⊙ c            (y = x ⊙ [c|c] + rotate_half(x) ⊙ [s|s])
//! ```
//!
//! Each (x₁ᵢ, x₂ᵢ) pair is turned by the angle p·θᵢ; the Jacobian is that rotation, and its
//! transpose is the rotation by the opposite angle, so the backward is the same op with −s:
//!
//! ```text
//! dx₁ = dy₁ ⊙ c + dy₂ ⊙ s
//! dx₂ = −dy₁ ⊙ s + dy₂ ⊙ c
//! ```
//!
//! Nothing is saved but the tables. The composite path is candle's `rope_thd` (CPU, CUDA and
//! Metal kernels); the fused CPU kernel exists because `rope_thd`'s CPU kernel only splits work
//! by batch row (one thread for a single sequence) and walks heads in its innermost loop.
//!
//! Not fused with Qwen3's q/k RMSNorm: RoPE saves nothing, so a fused op would keep the same
//! saved tensors (the norm's input and rstd) and save only one read and write of q and k,
//! single streaming passes that are small next to the layer's projections.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

use crate::cpu::{rows_per_task, tensor, CpuF32};
use crate::{Backend, OpError, Result};

const OP: &str = "rope";

/// cos / sin tables (max_t, head_dim/2) in f32 (cast to the input dtype on the composite path,
/// as HF does); inputs of up to max_t positions use the first t rows.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    neg_sin: Tensor,
}

impl RopeTables {
    pub fn new(cos: &Tensor, sin: &Tensor) -> Result<Self> {
        let ok = |t: &Tensor| t.rank() == 2 && t.dtype() == DType::F32;
        if !ok(cos) || cos.shape() != sin.shape() || sin.dtype() != DType::F32 || !cos.device().same_device(sin.device()) {
            return Err(OpError::shape(
                OP,
                format!(
                    "cos and sin must be f32 (t, head_dim/2) on one device, got cos {:?} {:?}, sin {:?} {:?}",
                    cos.dims(),
                    cos.dtype(),
                    sin.dims(),
                    sin.dtype()
                ),
            ));
        }
        Ok(RopeTables { cos: cos.contiguous()?, sin: sin.contiguous()?, neg_sin: sin.neg()?.contiguous()? })
    }

    /// Rotates `x` (b, t, heads, head_dim); the backend follows [`Backend::for_tensor`]`(x)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_on(Backend::for_tensor(x), x)
    }

    pub fn forward_on(&self, backend: Backend, x: &Tensor) -> Result<Tensor> {
        self.rotate(backend, x, false)
    }

    /// dx for the upstream gradient `dy` (b, t, heads, head_dim): the inverse rotation.
    pub fn backward(&self, dy: &Tensor) -> Result<Tensor> {
        self.backward_on(Backend::for_tensor(dy), dy)
    }

    pub fn backward_on(&self, backend: Backend, dy: &Tensor) -> Result<Tensor> {
        self.rotate(backend, dy, true)
    }

    /// The forward in differentiable candle ops (today's training formula).
    pub fn reference(&self, x: &Tensor) -> Result<Tensor> {
        let (_, t, _, hd) = self.check(x)?;
        let table = |tab: &Tensor| -> Result<Tensor> {
            let tab = tab.narrow(0, 0, t)?.to_dtype(x.dtype())?;
            Ok(Tensor::cat(&[&tab, &tab], 1)?.reshape((1, t, 1, hd))?)
        };
        let (cos, sin) = (table(&self.cos)?, table(&self.sin)?);
        let half = hd / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
    }

    fn rotate(&self, backend: Backend, x: &Tensor, inverse: bool) -> Result<Tensor> {
        let (_, t, h, hd) = self.check(x)?;
        let sin = if inverse { &self.neg_sin } else { &self.sin };
        match backend {
            Backend::FusedCpu => {
                let x = x.contiguous()?;
                let y = {
                    let (xs, cs, ss) = (CpuF32::new(&x, OP, "x")?, CpuF32::new(&self.cos, OP, "cos")?, CpuF32::new(sin, OP, "sin")?);
                    fused_rotate(xs.as_slice(), cs.as_slice(), ss.as_slice(), t, h, hd)
                };
                tensor(y, x.shape())
            }
            Backend::Composite => {
                let table = |tab: &Tensor| -> Result<Tensor> { Ok(tab.narrow(0, 0, t)?.to_dtype(x.dtype())?.contiguous()?) };
                Ok(candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &table(&self.cos)?, &table(sin)?)?)
            }
        }
    }

    /// (b, t, heads, head_dim) of an input the tables cover.
    fn check(&self, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let (b, t, h, hd) = x.dims4().map_err(|_| OpError::shape(OP, format!("x must be (b, t, heads, head_dim), got {:?}", x.dims())))?;
        let (max_t, half) = self.cos.dims2()?;
        if hd == 0 || hd != 2 * half || t > max_t {
            return Err(OpError::shape(
                OP,
                format!("x {:?} needs tables (>= {t}, {}), have ({max_t}, {half})", x.dims(), hd / 2),
            ));
        }
        Ok((b, t, h, hd))
    }
}

/// `x` (b, t, heads, hd) rotated with the first t rows of (cos, sin); one task per block of
/// (b, t) rows, the head_dim/2 pairs innermost so the loop vectorises.
fn fused_rotate(x: &[f32], cos: &[f32], sin: &[f32], t: usize, heads: usize, hd: usize) -> Vec<f32> {
    let (half, row) = (hd / 2, heads * hd);
    let mut y = vec![0f32; x.len()];
    if x.is_empty() {
        return y;
    }
    let per = rows_per_task(row);
    y.par_chunks_mut(per * row).zip(x.par_chunks(per * row)).enumerate().for_each(|(task, (y, x))| {
        for (r, (y, x)) in y.chunks_exact_mut(row).zip(x.chunks_exact(row)).enumerate() {
            let p = (task * per + r) % t;
            let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            for (y, x) in y.chunks_exact_mut(hd).zip(x.chunks_exact(hd)) {
                let (x1, x2) = x.split_at(half);
                let (y1, y2) = y.split_at_mut(half);
                for i in 0..half {
                    y1[i] = x1[i] * c[i] - x2[i] * s[i];
                    y2[i] = x1[i] * s[i] + x2[i] * c[i];
                }
            }
        }
    });
    y
}

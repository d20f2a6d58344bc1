//! Causal self-attention with grouped-query heads, FlashAttention-2 style.
//!
//! Inputs are token-major as they leave the projections after RoPE: `q` (b, t, nh, hd),
//! `k`, `v` (b, t, nkv, hd), with query head h reading kv head ⌊h / g⌋, g = nh / nkv.
//! For one (row, head), with S = scale · q kᵀ and causal mask j ≤ i:
//!
//! ```text
//! forward:   P_ij = exp(S_ij − lse_i),   lse_i = log Σ_{j≤i} exp(S_ij),   O_i = Σ_j P_ij V_j
//! backward:  D_i  = dO_i · O_i
//!            dV_j = Σ_i P_ij dO_i          dP_ij = dO_i · V_j
//!            dS_ij = P_ij (dP_ij − D_i)
//!            dQ_i = scale · Σ_j dS_ij K_j   dK_j = scale · Σ_i dS_ij Q_i
//! ```
//!
//! (D_i = Σ_j P_ij dP_ij, the softmax Jacobian's correction term, rewritten with O.) The g
//! query heads of a group all add into their kv head's dK/dV. Only q, k, v, o and the f32
//! log-sum-exp (b, nh, t) are saved; P is recomputed from them, never stored as a (t, t) matrix.
//!
//! With per-row valid lengths (right padding), rows at or past their length output zeros and
//! get zero gradients; the fused kernel spends no work on them. Their `lse` entries are
//! unspecified.
//!
//! [`forward_gathered`] runs the same attention on rows gathered from one packed sequence
//! (completions sharing their prompt, `gathered.rs`).
//!
//! Backends: the fused CPU kernel (`cpu.rs`) runs the blocked online-softmax algorithm with
//! rayon; the composite path (`composite.rs`) materialises f32 scores for a chunk of queries at
//! a time (memory b·nh·chunk·t, see [`composite_query_chunk`]) with candle ops, for CUDA and
//! half precision.

mod composite;
mod cpu;
mod gathered;

pub use gathered::{forward_gathered, RowGather};

use candle_core::{DType, Tensor, D};

use crate::{Backend, OpError, Result};

const OP: &str = "attention";

/// Overrides for [`forward_with`]; the defaults are what [`forward`] uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions {
    /// `None`: [`Backend::for_tensor`] of `q`.
    pub backend: Option<Backend>,
    /// Query rows per chunk of the composite path; `None`: [`composite_query_chunk`].
    pub query_chunk: Option<usize>,
}

/// What [`backward`] reads.
#[derive(Debug, Clone)]
pub struct AttentionSaved {
    backend: Backend,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    scale: f64,
    lens: Option<Vec<usize>>,
    /// See [`forward_rows`].
    query_from: Option<Vec<usize>>,
    query_chunk: usize,
    /// Set by [`forward_gathered`]: q, k, v and o above are empty, the packed ones live here.
    gathered: Option<Box<gathered::GatheredSaved>>,
}

impl AttentionSaved {
    fn gathered(saved: gathered::GatheredSaved) -> Self {
        let mut outer = saved.inner.clone();
        outer.gathered = Some(Box::new(saved));
        outer
    }

    /// The same state with its four activation tensors dropped (kept packed elsewhere).
    fn without_tensors(self) -> Result<Self> {
        let e = gathered::empty(self.q.device())?;
        Ok(AttentionSaved { q: e.clone(), k: e.clone(), v: e.clone(), o: e, ..self })
    }

    fn with_tensors(&self, q: Tensor, k: Tensor, v: Tensor, o: Tensor) -> Self {
        AttentionSaved { q, k, v, o, gathered: None, ..self.clone() }
    }

    /// Log-sum-exp of the scaled scores, (b, nh, t) f32 (for a gathered call: per attention row,
    /// (rows, nh, width)).
    pub fn lse(&self) -> &Tensor {
        &self.lse
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Gradients of the three inputs, each in its input's shape and dtype.
#[derive(Debug, Clone)]
pub struct AttentionGrads {
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
}

/// Sizes of one call, checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
}

impl Dims {
    pub fn group(&self) -> usize {
        self.nh / self.nkv
    }
}

/// Byte budget of one f32 score tensor (b, nh, chunk, t) in the composite path.
pub const COMPOSITE_SCORE_BUDGET_BYTES: usize = 128 << 20;

/// Query rows per composite chunk so one f32 score tensor stays under
/// [`COMPOSITE_SCORE_BUDGET_BYTES`] (at least 1).
pub fn composite_query_chunk(b: usize, nh: usize, t: usize) -> usize {
    (COMPOSITE_SCORE_BUDGET_BYTES / (4 * b * nh * t).max(1)).max(1)
}

/// Causal attention output (b, t, nh, hd) in q's dtype, and what the backward needs.
pub fn forward(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, lens: Option<&[usize]>) -> Result<(Tensor, AttentionSaved)> {
    forward_with(q, k, v, scale, lens, AttentionOptions::default())
}

/// [`forward`] with an explicit backend or composite chunk size.
pub fn forward_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    lens: Option<&[usize]>,
    opts: AttentionOptions,
) -> Result<(Tensor, AttentionSaved)> {
    forward_rows(q, k, v, scale, lens, None, opts)
}

/// [`forward_with`] where row r's outputs before position `query_from[r]` are not needed (and
/// their output gradients will be zero): the fused kernel skips the query blocks that end
/// before it, in the forward and the backward. Their outputs are unspecified.
fn forward_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    lens: Option<&[usize]>,
    query_from: Option<&[usize]>,
    opts: AttentionOptions,
) -> Result<(Tensor, AttentionSaved)> {
    let dims = check_inputs(q, k, v, scale, lens)?;
    if query_from.is_some_and(|f| f.len() != dims.b) {
        return Err(OpError::shape(OP, format!("query starts for {} rows in a batch of {}", query_from.map_or(0, <[usize]>::len), dims.b)));
    }
    let backend = opts.backend.unwrap_or_else(|| Backend::for_tensor(q));
    let query_chunk = opts.query_chunk.unwrap_or_else(|| composite_query_chunk(dims.b, dims.nh, dims.t)).max(1);
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (o, lse) = match backend {
        Backend::FusedCpu => {
            check_fused(&q)?;
            cpu::forward(&q, &k, &v, dims, scale as f32, lens, query_from)?
        }
        Backend::Composite => composite::forward(&q, &k, &v, dims, scale, lens, query_chunk)?,
    };
    let saved = AttentionSaved {
        backend,
        q,
        k,
        v,
        o: o.clone(),
        lse,
        scale,
        lens: lens.map(<[usize]>::to_vec),
        query_from: query_from.map(<[usize]>::to_vec),
        query_chunk,
        gathered: None,
    };
    Ok((o, saved))
}

/// Gradients of q, k and v given the gradient of the output (b, t, nh, hd).
pub fn backward(saved: &AttentionSaved, grad_o: &Tensor) -> Result<AttentionGrads> {
    if let Some(g) = &saved.gathered {
        if grad_o.dims() != g.o.dims() {
            return Err(OpError::shape(OP, format!("grad_o shape {:?} differs from the output's {:?}", grad_o.dims(), g.o.dims())));
        }
        return gathered::backward(g, grad_o);
    }
    if grad_o.dims() != saved.o.dims() {
        return Err(OpError::shape(OP, format!("grad_o shape {:?} differs from the output's {:?}", grad_o.dims(), saved.o.dims())));
    }
    let (b, t, nh, hd) = saved.q.dims4()?;
    let nkv = saved.k.dim(2)?;
    let dims = Dims { b, t, nh, nkv, hd };
    let lens = saved.lens.as_deref();
    let (dq, dk, dv) = match saved.backend {
        Backend::FusedCpu => {
            let grad_o = grad_o.to_dtype(DType::F32)?.contiguous()?;
            cpu::backward(saved, &grad_o, dims, lens)?
        }
        Backend::Composite => {
            let grad_o = grad_o.to_dtype(saved.o.dtype())?.contiguous()?;
            composite::backward(saved, &grad_o, dims, lens)?
        }
    };
    Ok(AttentionGrads { dq, dk, dv })
}

/// The textbook formula with differentiable candle ops (scores, additive causal mask, softmax
/// with a detached max, as the model's training path does), for tests through autograd.
pub fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, lens: Option<&[usize]>) -> Result<Tensor> {
    let Dims { b, t, nh, nkv, hd } = check_inputs(q, k, v, scale, lens)?;
    let g = nh / nkv;
    let qh = q.transpose(1, 2)?.contiguous()?.reshape((b, nkv, g * t, hd))?;
    let kh = k.transpose(1, 2)?.contiguous()?;
    let vh = v.transpose(1, 2)?.contiguous()?;
    let scores = (qh.matmul(&kh.t()?)? * scale)?;
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (t, t), q.device())?.to_dtype(q.dtype())?;
    let scores = scores.reshape((b, nkv, g, t, t))?.broadcast_add(&mask)?.reshape((b, nkv, g * t, t))?;
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?;
    let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let out = probs.matmul(&vh)?.reshape((b, nh, t, hd))?.transpose(1, 2)?;
    match lens {
        Some(lens) => Ok(out.broadcast_mul(&row_mask(lens, t, q)?)?),
        None => Ok(out.contiguous()?),
    }
}

/// (b, t, 1, 1) in q's dtype and device: 1 for rows before their length, else 0.
pub(crate) fn row_mask(lens: &[usize], t: usize, like: &Tensor) -> Result<Tensor> {
    let m: Vec<f32> = lens.iter().flat_map(|&l| (0..t).map(move |i| if i < l { 1.0 } else { 0.0 })).collect();
    Ok(Tensor::from_vec(m, (lens.len(), t, 1, 1), like.device())?.to_dtype(like.dtype())?)
}

fn check_inputs(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, lens: Option<&[usize]>) -> Result<Dims> {
    let (b, t, nh, hd) = q.dims4().map_err(|_| OpError::shape(OP, format!("q must be (b, t, heads, head_dim), got {:?}", q.dims())))?;
    let (b2, t2, nkv, hd2) = k.dims4().map_err(|_| OpError::shape(OP, format!("k must be (b, t, kv_heads, head_dim), got {:?}", k.dims())))?;
    if (b2, t2, hd2) != (b, t, hd) {
        return Err(OpError::shape(OP, format!("k shape {:?} does not fit q shape {:?}", k.dims(), q.dims())));
    }
    if v.dims() != k.dims() {
        return Err(OpError::shape(OP, format!("v shape {:?} differs from k shape {:?}", v.dims(), k.dims())));
    }
    if nkv == 0 || nh % nkv != 0 {
        return Err(OpError::shape(OP, format!("{nh} query heads are not a multiple of {nkv} kv heads")));
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(OpError::shape(OP, format!("dtypes differ: q {:?}, k {:?}, v {:?}", q.dtype(), k.dtype(), v.dtype())));
    }
    if !k.device().same_device(q.device()) || !v.device().same_device(q.device()) {
        return Err(OpError::shape(OP, "q, k and v are on different devices"));
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(OpError::shape(OP, format!("scale must be positive and finite, got {scale}")));
    }
    if let Some(lens) = lens {
        if lens.len() != b {
            return Err(OpError::shape(OP, format!("lens has {} entries for a batch of {b}", lens.len())));
        }
        if let Some(&l) = lens.iter().find(|&&l| l > t) {
            return Err(OpError::shape(OP, format!("length {l} exceeds the sequence length {t}")));
        }
    }
    Ok(Dims { b, t, nh, nkv, hd })
}

fn check_fused(q: &Tensor) -> Result<()> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 {
        return Err(OpError::shape(OP, format!("the fused CPU kernel needs CPU f32 inputs, got {:?} on {:?}", q.dtype(), q.device())));
    }
    Ok(())
}

/// Uniform values in [−1, 1) from a xorshift stream: the attention tests' inputs.
#[cfg(test)]
fn random(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu).expect("a CPU tensor of its own length")
}

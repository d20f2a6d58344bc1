//! Per-token log-probabilities of the next-token targets through the frozen vocabulary
//! projection, without ever holding the (m, vocab) logits (Liger's fused linear
//! cross-entropy idea).
//!
//! For a scored row h (d) with target y, vocabulary projection W (V, d) and temperature T:
//!
//! ```text
//! forward:   z = h Wᵀ / T,   lse = log Σ_v exp(z_v),   lp = z_y − lse
//! backward:  ∂lp/∂z = onehot(y) − p,   p = exp(z − lse) = softmax(z)
//!            dh = (dlp · (onehot(y) − p)) W / T          (no gradient for the frozen W)
//! ```
//!
//! Rows are processed in chunks whose f32 logits fit a byte budget
//! ([`LOGITS_BUDGET_BYTES`] by default); the backward recomputes each chunk's logits from the
//! saved h and uses the saved lse instead of a second max/sum pass. Rows with dlp = 0 (tokens
//! that carry no loss) are skipped by the fused kernel.
//!
//! Since dh = (dlp/T)·(W_y − E_p[W]) with E_p[W] = p W = Σ_v p_v W_v, a forward that will be
//! differentiated can save E_p[W] (m, d) instead ([`LogprobOptions::expectation`]): one more
//! vocabulary product in the forward (p W, while p is at hand), none in the backward, so two
//! (m × V × d) products per training step instead of three (recomputed logits and dz W).

mod composite;
mod cpu;

use candle_core::{DType, Tensor, D};

use crate::{Backend, OpError, Result};

const OP: &str = "linear_logprob";

/// Default byte budget of one chunk of f32 logits (chunk rows × vocab × 4).
pub const LOGITS_BUDGET_BYTES: usize = 64 << 20;

/// Rows per chunk so that one chunk of f32 logits stays under [`LOGITS_BUDGET_BYTES`]
/// (at least 1): 110 rows for Qwen3's 151,936-token vocabulary, 341 for SmolLM2's 49,152.
pub fn default_chunk_rows(vocab: usize) -> usize {
    (LOGITS_BUDGET_BYTES / (4 * vocab).max(1)).max(1)
}

/// Overrides for [`forward_with`]; the defaults are what [`forward`] uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogprobOptions {
    /// `None`: the fused kernel for CPU f32 `h` and `w`, else the composite path.
    pub backend: Option<Backend>,
    /// Rows per chunk; `None`: [`default_chunk_rows`].
    pub chunk_rows: Option<usize>,
    /// Save E_p[W] (m, d) f32 in the forward so the backward needs no vocabulary product.
    /// For forwards that will be differentiated; scoring-only forwards leave it off.
    pub expectation: bool,
}

/// What [`backward`] reads: the scored rows, the log-sum-exp per row and the (shared, not
/// copied) projection and targets.
#[derive(Debug, Clone)]
pub struct LogprobSaved {
    backend: Backend,
    h: Tensor,
    w: Tensor,
    targets: Tensor,
    lse: Tensor,
    /// E_p[W] (m, d) f32, when [`LogprobOptions::expectation`] was set.
    expectation: Option<Tensor>,
    temperature: f64,
    chunk_rows: usize,
}

impl LogprobSaved {
    /// log Σ_v exp(z_v) per row, (m) f32.
    pub fn lse(&self) -> &Tensor {
        &self.lse
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }
}

/// lp (m) f32 for `h` (m, d), `w` (V, d), `targets` (m) u32 and temperature T > 0.
pub fn forward(h: &Tensor, w: &Tensor, targets: &Tensor, temperature: f64) -> Result<(Tensor, LogprobSaved)> {
    forward_with(h, w, targets, temperature, LogprobOptions::default())
}

/// [`forward`] with an explicit backend or chunk size.
pub fn forward_with(h: &Tensor, w: &Tensor, targets: &Tensor, temperature: f64, opts: LogprobOptions) -> Result<(Tensor, LogprobSaved)> {
    let (_, _, vocab) = check_inputs(h, w, targets, temperature)?;
    let backend = opts.backend.unwrap_or_else(|| match Backend::for_tensor(h) {
        Backend::FusedCpu if w.dtype() == DType::F32 && w.device().is_cpu() => Backend::FusedCpu,
        _ => Backend::Composite,
    });
    let chunk_rows = opts.chunk_rows.unwrap_or_else(|| default_chunk_rows(vocab)).max(1);
    let (h, w, targets) = (h.contiguous()?, w.contiguous()?, targets.contiguous()?);
    let (lp, lse, expectation) = match backend {
        Backend::FusedCpu => {
            if !(h.device().is_cpu() && h.dtype() == DType::F32 && w.dtype() == DType::F32) {
                return Err(OpError::shape(OP, format!("the fused CPU kernel needs CPU f32 h and w, got {:?} and {:?} on {:?}", h.dtype(), w.dtype(), h.device())));
            }
            cpu::forward(&h, &w, &targets, temperature as f32, chunk_rows, opts.expectation)?
        }
        Backend::Composite => composite::forward(&h, &w, &targets, temperature, chunk_rows, opts.expectation)?,
    };
    Ok((lp, LogprobSaved { backend, h, w, targets, lse, expectation, temperature, chunk_rows }))
}

/// dh (m, d) in h's dtype from the upstream gradient `dlp` (m).
pub fn backward(saved: &LogprobSaved, dlp: &Tensor) -> Result<Tensor> {
    let m = saved.h.dim(0)?;
    if dlp.dims() != [m] {
        return Err(OpError::shape(OP, format!("dlp must be ({m}), got {:?}", dlp.dims())));
    }
    let dlp = dlp.to_dtype(DType::F32)?.contiguous()?;
    if let Some(e) = &saved.expectation {
        return composite::expectation_backward(saved, e, &dlp);
    }
    match saved.backend {
        Backend::FusedCpu => cpu::backward(saved, &dlp),
        Backend::Composite => composite::backward(saved, &dlp),
    }
}

/// The full-logits formula with differentiable candle ops (the learner's `token_logprobs`:
/// logits / T, detached max, log-sum-exp, gather), for tests through autograd.
pub fn reference(h: &Tensor, w: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    check_inputs(h, w, targets, temperature)?;
    let logits = h.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(DType::F32)?;
    let logits = if temperature != 1.0 { (logits / temperature)? } else { logits };
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    Ok(picked.broadcast_sub(&lse)?.squeeze(D::Minus1)?)
}

/// (m, d, V) after checking shapes, dtypes and the temperature.
fn check_inputs(h: &Tensor, w: &Tensor, targets: &Tensor, temperature: f64) -> Result<(usize, usize, usize)> {
    let (m, d) = h.dims2().map_err(|_| OpError::shape(OP, format!("h must be (rows, hidden), got {:?}", h.dims())))?;
    let (vocab, d2) = w.dims2().map_err(|_| OpError::shape(OP, format!("w must be (vocab, hidden), got {:?}", w.dims())))?;
    if d2 != d {
        return Err(OpError::shape(OP, format!("w has hidden size {d2}, h has {d}")));
    }
    if targets.dims() != [m] || targets.dtype() != DType::U32 {
        return Err(OpError::shape(OP, format!("targets must be ({m}) u32, got {:?} {:?}", targets.dims(), targets.dtype())));
    }
    if !h.dtype().is_float() || !w.dtype().is_float() {
        return Err(OpError::shape(OP, format!("h and w must be floating point, got {:?} and {:?}", h.dtype(), w.dtype())));
    }
    if !w.device().same_device(h.device()) || !targets.device().same_device(h.device()) {
        return Err(OpError::shape(OP, "h, w and targets are on different devices"));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(OpError::shape(OP, format!("temperature must be positive and finite, got {temperature}")));
    }
    if m > 0 {
        let top = targets.max(0)?.to_scalar::<u32>()? as usize;
        if top >= vocab {
            return Err(OpError::shape(OP, format!("target id {top} is outside the vocabulary of {vocab}")));
        }
    }
    Ok((m, d, vocab))
}

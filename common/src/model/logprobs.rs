//! Per-token log-probabilities, differentiable (no fused softmax).

use candle_core::{DType, Tensor, D};

use super::ModelError;

/// log p(targets | ...) under softmax(logits / temperature); differentiable w.r.t. `logits`.
/// `logits` (b, t, v) f32, `targets` (b, t) u32 -> (b, t) f32. `temperature == 0` means greedy
/// and is scored at T = 1, like the sampler's log-probs.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor, ModelError> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ModelError::Input(format!("temperature must be >= 0, got {temperature}")));
    }
    let (b, t, v) = logits
        .dims3()
        .map_err(|_| ModelError::Input(format!("logits must be (batch, seq, vocab), got {:?}", logits.dims())))?;
    if targets.dims() != [b, t] {
        return Err(ModelError::Input(format!("targets shape {:?} does not match logits {:?}", targets.dims(), logits.dims())));
    }
    if targets.dtype() != DType::U32 {
        return Err(ModelError::Input(format!("targets must be u32, got {:?}", targets.dtype())));
    }
    if b * t > 0 {
        let max = targets.max_all()?.to_scalar::<u32>()? as usize;
        if max >= v {
            return Err(ModelError::Input(format!("target id {max} is out of the vocabulary (size {v})")));
        }
    }
    let logits = logits.to_dtype(DType::F32)?;
    let scaled = if temperature == 0.0 || temperature == 1.0 { logits } else { (logits / temperature)? };
    // logsumexp with a detached max: the max only stabilises, its gradient cancels exactly.
    let max = scaled.max_keepdim(D::Minus1)?.detach();
    let lse = (scaled.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &max)?;
    let picked = scaled.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    Ok((picked - lse)?.squeeze(D::Minus1)?)
}

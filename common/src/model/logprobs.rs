//! Per-token log-probabilities, differentiable (no fused softmax).

use candle_core::{DType, Tensor, D};

use super::ModelError;

/// log p(targets | ...) under softmax(logits / temperature); differentiable w.r.t. `logits`.
/// `logits` (b, t, v) f32 (contiguous or not), `targets` (b, t) u32 -> (b, t) f32.
/// `temperature == 0` means greedy and is scored at T = 1, like the sampler's log-probs. The one
/// implementation: the learner's SFT and GRPO losses use it too.
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
    // log-softmax is shift-invariant: subtracting a detached max only stabilises (its gradient
    // cancels exactly). The shifted copy is contiguous, so `logits` may be a narrowed view.
    let max = scaled.max_keepdim(D::Minus1)?.detach();
    let shifted = scaled.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    Ok(picked.broadcast_sub(&lse)?.squeeze(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn narrowed_logits_score_like_contiguous_ones() {
        let dev = Device::Cpu;
        let logits = Tensor::arange(0f32, 48., &dev).unwrap().reshape((2, 4, 6)).unwrap().sin().unwrap();
        let targets = Tensor::new(&[[1u32, 5, 0], [2, 2, 3]], &dev).unwrap();
        let view = logits.narrow(1, 0, 3).unwrap();
        assert!(!view.is_contiguous());
        let got = token_logprobs(&view, &targets, 0.7).unwrap().to_vec2::<f32>().unwrap();
        let want = token_logprobs(&view.contiguous().unwrap(), &targets, 0.7).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, want);
        let row: Vec<f32> = (0..6).map(|i| (i as f32).sin() / 0.7).collect();
        let lse = row.iter().map(|x| x.exp()).sum::<f32>().ln();
        assert!((got[0][0] - (row[1] - lse)).abs() < 1e-6);
        assert!(token_logprobs(&view, &Tensor::new(&[[1u32, 6, 0], [0, 0, 0]], &dev).unwrap(), 1.0).is_err(), "id out of vocab");
    }
}

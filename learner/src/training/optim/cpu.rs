//! The optimiser's CPU f32 kernels: plain slice loops over contiguous storage, so a step reads
//! each gradient, moment and parameter once and never waits on a per-tensor host sync.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor};

/// Whether `t` can be updated in place by [`adamw_update`].
pub(super) fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// Σ g² in f64 for a CPU f32 gradient; `None` for any other device or dtype.
pub(super) fn sum_squares(g: &Tensor) -> candle_core::Result<Option<f64>> {
    if !g.device().is_cpu() || g.dtype() != DType::F32 {
        return Ok(None);
    }
    let g = g.contiguous()?;
    let (storage, layout) = g.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { return Ok(None) };
    let Some((start, end)) = layout.contiguous_offsets() else { return Ok(None) };
    Ok(Some(sum_squares_slice(&cpu.as_slice::<f32>()?[start..end])))
}

/// Eight independent f64 lanes so the loop vectorises without reassociating one accumulator.
fn sum_squares_slice(xs: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (acc, &x) in lanes.iter_mut().zip(c) {
            *acc += f64::from(x) * f64::from(x);
        }
    }
    lanes.iter().sum::<f64>() + tail.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>()
}

/// One step's AdamW constants, in the parameter's precision (as torch computes them for f32).
#[derive(Debug, Clone, Copy)]
pub(super) struct StepConsts {
    pub grad_scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// 1 − β₁ and 1 − β₂, formed in f64 first as torch does.
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    /// 1 − β₂ᵗ, square-rooted.
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// lr / (1 − β₁ᵗ).
    pub step_size: f32,
    /// 1 − lr · weight_decay.
    pub decay: f32,
}

/// Updates `param` (CPU f32, contiguous) in place from `grad` and the moments `m`, `v` in one
/// pass: torch.optim.AdamW's decoupled decay, moments, bias-corrected step.
pub(super) fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    c: StepConsts,
) -> candle_core::Result<()> {
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let op = FusedAdamW { m: RefCell::new(m), v: RefCell::new(v), c };
    param.inplace_op2(&grad, &op)
}

struct FusedAdamW<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    c: StepConsts,
}

impl InplaceOp2 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (s1, s2) else {
            candle_core::bail!("fused-adamw: parameter and gradient must be f32");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("fused-adamw: parameter and gradient must be contiguous");
        };
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        let (param, grad) = (&mut param[p0..p1], &grad[g0..g1]);
        if grad.len() != param.len() || m.len() != param.len() || v.len() != param.len() {
            candle_core::bail!(
                "fused-adamw: {} parameters, {} gradients, {} / {} moments",
                param.len(),
                grad.len(),
                m.len(),
                v.len()
            );
        }
        update_slices(param, grad, &mut m, &mut v, self.c);
        Ok(())
    }
}

fn update_slices(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: StepConsts) {
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * c.grad_scale;
        *m = *m * c.beta1 + g * c.one_minus_beta1;
        *v = *v * c.beta2 + g * g * c.one_minus_beta2;
        let denom = v.sqrt() / c.bc2_sqrt + c.eps;
        *p = *p * c.decay - c.step_size * (*m / denom);
    }
}

#[cfg(test)]
mod tests {
    use super::sum_squares_slice;

    #[test]
    fn sum_squares_covers_the_tail() {
        let xs: Vec<f32> = (1..=11).map(|i| i as f32).collect();
        assert_eq!(sum_squares_slice(&xs), (1..=11).map(|i| (i * i) as f64).sum::<f64>());
        assert_eq!(sum_squares_slice(&[]), 0.0);
    }
}

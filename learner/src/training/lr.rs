//! The paper's learning-rate schedule: constant during SFT, linear decay during GRPO, both reset
//! at the start of every phase.

use asrl_common::phase::Phase;

#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    /// SFT's constant learning rate.
    pub sft_lr: f64,
    /// GRPO's peak: the phase starts here and ends at `grpo_lr * grpo_floor`.
    pub grpo_lr: f64,
    pub grpo_floor: f64,
}

impl LrSchedule {
    /// LR of the optimiser step `step` (0-based, counted within the phase) when the phase is
    /// planned to take `planned_steps` steps. GRPO follows transformers' linear schedule
    /// `peak · (1 − step/planned)`, lifted to end at the floor instead of 0.
    pub fn lr(&self, phase: Phase, step: u64, planned_steps: u64) -> f64 {
        match phase {
            Phase::Sft => self.sft_lr,
            Phase::Grpo => {
                let progress = if planned_steps == 0 {
                    0.0
                } else {
                    (step as f64 / planned_steps as f64).min(1.0)
                };
                self.grpo_lr * (self.grpo_floor + (1.0 - self.grpo_floor) * (1.0 - progress))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sft_constant_grpo_linear_to_floor() {
        let s = LrSchedule { sft_lr: 1e-4, grpo_lr: 1e-4, grpo_floor: 0.1 };
        assert_eq!(s.lr(Phase::Sft, 0, 10), 1e-4);
        assert_eq!(s.lr(Phase::Sft, 99, 10), 1e-4);
        assert!((s.lr(Phase::Grpo, 0, 10) - 1e-4).abs() < 1e-18);
        assert!((s.lr(Phase::Grpo, 5, 10) - 0.55e-4).abs() < 1e-15);
        assert!((s.lr(Phase::Grpo, 10, 10) - 1e-5).abs() < 1e-15);
        assert!((s.lr(Phase::Grpo, 50, 10) - 1e-5).abs() < 1e-15);
        assert_eq!(s.lr(Phase::Grpo, 3, 0), 1e-4);
    }

    #[test]
    fn grpo_has_its_own_peak() {
        let s = LrSchedule { sft_lr: 1e-3, grpo_lr: 2e-4, grpo_floor: 0.5 };
        assert_eq!(s.lr(Phase::Sft, 7, 10), 1e-3);
        assert!((s.lr(Phase::Grpo, 0, 10) - 2e-4).abs() < 1e-18);
        assert!((s.lr(Phase::Grpo, 10, 10) - 1e-4).abs() < 1e-18);
    }
}

//! Group-relative advantages (TRL `scale_rewards` semantics, unbiased std).
//!
//! Finite rewards of any size give finite advantages: sums run on rewards divided by the
//! largest magnitude (so ±1e308 cannot overflow them), and every advantage is clamped to the
//! range an `f32` (the loss's dtype) can hold. The learner also bounds rewards at submission
//! (`reward.max_abs`); this is the backstop.

use asrl_common::config::AdvantageScaling;

/// Advantages of every completion, group by group, and how many groups had (numerically) zero
/// reward std: those teach nothing and are reported as a health metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    pub per_group: Vec<Vec<f64>>,
    pub zero_std_groups: usize,
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Bessel-corrected std like torch; 0 for fewer than two values (TRL does the same for n = 1).
fn std_unbiased(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Largest advantage magnitude: what an `f32` holds.
const MAX_ADVANTAGE: f64 = f32::MAX as f64;

/// `xs / s` with `s` the largest magnitude (1 when all are 0 or `xs` is empty): values in
/// [-1, 1] whose sums and squares cannot overflow.
fn scaled(xs: &[f64]) -> (Vec<f64>, f64) {
    let s = xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let s = if s > 0.0 && s.is_finite() { s } else { 1.0 };
    (xs.iter().map(|x| x / s).collect(), s)
}

/// (r − mean) / (std + eps) computed on scaled values: with r = s·x,
/// (s·x − s·m) / (s·σ + eps) = (x − m) / (σ + eps/s). A zero denominator (σ = 0 and eps = 0)
/// gives 0: every such reward equals the mean.
fn normalised(x: f64, m: f64, sigma: f64, eps_over_s: f64) -> f64 {
    let d = sigma + eps_over_s;
    if d > 0.0 {
        (x - m) / d
    } else {
        0.0
    }
}

/// Clamped to what an `f32` can hold; NaN (only from non-finite rewards) becomes 0.
fn finite(a: f64) -> f64 {
    if a.is_nan() {
        0.0
    } else {
        a.clamp(-MAX_ADVANTAGE, MAX_ADVANTAGE)
    }
}

/// A = r − mean(group), divided by (std + eps) of the group, of the whole step, or not at all.
pub fn compute_advantages(rewards: &[Vec<f64>], scaling: AdvantageScaling, eps: f64) -> Advantages {
    let all: Vec<f64> = rewards.iter().flatten().copied().collect();
    let (all_x, all_s) = scaled(&all);
    let batch_std_x = std_unbiased(&all_x);
    let mut zero_std_groups = 0;
    let per_group = rewards
        .iter()
        .map(|group| {
            let (x, s) = scaled(group);
            let m = mean(&x);
            let sigma = std_unbiased(&x);
            // torch.isclose(std, 0) with its default atol, on the unscaled std.
            if sigma * s <= 1e-8 {
                zero_std_groups += 1;
            }
            x.iter()
                .map(|&xi| {
                    let a = match scaling {
                        AdvantageScaling::Group => normalised(xi, m, sigma, eps / s),
                        // Both in units of the batch's scale.
                        AdvantageScaling::Batch => {
                            let k = s / all_s;
                            normalised(xi * k, m * k, batch_std_x, eps / all_s)
                        }
                        AdvantageScaling::None => (xi - m) * s,
                    };
                    finite(a)
                })
                .collect()
        })
        .collect();
    Advantages { per_group, zero_std_groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_batch_and_unscaled_advantages() {
        let rewards = vec![vec![1.0, 0.0, 0.0, 1.0], vec![0.5, 0.5, 0.5, 0.5]];
        let a = compute_advantages(&rewards, AdvantageScaling::Group, 1e-4);
        let s = (1.0f64 / 3.0).sqrt(); // unbiased std of [1,0,0,1]
        assert!((a.per_group[0][0] - 0.5 / (s + 1e-4)).abs() < 1e-12);
        assert!((a.per_group[0][1] + 0.5 / (s + 1e-4)).abs() < 1e-12);
        assert_eq!(a.per_group[1], vec![0.0; 4]);
        assert_eq!(a.zero_std_groups, 1);

        let b = compute_advantages(&rewards, AdvantageScaling::Batch, 0.0);
        let all = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5];
        assert!((b.per_group[0][0] - 0.5 / std_unbiased(&all)).abs() < 1e-12);

        let n = compute_advantages(&rewards, AdvantageScaling::None, 1e-4);
        assert_eq!(n.per_group[0], vec![0.5, -0.5, -0.5, 0.5]);
    }

    #[test]
    fn no_finite_reward_makes_an_advantage_non_finite() {
        let groups = vec![
            vec![1e308, -1e308, 0.0, 1e308],
            vec![f64::MAX, f64::MAX, f64::MAX],
            vec![-f64::MAX, 5e-324, f64::MAX],
            vec![1e-300, 2e-300, 0.0],
            vec![0.0, 0.0],
        ];
        for scaling in [AdvantageScaling::Group, AdvantageScaling::Batch, AdvantageScaling::None] {
            for eps in [0.0, 1e-4] {
                let a = compute_advantages(&groups, scaling, eps);
                for (g, adv) in a.per_group.iter().enumerate() {
                    assert!(
                        adv.iter().all(|x| x.is_finite() && (*x as f32).is_finite()),
                        "{scaling:?} eps {eps} group {g}: {adv:?}"
                    );
                }
                // Signs survive the scaling: the largest reward has the largest advantage.
                assert!(a.per_group[0][0] > 0.0 && a.per_group[0][1] < 0.0, "{scaling:?}: {:?}", a.per_group[0]);
                assert_eq!(a.per_group[1], vec![0.0; 3], "{scaling:?}: equal rewards teach nothing");
            }
        }
        // Group scaling of huge rewards equals that of the same rewards scaled down.
        let big = compute_advantages(&[vec![3e307, 1e307, 0.0]], AdvantageScaling::Group, 0.0);
        let small = compute_advantages(&[vec![3.0, 1.0, 0.0]], AdvantageScaling::Group, 0.0);
        for (b, s) in big.per_group[0].iter().zip(&small.per_group[0]) {
            assert!((b - s).abs() < 1e-12, "{big:?} vs {small:?}");
        }
    }

    #[test]
    fn single_completion_groups_have_zero_advantage() {
        let a = compute_advantages(&[vec![3.0]], AdvantageScaling::Group, 1e-4);
        assert_eq!(a.per_group, vec![vec![0.0]]);
        assert_eq!(a.zero_std_groups, 1);
    }
}

//! Group-relative advantages (TRL `scale_rewards` semantics, unbiased std).

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

/// A = r − mean(group), divided by (std + eps) of the group, of the whole step, or not at all.
pub fn compute_advantages(rewards: &[Vec<f64>], scaling: AdvantageScaling, eps: f64) -> Advantages {
    let all: Vec<f64> = rewards.iter().flatten().copied().collect();
    let batch_std = std_unbiased(&all);
    let mut zero_std_groups = 0;
    let per_group = rewards
        .iter()
        .map(|group| {
            let m = mean(group);
            let group_std = std_unbiased(group);
            // torch.isclose(std, 0) with its default atol.
            if group_std.abs() <= 1e-8 {
                zero_std_groups += 1;
            }
            let denom = match scaling {
                AdvantageScaling::Group => Some(group_std + eps),
                AdvantageScaling::Batch => Some(batch_std + eps),
                AdvantageScaling::None => None,
            };
            group.iter().map(|r| denom.map_or(r - m, |d| (r - m) / d)).collect()
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
    fn single_completion_groups_have_zero_advantage() {
        let a = compute_advantages(&[vec![3.0]], AdvantageScaling::Group, 1e-4);
        assert_eq!(a.per_group, vec![vec![0.0]]);
        assert_eq!(a.zero_std_groups, 1);
    }
}

//! Named reward functions, built from config and summed by weight.

use std::collections::BTreeMap;

use crate::config::{RewardComponentConfig, RewardConfig};

use super::{
    CorrectnessReward, FormatReward, LengthPenalty, NumericReward, RegexReward, RewardError,
    RewardFn, RewardInput, ServiceReward,
};

type Params = serde_json::Map<String, serde_json::Value>;

/// Builds a reward function from its config params.
pub type RewardConstructor =
    Box<dyn Fn(&Params) -> Result<Box<dyn RewardFn>, RewardError> + Send + Sync>;

/// Reward functions by name. [`RewardRegistry::builtin`] knows `format`, `correctness`,
/// `numeric`, `regex`, `length_penalty` and `service` (an external `asrl.v1.RewardService`);
/// programs register more.
pub struct RewardRegistry {
    constructors: BTreeMap<String, RewardConstructor>,
}

impl RewardRegistry {
    pub fn empty() -> Self {
        Self {
            constructors: BTreeMap::new(),
        }
    }

    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register("format", |p| Ok(Box::new(FormatReward::from_params(p)?)));
        r.register("correctness", |p| {
            Ok(Box::new(CorrectnessReward::from_params(p)?))
        });
        r.register("numeric", |p| Ok(Box::new(NumericReward::from_params(p)?)));
        r.register("regex", |p| Ok(Box::new(RegexReward::from_params(p)?)));
        r.register("length_penalty", |p| {
            Ok(Box::new(LengthPenalty::from_params(p)?))
        });
        r.register("service", |p| Ok(Box::new(ServiceReward::from_params(p)?)));
        r
    }

    /// Adds or replaces the constructor for `name`.
    pub fn register<F>(&mut self, name: &str, constructor: F)
    where
        F: Fn(&Params) -> Result<Box<dyn RewardFn>, RewardError> + Send + Sync + 'static,
    {
        self.constructors
            .insert(name.to_string(), Box::new(constructor));
    }

    pub fn names(&self) -> Vec<&str> {
        self.constructors.keys().map(String::as_str).collect()
    }

    pub fn build(&self, config: &RewardConfig) -> Result<RewardScorer, RewardError> {
        let mut scorer = RewardScorer {
            components: Vec::new(),
        };
        for c in &config.components {
            let ctor =
                self.constructors
                    .get(&c.name)
                    .ok_or_else(|| RewardError::UnknownReward {
                        name: c.name.clone(),
                        known: self.names().join(", "),
                    })?;
            scorer.push_with_types(
                component_label(c),
                c.weight,
                c.types.clone(),
                ctor(&c.params)?,
            )?;
        }
        if scorer.components.is_empty() {
            return Err(RewardError::InvalidComponent {
                label: String::new(),
                message: "the reward has no components".into(),
            });
        }
        Ok(scorer)
    }
}

fn component_label(c: &RewardComponentConfig) -> String {
    c.label.clone().unwrap_or_else(|| c.name.clone())
}

struct Component {
    label: String,
    weight: f64,
    types: Vec<String>,
    reward: Box<dyn RewardFn>,
}

/// The reward of one completion: the weighted total the advantage uses, and each component's
/// unweighted score by label (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reward {
    pub total: f64,
    pub components: BTreeMap<String, f64>,
}

/// `total = Σ weight · score` over the components that apply to the example's type.
pub struct RewardScorer {
    components: Vec<Component>,
}

impl RewardScorer {
    /// The configured components, from the built-in registry.
    pub fn from_config(config: &RewardConfig) -> Result<Self, RewardError> {
        RewardRegistry::builtin().build(config)
    }

    /// Adds an already-built component (applies to every example type).
    pub fn push(
        &mut self,
        label: &str,
        weight: f64,
        reward: Box<dyn RewardFn>,
    ) -> Result<(), RewardError> {
        self.push_with_types(label.to_string(), weight, Vec::new(), reward)
    }

    fn push_with_types(
        &mut self,
        label: String,
        weight: f64,
        types: Vec<String>,
        reward: Box<dyn RewardFn>,
    ) -> Result<(), RewardError> {
        let invalid = |message: String| RewardError::InvalidComponent {
            label: label.clone(),
            message,
        };
        if !weight.is_finite() {
            return Err(invalid(format!("weight {weight} is not finite")));
        }
        if self.components.iter().any(|c| c.label == label) {
            return Err(invalid(
                "appears twice: give one of them a distinct `label`".into(),
            ));
        }
        self.components.push(Component {
            label,
            weight,
            types,
            reward,
        });
        Ok(())
    }

    pub fn labels(&self) -> Vec<&str> {
        self.components.iter().map(|c| c.label.as_str()).collect()
    }

    pub fn score(&self, input: &RewardInput<'_>) -> Result<Reward, RewardError> {
        let mut rewards = self.score_batch(std::slice::from_ref(input))?;
        Ok(rewards.pop().expect("one reward per input"))
    }

    /// One [`Reward`] per input, each component called once for all the inputs it applies to
    /// (one call per group for an external service). A component's named parts are recorded
    /// as `<label>.<part>`, outside the total.
    pub fn score_batch(&self, inputs: &[RewardInput<'_>]) -> Result<Vec<Reward>, RewardError> {
        let mut out = vec![Reward::default(); inputs.len()];
        for c in &self.components {
            let applies: Vec<usize> = (0..inputs.len())
                .filter(|&i| c.types.is_empty() || c.types.iter().any(|t| t == inputs[i].example_type))
                .collect();
            if applies.is_empty() {
                continue;
            }
            let subset: Vec<RewardInput<'_>> = applies.iter().map(|&i| inputs[i]).collect();
            let scores = c.reward.score_group(&subset)?;
            if scores.len() != subset.len() {
                return Err(RewardError::External {
                    reward: c.label.clone(),
                    message: format!("{} scores for {} completions", scores.len(), subset.len()),
                });
            }
            for (&i, score) in applies.iter().zip(scores) {
                let non_finite = std::iter::once(score.total).chain(score.components.values().copied()).find(|v| !v.is_finite());
                if let Some(bad) = non_finite {
                    return Err(RewardError::NonFinite { reward: c.label.clone(), score: bad });
                }
                let reward = &mut out[i];
                reward.total += c.weight * score.total;
                reward.components.insert(c.label.clone(), score.total);
                for (part, v) in score.components {
                    reward.components.insert(format!("{}.{part}", c.label), v);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "<|thinking|>\n[LOGIC]\n47 + 38 = 85\n[/LOGIC]\n[INTUITION]\nNear 90.\n[/INTUITION]\n<|/thinking|>\n85";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn paper_default_weights() {
        let s = RewardScorer::from_config(&RewardConfig::default()).unwrap();
        // 0.85 · correctness + 0.15 · format.
        assert_eq!(s.labels(), ["correctness", "format"]);
        let score = |c: &str, a: &str| s.score(&RewardInput::new("q", c, a, "simple_qa")).unwrap();
        let r = score(GOOD, "85");
        assert!(close(r.total, 0.85 + 0.15));
        assert_eq!(r.components["format"], 1.0);
        assert_eq!(r.components["correctness"], 1.0);
        assert!(close(score(GOOD, "86").total, 0.15 - 0.85 * 0.5));
        assert!(close(score("85", "85").total, 0.85 - 0.15));
        assert!(close(score("The answer is 85", "85").total, 0.85 * 0.5 - 0.15));
    }

    #[test]
    fn registry_from_toml() {
        let cfg: RewardConfig = toml::from_str(
            r#"
            [[components]]
            name = "format"
            weight = 0.5
            params = { mode = "lenient" }
            [[components]]
            name = "numeric"
            weight = 0.3
            types = ["arith"]
            params = { tolerance = 0.1 }
            [[components]]
            name = "regex"
            label = "short_answer"
            weight = 0.1
            params = { pattern = '^\d+$', target = "final_answer" }
            [[components]]
            name = "length_penalty"
            weight = 0.1
            params = { target_tokens = 5, penalty_per_token = 0.1 }
            "#,
        )
        .unwrap();
        let s = RewardScorer::from_config(&cfg).unwrap();
        let input = RewardInput::new("q", GOOD, "85.05", "arith").with_completion_tokens(7);
        let r = s.score(&input).unwrap();
        assert_eq!(r.components["format"], 1.0);
        assert_eq!(r.components["numeric"], 1.0);
        assert_eq!(r.components["short_answer"], 1.0);
        assert!(close(r.components["length_penalty"], -0.2));
        assert!(close(r.total, 0.5 + 0.3 + 0.1 - 0.02));
        // `types` restricts a component: not applied (and not reported) for other types.
        let r = s
            .score(&RewardInput::new("q", GOOD, "Wednesday", "dates"))
            .unwrap();
        assert!(!r.components.contains_key("numeric"));
    }

    #[test]
    fn config_errors_name_the_component() {
        let bad = |toml_text: &str| {
            let cfg: RewardConfig = toml::from_str(toml_text).unwrap();
            RewardScorer::from_config(&cfg)
                .err()
                .expect("config must be rejected")
                .to_string()
        };
        let e = bad("[[components]]\nname = \"formatt\"");
        assert!(e.contains("formatt") && e.contains("correctness"), "{e}");
        let e = bad("[[components]]\nname = \"format\"\nparams = { mode = \"loose\" }");
        assert!(e.contains("format") && e.contains("loose"), "{e}");
        let e = bad("[[components]]\nname = \"format\"\n[[components]]\nname = \"format\"");
        assert!(e.contains("label"), "{e}");
        assert!(
            toml::from_str::<RewardConfig>("[[components]]\nname = \"format\"\nwieght = 1")
                .is_err()
        );
        assert!(toml::from_str::<RewardConfig>("[[components]]\nweight = 1.0").is_err());
    }

    struct External;
    impl RewardFn for External {
        fn name(&self) -> &str {
            "external"
        }
        fn score(&self, input: &RewardInput<'_>) -> Result<f64, RewardError> {
            if input.answer.is_empty() {
                return Err(RewardError::External {
                    reward: "external".into(),
                    message: "unreachable service".into(),
                });
            }
            Ok(0.25)
        }
    }

    #[test]
    fn plug_in_reward_functions() {
        let mut reg = RewardRegistry::builtin();
        reg.register("external", |_| Ok(Box::new(External)));
        let cfg: RewardConfig =
            toml::from_str("[[components]]\nname = \"external\"\nweight = 2.0").unwrap();
        let mut s = reg.build(&cfg).unwrap();
        assert_eq!(
            s.score(&RewardInput::new("q", "c", "a", "t"))
                .unwrap()
                .total,
            0.5
        );
        assert!(s.score(&RewardInput::new("q", "c", "", "t")).is_err());
        s.push("ext2", 1.0, Box::new(External)).unwrap();
        assert_eq!(
            s.score(&RewardInput::new("q", "c", "a", "t"))
                .unwrap()
                .total,
            0.75
        );
    }
}

//! The configured reward components as the rollout loop's group scorer.

use crate::rollout::{ExampleKind, GroupScoreError, GroupScorer, PromptWork};
use crate::sample::Completion;

use super::{Reward, RewardInput, RewardScorer};

impl GroupScorer for RewardScorer {
    fn score_group(&self, prompt: &PromptWork, completions: &[Completion]) -> Result<Vec<Reward>, GroupScoreError> {
        // The dataset's type when the learner sent it; else whether the answer is checkable.
        let example_type = match (prompt.example_type.as_str(), prompt.kind) {
            ("", ExampleKind::Verifiable) => "verifiable",
            ("", ExampleKind::Open) => "open",
            (t, _) => t,
        };
        let inputs: Vec<RewardInput<'_>> = completions
            .iter()
            .map(|c| {
                RewardInput::new(&prompt.prompt_text, &c.text, &prompt.ground_truth, example_type)
                    .with_completion_tokens(c.tokens.len())
                    .with_prompt_id(&prompt.prompt_id)
            })
            .collect();
        self.score_batch(&inputs).map_err(|source| GroupScoreError { prompt_id: prompt.prompt_id.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::RewardConfig;
    use crate::sample::FinishReason;

    fn completion(text: &str) -> Completion {
        Completion { tokens: vec![1, 2, 3], logprobs: vec![-0.1; 3], text: text.into(), finish: FinishReason::Eos }
    }

    #[test]
    fn paper_rewards_score_a_group() {
        let scorer = RewardScorer::from_config(&RewardConfig::default()).unwrap();
        let prompt = PromptWork {
            prompt_id: "p1".into(),
            prompt_tokens: Arc::from(vec![1u32]),
            prompt_text: "User: 2+2?".into(),
            ground_truth: "4".into(),
            kind: ExampleKind::Verifiable,
            example_type: String::new(),
        };
        let good = "<|thinking|>\n[LOGIC]2+2=4[/LOGIC]\n[INTUITION]small sums[/INTUITION]\n<|/thinking|>\n4";
        let scores = scorer.score_group(&prompt, &[completion(good), completion("5")]).unwrap();
        assert_eq!(scores.len(), 2);
        assert!((scores[0].total - 1.0).abs() < 1e-9, "{:?}", scores[0]);
        assert!(scores[1].total < 0.0, "{:?}", scores[1]);
        assert!(scores[0].components.contains_key("format"), "{:?}", scores[0]);
    }

    #[test]
    fn per_type_components_see_the_example_type_from_the_lease() {
        let cfg: RewardConfig = toml::from_str(
            "[[components]]\nname = \"format\"\ntypes = [\"simple_qa\"]\nparams = { mode = \"strict\" }\n",
        )
        .unwrap();
        let scorer = RewardScorer::from_config(&cfg).unwrap();
        let prompt = |ty: &str| PromptWork {
            prompt_id: "p".into(),
            prompt_tokens: Arc::from(vec![1u32]),
            prompt_text: "User: 2+2?".into(),
            ground_truth: "4".into(),
            kind: ExampleKind::Verifiable,
            example_type: ty.into(),
        };
        let score = |ty: &str| scorer.score_group(&prompt(ty), &[completion("4")]).unwrap()[0].total;
        assert_eq!(score("simple_qa"), -1.0, "the format component applies to its type");
        assert_eq!(score("multi_turn"), 0.0, "and scores 0 elsewhere");
    }
}

//! The demo generator: deterministic, the paper's mix, every example well-formed and correct.

use std::collections::BTreeMap;

use asrl_tools::demo_data::{Category, DemoGenerator, Pattern, Topic};
use asrl_common::data::{approx_token_count, parse_value};
use asrl_common::reward::{
    format_ok_strict, CorrectnessMode, CorrectnessReward, RewardFn, RewardInput,
};

#[test]
fn deterministic_by_seed_and_resumable() {
    let a = DemoGenerator::new(42, None);
    let b = DemoGenerator::new(42, None);
    let c = DemoGenerator::new(43, None);
    let xs: Vec<_> = (0..200).map(|i| a.example(i)).collect();
    assert_eq!(xs, (0..200).map(|i| b.example(i)).collect::<Vec<_>>());
    assert_ne!(xs, (0..200).map(|i| c.example(i)).collect::<Vec<_>>());
    assert_eq!(a.example(150), xs[150]);
}

#[test]
fn mix_matches_the_paper_and_every_example_checks_out() {
    let g = DemoGenerator::new(1, None);
    let n = 4000;
    let mut by_category: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tokens = Vec::new();
    let correctness = CorrectnessReward::new(CorrectnessMode::FinalAnswer);
    for i in 0..n {
        let e = g.example(i);
        *by_category.entry(e.category.name()).or_default() += 1;
        *by_topic.entry(e.topic.name()).or_default() += 1;
        assert!(
            format_ok_strict(&e.response),
            "{}: bad format:\n{}",
            e.id,
            e.response
        );
        let input = RewardInput::new(&e.context, &e.response, &e.answer, e.category.name());
        assert_eq!(
            correctness.score(&input).unwrap(),
            1.0,
            "{}: {:?}",
            e.id,
            e.response
        );
        let parsed = parse_value(&e.to_json()).unwrap_or_else(|r| panic!("{}: {r}", e.id));
        assert_eq!(parsed.answer, e.answer);
        assert_eq!(parsed.example_type, e.category.name());
        let expected_turns = match e.category {
            Category::SimpleQa | Category::ReasoningChain => 1,
            Category::MultiTurn | Category::Mixed => 3,
        };
        assert_eq!(
            parsed.messages.len(),
            expected_turns,
            "{}: {}",
            e.id,
            e.context
        );
        tokens.push(approx_token_count(&parsed));
    }
    for c in Category::ALL {
        let share = by_category[c.name()] as f64 / n as f64;
        assert!(
            (share - c.percent() as f64 / 100.0).abs() < 0.03,
            "{}: {share}",
            c.name()
        );
    }
    for t in Topic::ALL {
        assert!(by_topic[t.name()] as f64 / n as f64 > 0.15, "{}", t.name());
    }
    // Short enough for a CPU demo: bytes/3 over-counts tokens, and still most are under 120.
    tokens.sort();
    let p90 = tokens[tokens.len() * 9 / 10];
    assert!(p90 <= 160, "90th percentile {p90} estimated tokens");
}

#[test]
fn patterns_restrict_the_stream() {
    let only_dates = DemoGenerator::new(3, Some(Pattern::Topic(Topic::Dates)));
    let only_multi = DemoGenerator::new(3, Some(Pattern::Category(Category::MultiTurn)));
    for i in 0..200 {
        assert_eq!(only_dates.example(i).topic, Topic::Dates);
        assert_eq!(only_multi.example(i).category, Category::MultiTurn);
    }
    assert_ne!(
        only_dates.example(0).id,
        DemoGenerator::new(3, None).example(0).id
    );
}

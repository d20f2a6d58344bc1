//! The live dataset's split on a real stream of demo data: stable under growth, near 80/10/10
//! (moved here from asrl-common's data_live tests with the generator).

use asrl_common::config::DataConfig;
use asrl_common::data::{append_json, approx_token_count, LiveDataset, Split, SplitFractions};
use asrl_tools::demo_data::DemoGenerator;

#[test]
fn split_is_stable_under_growth_and_near_80_10_10() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.jsonl");
    let generator = DemoGenerator::new(7, None);
    let first: Vec<_> = (0..3000).map(|i| generator.example(i).to_json()).collect();
    append_json(&path, &first, 1 << 20).unwrap();
    let mut live = LiveDataset::new(&path, &DataConfig::default()).unwrap();
    let s1 = live.snapshot(&approx_token_count).unwrap();
    // The demo generator repeats a few easy problems; the loader drops those copies.
    assert_eq!(s1.report.counts.total() + s1.report.duplicates, 3000);
    assert!(
        s1.report.duplicates < 150,
        "{} duplicates",
        s1.report.duplicates
    );
    assert_eq!(
        s1.growth_line(),
        format!(
            "{} train examples",
            asrl_common::data::thousands(s1.train.len())
        )
    );
    let more: Vec<_> = (3000..3400)
        .map(|i| generator.example(i).to_json())
        .collect();
    append_json(&path, &more, 1 << 20).unwrap();
    let s2 = live.snapshot(&approx_token_count).unwrap();
    assert_eq!(s2.report.counts.total() + s2.report.duplicates, 3400);
    for split in Split::ALL {
        let before: Vec<_> = s1.split(split).iter().map(|e| e.id.clone()).collect();
        let after: std::collections::HashSet<_> =
            s2.split(split).iter().map(|e| e.id.clone()).collect();
        assert!(
            before.iter().all(|id| after.contains(id)),
            "an example left {split:?}"
        );
    }
    let added = s2.train.len() - s1.train.len();
    assert_eq!(
        s2.growth_line(),
        format!(
            "{} → {} train examples, +{added}",
            asrl_common::data::thousands(s1.train.len()),
            asrl_common::data::thousands(s2.train.len())
        )
    );
    let n = s2.report.counts.total() as f64;
    let (train, val, test) = (
        s2.train.len() as f64 / n,
        s2.val.len() as f64 / n,
        s2.test.len() as f64 / n,
    );
    assert!(
        (train - 0.8).abs() < 0.03 && (val - 0.1).abs() < 0.02 && (test - 0.1).abs() < 0.02,
        "{train} {val} {test}"
    );

    // The split of an example depends on nothing but its identity.
    let fr = SplitFractions::default();
    for e in &s2.val {
        assert_eq!(fr.split_of(e), Split::Val);
    }
}

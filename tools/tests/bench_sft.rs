//! `asrl-tools bench sft` on the tiny Qwen3 fixture: both modes train through the trainer,
//! GRPO's behaviour log-probs line up with the completion tokens, and the memory figures hold.

use asrl_tests::fixture;
use asrl_tools::bench::sft::{measure, SftArgs, SftReport};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SftArgs,
}

fn bench(extra: &[&str]) -> SftReport {
    let model = fixture("tiny-qwen3");
    let mut argv = vec!["bench", "--model", model.to_str().unwrap(), "--steps", "2", "--rank", "4"];
    argv.extend_from_slice(extra);
    measure(&Cli::parse_from(argv).args).unwrap()
}

fn check_memory(r: &SftReport) {
    assert!(r.peak_rss_mib.is_finite() && r.peak_rss_mib > 0.0, "{r:?}");
    if cfg!(target_os = "linux") {
        let (model, train) = (r.model_rss_mib.unwrap(), r.train_peak_rss_mib.unwrap());
        assert!(model > 0.0 && train >= model * 0.5 && train <= r.peak_rss_mib + 1.0, "{r:?}");
    }
}

#[test]
fn grpo_scores_completion_tokens_with_aligned_behaviour_logprobs() {
    let r = bench(&[
        "--mode", "grpo", "--group-size", "3", "--prompt-tokens", "7", "--completion-tokens", "5", "--warmup", "0",
        "--checkpointing", "on",
    ]);
    assert_eq!((r.mode, r.rows, r.tokens_per_row, r.scored_tokens), ("grpo", 3, 12, 15));
    assert_eq!((r.saved_layers, r.num_layers), (0, 2));
    // The first step runs the adapter that produced the behaviour log-probs: ratios are 1.
    let kl = r.first_behaviour_kl.unwrap();
    assert!(kl.abs() < 1e-5, "behaviour KL {kl}");
    assert!(r.tokens_per_second > 0.0 && r.step_seconds > 0.0);
    check_memory(&r);
}

#[test]
fn sft_scores_every_token_after_the_first() {
    let r = bench(&["--mode", "sft", "--seq", "9", "--checkpointing", "off"]);
    assert_eq!((r.mode, r.rows, r.tokens_per_row, r.scored_tokens), ("sft", 1, 9, 8));
    assert_eq!((r.saved_layers, r.first_behaviour_kl), (2, None));
    check_memory(&r);
}

#[test]
fn shape_and_model_are_exclusive() {
    let err = Cli::try_parse_from(["bench", "--model", "x", "--shape", "qwen3-0.6b"]).err().unwrap();
    assert!(err.to_string().contains("--shape"), "{err}");
}

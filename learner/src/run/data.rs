//! The epoch's data: a snapshot of the live dataset, tokenised once per example.

use asrl_common::data::{ExampleEncoder, Example, LiveDataset, Snapshot};

use super::RunError;
use crate::training::SftExample;

/// The SFT example of `example`: prompt tokens as context, response tokens as labels.
pub fn sft_example(encoder: &ExampleEncoder, example: &Example) -> Result<SftExample, RunError> {
    let e = encoder.encode(example).map_err(|source| RunError::tokenise(example, source))?;
    Ok(SftExample::from_prompt_response(&e.prompt, &e.response))
}

/// Re-reads the dataset and reports what changed; an empty training split is an error.
/// Lengths are [`ExampleEncoder::seq_len`], the rule `data check --tokenizer` applies too.
pub fn take_snapshot(dataset: &mut LiveDataset, encoder: &ExampleEncoder) -> Result<Snapshot, RunError> {
    let snapshot = dataset.snapshot(&|e| encoder.seq_len(e))?;
    let r = &snapshot.report;
    for bad in r.bad_lines.iter().take(5) {
        tracing::warn!("{}:{}: {} (line skipped)", bad.file.display(), bad.line, bad.reason);
    }
    if r.bad_count() > 5 {
        tracing::warn!("{} bad lines in all (see `asrl-learner data check`)", r.bad_count());
    }
    if snapshot.train.is_empty() {
        return Err(RunError::NoTrainingExamples {
            path: r.source.clone(),
            lines: r.lines,
            bad: r.bad_count(),
            too_long: r.too_long,
            max_seq_len: r.max_seq_len,
        });
    }
    Ok(snapshot)
}

/// A fixed-seed choice of `n` examples (0 = all), stable while the pool is unchanged: examples
/// are ranked by a hash of their content and `seed`, so the same ones are picked every epoch
/// and a new example displaces one only if it ranks higher.
pub fn stable_sample(pool: &[Example], n: usize, seed: u64) -> Vec<&Example> {
    let mut ranked: Vec<(u64, &Example)> = pool
        .iter()
        .map(|e| {
            let k = e.content_key();
            let h = u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (h.wrapping_mul(0xBF58_476D_1CE4_E5B9), e)
        })
        .collect();
    ranked.sort_by_key(|(h, _)| *h);
    let n = if n == 0 { ranked.len() } else { n.min(ranked.len()) };
    ranked.into_iter().take(n).map(|(_, e)| e).collect()
}

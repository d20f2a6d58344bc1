//! The epoch's data: a snapshot of the live dataset, tokenised once per example.

use std::cell::RefCell;
use std::collections::HashMap;

use asrl_common::data::{approx_token_count, encode_example, EncodedExample, Example, LiveDataset, Snapshot};
use asrl_common::tokenizer::Tokenizer;

use super::RunError;
use crate::training::SftExample;

/// Tokenises examples with the model's chat template, caching by content so a growing dataset
/// is only tokenised for what is new.
pub struct Encoder {
    tokenizer: Tokenizer,
    cache: RefCell<HashMap<[u8; 32], EncodedExample>>,
}

impl Encoder {
    pub fn new(tokenizer: Tokenizer) -> Self {
        Self { tokenizer, cache: RefCell::new(HashMap::new()) }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn encode(&self, example: &Example) -> Result<EncodedExample, RunError> {
        let key = example.content_key();
        if let Some(e) = self.cache.borrow().get(&key) {
            return Ok(e.clone());
        }
        let encoded = encode_example(&self.tokenizer, example).map_err(|e| {
            RunError::Data(format!("example {}: cannot tokenise: {e}", example.id.as_deref().unwrap_or("(no id)")))
        })?;
        self.cache.borrow_mut().insert(key, encoded.clone());
        Ok(encoded)
    }

    /// Token count for the dataset's length filter. An example the tokenizer rejects counts as
    /// over any limit (it is filtered and reported as too long) rather than stopping the run.
    fn count(&self, example: &Example) -> usize {
        match self.encode(example) {
            Ok(e) => e.len(),
            Err(e) => {
                tracing::warn!(error = %e, approx_tokens = approx_token_count(example), "example filtered");
                usize::MAX
            }
        }
    }

    pub fn sft_example(&self, example: &Example) -> Result<SftExample, RunError> {
        let e = self.encode(example)?;
        Ok(SftExample::from_prompt_response(&e.prompt, &e.response))
    }
}

/// Re-reads the dataset and reports what changed; an empty training split is an error.
pub fn take_snapshot(dataset: &mut LiveDataset, encoder: &Encoder) -> Result<Snapshot, RunError> {
    let snapshot = dataset.snapshot(&|e| encoder.count(e))?;
    let r = &snapshot.report;
    for bad in r.bad_lines.iter().take(5) {
        tracing::warn!("{}:{}: {} (line skipped)", bad.file.display(), bad.line, bad.reason);
    }
    if r.bad_count() > 5 {
        tracing::warn!("{} bad lines in all (see `asrl-learner data check`)", r.bad_count());
    }
    if snapshot.train.is_empty() {
        return Err(RunError::Data(format!(
            "{}: no training examples ({} lines read, {} bad, {} over {} tokens)",
            r.source.display(),
            r.lines,
            r.bad_count(),
            r.too_long,
            r.max_seq_len
        )));
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

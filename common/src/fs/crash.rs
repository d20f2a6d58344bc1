//! `ASRL_CRASH_AT`: named points where a crash-consistency test makes the process die.
//!
//! `ASRL_CRASH_AT=<point>` aborts at the first time the process reaches `<point>`;
//! `<point>#<n>` at the n-th time (1-based). The abort is as abrupt as `kill -9` for the files
//! involved: no destructor runs and nothing buffered in the process is written. Unset (always,
//! outside tests) each point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "ASRL_CRASH_AT";

fn target() -> Option<&'static (String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty())?;
            Some(match spec.rsplit_once('#') {
                Some((point, n)) => (point.to_string(), n.parse().unwrap_or(1).max(1)),
                None => (spec, 1),
            })
        })
        .as_ref()
}

/// Aborts the process if `ASRL_CRASH_AT` names this point and this is the hit it asks for.
pub fn crash_point(point: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((wanted, nth)) = target() else { return };
    if wanted == point && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth {
        eprintln!("{CRASH_AT_ENV}: aborting at {point} (hit {nth})");
        std::process::abort();
    }
}

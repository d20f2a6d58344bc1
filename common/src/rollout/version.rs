//! Adapter versions: one numbering from the trainer through the wire to the workers.

use std::fmt;

/// A published adapter. Version 1 is the adapter the run starts from (before any optimiser
/// step); every applied optimiser step publishes the next one, so version `v` is the adapter
/// after `v - 1` applied steps. **0 means "no adapter"**: none published yet (`GetStatus`,
/// `LeaseWork`), none loaded yet (`Heartbeat`), or no particular one (`FetchAdapter` asks for
/// the latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AdapterVersion(u64);

impl AdapterVersion {
    /// No adapter.
    pub const NONE: Self = Self(0);
    /// The adapter a run starts from.
    pub const INITIAL: Self = Self(1);

    /// A version as the wire carries it.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The wire value.
    pub const fn get(self) -> u64 {
        self.0
    }

    pub fn is_none(self) -> bool {
        self == Self::NONE
    }

    /// The adapter after `steps` applied optimiser steps from [`Self::INITIAL`].
    pub const fn after_steps(steps: u64) -> Self {
        Self(steps + 1)
    }

    /// How many versions `self` trails `latest` by (0 when it is as new or newer).
    pub fn lag_behind(self, latest: Self) -> u64 {
        latest.0.saturating_sub(self.0)
    }

    /// The staleness rule of GRPO's off-policy guard, applied at submission and again in the
    /// trainer: completions sampled with `self` are too old to train on once the latest adapter
    /// is more than `max_staleness` versions ahead.
    pub fn is_stale(self, latest: Self, max_staleness: u64) -> bool {
        self.lag_behind(latest) > max_staleness
    }
}

impl fmt::Display for AdapterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_and_staleness() {
        assert_eq!(AdapterVersion::after_steps(0), AdapterVersion::INITIAL);
        assert_eq!(AdapterVersion::after_steps(4).get(), 5);
        assert!(AdapterVersion::NONE.is_none() && !AdapterVersion::INITIAL.is_none());
        let (v3, v5) = (AdapterVersion::new(3), AdapterVersion::new(5));
        assert_eq!(v3.lag_behind(v5), 2);
        assert_eq!(v5.lag_behind(v3), 0);
        assert!(v3.is_stale(v5, 1), "two behind with max_staleness 1");
        assert!(!v3.is_stale(v5, 2));
        assert!(!v5.is_stale(v3, 0), "a newer sample is never stale");
    }
}

//! What `GetStatus` reports about the training thread.

use std::collections::BTreeMap;

use asrl_common::phase::Phase;

/// What the training thread is doing. The wire's `LearnerStatus.phase` string is
/// [`Activity::as_str`]: `idle`, `sft`, `grpo`, `eval` or `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activity {
    /// Not started yet.
    #[default]
    Idle,
    /// In a training phase.
    Training(Phase),
    /// Scoring validation completions the workers generate.
    Evaluating,
    /// The run has ended.
    Done,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Training(phase) => phase.as_str(),
            Activity::Evaluating => "eval",
            Activity::Done => "done",
        }
    }
}

/// Set by the training thread ([`super::LearnerHandle::set_progress`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub epoch: u64,
    pub activity: Activity,
    /// Optimiser steps applied over the whole run.
    pub step: u64,
    pub metrics: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_unchanged() {
        let all = [
            Activity::Idle,
            Activity::Training(Phase::Sft),
            Activity::Training(Phase::Grpo),
            Activity::Evaluating,
            Activity::Done,
        ];
        let names: Vec<&str> = all.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, ["idle", "sft", "grpo", "eval", "done"]);
        assert_eq!(Progress::default().activity, Activity::Idle);
    }
}

//! Which phases each epoch runs, and when a run stops.
//!
//! Both [`Schedule::plan`] and [`EarlyStopping::replay`] are pure functions of the epochs run so
//! far ([`History`]), so a resumed run that rebuilds its history from `metrics.jsonl` makes the
//! same decisions as an uninterrupted one. Epochs are numbered from 1.

use asrl_common::config::{Monitor, ScheduleConfig, ScheduleKind};
use asrl_common::phase::Phase;

use crate::report::EpochRecord;

/// The finished epochs of a run, oldest first: their `metrics.jsonl` epoch records (`None`
/// fields where a phase or the evaluation did not run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub records: Vec<EpochRecord>,
}

impl History {
    pub fn push(&mut self, record: EpochRecord) {
        self.records.push(record);
    }
    pub fn last(&self) -> Option<&EpochRecord> {
        self.records.last()
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// SFT phase size: `fraction` of a full phase, which is one pass over the training split capped
/// at `max_examples` (`schedule.sft_examples_per_epoch`, `None` = no cap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftPlan {
    pub fraction: f64,
    pub max_examples: Option<usize>,
}

impl SftPlan {
    /// Examples to train on this epoch out of a training split of `train_size`: at least one
    /// whenever the split and the fraction are non-empty.
    pub fn examples(&self, train_size: usize) -> usize {
        let full = self.max_examples.map_or(train_size, |cap| cap.min(train_size));
        if full == 0 || self.fraction <= 0.0 {
            return 0;
        }
        ((self.fraction.min(1.0) * full as f64 - 1e-9).ceil() as usize).clamp(1, full)
    }
}

/// GRPO phase size: training questions sampled, each answered by one group of completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpoPlan {
    pub questions: usize,
}

/// The phases of one epoch, run in this order: SFT, then GRPO.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPlan {
    pub sft: Option<SftPlan>,
    pub grpo: Option<GrpoPlan>,
}

impl EpochPlan {
    /// `sft+grpo`, `sft`, `grpo` or `none`: the `phases` field of epoch metrics.
    pub fn phases(&self) -> &'static str {
        match (self.sft.is_some(), self.grpo.is_some()) {
            (true, true) => "sft+grpo",
            (true, false) => "sft",
            (false, true) => "grpo",
            (false, false) => "none",
        }
    }
}

/// A configured phase schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: ScheduleConfig,
}

impl Schedule {
    pub fn new(cfg: &ScheduleConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    pub fn kind(&self) -> ScheduleKind {
        self.cfg.kind
    }

    /// The plan of `epoch` (1-based), given the epochs before it.
    ///
    /// - `asrl`: full SFT pass, then `questions_per_epoch` GRPO questions, every epoch.
    /// - `sft` / `grpo`: that phase alone, full size.
    /// - `sequential`: SFT alone for epochs `1..=sequential_sft_epochs`, GRPO alone after.
    /// - `ares`: see [`Schedule::ares_stage`].
    /// - `adaptive`: with `a` the format accuracy of the previous epoch (0 before the first) and
    ///   `p = min(a / adaptive_target_accuracy, 1)`, SFT gets `max(1 − p, m)` of a pass and GRPO
    ///   `ceil(max(p, m) · questions_per_epoch)` questions, `m = adaptive_min_fraction`; a phase
    ///   whose share is 0 is skipped.
    pub fn plan(&self, epoch: usize, history: &History) -> EpochPlan {
        let full_sft = Some(SftPlan { fraction: 1.0, max_examples: self.sft_cap() });
        let full_grpo = Some(GrpoPlan { questions: self.cfg.questions_per_epoch });
        match self.cfg.kind {
            ScheduleKind::Asrl => EpochPlan { sft: full_sft, grpo: full_grpo },
            ScheduleKind::Sft => EpochPlan { sft: full_sft, grpo: None },
            ScheduleKind::Grpo => EpochPlan { sft: None, grpo: full_grpo },
            ScheduleKind::Sequential => {
                if epoch <= self.cfg.sequential_sft_epochs {
                    EpochPlan { sft: full_sft, grpo: None }
                } else {
                    EpochPlan { sft: None, grpo: full_grpo }
                }
            }
            ScheduleKind::Ares => match self.ares_stage(history) {
                Phase::Sft => EpochPlan { sft: full_sft, grpo: None },
                Phase::Grpo => EpochPlan { sft: None, grpo: full_grpo },
            },
            ScheduleKind::Adaptive => self.adaptive_plan(history),
        }
    }

    /// ARES: the stage the next epoch runs in. The run starts in `ares_first_stage`; a stage ends
    /// once its metric has gone `ares_plateau_epochs` consecutive epochs without beating the
    /// stage's best by more than `min_delta` (SFT: validation loss after SFT, lower is better;
    /// GRPO: validation mean reward, higher is better; a missing value never improves). Each new
    /// stage starts with a fresh best.
    pub fn ares_stage(&self, history: &History) -> Phase {
        let mut stage = self.cfg.ares_first_stage;
        let mut best: Option<f64> = None;
        let mut stale = 0usize;
        for rec in &history.records {
            let (value, lower_is_better) = match stage {
                Phase::Sft => (rec.val_loss_after_sft, true),
                Phase::Grpo => (rec.reward_mean, false),
            };
            if improves(value, best, lower_is_better, self.cfg.min_delta) {
                best = value;
                stale = 0;
            } else {
                stale += 1;
            }
            if stale >= self.cfg.ares_plateau_epochs {
                stage = stage.other();
                best = None;
                stale = 0;
            }
        }
        stage
    }

    fn sft_cap(&self) -> Option<usize> {
        (self.cfg.sft_examples_per_epoch > 0).then_some(self.cfg.sft_examples_per_epoch)
    }

    fn adaptive_plan(&self, history: &History) -> EpochPlan {
        let accuracy = history.last().and_then(|r| r.format_accuracy).filter(|a| a.is_finite()).unwrap_or(0.0);
        let p = (accuracy / self.cfg.adaptive_target_accuracy).clamp(0.0, 1.0);
        let m = self.cfg.adaptive_min_fraction;
        let sft_fraction = (1.0 - p).max(m);
        let grpo_fraction = p.max(m);
        let questions = (grpo_fraction * self.cfg.questions_per_epoch as f64 - 1e-9).ceil().max(0.0) as usize;
        EpochPlan {
            sft: (sft_fraction > 0.0).then_some(SftPlan { fraction: sft_fraction, max_examples: self.sft_cap() }),
            grpo: (questions > 0).then_some(GrpoPlan { questions }),
        }
    }
}

/// Whether `value` beats `best` by more than `min_delta`; the first finite value always does.
/// Differences within float rounding (1e-9 relative) never count, so the same mean computed in
/// another order (−0.3625 vs −0.36250000000000004) is not an improvement when `min_delta` is 0.
fn improves(value: Option<f64>, best: Option<f64>, lower_is_better: bool, min_delta: f64) -> bool {
    match (value.filter(|v| v.is_finite()), best) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(v), Some(b)) => {
            let margin = min_delta.max(1e-9 * b.abs().max(1.0));
            if lower_is_better {
                v < b - margin
            } else {
                v > b + margin
            }
        }
    }
}

/// Early stopping's decision after an epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The monitored value improved on the best so far (the first epoch always does).
    Improved,
    /// No improvement for `stale` consecutive epochs, fewer than `patience`.
    Continue { stale: usize },
    /// `patience` epochs in a row without improvement: stop; the best epoch is kept.
    Stop { best_epoch: usize, stale: usize },
}

/// Stops a run after `patience` consecutive epochs without improvement of the monitored value.
///
/// `val_loss` (the paper): an epoch improves if the loss after SFT or the loss after GRPO is
/// below the best loss seen after any phase by more than `min_delta`. `format_accuracy`: it
/// improves if the validation format accuracy exceeds the best by more than `min_delta`.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    best_epoch: Option<usize>,
    stale: usize,
}

impl EarlyStopping {
    pub fn new(cfg: &ScheduleConfig) -> Self {
        Self {
            monitor: cfg.monitor,
            patience: cfg.patience.max(1),
            min_delta: cfg.min_delta,
            best: None,
            best_epoch: None,
            stale: 0,
        }
    }

    /// A stopper fed with every epoch of `history`, and its verdict on the last one
    /// (`None` for an empty history).
    pub fn replay(cfg: &ScheduleConfig, history: &History) -> (Self, Option<Verdict>) {
        let mut stopper = Self::new(cfg);
        let verdict = history.records.iter().map(|r| stopper.observe(r)).last();
        (stopper, verdict)
    }

    /// The monitored value of one epoch (for `val_loss`: the lower of the two phase losses).
    pub fn value(&self, rec: &EpochRecord) -> Option<f64> {
        match self.monitor {
            Monitor::ValLoss => [rec.val_loss_after_sft, rec.val_loss_after_grpo]
                .into_iter()
                .flatten()
                .filter(|v| v.is_finite())
                .min_by(f64::total_cmp),
            Monitor::FormatAccuracy => rec.format_accuracy,
        }
    }

    pub fn observe(&mut self, rec: &EpochRecord) -> Verdict {
        let value = self.value(rec);
        let lower_is_better = self.monitor == Monitor::ValLoss;
        if improves(value, self.best, lower_is_better, self.min_delta) {
            self.best = value;
            self.best_epoch = Some(rec.epoch);
            self.stale = 0;
            return Verdict::Improved;
        }
        self.stale += 1;
        match self.best_epoch {
            Some(best_epoch) if self.stale >= self.patience => Verdict::Stop { best_epoch, stale: self.stale },
            // Nothing measurable yet: there is no best epoch to fall back to, so keep going
            // until `patience` runs out and report the latest epoch.
            None if self.stale >= self.patience => Verdict::Stop { best_epoch: rec.epoch, stale: self.stale },
            _ => Verdict::Continue { stale: self.stale },
        }
    }

    pub fn best(&self) -> Option<f64> {
        self.best
    }
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }
    /// Consecutive epochs without improvement so far.
    pub fn stale(&self) -> usize {
        self.stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ScheduleKind) -> ScheduleConfig {
        ScheduleConfig { kind, ..ScheduleConfig::default() }
    }

    #[test]
    fn float_rounding_is_not_an_improvement() {
        assert!(!improves(Some(-0.3625), Some(-0.36250000000000004), false, 0.0));
        assert!(!improves(Some(0.8088939699352297), Some(0.8088939699352298), true, 0.0));
        assert!(improves(Some(-0.36), Some(-0.3625), false, 0.0));
        assert!(improves(Some(0.80), Some(0.81), true, 0.0));
        let s = Schedule::new(&ScheduleConfig { kind: ScheduleKind::Ares, ares_plateau_epochs: 1, ..ScheduleConfig::default() });
        let h = History {
            records: vec![
                rec(1, None, Some(2.90), Some(0.0), Some(-0.36250000000000004)),
                rec(2, None, Some(2.94), Some(0.0), Some(-0.3625)),
            ],
        };
        assert_eq!(s.ares_stage(&h), Phase::Sft, "a flat reward is a plateau");
    }

    fn rec(epoch: usize, sft: Option<f64>, grpo: Option<f64>, acc: Option<f64>, reward: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            val_loss_after_sft: sft,
            val_loss_after_grpo: grpo,
            format_accuracy: acc,
            reward_mean: reward,
            ..Default::default()
        }
    }

    /// Runs `epochs` epochs of `schedule`, filling each finished epoch from `measure`, and returns
    /// the phase string of every epoch.
    fn simulate(schedule: &Schedule, epochs: usize, measure: impl Fn(usize, &EpochPlan) -> EpochRecord) -> Vec<&'static str> {
        let mut history = History::default();
        let mut phases = Vec::new();
        for epoch in 1..=epochs {
            let plan = schedule.plan(epoch, &history);
            phases.push(plan.phases());
            history.push(measure(epoch, &plan));
        }
        phases
    }

    #[test]
    fn fixed_schedules_run_their_phases() {
        let none = |e: usize, _: &EpochPlan| rec(e, None, None, None, None);
        assert_eq!(simulate(&Schedule::new(&cfg(ScheduleKind::Asrl)), 3, none), ["sft+grpo"; 3]);
        assert_eq!(simulate(&Schedule::new(&cfg(ScheduleKind::Sft)), 3, none), ["sft"; 3]);
        assert_eq!(simulate(&Schedule::new(&cfg(ScheduleKind::Grpo)), 3, none), ["grpo"; 3]);
        let plan = Schedule::new(&cfg(ScheduleKind::Asrl)).plan(1, &History::default());
        assert_eq!(plan.sft, Some(SftPlan { fraction: 1.0, max_examples: None }));
        assert_eq!(plan.grpo, Some(GrpoPlan { questions: 8 }));
        assert_eq!(plan.sft.unwrap().examples(640), 640);
    }

    #[test]
    fn sft_examples_respect_cap_fraction_and_split_size() {
        let c = ScheduleConfig { sft_examples_per_epoch: 64, ..ScheduleConfig::default() };
        let sft = Schedule::new(&c).plan(1, &History::default()).sft.unwrap();
        assert_eq!(sft.max_examples, Some(64));
        assert_eq!(sft.examples(640), 64);
        assert_eq!(sft.examples(40), 40);
        assert_eq!(sft.examples(0), 0);
        let part = SftPlan { fraction: 0.25, max_examples: Some(64) };
        assert_eq!(part.examples(640), 16);
        assert_eq!(SftPlan { fraction: 0.01, max_examples: None }.examples(10), 1);
        assert_eq!(SftPlan { fraction: 0.0, max_examples: None }.examples(10), 0);
    }

    #[test]
    fn sequential_switches_to_grpo_after_its_sft_epochs() {
        let c = ScheduleConfig { kind: ScheduleKind::Sequential, sequential_sft_epochs: 2, ..ScheduleConfig::default() };
        let phases = simulate(&Schedule::new(&c), 5, |e, _| rec(e, None, None, None, None));
        assert_eq!(phases, ["sft", "sft", "grpo", "grpo", "grpo"]);
        let c0 = ScheduleConfig { sequential_sft_epochs: 0, ..c };
        assert_eq!(simulate(&Schedule::new(&c0), 2, |e, _| rec(e, None, None, None, None)), ["grpo", "grpo"]);
    }

    #[test]
    fn ares_switches_stage_on_plateau_and_back() {
        let c = ScheduleConfig {
            kind: ScheduleKind::Ares,
            ares_first_stage: Phase::Grpo,
            ares_plateau_epochs: 2,
            ..ScheduleConfig::default()
        };
        // GRPO reward rises for 2 epochs then stalls for 2 -> SFT; SFT loss falls once then
        // stalls for 2 -> GRPO again with a fresh best (a low reward still counts as improving).
        let rewards = [0.1, 0.3, 0.3, 0.29];
        let losses = [1.0, 0.9, 0.95, 0.92];
        let phases = simulate(&Schedule::new(&c), 9, |e, plan| {
            if plan.grpo.is_some() {
                let r = rewards.get(e - 1).copied().unwrap_or(0.05);
                rec(e, None, Some(1.0), None, Some(r))
            } else {
                let i = e - 5;
                rec(e, Some(losses[i]), None, None, Some(0.0))
            }
        });
        assert_eq!(phases, ["grpo", "grpo", "grpo", "grpo", "sft", "sft", "sft", "sft", "grpo"]);
    }

    #[test]
    fn ares_missing_metric_counts_as_stale() {
        let c = ScheduleConfig {
            kind: ScheduleKind::Ares,
            ares_first_stage: Phase::Sft,
            ares_plateau_epochs: 1,
            ..ScheduleConfig::default()
        };
        let phases = simulate(&Schedule::new(&c), 3, |e, _| rec(e, None, None, None, None));
        assert_eq!(phases, ["sft", "grpo", "sft"]);
    }

    #[test]
    fn adaptive_moves_budget_from_sft_to_grpo_as_format_is_learnt() {
        let c = ScheduleConfig {
            kind: ScheduleKind::Adaptive,
            adaptive_target_accuracy: 0.8,
            adaptive_min_fraction: 0.1,
            questions_per_epoch: 8,
            ..ScheduleConfig::default()
        };
        let s = Schedule::new(&c);
        let mut history = History::default();
        // Before any evaluation: all SFT, minimal GRPO.
        let p = s.plan(1, &history);
        assert_eq!(p.sft, Some(SftPlan { fraction: 1.0, max_examples: None }));
        assert_eq!(p.grpo, Some(GrpoPlan { questions: 1 }));
        history.push(rec(1, None, None, Some(0.4), None));
        let p = s.plan(2, &history);
        assert!((p.sft.unwrap().fraction - 0.5).abs() < 1e-12);
        assert_eq!(p.grpo, Some(GrpoPlan { questions: 4 }));
        history.push(rec(2, None, None, Some(0.95), None));
        let p = s.plan(3, &history);
        assert!((p.sft.unwrap().fraction - 0.1).abs() < 1e-12);
        assert_eq!(p.grpo, Some(GrpoPlan { questions: 8 }));
        // With no floor a learnt format drops SFT entirely, and an unlearnt one drops GRPO.
        let s0 = Schedule::new(&ScheduleConfig { adaptive_min_fraction: 0.0, ..c });
        assert_eq!(s0.plan(3, &history).phases(), "grpo");
        assert_eq!(s0.plan(1, &History::default()).phases(), "sft");
    }

    #[test]
    fn early_stopping_waits_patience_epochs_across_both_phases() {
        let c = ScheduleConfig { patience: 3, min_delta: 0.01, ..ScheduleConfig::default() };
        let mut es = EarlyStopping::new(&c);
        assert_eq!(es.observe(&rec(1, Some(2.0), Some(1.9), None, None)), Verdict::Improved);
        // Only the GRPO-phase loss improves: still an improvement.
        assert_eq!(es.observe(&rec(2, Some(1.95), Some(1.5), None, None)), Verdict::Improved);
        // Improvements smaller than min_delta do not count.
        assert_eq!(es.observe(&rec(3, Some(1.495), Some(1.6), None, None)), Verdict::Continue { stale: 1 });
        assert_eq!(es.observe(&rec(4, Some(1.7), Some(1.6), None, None)), Verdict::Continue { stale: 2 });
        // Only the SFT-phase loss improves: resets the counter.
        assert_eq!(es.observe(&rec(5, Some(1.2), Some(1.6), None, None)), Verdict::Improved);
        assert_eq!(es.observe(&rec(6, Some(1.3), Some(f64::NAN), None, None)), Verdict::Continue { stale: 1 });
        assert_eq!(es.observe(&rec(7, Some(1.3), Some(1.3), None, None)), Verdict::Continue { stale: 2 });
        assert_eq!(es.observe(&rec(8, None, Some(1.25), None, None)), Verdict::Stop { best_epoch: 5, stale: 3 });
        assert_eq!(es.best(), Some(1.2));
    }

    #[test]
    fn early_stopping_on_format_accuracy_and_replay() {
        let c = ScheduleConfig { patience: 2, monitor: Monitor::FormatAccuracy, ..ScheduleConfig::default() };
        let history = History {
            records: vec![
                rec(1, Some(1.0), Some(0.5), Some(0.2), None),
                rec(2, Some(0.4), Some(0.3), Some(0.6), None),
                rec(3, Some(0.2), Some(0.1), Some(0.6), None),
            ],
        };
        let (es, verdict) = EarlyStopping::replay(&c, &history);
        assert_eq!(verdict, Some(Verdict::Continue { stale: 1 }));
        assert_eq!(es.best_epoch(), Some(2));
        let mut more = history.clone();
        more.push(rec(4, None, None, Some(0.55), None));
        assert_eq!(EarlyStopping::replay(&c, &more).1, Some(Verdict::Stop { best_epoch: 2, stale: 2 }));
        // The loss monitor would still be improving on the same history.
        let loss = ScheduleConfig { patience: 2, ..ScheduleConfig::default() };
        assert_eq!(EarlyStopping::replay(&loss, &history).1, Some(Verdict::Improved));
        assert_eq!(EarlyStopping::replay(&loss, &History::default()).1, None);
    }

    #[test]
    fn early_stopping_without_any_measurement_stops_after_patience() {
        let c = ScheduleConfig { patience: 2, ..ScheduleConfig::default() };
        let mut es = EarlyStopping::new(&c);
        assert_eq!(es.observe(&rec(1, None, None, None, None)), Verdict::Continue { stale: 1 });
        assert_eq!(es.observe(&rec(2, None, None, None, None)), Verdict::Stop { best_epoch: 2, stale: 2 });
    }
}

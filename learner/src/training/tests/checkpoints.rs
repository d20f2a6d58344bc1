//! Checkpoints on the bigram policy: a damaged newest checkpoint falls back to the previous
//! one, phase totals survive a mid-phase resume, the `every_steps` cadence.

use asrl_common::phase::Phase;

use super::bigram::{run_sft, test_config, Bigram};
use crate::training::checkpoint::{self, CORRUPT_PREFIX};
use crate::training::*;

fn trainer(dir: &std::path::Path) -> Trainer<Bigram> {
    Trainer::new(Bigram::new(8, 3), test_config(dir.to_path_buf()), 1.0, 4, 11, TrainerLog::disabled()).unwrap()
}

fn names(root: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    n.sort();
    n
}

/// Two checkpoints (after steps 2 and 4); returns the adapter at step 2.
fn two_checkpoints(dir: &std::path::Path) -> Vec<f32> {
    let mut t = trainer(dir);
    t.begin_phase(1, Phase::Sft, 0).unwrap();
    run_sft(&mut t, 4);
    t.save_checkpoint().unwrap();
    let at_two = t.policy().delta_values();
    run_sft(&mut t, 4);
    t.save_checkpoint().unwrap();
    assert_eq!(t.state().global_step, 4);
    at_two
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 4] = [
        ("a flipped bit in the adapter", |c| {
            let p = c.join("adapter/delta.safetensors");
            let mut b = std::fs::read(&p).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            std::fs::write(p, b).unwrap();
        }),
        ("a truncated optimiser file", |c| {
            let p = c.join("optimizer.safetensors");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(p, &b[..b.len() / 2]).unwrap();
        }),
        ("the trainer state gone", |c| std::fs::remove_file(c.join("trainer_state.json")).unwrap()),
        // Without a manifest (an older checkpoint) the damage shows when loading.
        ("garbage state, no manifest", |c| {
            std::fs::remove_file(c.join("manifest.json")).unwrap();
            std::fs::write(c.join("trainer_state.json"), "{\"epoch\":").unwrap();
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let at_two = two_checkpoints(dir.path());
        damage(&dir.path().join(checkpoint::checkpoint_name(4)));

        let mut t = trainer(dir.path());
        let resumed = t.resume().unwrap().unwrap_or_else(|| panic!("{what}: nothing resumed"));
        assert_eq!(resumed, dir.path().join(checkpoint::checkpoint_name(2)), "{what}");
        assert_eq!(t.state().global_step, 2, "{what}");
        assert_eq!(t.policy().delta_values(), at_two, "{what}: the previous checkpoint's adapter, exactly");
        assert_eq!(
            names(dir.path()),
            [format!("{CORRUPT_PREFIX}{}", checkpoint::checkpoint_name(4)), checkpoint::checkpoint_name(2)],
            "{what}: the damaged one is set aside, not resumed or pruned again"
        );
        // The next checkpoint is the newest again.
        t.begin_phase(1, Phase::Sft, 0).unwrap();
        run_sft(&mut t, 2);
        t.save_checkpoint().unwrap();
        assert_eq!(checkpoint::latest(dir.path()).unwrap().unwrap(), dir.path().join(checkpoint::checkpoint_name(3)));
    }
}

#[test]
fn when_every_checkpoint_is_unreadable_resume_fails_and_sets_nothing_aside() {
    let dir = tempfile::tempdir().unwrap();
    two_checkpoints(dir.path());
    for step in [2, 4] {
        std::fs::remove_file(dir.path().join(checkpoint::checkpoint_name(step)).join("optimizer.safetensors")).unwrap();
    }
    let err = trainer(dir.path()).resume().unwrap_err().to_string();
    assert!(err.contains("no checkpoint is readable") && err.contains("--fresh"), "{err}");
    assert!(err.contains(&checkpoint::checkpoint_name(2)) && err.contains(&checkpoint::checkpoint_name(4)), "{err}");
    assert_eq!(names(dir.path()), [checkpoint::checkpoint_name(2), checkpoint::checkpoint_name(4)]);
}

#[test]
fn a_phase_resumed_mid_way_reports_the_whole_phase() {
    let dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(&dir.path().join("straight"));
    straight.begin_phase(1, Phase::Sft, 4).unwrap();
    run_sft(&mut straight, 8);
    let whole = straight.end_phase().unwrap();

    let mut first = trainer(&dir.path().join("split"));
    first.begin_phase(1, Phase::Sft, 4).unwrap();
    run_sft(&mut first, 4);
    first.save_checkpoint().unwrap();
    drop(first);
    let mut second = trainer(&dir.path().join("split"));
    second.resume().unwrap().unwrap();
    assert_eq!((second.state().phase, second.state().phase_step), (Phase::Sft, 2));
    // The bigram data cycles every 4 micro-batches: the second half is the same 4 again.
    run_sft(&mut second, 4);
    let resumed = second.end_phase().unwrap();
    assert_eq!((resumed.epoch, resumed.steps, resumed.tokens), (whole.epoch, whole.steps, whole.tokens));
    assert!((resumed.loss_mean - whole.loss_mean).abs() < 1e-9, "{} vs {}", resumed.loss_mean, whole.loss_mean);
    assert_eq!(second.policy().delta_values(), straight.policy().delta_values(), "resumed exactly");
}

#[test]
fn checkpoint_due_counts_every_multiple_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path().to_path_buf());
    cfg.checkpoint.every_steps = 2;
    cfg.sft.grad_accum_steps = 1;
    let mut t = Trainer::new(Bigram::new(8, 3), cfg, 1.0, 4, 11, TrainerLog::disabled()).unwrap();
    t.begin_phase(1, Phase::Sft, 0).unwrap();
    assert!(!t.checkpoint_due(0));
    run_sft(&mut t, 1);
    assert!(!t.checkpoint_due(0), "step 1 of every 2");
    run_sft(&mut t, 1);
    assert!(t.checkpoint_due(0) && !t.checkpoint_due(2));
    run_sft(&mut t, 3);
    assert_eq!(t.state().global_step, 5);
    assert!(t.checkpoint_due(2), "step 4 was passed since the checkpoint at 2");
    assert!(!t.checkpoint_due(4));
}

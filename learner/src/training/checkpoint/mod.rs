//! Checkpoint directories `step-<global_step>` under the configured root, each written with
//! [`asrl_common::fs::replace_dir`] (atomic, fsynced) and sealed by a [`manifest`] of its files;
//! only the newest K are kept. A checkpoint that fails its manifest is renamed
//! `corrupt-step-…` by [`set_aside`], so neither resuming nor pruning counts it again.

pub mod manifest;

use std::fs;
use std::path::{Path, PathBuf};

use asrl_common::fs::{at, fsync_dir, is_leftover_name, replace_dir, restore_interrupted};

use super::TrainError;

const PREFIX: &str = "step-";
/// Staging directories of earlier versions (`.tmp-step-…`), removed like today's leftovers.
const LEGACY_TMP_PREFIX: &str = ".tmp-";
/// Prefix of a checkpoint set aside as unreadable.
pub const CORRUPT_PREFIX: &str = "corrupt-";

/// Directory name of the checkpoint after global step `step` (zero-padded: names sort by step).
pub fn checkpoint_name(step: u64) -> String {
    format!("{PREFIX}{step:010}")
}

/// Writes checkpoint `name` under `root` with `write(staging_dir)` plus its manifest, and makes
/// it visible atomically (replacing a checkpoint of the same name in one step). A crash leaves
/// either the previous set of checkpoints or the complete new one (plus at most a staging
/// directory that the next call removes). Keeps the newest `keep_last`.
pub fn write_atomic(
    root: &Path,
    name: &str,
    keep_last: usize,
    write: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let dst = root.join(name);
    replace_dir(&dst, |tmp| {
        write(tmp)?;
        manifest::write(tmp)
    })?;
    prune(root, keep_last.max(1))?;
    Ok(dst)
}

/// Complete checkpoints under `root`, oldest first. A copy that an interrupted replacement
/// left aside is put back first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    restore_interrupted(root)?;
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .map_err(at(root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX) && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list(root)?.pop())
}

/// Renames an unreadable checkpoint to `corrupt-<name>` beside it (kept for inspection, never
/// resumed from or pruned); returns the new path.
pub fn set_aside(dir: &Path) -> Result<PathBuf, TrainError> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut dst = dir.with_file_name(format!("{CORRUPT_PREFIX}{name}"));
    let mut n = 1;
    while dst.exists() {
        n += 1;
        dst = dir.with_file_name(format!("{CORRUPT_PREFIX}{name}.{n}"));
    }
    fs::rename(dir, &dst).map_err(at(dir))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(dst)
}

fn prune(root: &Path, keep_last: usize) -> Result<(), TrainError> {
    let all = list(root)?;
    let excess = all.len().saturating_sub(keep_last);
    for old in &all[..excess] {
        fs::remove_dir_all(old).map_err(at(old))?;
    }
    for entry in fs::read_dir(root).map_err(at(root))?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_leftover_name(&name) || name.starts_with(LEGACY_TMP_PREFIX) {
            let p = entry.path();
            fs::remove_dir_all(&p).map_err(at(&p))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_k_and_failed_writes_leave_no_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        for step in 1..=5u64 {
            write_atomic(dir.path(), &checkpoint_name(step), 3, |d| {
                fs::write(d.join("x"), step.to_string()).map_err(|e| at(d)(e).into())
            })
            .expect("write");
        }
        let names: Vec<String> =
            list(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, vec![checkpoint_name(3), checkpoint_name(4), checkpoint_name(5)]);
        let failed = write_atomic(dir.path(), &checkpoint_name(6), 3, |d| {
            Err(TrainError::Io { path: d.to_path_buf(), source: std::io::Error::other("boom") })
        });
        assert!(failed.is_err());
        let latest = latest(dir.path()).unwrap().unwrap();
        assert_eq!(latest.file_name().unwrap().to_string_lossy(), checkpoint_name(5));
        assert_eq!(fs::read_to_string(latest.join("x")).unwrap(), "5");
        assert!(manifest::verify(&latest).unwrap(), "sealed by a manifest");

        // Staging directories left by a crash (this version's and the former naming) go at the next write.
        fs::create_dir(dir.path().join(format!(".{}.tmp", checkpoint_name(7)))).unwrap();
        fs::create_dir(dir.path().join(format!("{LEGACY_TMP_PREFIX}{}", checkpoint_name(7)))).unwrap();
        write_atomic(dir.path(), &checkpoint_name(8), 3, |_| Ok(())).unwrap();
        let mut all: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        all.sort();
        assert_eq!(all, vec![checkpoint_name(4), checkpoint_name(5), checkpoint_name(8)]);
    }

    #[test]
    fn a_rewrite_under_the_same_name_is_never_absent_and_a_set_aside_one_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &'static str| {
            write_atomic(dir.path(), &checkpoint_name(4), 3, move |d| fs::write(d.join("x"), text).map_err(|e| at(d)(e).into()))
        };
        write("mid-epoch").unwrap();
        let path = write("end of epoch").unwrap();
        assert_eq!(fs::read_to_string(path.join("x")).unwrap(), "end of epoch");
        assert!(manifest::verify(&path).unwrap());
        // As if the rename fallback had been cut between its renames: the listing puts it back.
        fs::rename(&path, asrl_common::fs::previous_path(&path)).unwrap();
        assert_eq!(latest(dir.path()).unwrap(), Some(path.clone()));

        let aside = set_aside(&path).unwrap();
        assert_eq!(aside.file_name().unwrap().to_string_lossy(), format!("{CORRUPT_PREFIX}{}", checkpoint_name(4)));
        assert_eq!(latest(dir.path()).unwrap(), None);
        write("again").unwrap();
        let again = set_aside(&path).unwrap();
        assert!(again.to_string_lossy().ends_with(".2"), "{}", again.display());
        write_atomic(dir.path(), &checkpoint_name(9), 1, |_| Ok(())).unwrap();
        assert!(aside.is_dir() && again.is_dir(), "pruning leaves set-aside checkpoints alone");
    }
}

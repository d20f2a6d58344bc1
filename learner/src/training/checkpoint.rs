//! Atomic checkpoint directories: written under a temporary name, fsynced, renamed into place;
//! only the newest K are kept.

use std::fs;
use std::path::{Path, PathBuf};

use super::TrainError;

const PREFIX: &str = "step-";
const TMP_PREFIX: &str = ".tmp-";

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(format!("{}: {e}", path.display()))
}

/// Directory name of the checkpoint after global step `step` (zero-padded: names sort by step).
pub fn checkpoint_name(step: u64) -> String {
    format!("{PREFIX}{step:010}")
}

fn fsync_dir(path: &Path) -> Result<(), TrainError> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere this is best effort.
    match fs::File::open(path) {
        Ok(f) => match f.sync_all() {
            Ok(()) => Ok(()),
            Err(e) if cfg!(unix) => Err(io(path, e)),
            Err(_) => Ok(()),
        },
        Err(e) if cfg!(unix) => Err(io(path, e)),
        Err(_) => Ok(()),
    }
}

fn fsync_tree(path: &Path) -> Result<(), TrainError> {
    for entry in fs::read_dir(path).map_err(|e| io(path, e))? {
        let entry = entry.map_err(|e| io(path, e))?;
        let p = entry.path();
        if entry.file_type().map_err(|e| io(&p, e))?.is_dir() {
            fsync_tree(&p)?;
        } else {
            fs::File::open(&p).and_then(|f| f.sync_all()).map_err(|e| io(&p, e))?;
        }
    }
    fsync_dir(path)
}

/// Writes checkpoint `name` under `root` with `write(tmp_dir)`, then makes it visible in one
/// rename. A crash leaves either the previous set of checkpoints or the complete new one (plus
/// at most a `.tmp-*` directory that the next call removes). Keeps the newest `keep_last`.
pub fn write_atomic(
    root: &Path,
    name: &str,
    keep_last: usize,
    write: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let tmp = root.join(format!("{TMP_PREFIX}{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    write(&tmp)?;
    fsync_tree(&tmp)?;
    let dst = root.join(name);
    if dst.exists() {
        fs::remove_dir_all(&dst).map_err(|e| io(&dst, e))?;
    }
    fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
    fsync_dir(root)?;
    prune(root, keep_last.max(1))?;
    Ok(dst)
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|e| io(root, e))?
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

fn prune(root: &Path, keep_last: usize) -> Result<(), TrainError> {
    let all = list(root)?;
    let excess = all.len().saturating_sub(keep_last);
    for old in &all[..excess] {
        fs::remove_dir_all(old).map_err(|e| io(old, e))?;
    }
    for entry in fs::read_dir(root).map_err(|e| io(root, e))?.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let p = entry.path();
            fs::remove_dir_all(&p).map_err(|e| io(&p, e))?;
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
                fs::write(d.join("x"), step.to_string()).map_err(|e| io(d, e))
            })
            .expect("write");
        }
        let names: Vec<String> =
            list(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, vec![checkpoint_name(3), checkpoint_name(4), checkpoint_name(5)]);
        let failed = write_atomic(dir.path(), &checkpoint_name(6), 3, |_| Err(TrainError::Io("boom".into())));
        assert!(failed.is_err());
        let latest = latest(dir.path()).unwrap().unwrap();
        assert_eq!(latest.file_name().unwrap().to_string_lossy(), checkpoint_name(5));
        assert_eq!(fs::read_to_string(latest.join("x")).unwrap(), "5");
    }
}

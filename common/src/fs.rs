//! Durable file-system helpers: replacing a whole directory so that a crash leaves either the old
//! or the new one, never a mix or nothing.

use std::fs;
use std::path::{Path, PathBuf};

/// An I/O failure on `path`.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        Self { path: path.to_path_buf(), source }
    }
}

/// `map_err` helper: `.map_err(at(path))`.
pub fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FsError + '_ {
    move |source| FsError::new(path, source)
}

/// Where [`replace_dir`] builds the new copy of `dst` (a hidden sibling).
pub fn staging_path(dst: &Path) -> PathBuf {
    sibling(dst, "tmp")
}

/// Where [`replace_dir`] keeps the previous copy of `dst` until the new one is in place.
pub fn previous_path(dst: &Path) -> PathBuf {
    sibling(dst, "old")
}

/// Whether `name` is a staging or previous copy left by [`replace_dir`] (`.NAME.tmp`, `.NAME.old`).
pub fn is_leftover_name(name: &str) -> bool {
    name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".old"))
}

fn sibling(dst: &Path, suffix: &str) -> PathBuf {
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dst.with_file_name(format!(".{name}.{suffix}"))
}

/// Makes `dst` a directory whose content `fill` writes, atomically: `fill` writes a staging
/// directory, every file in it is fsynced, the current `dst` (if any) is renamed aside, the new
/// one renamed in, the parent fsynced, and only then is the old copy removed. A crash at any
/// point leaves the old or the new copy at `dst`, or (between the two renames) the old one at
/// [`previous_path`], which the next call puts back before anything else.
///
/// When `fill` fails, its staging directory is removed and `dst` is untouched.
pub fn replace_dir<E: From<FsError>>(dst: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let parent = parent_of(dst);
    fs::create_dir_all(parent).map_err(at(parent))?;
    let (tmp, old) = (staging_path(dst), previous_path(dst));
    if old.exists() {
        if dst.exists() {
            fs::remove_dir_all(&old).map_err(at(&old))?;
        } else {
            // A crash between the two renames: the previous copy is the last complete one.
            fs::rename(&old, dst).map_err(at(dst))?;
        }
    }
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(at(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(at(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fsync_tree(&tmp)?;
    let had_old = dst.exists();
    if had_old {
        fs::rename(dst, &old).map_err(at(dst))?;
    }
    fs::rename(&tmp, dst).map_err(at(dst))?;
    fsync_dir(parent)?;
    if had_old {
        fs::remove_dir_all(&old).map_err(at(&old))?;
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// fsyncs a directory's entry list. Directories can be opened and fsynced on Unix; elsewhere
/// this is best effort.
pub fn fsync_dir(path: &Path) -> Result<(), FsError> {
    match fs::File::open(path).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if cfg!(unix) => Err(FsError::new(path, e)),
        Err(_) => Ok(()),
    }
}

/// fsyncs every file under `path`, then every directory bottom-up.
pub fn fsync_tree(path: &Path) -> Result<(), FsError> {
    for entry in fs::read_dir(path).map_err(at(path))? {
        let entry = entry.map_err(at(path))?;
        let p = entry.path();
        if entry.file_type().map_err(at(&p))?.is_dir() {
            fsync_tree(&p)?;
        } else {
            fs::File::open(&p).and_then(|f| f.sync_all()).map_err(at(&p))?;
        }
    }
    fsync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> Result<(), FsError> {
        fs::create_dir_all(dir.join("sub")).map_err(at(dir))?;
        fs::write(dir.join("sub/x"), text).map_err(at(dir))
    }

    #[test]
    fn replaces_whole_and_a_failed_fill_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("best-adapter");
        replace_dir(&dst, |d| write(d, "one")).unwrap();
        fs::write(dst.join("stale-file"), "from the first copy").unwrap();
        replace_dir(&dst, |d| write(d, "two")).unwrap();
        assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "two");
        assert!(!dst.join("stale-file").exists(), "the directory is replaced, not merged");

        let failed: Result<(), FsError> =
            replace_dir(&dst, |d| Err(FsError::new(d, std::io::Error::other("boom"))));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "two");
        let names: Vec<String> =
            fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["best-adapter"], "no staging or previous copy is left behind");
    }

    #[test]
    fn a_crash_between_the_renames_is_recovered() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("final-adapter");
        replace_dir(&dst, |d| write(d, "good")).unwrap();
        // As if the process died after moving the old copy aside, before moving the new one in.
        fs::rename(&dst, previous_path(&dst)).unwrap();
        write(&staging_path(&dst), "half").unwrap();
        let failed: Result<(), FsError> = replace_dir(&dst, |d| Err(FsError::new(d, std::io::Error::other("boom"))));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "good", "the previous copy is put back");
        assert!(!previous_path(&dst).exists() && !staging_path(&dst).exists());
        assert!(is_leftover_name(".final-adapter.old") && is_leftover_name(".step-1.tmp"));
        assert!(!is_leftover_name("step-1") && !is_leftover_name(".hidden"));
    }
}

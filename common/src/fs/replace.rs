//! [`replace_dir`]: a whole directory replaced in one atomic step.
//!
//! The new copy is built in a hidden sibling (`.NAME.tmp`), fsynced, then swapped with the
//! current one by `renameat2(RENAME_EXCHANGE)` (Linux), so `NAME` always names a complete copy:
//! the old one before the swap, the new one after. Where the platform or file system cannot
//! exchange, the current copy is renamed aside (`.NAME.old`) and the new one renamed in; a crash
//! between those two renames leaves the old copy at `.NAME.old`, which [`restore_interrupted`]
//! (and the next [`replace_dir`] of the same name) puts back.

use std::fs;
use std::path::{Path, PathBuf};

use super::crash::crash_point;
use super::{at, fsync_dir, fsync_tree, parent_of, FsError};

/// Where [`replace_dir`] builds the new copy of `dst` (a hidden sibling).
pub fn staging_path(dst: &Path) -> PathBuf {
    sibling(dst, "tmp")
}

/// Where [`replace_dir`]'s rename fallback keeps the previous copy of `dst` until the new one is
/// in place.
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

/// How the new copy takes the old one's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swap {
    /// One atomic exchange where supported, else [`Swap::RenameAside`].
    Exchange,
    /// Old copy renamed aside, new one renamed in: two steps, recovered from `.NAME.old`.
    /// (Chosen by tests; in use it is the fallback when an exchange is refused.)
    #[cfg_attr(not(test), allow(dead_code))]
    RenameAside,
}

/// Makes `dst` a directory whose content `fill` writes, atomically: `fill` writes a staging
/// directory, every file in it is fsynced, the staging directory takes `dst`'s place in one
/// atomic exchange (see the module docs for the fallback), the parent is fsynced, and only then
/// is the previous copy removed. A reader or a crash at any point sees the old or the new copy
/// at `dst`, never a mix and never nothing (with the fallback: the old copy possibly at
/// [`previous_path`], which the next call or [`restore_interrupted`] puts back).
///
/// When `fill` fails, its staging directory is removed and `dst` is untouched.
pub fn replace_dir<E: From<FsError>>(dst: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    replace_dir_by(dst, fill, Swap::Exchange)
}

fn replace_dir_by<E: From<FsError>>(dst: &Path, fill: impl FnOnce(&Path) -> Result<(), E>, swap: Swap) -> Result<(), E> {
    let parent = parent_of(dst);
    fs::create_dir_all(parent).map_err(at(parent))?;
    let (tmp, old) = (staging_path(dst), previous_path(dst));
    recover(dst)?;
    fs::create_dir_all(&tmp).map_err(at(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    crash_point("replace_dir:filled");
    fsync_tree(&tmp)?;
    crash_point("replace_dir:synced");
    if !dst.exists() {
        fs::rename(&tmp, dst).map_err(at(dst))?;
        fsync_dir(parent)?;
        return Ok(());
    }
    if swap == Swap::Exchange && exchange(&tmp, dst)? {
        // `tmp` now holds the previous copy.
        fsync_dir(parent)?;
        crash_point("replace_dir:swapped");
        fs::remove_dir_all(&tmp).map_err(at(&tmp))?;
        return Ok(());
    }
    fs::rename(dst, &old).map_err(at(dst))?;
    crash_point("replace_dir:aside");
    fs::rename(&tmp, dst).map_err(at(dst))?;
    fsync_dir(parent)?;
    crash_point("replace_dir:swapped");
    fs::remove_dir_all(&old).map_err(at(&old))?;
    Ok(())
}

/// Undoes what a crash inside [`replace_dir`] left for `dst`: a previous copy with no current
/// one goes back to `dst`; staging directories (a half-written new copy, or an exchanged-out old
/// one) and superseded previous copies are removed.
fn recover(dst: &Path) -> Result<(), FsError> {
    let (tmp, old) = (staging_path(dst), previous_path(dst));
    if old.exists() {
        if dst.exists() {
            fs::remove_dir_all(&old).map_err(at(&old))?;
        } else {
            fs::rename(&old, dst).map_err(at(dst))?;
            fsync_dir(parent_of(dst))?;
        }
    }
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(at(&tmp))?;
    }
    Ok(())
}

/// Puts back, for every `.NAME.old` in `dir` whose `NAME` is missing, the previous copy a crash
/// between [`replace_dir`]'s two fallback renames left aside. Readers of a directory of replaced
/// entries (checkpoints) call this first so they see every complete copy. Removes nothing.
pub fn restore_interrupted(dir: &Path) -> Result<(), FsError> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let name = entry.map_err(at(dir))?.file_name().to_string_lossy().into_owned();
        let Some(base) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".old")) else { continue };
        let dst = dir.join(base);
        if !base.is_empty() && !dst.exists() {
            let old = dir.join(&name);
            fs::rename(&old, &dst).map_err(at(&old))?;
            fsync_dir(dir)?;
            tracing::warn!("{}: put back the copy an interrupted replacement left at {name}", dst.display());
        }
    }
    Ok(())
}

/// Atomically swaps two existing paths. `Ok(false)` when the platform or file system cannot
/// (the caller falls back to two renames).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<bool, FsError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|e| FsError::new(p, std::io::Error::other(e)));
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths; renameat2 reads them and touches no memory of ours.
    // Every variadic argument is passed as a C long, the width `syscall` reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD as libc::c_long,
            ca.as_ptr(),
            libc::AT_FDCWD as libc::c_long,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE as libc::c_long,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Old kernel, or a file system without exchange (e.g. some network file systems).
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => Ok(false),
        _ => Err(FsError::new(b, err)),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> Result<bool, FsError> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> Result<(), FsError> {
        fs::create_dir_all(dir.join("sub")).map_err(at(dir))?;
        fs::write(dir.join("sub/x"), text).map_err(at(dir))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        n.sort();
        n
    }

    #[test]
    fn replaces_whole_and_a_failed_fill_changes_nothing() {
        for swap in [Swap::Exchange, Swap::RenameAside] {
            let root = tempfile::tempdir().unwrap();
            let dst = root.path().join("best-adapter");
            replace_dir_by(&dst, |d| write(d, "one"), swap).unwrap();
            fs::write(dst.join("stale-file"), "from the first copy").unwrap();
            replace_dir_by(&dst, |d| write(d, "two"), swap).unwrap();
            assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "two", "{swap:?}");
            assert!(!dst.join("stale-file").exists(), "{swap:?}: the directory is replaced, not merged");

            let failed: Result<(), FsError> =
                replace_dir_by(&dst, |d| Err(FsError::new(d, std::io::Error::other("boom"))), swap);
            assert!(failed.is_err());
            assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "two");
            assert_eq!(names(root.path()), ["best-adapter"], "{swap:?}: no staging or previous copy is left behind");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn exchange_swaps_two_directories_in_one_step() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        write(&a, "A").unwrap();
        write(&b, "B").unwrap();
        // tmpfs, ext4, xfs and btrfs all support it; a file system that does not says so.
        if exchange(&a, &b).unwrap() {
            assert_eq!(fs::read_to_string(a.join("sub/x")).unwrap(), "B");
            assert_eq!(fs::read_to_string(b.join("sub/x")).unwrap(), "A");
        } else {
            eprintln!("this file system has no RENAME_EXCHANGE: replace_dir uses its rename fallback here");
        }
        let missing = exchange(&root.path().join("none"), &b).unwrap_err();
        assert!(missing.to_string().contains("b"), "{missing}");
    }

    /// Every state a crash can leave (the process stopped after each step of either swap), and
    /// what a reader and the next replacement see in it.
    #[test]
    fn every_crash_state_reads_as_a_complete_copy_and_is_cleaned_up() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("step-1");
        let (tmp, old) = (staging_path(&dst), previous_path(&dst));
        type MakeState = fn(&Path, &Path, &Path);
        let states: [(&str, MakeState); 5] = [
            // A half-written staging copy.
            ("filled", |_, tmp, _| write(tmp, "half").unwrap()),
            // A complete staging copy not yet swapped in.
            ("synced", |_, tmp, _| write(tmp, "new").unwrap()),
            // Exchanged: the old copy is in the staging directory.
            ("exchanged", |dst, tmp, _| {
                fs::rename(dst, tmp).unwrap();
                write(dst, "new").unwrap();
            }),
            // Fallback, between its two renames.
            ("aside", |dst, tmp, old| {
                fs::rename(dst, old).unwrap();
                write(tmp, "new").unwrap();
            }),
            // Fallback, after both renames.
            ("renamed", |dst, _, old| {
                fs::rename(dst, old).unwrap();
                write(dst, "new").unwrap();
            }),
        ];
        for (what, crash) in states {
            replace_dir(&dst, |d| write(d, "old")).unwrap();
            crash(&dst, &tmp, &old);
            restore_interrupted(root.path()).unwrap();
            let seen = fs::read_to_string(dst.join("sub/x")).unwrap();
            assert!(seen == "old" || seen == "new", "{what}: a reader sees {seen:?}");
            replace_dir(&dst, |d| write(d, "next")).unwrap();
            assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "next", "{what}");
            assert_eq!(names(root.path()), ["step-1"], "{what}: leftovers removed");
            fs::remove_dir_all(&dst).unwrap();
        }
        assert!(is_leftover_name(".final-adapter.old") && is_leftover_name(".step-1.tmp"));
        assert!(!is_leftover_name("step-1") && !is_leftover_name(".hidden"));
    }

    #[test]
    fn the_next_replacement_puts_back_a_copy_left_aside() {
        let root = tempfile::tempdir().unwrap();
        let dst = root.path().join("final-adapter");
        replace_dir(&dst, |d| write(d, "good")).unwrap();
        fs::rename(&dst, previous_path(&dst)).unwrap();
        write(&staging_path(&dst), "half").unwrap();
        let failed: Result<(), FsError> = replace_dir(&dst, |d| Err(FsError::new(d, std::io::Error::other("boom"))));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(dst.join("sub/x")).unwrap(), "good", "the previous copy is put back");
        assert_eq!(names(root.path()), ["final-adapter"]);
    }
}

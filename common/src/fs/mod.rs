//! Durable file-system helpers.
//!
//! - [`replace_dir`]: replace a whole directory so that a crash leaves the old or the new one,
//!   never a mix or nothing;
//! - [`fsync_file`], [`fsync_dir`], [`fsync_tree`]: make writes survive a power loss;
//! - [`crash_point`]: the `ASRL_CRASH_AT` hook the crash-consistency tests abort the process with.

mod crash;
mod replace;

use std::fs;
use std::path::{Path, PathBuf};

pub use crash::{crash_point, CRASH_AT_ENV};
pub use replace::{is_leftover_name, previous_path, replace_dir, restore_interrupted, staging_path};

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

/// fsyncs one file's data and metadata (any descriptor of the inode will do, so a file another
/// handle appends to can be synced by path).
pub fn fsync_file(path: &Path) -> Result<(), FsError> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(at(path))
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
            fsync_file(&p)?;
        }
    }
    fsync_dir(path)
}

/// The directory `path` lives in (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

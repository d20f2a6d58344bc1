//! `manifest.json`: the size and XXH3-128 of every file of a checkpoint, written last, so a
//! checkpoint damaged after it was written (a truncated or bit-flipped file, a file gone) is
//! recognised before any of it is loaded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

use asrl_common::fs::at;

use crate::training::TrainError;

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    /// XXH3-128, seed 0, as 32 hex digits.
    xxh3_128: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// By path relative to the checkpoint directory, `/`-separated.
    files: BTreeMap<String, FileEntry>,
}

/// Records every file under `dir` (except the manifest itself) in `dir/manifest.json`.
pub fn write(dir: &Path) -> Result<(), TrainError> {
    let mut manifest = Manifest::default();
    for (rel, path) in files_under(dir)? {
        if rel != MANIFEST_FILE {
            manifest.files.insert(rel, entry_of(&path)?);
        }
    }
    let text = serde_json::to_vec_pretty(&manifest).map_err(TrainError::Encode)?;
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, text).map_err(at(&path))?;
    Ok(())
}

/// Checks `dir` against its manifest: every listed file present with its size and checksum.
/// `Ok(false)` when there is no manifest (a checkpoint from before manifests: loaded unchecked).
pub fn verify(dir: &Path) -> Result<bool, TrainError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let bytes = std::fs::read(&path).map_err(at(&path))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| TrainError::checkpoint(&path, format!("unreadable manifest: {e}")))?;
    if manifest.files.is_empty() {
        return Err(TrainError::checkpoint(&path, "the manifest lists no files"));
    }
    for (rel, want) in &manifest.files {
        let file = dir.join(rel);
        if !file.is_file() {
            return Err(TrainError::checkpoint(&file, "listed in manifest.json but missing"));
        }
        let got = entry_of(&file)?;
        if got.bytes != want.bytes {
            return Err(TrainError::checkpoint(&file, format!("{} bytes, manifest.json says {}", got.bytes, want.bytes)));
        }
        if got.xxh3_128 != want.xxh3_128 {
            return Err(TrainError::checkpoint(
                &file,
                format!("checksum {} differs from manifest.json's {}: the file is damaged", got.xxh3_128, want.xxh3_128),
            ));
        }
    }
    Ok(true)
}

fn entry_of(path: &Path) -> Result<FileEntry, TrainError> {
    let mut file = File::open(path).map_err(at(path))?;
    let mut hasher = Xxh3Default::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileEntry { bytes, xxh3_128: format!("{:032x}", hasher.digest128()) })
}

/// Every regular file under `dir`, as (relative `/`-separated path, full path), sorted.
fn files_under(dir: &Path) -> Result<Vec<(String, PathBuf)>, TrainError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(at(&d))? {
            let entry = entry.map_err(at(&d))?;
            let p = entry.path();
            if entry.file_type().map_err(at(&p))?.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &Path) {
        std::fs::create_dir_all(dir.join("adapter")).unwrap();
        std::fs::write(dir.join("adapter/weights"), vec![7u8; 3000]).unwrap();
        std::fs::write(dir.join("trainer_state.json"), "{}").unwrap();
        write(dir).unwrap();
    }

    #[test]
    fn a_damaged_truncated_or_missing_file_fails_verification_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        checkpoint(&dir);
        assert!(verify(&dir).unwrap());

        let weights = dir.join("adapter/weights");
        let mut bytes = std::fs::read(&weights).unwrap();
        bytes[1234] ^= 0x10;
        std::fs::write(&weights, &bytes).unwrap();
        let err = verify(&dir).unwrap_err().to_string();
        assert!(err.contains("adapter/weights") && err.contains("damaged"), "{err}");

        checkpoint(&dir);
        std::fs::write(&weights, vec![7u8; 100]).unwrap();
        let err = verify(&dir).unwrap_err().to_string();
        assert!(err.contains("100 bytes") && err.contains("3000"), "{err}");

        checkpoint(&dir);
        std::fs::remove_file(dir.join("trainer_state.json")).unwrap();
        let err = verify(&dir).unwrap_err().to_string();
        assert!(err.contains("trainer_state.json") && err.contains("missing"), "{err}");

        std::fs::write(dir.join(MANIFEST_FILE), "{\"files\":").unwrap();
        assert!(verify(&dir).unwrap_err().to_string().contains("unreadable manifest"));
        std::fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        assert!(!verify(&dir).unwrap(), "no manifest: an older checkpoint, not checked");
    }
}

//! Durable live additions: validated, appended as whole lines, fsynced before returning.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use fs2::FileExt;
use serde_json::Value;

use super::example::{parse_line, Example};
use super::DataError;

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    pub appended: usize,
    pub bytes: u64,
}

/// Serialises appends within this process; `flock` serialises them across processes.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Appends `examples` (chat-style JSON, see [`Example::to_json`]) to the JSONL file at `path`.
pub fn append_examples(
    path: &Path,
    examples: &[Example],
    max_line_bytes: usize,
) -> Result<AppendReceipt, DataError> {
    let values: Vec<Value> = examples.iter().map(Example::to_json).collect();
    append_json(path, &values, max_line_bytes)
}

/// Appends raw JSON examples, each written as given (compact). Every value goes through the
/// loader's validator first; the first bad one rejects the whole call (nothing is written).
/// Returns once the lines are on disk (file fsynced; for a new file, its directory too).
pub fn append_json(
    path: &Path,
    values: &[Value],
    max_line_bytes: usize,
) -> Result<AppendReceipt, DataError> {
    let mut buf = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let line = serde_json::to_vec(value).map_err(|e| DataError::InvalidExample {
            index,
            reason: super::BadReason::InvalidJson(e.to_string()),
        })?;
        parse_line(&line, max_line_bytes)
            .map_err(|reason| DataError::InvalidExample { index, reason })?;
        buf.extend_from_slice(&line);
        buf.push(b'\n');
    }
    if values.is_empty() {
        return Ok(AppendReceipt {
            appended: 0,
            bytes: 0,
        });
    }
    let io = |e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let _guard = APPEND_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let existed = std::fs::symlink_metadata(path).is_ok();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    file.lock_exclusive().map_err(io)?;
    // A torn last line (a writer killed mid-line, or a hand-written file without final newline)
    // must not swallow our first line.
    if file.metadata().map_err(io)?.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1)).map_err(io)?;
        file.read_exact(&mut last).map_err(io)?;
        if last[0] != b'\n' {
            buf.insert(0, b'\n');
        }
    }
    let start = file.metadata().map_err(io)?.len();
    write_or_roll_back(&mut &file, &file, start, &buf).map_err(io)?;
    if !existed {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DataError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
    }
    Ok(AppendReceipt {
        appended: values.len(),
        bytes: buf.len() as u64,
    })
}

/// Writes `buf` at the end of `file` (through `out`, the same file) and fsyncs; on failure
/// (disk full, file size limit) cuts the file back to `start` bytes so no partial line is left.
fn write_or_roll_back(out: &mut impl Write, file: &File, start: u64, buf: &[u8]) -> std::io::Result<()> {
    let written = out.write_all(buf).and_then(|()| file.sync_all());
    if let Err(e) = written {
        if let Err(undo) = file.set_len(start).and_then(|()| file.sync_all()) {
            tracing::error!(error = %undo, "could not cut a failed append back; the file may end in a partial line");
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod rollback_tests {
    use super::*;

    /// Writes `budget` bytes through to the file, then fails like a full disk.
    struct FullAfter<'a> {
        file: &'a File,
        budget: usize,
    }

    impl Write for FullAfter<'_> {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if self.budget == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            let n = data.len().min(self.budget);
            self.budget -= n;
            (&mut &*self.file).write(&data[..n])
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_leaves_no_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.jsonl");
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        let start = file.metadata().unwrap().len();
        let line = b"{\"b\":2}\n{\"c\":3}\n";
        let err = write_or_roll_back(&mut FullAfter { file: &file, budget: 5 }, &file, start, line).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        // The real path: everything lands.
        write_or_roll_back(&mut &file, &file, start, line).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}

//! TensorBoard scalar event files, so `tensorboard --logdir runs/` shows live curves.
//!
//! An event file is a sequence of TFRecords: `u64 length (LE) · u32 masked_crc32c(length) · data
//! · u32 masked_crc32c(data)`, where `data` is a serialised `tensorflow.Event` protobuf. The first
//! record carries `file_version = "brain.Event:2"`; each scalar is an `Event { wall_time, step,
//! summary { value { tag, simple_value } } }`. The three messages are declared below with prost
//! (field numbers from tensorflow/core/util/event.proto and summary.proto); nothing else of
//! TensorFlow is needed.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum TensorboardError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: record {index}: {message}")]
    Corrupt { path: PathBuf, index: usize, message: String },
}

/// `tensorflow.Event` (the fields we write).
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with the `simple_value` (scalar) case.
#[derive(Clone, PartialEq, Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// TFRecord's CRC: CRC32C rotated right by 15 bits plus a constant, so a CRC of a CRC is not 0.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarPoint {
    pub tag: String,
    pub step: i64,
    pub value: f32,
    pub wall_time: f64,
}

/// Appends scalars to `<dir>/events.out.tfevents.<unix seconds>.<host>.asrl`.
///
/// Every record is flushed when written: TensorBoard tails the file while the run goes on, and a
/// crash loses at most the record being written (the reader stops at a torn last record).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing). A resumed run starts a new file in
    /// the same directory; TensorBoard merges all files of a directory into one run.
    pub fn create(dir: &Path) -> Result<Self, TensorboardError> {
        std::fs::create_dir_all(dir).map_err(|source| TensorboardError::Io { path: dir.to_path_buf(), source })?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty() && !h.contains('/'));
        let host = host.unwrap_or_else(|| "localhost".into());
        // Nanoseconds keep two writers started in the same second apart.
        let path = dir.join(format!("events.out.tfevents.{}.{host}.{}.asrl", now.as_secs(), now.subsec_nanos()));
        let file = File::create(&path).map_err(|source| TensorboardError::Io { path: path.clone(), source })?;
        let mut w = Self { path, out: BufWriter::new(file) };
        w.write_event(&Event {
            wall_time: now.as_secs_f64(),
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one scalar. Non-finite values are written as they are (TensorBoard shows NaN).
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<(), TensorboardError> {
        self.scalars(step, &[(tag, value)])
    }

    /// Writes several scalars of one step as one event.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<(), TensorboardError> {
        if values.is_empty() {
            return Ok(());
        }
        let wall_time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue { tag: (*tag).to_string(), simple_value: Some(*v as f32) })
            .collect();
        self.write_event(&Event { wall_time, step, file_version: None, summary: Some(Summary { value }) })
    }

    fn write_event(&mut self, event: &Event) -> Result<(), TensorboardError> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        let io = |source| TensorboardError::Io { path: self.path.clone(), source };
        self.out.write_all(&record).map_err(io)?;
        self.out.flush().map_err(|source| TensorboardError::Io { path: self.path.clone(), source })
    }
}

/// Reads every scalar of an event file, checking both CRCs of each record. A torn last record
/// (a writer killed mid-write) ends the read without an error; a bad CRC anywhere is an error.
pub fn read_scalars(path: &Path) -> Result<Vec<ScalarPoint>, TensorboardError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| TensorboardError::Io { path: path.to_path_buf(), source })?;
    let corrupt = |index, message: &str| TensorboardError::Corrupt {
        path: path.to_path_buf(),
        index,
        message: message.to_string(),
    };
    let mut points = Vec::new();
    let mut pos = 0usize;
    let mut index = 0usize;
    while pos < bytes.len() {
        if bytes.len() - pos < 12 {
            break; // torn header
        }
        let len_bytes = &bytes[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let len_crc = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes"));
        if masked_crc(len_bytes) != len_crc {
            return Err(corrupt(index, "length CRC mismatch"));
        }
        let data_start = pos + 12;
        let Some(data_end) = data_start.checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
            break; // torn body
        };
        let data = &bytes[data_start..data_end];
        let data_crc = u32::from_le_bytes(bytes[data_end..data_end + 4].try_into().expect("4 bytes"));
        if masked_crc(data) != data_crc {
            return Err(corrupt(index, "data CRC mismatch"));
        }
        let event = Event::decode(data).map_err(|e| corrupt(index, &format!("not an Event: {e}")))?;
        if let Some(summary) = event.summary {
            for v in summary.value {
                if let Some(value) = v.simple_value {
                    points.push(ScalarPoint { tag: v.tag, step: event.step, value, wall_time: event.wall_time });
                }
            }
        }
        pos = data_end + 4;
        index += 1;
    }
    Ok(points)
}

/// Every event file directly under `dir`, oldest first (by name: the names start with the time).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, TensorboardError> {
    let rd = std::fs::read_dir(dir).map_err(|source| TensorboardError::Io { path: dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.out.tfevents.")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_tensorflow() {
        // From TensorFlow's crc32c tests: crc32c("123456789") = 0xe3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // masked_crc of an empty record length (8 zero bytes), as TensorFlow's record writer computes it.
        let crc = crc32c::crc32c(&[0u8; 8]);
        assert_eq!(masked_crc(&[0u8; 8]), crc.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn scalars_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("sft/loss", 1, 2.5).unwrap();
        w.scalars(2, &[("sft/loss", 2.25), ("sft/lr", 1e-4)]).unwrap();
        w.scalar("grpo/reward_mean", 3, -0.5).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let points = read_scalars(&path).unwrap();
        let got: Vec<(&str, i64, f32)> = points.iter().map(|p| (p.tag.as_str(), p.step, p.value)).collect();
        assert_eq!(
            got,
            vec![("sft/loss", 1, 2.5), ("sft/loss", 2, 2.25), ("sft/lr", 2, 1e-4), ("grpo/reward_mean", 3, -0.5)]
        );
        assert_eq!(event_files(dir.path()).unwrap(), vec![path]);
    }

    #[test]
    fn first_record_is_the_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventWriter::create(dir.path()).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let event = Event::decode(&bytes[12..12 + len]).unwrap();
        assert_eq!(event.file_version.as_deref(), Some("brain.Event:2"));
    }

    #[test]
    fn torn_tail_is_tolerated_and_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("a", 1, 1.0).unwrap();
        w.scalar("a", 2, 2.0).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let points = read_scalars(&path).unwrap();
        assert_eq!(points.len(), 1, "the torn second scalar is dropped");

        let mut bad = full.clone();
        let last = bad.len() - 6; // inside the last record's data
        bad[last] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let err = read_scalars(&path).unwrap_err().to_string();
        assert!(err.contains("CRC mismatch"), "{err}");
    }
}

//! Where a run stands, as each checkpoint records it (`TrainerState::dataset_position`), and
//! how a restarted process gets back there exactly.
//!
//! A checkpoint inside an epoch records the epoch's snapshot (the content keys of its training
//! and validation examples), the SFT order and how much of it was trained, the GRPO questions and
//! which were trained on, and the epoch's record so far. The resumed epoch trains on the same
//! examples in the same order from the next one on; examples added since wait for the next
//! epoch. Every checkpoint also records the length of `metrics.jsonl` and `trainer.jsonl`: a
//! resumed run cuts what was written after it, so no record appears twice.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use asrl_common::data::{Example, Snapshot};
use asrl_common::fs::{at, fsync_file, FsError};

use crate::report::EpochRecord;

/// What `trainer_state.json`'s `dataset_position` holds. Checkpoints of earlier versions hold
/// only `epochs_done`, and read as an epoch boundary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPosition {
    /// Epochs complete.
    #[serde(default)]
    pub epochs_done: usize,
    /// Seconds the run had taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    /// Length of `metrics.jsonl` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_bytes: Option<u64>,
    /// Length of `trainer.jsonl` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer_log_bytes: Option<u64>,
    /// The epoch under way, for a checkpoint taken inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<EpochCursor>,
}

/// How far an epoch has got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochCursor {
    pub epoch: usize,
    /// The snapshot's training examples, by [`example_key`], in snapshot order.
    pub train: Vec<String>,
    /// The snapshot's validation examples, likewise.
    pub val: Vec<String>,
    /// The epoch's record so far: sizes, and the SFT results once that phase is done.
    pub record: EpochRecord,
    /// Set when the SFT phase starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<SftCursor>,
    /// Set when the GRPO phase starts (SFT, if planned, is then done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpo: Option<GrpoCursor>,
}

/// The SFT phase: its order and how much of it was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftCursor {
    /// Indices into [`EpochCursor::train`], in training order.
    pub order: Vec<u32>,
    /// `order[..done]` went into applied (or skipped non-finite) optimiser steps.
    pub done: usize,
}

/// The GRPO phase: its questions and which of them were trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoCursor {
    /// Indices into [`EpochCursor::train`]; question `i` is leased as prompt `e<epoch>-q<i>`.
    pub questions: Vec<u32>,
    /// Positions in `questions` whose groups went into an update, ascending.
    pub trained: Vec<u32>,
}

/// An example's identity in a checkpoint: the first 16 bytes of its content key, in hex.
pub fn example_key(e: &Example) -> String {
    e.content_key()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl EpochCursor {
    /// The cursor of a fresh epoch on `snapshot`.
    pub fn new(epoch: usize, snapshot: &Snapshot, record: EpochRecord) -> Self {
        Self {
            epoch,
            train: snapshot.train.iter().map(example_key).collect(),
            val: snapshot.val.iter().map(example_key).collect(),
            record,
            sft: None,
            grpo: None,
        }
    }

    /// Rebuilds this epoch's snapshot from `fresh` (a new scan of the data): its recorded
    /// examples in their recorded order, nothing added since. Recorded examples that are gone
    /// from the data (edited out) are dropped from the rest of the epoch; the returned cursor
    /// indexes the rebuilt snapshot, and the count of dropped examples comes last.
    pub fn restore(&self, mut fresh: Snapshot) -> (Snapshot, EpochCursor, usize) {
        let mut by_key: HashMap<String, Example> = fresh.train.drain(..).chain(fresh.val.drain(..)).map(|e| (example_key(&e), e)).collect();
        let mut take = |keys: &[String]| -> (Vec<Example>, Vec<Option<u32>>) {
            let (mut kept, mut remap) = (Vec::new(), Vec::with_capacity(keys.len()));
            for k in keys {
                match by_key.remove(k) {
                    Some(e) => {
                        remap.push(Some(kept.len() as u32));
                        kept.push(e);
                    }
                    None => remap.push(None),
                }
            }
            (kept, remap)
        };
        let (train, train_map) = take(&self.train);
        let (val, val_map) = take(&self.val);
        let missing = train_map.iter().chain(&val_map).filter(|m| m.is_none()).count();
        let mut cursor = self.clone();
        cursor.train = train.iter().map(example_key).collect();
        cursor.val = val.iter().map(example_key).collect();
        let map = |i: &u32| train_map.get(*i as usize).copied().flatten();
        if let Some(sft) = &mut cursor.sft {
            let done = sft.order[..sft.done.min(sft.order.len())].iter().filter(|i| map(i).is_some()).count();
            sft.order = sft.order.iter().filter_map(map).collect();
            sft.done = done;
        }
        if let Some(grpo) = &mut cursor.grpo {
            let mut new_pos = Vec::with_capacity(grpo.questions.len());
            let mut questions = Vec::new();
            for q in &grpo.questions {
                new_pos.push(map(q).map(|i| {
                    questions.push(i);
                    questions.len() as u32 - 1
                }));
            }
            grpo.trained = grpo.trained.iter().filter_map(|&p| new_pos.get(p as usize).copied().flatten()).collect();
            grpo.questions = questions;
        }
        fresh.train = train;
        fresh.val = val;
        (fresh, cursor, missing)
    }
}

/// Length of `path` after fsyncing it (0 when it does not exist): what a checkpoint records
/// of an append-only log.
pub fn synced_len(path: &Path) -> Result<u64, FsError> {
    if !path.exists() {
        return Ok(0);
    }
    fsync_file(path)?;
    Ok(std::fs::metadata(path).map_err(at(path))?.len())
}

/// Cuts the append-only log `path` back to the `len` bytes a checkpoint recorded, so what the
/// lost process wrote after the checkpoint is not read twice. Returns the bytes removed; a
/// file shorter than `len` is left as it is (with a warning: records were lost with it).
pub fn cut_back(path: &Path, len: u64) -> Result<u64, FsError> {
    let Ok(meta) = std::fs::metadata(path) else {
        if len > 0 {
            tracing::warn!("{} is missing; the checkpoint recorded {len} bytes of it", path.display());
        }
        return Ok(0);
    };
    let now = meta.len();
    if now < len {
        tracing::warn!("{} has {now} bytes, fewer than the {len} the checkpoint recorded: records after byte {now} were lost", path.display());
        return Ok(0);
    }
    if now > len {
        let file = std::fs::OpenOptions::new().write(true).open(path).map_err(at(path))?;
        file.set_len(len).map_err(at(path))?;
        file.sync_all().map_err(at(path))?;
    }
    Ok(now - len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use asrl_common::data::{DataReport, Message};

    fn ex(i: usize) -> Example {
        Example {
            id: None,
            messages: vec![Message { role: "user".into(), content: format!("question {i}") }],
            response: format!("answer {i}"),
            answer: String::new(),
            example_type: "t".into(),
        }
    }

    fn snapshot(train: &[usize], val: &[usize]) -> Snapshot {
        Snapshot {
            train: train.iter().map(|&i| ex(i)).collect(),
            val: val.iter().map(|&i| ex(i)).collect(),
            test: Vec::new(),
            report: DataReport::default(),
            previous: None,
        }
    }

    #[test]
    fn a_grown_dataset_restores_the_recorded_snapshot_and_order() {
        let mut cursor = EpochCursor::new(3, &snapshot(&[0, 1, 2, 3], &[10]), EpochRecord { epoch: 3, ..Default::default() });
        cursor.sft = Some(SftCursor { order: vec![2, 0, 3, 1], done: 2 });
        cursor.grpo = Some(GrpoCursor { questions: vec![3, 1], trained: vec![1] });
        let json = serde_json::to_value(RunPosition { epochs_done: 2, epoch: Some(cursor.clone()), ..Default::default() }).unwrap();
        let back: RunPosition = serde_json::from_value(json).unwrap();
        assert_eq!(back.epoch.as_ref(), Some(&cursor));

        // New examples arrived, interleaved (a directory source) and at the end.
        let (snap, restored, missing) = cursor.restore(snapshot(&[0, 7, 1, 2, 3, 8], &[10, 11]));
        assert_eq!(missing, 0);
        assert_eq!(restored, cursor, "nothing moved");
        assert_eq!(snap.train, vec![ex(0), ex(1), ex(2), ex(3)]);
        assert_eq!(snap.val, vec![ex(10)]);
    }

    #[test]
    fn examples_gone_from_the_data_are_dropped_from_the_rest_of_the_epoch() {
        let mut cursor = EpochCursor::new(1, &snapshot(&[0, 1, 2, 3], &[10]), EpochRecord::default());
        cursor.sft = Some(SftCursor { order: vec![2, 0, 3, 1], done: 2 });
        cursor.grpo = Some(GrpoCursor { questions: vec![0, 3, 1], trained: vec![0, 2] });
        let (snap, restored, missing) = cursor.restore(snapshot(&[1, 2, 3], &[]));
        assert_eq!(missing, 2);
        assert_eq!(snap.train, vec![ex(1), ex(2), ex(3)]);
        let sft = restored.sft.unwrap();
        assert_eq!((sft.order, sft.done), (vec![1, 2, 0], 1), "example 0 was trained and is gone");
        let grpo = restored.grpo.unwrap();
        assert_eq!((grpo.questions, grpo.trained), (vec![2, 0], vec![1]));
    }

    #[test]
    fn an_old_position_reads_as_an_epoch_boundary() {
        let p: RunPosition = serde_json::from_value(serde_json::json!({ "epochs_done": 4 })).unwrap();
        assert_eq!(p, RunPosition { epochs_done: 4, ..Default::default() });
    }

    #[test]
    fn logs_are_cut_back_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("metrics.jsonl");
        std::fs::write(&log, "a\nb\n").unwrap();
        let len = synced_len(&log).unwrap();
        std::fs::write(&log, "a\nb\nc\nd").unwrap();
        assert_eq!(cut_back(&log, len).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\n");
        assert_eq!(cut_back(&log, 100).unwrap(), 0, "a shorter file is left alone");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\n");
        assert_eq!(synced_len(&dir.path().join("none")).unwrap(), 0);
        assert_eq!(cut_back(&dir.path().join("none"), 0).unwrap(), 0);
    }
}

//! Safetensors weights of an HF export: one `model.safetensors`, or transformers-style shards
//! `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` above a size threshold.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, View};
use serde_json::json;

use super::tokenizer_files::write_json;
use super::ExportError;

/// transformers' default `max_shard_size` ("5GB").
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// Parses a shard size the way transformers does: a byte count, or a number with a unit
/// (`KB`/`MB`/`GB` = powers of 1000, `KiB`/`MiB`/`GiB` = powers of 1024; case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, ExportError> {
    let bad = || ExportError::Option(format!("size {s:?} is not a byte count like 5GB, 500MB or 2GiB"));
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    let bytes = (num * mult).round();
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// One tensor's little-endian bytes in the export dtype.
struct TensorBytes {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &TensorBytes {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn tensor_bytes(name: &str, t: &Tensor, dtype: DType) -> Result<TensorBytes, ExportError> {
    let err = ExportError::tensor(name);
    let flat = t.to_device(&Device::Cpu).and_then(|t| t.to_dtype(dtype)).and_then(|t| t.flatten_all()).map_err(err)?;
    let err = ExportError::tensor(name);
    let (st, data): (StDtype, Vec<u8>) = match dtype {
        DType::F32 => (StDtype::F32, flat.to_vec1::<f32>().map_err(err)?.iter().flat_map(|x| x.to_le_bytes()).collect()),
        DType::BF16 => {
            (StDtype::BF16, flat.to_vec1::<half::bf16>().map_err(err)?.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        DType::F16 => {
            (StDtype::F16, flat.to_vec1::<half::f16>().map_err(err)?.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        other => return Err(ExportError::Option(format!("export dtype {other:?} is not supported (f32, bf16 or f16)"))),
    };
    Ok(TensorBytes { dtype: st, shape: t.dims().to_vec(), data })
}

/// huggingface_hub's greedy sharding (what transformers' `save_pretrained` uses): tensors in
/// order, a new shard when the next tensor would push the current one past `max`; a tensor larger
/// than `max` gets a shard of its own (the current shard carries on after it).
pub(crate) fn plan_shards(sizes: &[u64], max: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max {
            shards.push(vec![i]);
            continue;
        }
        if current_size + size > max {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
    }
    shards
}

/// Writes `tensors` (HF names) in `dtype` into `dir`; returns the files written.
pub(crate) fn write_weights(
    dir: &Path,
    tensors: &[(String, Tensor)],
    dtype: DType,
    max_shard_size: u64,
) -> Result<Vec<PathBuf>, ExportError> {
    let sizes: Vec<u64> = tensors.iter().map(|(_, t)| (t.elem_count() * dtype.size_in_bytes()) as u64).collect();
    let shards = plan_shards(&sizes, max_shard_size);
    let n = shards.len();
    let file_name = |i: usize| {
        if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        }
    };
    // transformers refuses safetensors without `format: pt` metadata.
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let mut written = Vec::with_capacity(n + 1);
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let path = dir.join(file_name(i));
        let mut entries = Vec::with_capacity(shard.len());
        for &j in shard {
            let (name, t) = &tensors[j];
            entries.push((name.clone(), tensor_bytes(name, t, dtype)?));
            weight_map.insert(name.clone(), file_name(i));
        }
        safetensors::tensor::serialize_to_file(entries.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata.clone()), &path)
            .map_err(|e| ExportError::Safetensors { path: path.clone(), message: e.to_string() })?;
        written.push(path);
    }
    if n > 1 {
        let path = dir.join("model.safetensors.index.json");
        let index = json!({
            "metadata": {"total_size": sizes.iter().sum::<u64>()},
            "weight_map": weight_map,
        });
        write_json(&path, &index, true)?;
        written.push(path);
    }
    Ok(written)
}

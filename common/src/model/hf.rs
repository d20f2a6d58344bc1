//! Loading a model: HF directories (config.json + safetensors, sharded or not) and `.gguf` files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::transformer::expected_tensor_shapes;
use super::{Model, ModelConfig, ModelError};
use crate::tokenizer::Tokenizer;

/// A model with its tokenizer. `name` is what adapters record as `base_model_name_or_path`.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub name: String,
}

/// Loads an HF model dir (config.json, *.safetensors [+ index], tokenizer files) or a `.gguf` file.
pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<LoadedModel, ModelError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        if !path.is_file() {
            return Err(ModelError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")));
        }
        let (cfg, tensors, tokenizer) = super::gguf::read_gguf(path, device, dtype)?;
        let model = Model::from_tensors_named(cfg, tensors, device, dtype, &path.display().to_string())?;
        return Ok(LoadedModel { model, tokenizer, name });
    }
    if !path.is_dir() {
        return Err(ModelError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a model directory (config.json + *.safetensors) or .gguf file"),
        ));
    }
    let model = load_hf_model(path, device, dtype)?;
    let tokenizer = Tokenizer::from_hf_dir(path)?;
    Ok(LoadedModel { model, tokenizer, name })
}

/// Weight files of an HF dir: the index's shards, else `model.safetensors`, else every
/// `*.safetensors` (an adapter file excepted).
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: index.clone(), source })?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| ModelError::config(index.display().to_string(), "missing object field `weight_map`"))?;
        let mut files = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                ModelError::config(index.display().to_string(), format!("weight_map[{tensor:?}] must be a file name"))
            })?;
            files.insert(dir.join(file));
        }
        return Ok(files.into_iter().collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name().is_some_and(|n| n != super::peft::ADAPTER_WEIGHTS)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::io(single, std::io::Error::new(std::io::ErrorKind::NotFound, "no *.safetensors weights in the model directory")));
    }
    Ok(files)
}

/// Reads config.json and the safetensors weights of an HF dir (no tokenizer).
pub fn load_hf_model(dir: &Path, device: &Device, dtype: DType) -> Result<Model, ModelError> {
    let cfg = ModelConfig::from_hf_file(&dir.join("config.json"))?;
    let shapes: HashMap<String, Vec<usize>> = expected_tensor_shapes(&cfg).into_iter().collect();
    let mut tensors = HashMap::new();
    for file in weight_files(dir)? {
        let origin = file.display().to_string();
        let bytes = std::fs::read(&file).map_err(|e| ModelError::io(&file, e))?;
        let st = candle_core::safetensors::SliceSafetensors::new(&bytes)
            .map_err(|e| ModelError::config(&origin, format!("not a valid safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            let Some(expected) = shapes.get(&name) else { continue };
            if view.shape() != expected.as_slice() {
                return Err(ModelError::TensorShape {
                    origin,
                    name,
                    expected: expected.clone(),
                    got: view.shape().to_vec(),
                });
            }
            let t: Tensor = st
                .load(&name, &Device::Cpu)
                .map_err(|e| ModelError::config(&origin, format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, t.to_dtype(dtype)?);
        }
    }
    Model::from_tensors_named(cfg, tensors, device, dtype, &dir.display().to_string())
}

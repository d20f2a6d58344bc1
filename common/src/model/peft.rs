//! PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors`, and the same
//! safetensors bytes as the learner -> worker transport payload.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::{LoraAdapter, ModelConfig, ModelError};
use crate::config::{LoraConfig, LoraTarget};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// An f32 tensor's bytes in the shape `safetensors::serialize` wants.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// PEFT's `adapter_config.json` for `cfg`.
/// Safetensors metadata key of the adapter's PEFT config in transport payloads.
pub const CONFIG_METADATA_KEY: &str = "asrl.adapter_config";

pub fn peft_config_json(cfg: &LoraConfig, base_model: &str) -> Value {
    let mut targets: Vec<&str> = cfg.target_modules.iter().map(|t| t.module_name()).collect();
    targets.sort();
    targets.dedup();
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "revision": null,
        "inference_mode": true,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    })
}

/// Reads the LoRA shape from PEFT's `adapter_config.json` contents, rejecting (by field)
/// every variant this implementation would apply differently than PEFT.
pub fn lora_config_from_peft(v: &Value, origin: &str) -> Result<LoraConfig, ModelError> {
    let err = |m: String| ModelError::adapter(origin, m);
    let get = |k: &str| v.get(k).filter(|x| !x.is_null());
    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => return Err(err(format!("peft_type {other:?} is not supported (only \"LORA\")"))),
    }
    let r = get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| err("field `r` must be a positive integer".into()))? as usize;
    let alpha = match get("lora_alpha") {
        None => 8.0, // PEFT's default
        Some(a) => a.as_f64().ok_or_else(|| err(format!("field `lora_alpha` must be a number, got {a}")))?,
    };
    let dropout = match get("lora_dropout") {
        None => 0.0,
        Some(d) => d.as_f64().ok_or_else(|| err(format!("field `lora_dropout` must be a number, got {d}")))?,
    };
    let target_modules = match get("target_modules") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| {
                x.as_str().and_then(LoraTarget::from_module_name).ok_or_else(|| {
                    err(format!("target_modules entry {x} is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(err(format!("target_modules must be a list of module names, got {other}"))),
        None => return Err(err("missing field `target_modules`".into())),
    };
    if let Some(b) = get("bias") {
        if b.as_str() != Some("none") {
            return Err(err(format!("bias {b} is not supported (only \"none\")")));
        }
    }
    for flag in ["fan_in_fan_out", "use_rslora", "use_dora"] {
        if get(flag).and_then(Value::as_bool).unwrap_or(false) {
            return Err(err(format!("`{flag}: true` is not supported")));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if get(key).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
            return Err(err(format!("a non-empty `{key}` is not supported")));
        }
    }
    for key in ["layers_to_transform", "modules_to_save", "layer_replication"] {
        if get(key).is_some_and(|x| !x.as_array().is_some_and(|a| a.is_empty())) {
            return Err(err(format!("`{key}` is not supported")));
        }
    }
    let cfg = LoraConfig { r, alpha, dropout, target_modules };
    super::lora::validate_lora_config(&cfg, origin)?;
    Ok(cfg)
}

impl LoraAdapter {
    /// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (PEFT layout).
    pub fn save_peft(&self, dir: &Path, base_model: &str) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&peft_config_json(self.config(), base_model))
            .map_err(|source| ModelError::Json { path: cfg_path.clone(), source })?;
        std::fs::write(&cfg_path, text + "\n").map_err(|e| ModelError::io(&cfg_path, e))?;
        let weights = dir.join(ADAPTER_WEIGHTS);
        std::fs::write(&weights, self.to_safetensors_bytes()?).map_err(|e| ModelError::io(&weights, e))
    }

    /// Loads a PEFT LoRA adapter directory saved by PEFT or by [`LoraAdapter::save_peft`].
    pub fn load_peft(dir: &Path, model: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json { path: cfg_path.clone(), source })?;
        let cfg = lora_config_from_peft(&v, &cfg_path.display().to_string())?;
        let weights = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&weights).map_err(|e| ModelError::io(&weights, e))?;
        Self::from_bytes_named(&bytes, &cfg, model, device, &weights.display().to_string())
    }

    /// The adapter as safetensors bytes (f32, PEFT keys), e.g. for the transport.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let mut views = Vec::new();
        for (name, var) in self.vars() {
            let t = var.as_tensor().to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            views.push((name, F32View { shape: t.dims().to_vec(), bytes }));
        }
        // The PEFT config rides along so a receiver needs nothing but these bytes.
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            (CONFIG_METADATA_KEY.to_string(), peft_config_json(self.config(), "").to_string()),
        ]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| ModelError::adapter("adapter safetensors", format!("cannot serialise: {e}")))
    }

    /// Bytes from [`Self::to_safetensors_bytes`], whose metadata carries the LoRA config.
    pub fn from_self_describing_bytes(bytes: &[u8], model: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        const ORIGIN: &str = "adapter safetensors";
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| ModelError::adapter(ORIGIN, format!("not a valid safetensors file: {e}")))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(CONFIG_METADATA_KEY))
            .ok_or_else(|| ModelError::adapter(ORIGIN, format!("metadata has no `{CONFIG_METADATA_KEY}`")))?;
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::adapter(ORIGIN, format!("metadata `{CONFIG_METADATA_KEY}`: {e}")))?;
        let cfg = lora_config_from_peft(&v, ORIGIN)?;
        Self::from_bytes_named(bytes, &cfg, model, device, ORIGIN)
    }

    pub fn from_safetensors_bytes(
        bytes: &[u8],
        cfg: &LoraConfig,
        model: &ModelConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Self::from_bytes_named(bytes, cfg, model, device, "adapter safetensors")
    }

    fn from_bytes_named(
        bytes: &[u8],
        cfg: &LoraConfig,
        model: &ModelConfig,
        device: &Device,
        origin: &str,
    ) -> Result<Self, ModelError> {
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| ModelError::adapter(origin, format!("not a valid safetensors file: {e}")))?;
        Self::from_named_tensors(tensors, cfg, model, device, origin)
    }
}

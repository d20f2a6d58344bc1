use serde::{Deserialize, Serialize};

/// Decoder family. Qwen3 differs from Llama by per-head RMS norms on q and k before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Qwen3,
    Llama,
}

/// Shape of a decoder-only model, read from HF `config.json` or GGUF metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Explicit in Qwen3 (128 for 0.6B, not hidden/heads); hidden/heads for Llama when absent.
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

use serde_json::Value;

use super::ModelError;

impl ModelConfig {
    /// SmolLM2-135M's shape (the demo model), for benchmarks and scale tests on random weights.
    pub fn smollm2_135m() -> Self {
        Self {
            arch: Arch::Llama,
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            max_position_embeddings: 8192,
        }
    }

    /// Qwen3-0.6B's shape (28 layers, hidden 1024, 16/8 heads of 128, vocab 151,936, tied), for
    /// benchmarks and scale tests on random weights.
    pub fn qwen3_0_6b() -> Self {
        Self {
            arch: Arch::Qwen3,
            vocab_size: 151_936,
            hidden_size: 1024,
            intermediate_size: 3072,
            num_hidden_layers: 28,
            num_attention_heads: 16,
            num_key_value_heads: 8,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            max_position_embeddings: 40_960,
        }
    }

    /// Reads an HF `config.json`.
    pub fn from_hf_file(path: &std::path::Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.into(), source })?;
        Self::from_hf_value(&value, &path.display().to_string())
    }

    /// Parses HF `config.json` contents; `origin` names the file in errors.
    /// Rejects (by field name) every feature this decoder does not implement rather than
    /// silently computing something else.
    pub fn from_hf_value(v: &Value, origin: &str) -> Result<Self, ModelError> {
        let err = |m: String| ModelError::config(origin, m);
        let obj = v.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
        let usize_field = |k: &str| -> Result<Option<usize>, ModelError> {
            match get(k) {
                None => Ok(None),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| err(format!("field `{k}` must be a positive integer, got {x}"))),
            }
        };
        let req = |k: &str| -> Result<usize, ModelError> {
            usize_field(k)?.ok_or_else(|| err(format!("missing field `{k}`")))
        };
        let f64_field = |k: &str, x: &Value| -> Result<f64, ModelError> {
            x.as_f64().ok_or_else(|| err(format!("field `{k}` must be a number, got {x}")))
        };
        let bool_field = |k: &str, default: bool| -> Result<bool, ModelError> {
            match get(k) {
                None => Ok(default),
                Some(x) => x.as_bool().ok_or_else(|| err(format!("field `{k}` must be a boolean, got {x}"))),
            }
        };

        let model_type = get("model_type")
            .ok_or_else(|| err("missing field `model_type`".into()))?
            .as_str()
            .ok_or_else(|| err("field `model_type` must be a string".into()))?;
        let arch = match model_type {
            "qwen3" => Arch::Qwen3,
            "llama" => Arch::Llama,
            other => return Err(err(format!("model_type {other:?} is not supported (expected \"qwen3\" or \"llama\")"))),
        };
        if let Some(act) = get("hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(err(format!("hidden_act {act} is not supported (only \"silu\")")));
            }
        }
        for flag in ["attention_bias", "mlp_bias", "use_sliding_window"] {
            if bool_field(flag, false)? {
                return Err(err(format!("`{flag}: true` is not supported")));
            }
        }

        // transformers >= 5 nests rope_theta in `rope_parameters`; older files keep it top level
        // with an optional `rope_scaling`.
        let mut rope_theta = 10_000.0;
        if let Some(t) = get("rope_theta") {
            rope_theta = f64_field("rope_theta", t)?;
        }
        for key in ["rope_parameters", "rope_scaling"] {
            let Some(p) = get(key) else { continue };
            let p = p.as_object().ok_or_else(|| err(format!("field `{key}` must be an object")))?;
            if let Some(kind) = p.get("rope_type").or_else(|| p.get("type")).filter(|x| !x.is_null()) {
                if kind.as_str() != Some("default") {
                    return Err(err(format!("`{key}.rope_type` {kind} is not supported (only \"default\")")));
                }
            }
            if let Some(t) = p.get("rope_theta").filter(|x| !x.is_null()) {
                rope_theta = f64_field(&format!("{key}.rope_theta"), t)?;
            }
        }

        let hidden_size = req("hidden_size")?;
        let num_attention_heads = req("num_attention_heads")?;
        let num_key_value_heads = usize_field("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(err(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match usize_field("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(err(format!(
                    "missing field `head_dim` and hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads})"
                )))
            }
        };
        if head_dim % 2 != 0 {
            return Err(err(format!("head_dim ({head_dim}) must be even for rotary embeddings")));
        }
        let rms_norm_eps = match get("rms_norm_eps") {
            Some(x) => f64_field("rms_norm_eps", x)?,
            None => 1e-6,
        };
        let default_max_pos = if arch == Arch::Qwen3 { 32_768 } else { 2_048 };
        Ok(Self {
            arch,
            vocab_size: req("vocab_size")?,
            hidden_size,
            intermediate_size: req("intermediate_size")?,
            num_hidden_layers: req("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope_theta,
            rms_norm_eps,
            // Both LlamaConfig and Qwen3Config default to untied.
            tie_word_embeddings: bool_field("tie_word_embeddings", false)?,
            max_position_embeddings: usize_field("max_position_embeddings")?.unwrap_or(default_max_pos),
        })
    }

    /// (out, in) of a projection's weight.
    pub fn projection_shape(&self, target: crate::config::LoraTarget) -> (usize, usize) {
        use crate::config::LoraTarget as T;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        match target {
            T::Q => (q, self.hidden_size),
            T::K | T::V => (kv, self.hidden_size),
            T::O => (self.hidden_size, q),
            T::Gate | T::Up => (self.intermediate_size, self.hidden_size),
            T::Down => (self.hidden_size, self.intermediate_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qwen3() -> Value {
        json!({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
               "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
               "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "max_position_embeddings": 40960})
    }

    #[test]
    fn parses_qwen3_and_llama() {
        let c = ModelConfig::from_hf_value(&qwen3(), "config.json").unwrap();
        assert_eq!((c.arch, c.head_dim, c.rope_theta, c.tie_word_embeddings), (Arch::Qwen3, 16, 1e6, true));
        let l = json!({"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "rope_theta": 100000.0});
        let c = ModelConfig::from_hf_value(&l, "config.json").unwrap();
        assert_eq!((c.arch, c.head_dim, c.num_key_value_heads, c.rope_theta), (Arch::Llama, 8, 4, 1e5));
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = qwen3();
        v["model_type"] = json!("gpt2");
        let e = ModelConfig::from_hf_value(&v, "config.json").unwrap_err().to_string();
        assert_eq!(e, "config.json: model_type \"gpt2\" is not supported (expected \"qwen3\" or \"llama\")");
        let mut v = qwen3();
        v.as_object_mut().unwrap().remove("hidden_size");
        let e = ModelConfig::from_hf_value(&v, "config.json").unwrap_err().to_string();
        assert!(e.contains("missing field `hidden_size`"), "{e}");
        let mut v = qwen3();
        v["rope_parameters"]["rope_type"] = json!("llama3");
        let e = ModelConfig::from_hf_value(&v, "config.json").unwrap_err().to_string();
        assert!(e.contains("rope_parameters.rope_type"), "{e}");
        let mut v = qwen3();
        v["num_attention_heads"] = json!("four");
        let e = ModelConfig::from_hf_value(&v, "config.json").unwrap_err().to_string();
        assert!(e.contains("`num_attention_heads` must be a positive integer"), "{e}");
    }
}

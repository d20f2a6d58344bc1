//! `config.json` in transformers' format for the exported architecture.

use candle_core::DType;
use serde_json::{json, Value};

use super::tokenizer_files::SpecialTokens;
use crate::model::{Arch, ModelConfig};

/// transformers' name of a dtype (`torch_dtype` in config.json).
pub(crate) fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// Every field of [`ModelConfig`] under its transformers name, plus the fixed features this
/// decoder implements (silu, no biases, default RoPE, no sliding window) spelled out so that
/// transformers and vLLM build the same model.
pub(crate) fn config_json(cfg: &ModelConfig, dtype: DType, special: &SpecialTokens) -> Value {
    let (architecture, model_type) = match cfg.arch {
        Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        Arch::Llama => ("LlamaForCausalLM", "llama"),
    };
    let mut v = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": null,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": torch_dtype_name(dtype),
        "bos_token_id": special.bos_id(),
        "eos_token_id": special.eos_json(false),
        "pad_token_id": special.pad_id(),
    });
    let obj = v.as_object_mut().expect("config is an object");
    match cfg.arch {
        Arch::Qwen3 => {
            obj.insert("use_sliding_window".into(), json!(false));
            obj.insert("sliding_window".into(), Value::Null);
            obj.insert("max_window_layers".into(), json!(cfg.num_hidden_layers));
        }
        Arch::Llama => {
            obj.insert("mlp_bias".into(), json!(false));
            obj.insert("pretraining_tp".into(), json!(1));
        }
    }
    v
}

use serde::{Deserialize, Serialize};

/// A projection that can carry a LoRA adapter, named as in PEFT's `target_modules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    #[serde(rename = "q_proj")]
    Q,
    #[serde(rename = "k_proj")]
    K,
    #[serde(rename = "v_proj")]
    V,
    #[serde(rename = "o_proj")]
    O,
    #[serde(rename = "gate_proj")]
    Gate,
    #[serde(rename = "up_proj")]
    Up,
    #[serde(rename = "down_proj")]
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] =
        [Self::Q, Self::K, Self::V, Self::O, Self::Gate, Self::Up, Self::Down];

    /// PEFT / Hugging Face module name (`q_proj`, ...).
    pub fn module_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// The submodule that holds it in HF checkpoints (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            Self::Q | Self::K | Self::V | Self::O => "self_attn",
            Self::Gate | Self::Up | Self::Down => "mlp",
        }
    }

    pub fn from_module_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module_name() == name)
    }
}

/// LoRA adapter shape. Defaults are the paper's: r=32, alpha=64, dropout 0, all 7 projections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the update `B·A`.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `alpha / r`.
    pub alpha: f64,
    /// Dropout on the LoRA branch input during training (0 disables it).
    pub dropout: f64,
    /// Projections that carry an adapter.
    pub target_modules: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { r: 32, alpha: 64.0, dropout: 0.0, target_modules: LoraTarget::ALL.to_vec() }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

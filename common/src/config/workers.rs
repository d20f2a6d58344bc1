use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;

/// `[workers]`: the rollout workers started next to the learner (`scripts/launch.sh`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// One rollout worker per entry, each on that device (`cpu`, `cuda`, `cuda:N`).
    /// Empty = no locally spawned workers (remote workers connect on their own).
    pub devices: Vec<DeviceSpec>,
    /// Sequences a worker decodes together (its batch: prompts of a lease × their samples),
    /// advertised at registration so the learner leases it `max_sequences / n` prompts. Bounds
    /// the worker's KV cache. Default 48 (the paper's 8 questions × 6 samples).
    pub max_sequences: usize,
}

/// Default batch capacity of a rollout worker.
pub const DEFAULT_MAX_SEQUENCES: usize = 48;

impl Default for WorkersConfig {
    fn default() -> Self {
        Self { devices: vec![DeviceSpec::Cpu], max_sequences: DEFAULT_MAX_SEQUENCES }
    }
}

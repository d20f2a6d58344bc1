use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;

/// `[workers]`: the rollout workers started next to the learner (`scripts/launch.sh`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// One rollout worker per entry, each on that device (`cpu`, `cuda`, `cuda:N`).
    /// Empty = no locally spawned workers (remote workers connect on their own).
    pub devices: Vec<DeviceSpec>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self { devices: vec![DeviceSpec::Cpu] }
    }
}

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::{key_at, line_of, moved_to};
use super::{
    CheckpointConfig, DataConfig, EngineConfig, EvalConfig, GrpoConfig, LeaseConfig, LearnerConfig, LoraConfig, ModelSection,
    OptimiserConfig, RewardConfig, RunConfig, SamplingParams, ScheduleConfig, SftConfig, TrainConfig, WorkersConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors and unknown or mistyped fields; toml's message names the line and column,
    /// `key` the dotted field when the error points at one.
    #[error("config {path}: {}{source}", key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        key: Option<String>,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A field that lives elsewhere now.
    #[error("config {path}, line {line}: `{from}` has moved to `{to}`")]
    Moved { path: PathBuf, line: usize, from: String, to: &'static str },
    #[error("config {path}: `{field}` {message}")]
    Invalid { path: PathBuf, field: &'static str, message: String },
    #[error("cannot serialise config: {0}")]
    Serialize(#[from] toml::ser::Error),
}

/// The whole run configuration, one TOML file (`configs/paper.toml`, `configs/demo-cpu.toml`).
/// Every section and field is optional; missing ones take the documented defaults (docs/config.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrlConfig {
    pub model: ModelSection,
    pub lora: LoraConfig,
    /// GRPO rollout sampling (group size `n`, temperature, top-p, max new tokens).
    pub sampling: SamplingParams,
    pub schedule: ScheduleConfig,
    pub run: RunConfig,
    /// The learner's endpoint: address, auth token, message limit.
    pub learner: LearnerConfig,
    pub workers: WorkersConfig,
    /// Rollout leases: prompts per lease, timeouts, heartbeats.
    pub leases: LeaseConfig,
    pub data: DataConfig,
    pub reward: RewardConfig,
    pub sft: SftConfig,
    pub grpo: GrpoConfig,
    pub optimizer: OptimiserConfig,
    pub checkpoint: CheckpointConfig,
    pub eval: EvalConfig,
    /// Training engine: activation checkpointing and its memory budget.
    pub engine: EngineConfig,
}

impl AsrlConfig {
    /// Reads, parses and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates `text`; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|source| parse_error(text, origin, source))?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// A copy safe to write to disk or print: secrets replaced by [`super::REDACTED`].
    pub fn redacted(&self) -> Self {
        let mut cfg = self.clone();
        if !cfg.learner.auth_token.is_empty() {
            cfg.learner.auth_token = super::REDACTED.to_string();
        }
        cfg
    }

    /// The trainer's sections, checkpoints resolved against `run.dir` when relative; the SFT
    /// length limit is `data.max_seq_len`.
    pub fn train_config(&self) -> TrainConfig {
        let mut checkpoint = self.checkpoint.clone();
        if checkpoint.dir.is_relative() {
            checkpoint.dir = self.run.dir.join(&checkpoint.dir);
        }
        let sft = SftConfig { max_seq_len: self.data.max_seq_len, ..self.sft.clone() };
        TrainConfig { sft, grpo: self.grpo.clone(), optimiser: self.optimizer.clone(), checkpoint }
    }

    /// Lease settings of the learner's service; staleness comes from `grpo.max_staleness`.
    pub fn lease_config(&self) -> LeaseConfig {
        LeaseConfig { max_staleness: self.grpo.max_staleness, ..self.leases.clone() }
    }

    /// Range checks serde cannot express; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: String| {
            Err(ConfigError::Invalid { path: origin.to_path_buf(), field, message })
        };
        if !is_host_port(&self.learner.addr) {
            return bad("learner.addr", format!("is {:?}: expected host:port", self.learner.addr));
        }
        if self.learner.max_message_mib == 0 {
            return bad("learner.max_message_mib", "must be at least 1".into());
        }
        let s = &self.schedule;
        if s.epochs == 0 {
            return bad("schedule.epochs", "must be at least 1".into());
        }
        if s.patience == 0 {
            return bad("schedule.patience", "must be at least 1".into());
        }
        if !(s.min_delta.is_finite() && s.min_delta >= 0.0) {
            return bad("schedule.min_delta", format!("is {}: must be finite and >= 0", s.min_delta));
        }
        if s.questions_per_epoch == 0 {
            return bad("schedule.questions_per_epoch", "must be at least 1".into());
        }
        if s.ares_plateau_epochs == 0 {
            return bad("schedule.ares_plateau_epochs", "must be at least 1".into());
        }
        if !(s.adaptive_target_accuracy > 0.0 && s.adaptive_target_accuracy <= 1.0) {
            return bad("schedule.adaptive_target_accuracy", format!("is {}: must be in (0, 1]", s.adaptive_target_accuracy));
        }
        if !(0.0..=1.0).contains(&s.adaptive_min_fraction) {
            return bad("schedule.adaptive_min_fraction", format!("is {}: must be in [0, 1]", s.adaptive_min_fraction));
        }
        if let Err(e) = self.sampling.validate_for_rollout() {
            return bad(e.field.config_key(), e.message);
        }
        if self.engine.activation_budget_mib == 0 {
            return bad("engine.activation_budget_mib", "must be at least 1 (use activation_checkpointing = \"on\" to keep no activations)".into());
        }
        if self.lora.r == 0 {
            return bad("lora.r", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            return bad("lora.dropout", format!("is {}: must be in [0, 1)", self.lora.dropout));
        }
        if self.sft.micro_batch_size == 0 || self.sft.grad_accum_steps == 0 {
            return bad("sft.micro_batch_size", "and sft.grad_accum_steps must be at least 1".into());
        }
        if self.grpo.groups_per_step == 0 {
            return bad("grpo.groups_per_step", "must be at least 1".into());
        }
        if self.grpo.ratio_cap > 0.0 && self.grpo.ratio_cap <= 1.0 + self.grpo.epsilon_high {
            return bad("grpo.ratio_cap", format!("is {}: must exceed 1 + grpo.epsilon_high (or be 0 to disable)", self.grpo.ratio_cap));
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return bad("optimizer.lr", format!("is {}: must be finite and > 0", self.optimizer.lr));
        }
        if let Some(lr) = self.optimizer.grpo_lr {
            if !(lr.is_finite() && lr > 0.0) {
                return bad("optimizer.grpo_lr", format!("is {lr}: must be finite and > 0 (or left out to use optimizer.lr)"));
            }
        }
        if !(0.0..=1.0).contains(&self.optimizer.grpo_lr_floor) {
            return bad("optimizer.grpo_lr_floor", format!("is {}: must be in [0, 1]", self.optimizer.grpo_lr_floor));
        }
        let d = &self.data;
        if !(d.train_fraction > 0.0 && d.val_fraction > 0.0 && d.train_fraction + d.val_fraction <= 1.0) {
            return bad(
                "data.train_fraction",
                format!("{} and data.val_fraction {} must be > 0 with a sum <= 1", d.train_fraction, d.val_fraction),
            );
        }
        if self.reward.components.is_empty() {
            return bad("reward.components", "is empty: at least one reward function is needed".into());
        }
        if self.eval.samples_per_prompt == 0 || self.eval.micro_batch_size == 0 {
            return bad("eval.samples_per_prompt", "and eval.micro_batch_size must be at least 1".into());
        }
        if !(self.eval.temperature >= 0.0 && self.eval.temperature.is_finite()) {
            return bad("eval.temperature", format!("is {}: must be finite and >= 0", self.eval.temperature));
        }
        if self.workers.max_sequences == 0 {
            return bad("workers.max_sequences", "must be at least 1".into());
        }
        if self.leases.prompts_per_lease == 0 || self.leases.lease_timeout_ms == 0 {
            return bad("leases.prompts_per_lease", "and leases.lease_timeout_ms must be at least 1".into());
        }
        let l = &self.leases;
        if l.heartbeat_interval_ms == 0 || l.worker_timeout_ms < 2 * l.heartbeat_interval_ms {
            return bad(
                "leases.worker_timeout_ms",
                format!(
                    "is {}: must be at least two heartbeat intervals (leases.heartbeat_interval_ms = {}, > 0)",
                    l.worker_timeout_ms, l.heartbeat_interval_ms
                ),
            );
        }
        if l.max_workers == 0 || l.max_leases_per_worker == 0 || l.max_prompt_failures == 0 {
            return bad("leases.max_workers", "leases.max_leases_per_worker and leases.max_prompt_failures must be at least 1".into());
        }
        if !(self.reward.max_abs.is_finite() && self.reward.max_abs > 0.0) {
            return bad("reward.max_abs", format!("is {}: must be finite and > 0", self.reward.max_abs));
        }
        if self.learner.tls_cert.is_some() != self.learner.tls_key.is_some() {
            return bad("learner.tls_cert", "and learner.tls_key must be set together".into());
        }
        if self.learner.auth_token.trim() == super::REDACTED {
            return bad("learner.auth_token", "is the redacted placeholder of a written-out config: set the real token (or use --token-file / ASRL_TOKEN)".into());
        }
        Ok(())
    }
}

fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A toml error with the dotted key it points at; a field that moved is reported as such.
fn parse_error(text: &str, origin: &Path, source: toml::de::Error) -> ConfigError {
    let path = origin.to_path_buf();
    let key = source.span().and_then(|span| key_at(text, span.start));
    if let (Some(key), Some(span)) = (&key, source.span()) {
        if let Some(to) = moved_to(key) {
            return ConfigError::Moved { path, line: line_of(text, span.start), from: key.clone(), to };
        }
    }
    ConfigError::Parse { path, key, source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Monitor, ScheduleKind, WeightDtype};

    fn parse(text: &str) -> Result<AsrlConfig, ConfigError> {
        AsrlConfig::from_toml_str(text, Path::new("configs/test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg, AsrlConfig::default());
        assert_eq!(cfg.schedule.patience, 3);
        assert_eq!(cfg.schedule.questions_per_epoch, 8);
        assert_eq!(cfg.learner.addr, "127.0.0.1:50051");
        assert_eq!(cfg.sampling.n, 6);
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let cfg = parse("[schedule]\nkind = \"ares\"\nmonitor = \"format_accuracy\"\n[model]\ndtype = \"f32\"\n").unwrap();
        assert_eq!(cfg.schedule.kind, ScheduleKind::Ares);
        assert_eq!(cfg.schedule.monitor, Monitor::FormatAccuracy);
        assert_eq!(cfg.schedule.patience, 3);
        assert_eq!(cfg.model.dtype, WeightDtype::F32);
        assert_eq!(cfg.model.device, crate::device::DeviceSpec::Cpu);
    }

    #[test]
    fn unknown_field_in_every_section_is_named_with_the_file() {
        for section in
            ["model", "lora", "sampling", "schedule", "run", "learner", "workers", "leases", "data", "sft", "grpo", "optimizer", "checkpoint", "eval", "engine"]
        {
            let err = parse(&format!("[{section}]\nbogus_knob = 1\n")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("bogus_knob"), "{section}: {msg}");
            assert!(msg.contains("configs/test.toml"), "{section}: {msg}");
        }
        let msg = parse("bogus_top = 1\n").unwrap_err().to_string();
        assert!(msg.contains("bogus_top") && msg.contains("configs/test.toml"), "{msg}");
        let msg = parse("[sft]\nlr = 1.0\n").unwrap_err().to_string();
        assert!(msg.contains("lr"), "{msg}");
        // Staleness has one knob (grpo.max_staleness); the lease copy is not a TOML field.
        let msg = parse("[leases]\nmax_staleness = 3\n").unwrap_err().to_string();
        assert!(msg.contains("max_staleness"), "{msg}");
        let msg = parse("[[reward.components]]\nname = \"format\"\nwieght = 1.0\n").unwrap_err().to_string();
        assert!(msg.contains("wieght"), "{msg}");
    }

    #[test]
    fn load_names_the_real_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[run]\nseed = 1\n\n[schedule]\npatiense = 4\n").unwrap();
        let msg = AsrlConfig::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("patiense"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
        let missing = AsrlConfig::load(&dir.path().join("nope.toml")).unwrap_err().to_string();
        assert!(missing.contains("nope.toml"), "{missing}");
    }

    #[test]
    fn wrong_enum_value_and_range_are_rejected_by_name() {
        let msg = parse("[schedule]\nkind = \"alternate\"\n").unwrap_err().to_string();
        assert!(msg.contains("alternate") && msg.contains("asrl"), "{msg}");
        let msg = parse("[model]\ndtype = \"f8\"\n").unwrap_err().to_string();
        assert!(msg.contains("f8"), "{msg}");
        let msg = parse("[schedule]\npatience = 0\n").unwrap_err().to_string();
        assert!(msg.contains("schedule.patience") && msg.contains("configs/test.toml"), "{msg}");
        let msg = parse("[model]\ndevice = \"gpu0\"\n").unwrap_err().to_string();
        assert!(msg.contains("model.device") && msg.contains("gpu0"), "{msg}");
        let msg = parse("[workers]\ndevices = [\"cpu\", \"cuda:x\"]\n").unwrap_err().to_string();
        assert!(msg.contains("workers.devices") && msg.contains("cuda:x"), "{msg}");
        assert!(parse("[workers]\ndevices = [\"cpu\", \"cuda\", \"cuda:1\"]\n").is_ok());
        let msg = parse("[learner]\naddr = \"localhost\"\n").unwrap_err().to_string();
        assert!(msg.contains("learner.addr"), "{msg}");
        assert!(parse("[learner]\naddr = \"[::1]:7000\"\n").is_ok());
    }

    #[test]
    fn moved_fields_name_their_new_home_and_line() {
        for (text, from, to, line) in [
            ("[run]\nseed = 1\n[sft]\nmax_seq_len = 512\n", "sft.max_seq_len", "data.max_seq_len", 4),
            ("[workers]\nlearner_addr = \"127.0.0.1:1\"\n", "workers.learner_addr", "learner.addr", 2),
            ("[workers]\ndevices = []\nauth_token = \"t\"\n", "workers.auth_token", "learner.auth_token", 3),
            ("[workers]\nmax_message_mib = 8\n", "workers.max_message_mib", "learner.max_message_mib", 2),
        ] {
            let msg = parse(text).unwrap_err().to_string();
            let want = format!("config configs/test.toml, line {line}: `{from}` has moved to `{to}`");
            assert_eq!(msg, want);
        }
        // The one length limit reaches the trainer.
        let cfg = parse("[data]\nmax_seq_len = 512\n").unwrap();
        assert_eq!(cfg.train_config().sft.max_seq_len, 512);
        assert!(!cfg.to_toml_string().unwrap().contains("[sft]\nmax_seq_len"));
    }

    #[test]
    fn typed_values_are_rejected_with_their_key_and_line() {
        let msg = parse("[run]\nseed = 1\n[model]\ndevice = \"gpu0\"\n").unwrap_err().to_string();
        assert!(msg.contains("`model.device`") && msg.contains("line 4") && msg.contains("gpu0"), "{msg}");
        let msg = parse("[model]\ndtype = \"f8\"\n").unwrap_err().to_string();
        assert!(msg.contains("`model.dtype`") && msg.contains("line 2"), "{msg}");
        let cfg = parse("[model]\ndevice = \"cuda\"\n[workers]\ndevices = [\"cpu\", \"cuda:1\"]\n").unwrap();
        assert_eq!(cfg.model.device, crate::device::DeviceSpec::Cuda(0));
        assert_eq!(cfg.workers.devices, [crate::device::DeviceSpec::Cpu, crate::device::DeviceSpec::Cuda(1)]);
    }

    #[test]
    fn trainer_and_lease_settings_derive_from_one_place() {
        let cfg = parse("[run]\ndir = \"out\"\n[grpo]\nmax_staleness = 7\n[checkpoint]\ndir = \"ck\"\n").unwrap();
        let t = cfg.train_config();
        assert_eq!(t.checkpoint.dir, Path::new("out/ck"));
        assert_eq!(cfg.lease_config().max_staleness, 7);
        let abs = parse("[checkpoint]\ndir = \"/abs/ck\"\n").unwrap();
        assert_eq!(abs.train_config().checkpoint.dir, Path::new("/abs/ck"));
        let msg = parse("[grpo]\ngroups_per_step = 0\n").unwrap_err().to_string();
        assert!(msg.contains("grpo.groups_per_step"), "{msg}");
        let msg = parse("[data]\ntrain_fraction = 0.95\n").unwrap_err().to_string();
        assert!(msg.contains("data.train_fraction"), "{msg}");
    }

    #[test]
    fn grpo_lr_defaults_to_lr_and_is_checked() {
        let cfg = parse("[optimizer]\nlr = 1e-3\n").unwrap();
        assert_eq!((cfg.optimizer.grpo_lr, cfg.optimizer.grpo_peak_lr()), (None, 1e-3));
        let cfg = parse("[optimizer]\nlr = 1e-3\ngrpo_lr = 2e-4\n").unwrap();
        assert_eq!(cfg.train_config().optimiser.grpo_peak_lr(), 2e-4);
        for bad in ["0.0", "-1e-4", "nan"] {
            let msg = parse(&format!("[optimizer]\ngrpo_lr = {bad}\n")).unwrap_err().to_string();
            assert!(msg.contains("optimizer.grpo_lr"), "{bad}: {msg}");
        }
    }

    #[test]
    fn redacted_config_hides_the_token_and_is_refused_as_input() {
        let cfg = parse("[learner]\nauth_token = \"s3cret-token\"\n").unwrap();
        let text = cfg.redacted().to_toml_string().unwrap();
        assert!(!text.contains("s3cret-token"), "{text}");
        assert!(text.contains(crate::config::REDACTED), "{text}");
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("learner.auth_token") && msg.contains("redacted"), "{msg}");
        // No token: nothing to redact, and the copy parses back to the same config.
        assert_eq!(parse(&AsrlConfig::default().redacted().to_toml_string().unwrap()).unwrap(), AsrlConfig::default());
    }

    #[test]
    fn liveness_and_bounds_are_range_checked() {
        let msg = parse("[leases]\nheartbeat_interval_ms = 1000\nworker_timeout_ms = 1500\n").unwrap_err().to_string();
        assert!(msg.contains("leases.worker_timeout_ms") && msg.contains("1500"), "{msg}");
        assert!(parse("[leases]\nheartbeat_interval_ms = 200\nworker_timeout_ms = 600\n").is_ok());
        let msg = parse("[leases]\nmax_workers = 0\n").unwrap_err().to_string();
        assert!(msg.contains("leases.max_workers"), "{msg}");
        for bad in ["0.0", "-1.0", "inf", "nan"] {
            let msg = parse(&format!("[reward]\nmax_abs = {bad}\n")).unwrap_err().to_string();
            assert!(msg.contains("reward.max_abs"), "{bad}: {msg}");
        }
        let msg = parse("[learner]\ntls_cert = \"c.pem\"\n").unwrap_err().to_string();
        assert!(msg.contains("learner.tls_key"), "{msg}");
        let tls = parse("[learner]\naddr = \"h:1\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(tls.learner.url(), "https://h:1");
        assert_eq!(tls.learner.worker_ca().as_deref(), Some(Path::new("c.pem")));
        assert_eq!(AsrlConfig::default().learner.url(), "http://127.0.0.1:50051");
    }

    #[test]
    fn serialised_config_round_trips() {
        let mut cfg = AsrlConfig::default();
        cfg.schedule.kind = ScheduleKind::Sequential;
        cfg.run.name = "x".into();
        let text = cfg.to_toml_string().unwrap();
        assert_eq!(parse(&text).unwrap(), cfg);
    }

    #[test]
    fn presets_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("configs");
        let paper = AsrlConfig::load(&root.join("paper.toml")).unwrap();
        assert_eq!(paper.schedule.kind, ScheduleKind::Asrl);
        assert_eq!(paper.schedule.patience, 3);
        assert_eq!(paper.lora.r, 32);
        assert_eq!(paper.sampling.n, 6);
        assert_eq!(paper.optimizer.lr, 1e-6);
        assert_eq!(paper.sft.grad_accum_steps, 16);
        assert_eq!(paper.reward, crate::config::RewardConfig::default());
        let demo = AsrlConfig::load(&root.join("demo-cpu.toml")).unwrap();
        assert_eq!(demo.model.path, Path::new("assets/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert_eq!(demo.workers.devices.len(), 2);
        assert!(demo.sampling.max_new_tokens <= 128);
        assert_eq!(demo.schedule.epochs, 3);
        assert!(demo.optimizer.grpo_peak_lr() < demo.optimizer.lr, "the demo damps GRPO");
        assert!(demo.data.path.is_some());
        assert_eq!(demo.train_config().checkpoint.dir, Path::new("runs/demo-cpu/checkpoints"));
    }
}

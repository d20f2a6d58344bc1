//! Starting a run: the base model, then a new or resumed adapter, trainer and history.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use asrl_common::config::AsrlConfig;
use asrl_common::data::{ExampleEncoder, LiveDataset};
use asrl_common::fs::at;
use asrl_common::model::{LoadedModel, LoraAdapter};

use super::position::{cut_back, RunPosition};
use super::{EpochLoop, RunError, RunLayout, Rollouts};
use crate::report::{MetricsWriter, Record, RunBoard, RunMetrics, RunRecord};
use crate::schedule::{EarlyStopping, History, Schedule, Verdict};
use crate::training::{LoraPolicy, Trainer, TrainerLog};

/// What `metrics.jsonl` says about the epochs a checkpoint completed.
struct Resumed {
    history: History,
    elapsed_before: f64,
    last_train_size: Option<usize>,
}

impl EpochLoop {
    /// Loads the base model the config names (before the service starts: it needs the vocab).
    pub fn load_model(cfg: &AsrlConfig) -> Result<LoadedModel, RunError> {
        let device = cfg.model.device.open()?;
        let started = Instant::now();
        let loaded = asrl_common::model::load(&cfg.model.path, &device, cfg.model.dtype.to_candle())?;
        tracing::info!(model = %cfg.model.path.display(), secs = started.elapsed().as_secs_f64(), "model loaded");
        Ok(loaded)
    }

    /// Creates or resumes the adapter on `loaded` and publishes it to the workers.
    pub fn open(cfg: AsrlConfig, loaded: LoadedModel, rollouts: Rollouts, stop: Arc<AtomicBool>) -> Result<Self, RunError> {
        let layout = RunLayout::new(cfg.run.dir.clone());
        std::fs::create_dir_all(layout.dir()).map_err(at(layout.dir()))?;
        let data_path = cfg.data.path.clone().ok_or(RunError::NoDataPath)?;
        let dataset = LiveDataset::new(&data_path, &cfg.data)?;

        let device = loaded.model.device().clone();
        let adapter = LoraAdapter::new(&cfg.lora, loaded.model.config(), &device, cfg.run.seed)?;
        tracing::info!(parameters = adapter.num_parameters(), r = cfg.lora.r, "LoRA adapter");
        let base_name = cfg.model.path.display().to_string();
        let policy = LoraPolicy::new(loaded.model, adapter, base_name.clone()).with_checkpointing(cfg.engine.checkpointing())
            .with_prompt_sharing(cfg.engine.share_prompts)
            .with_weight_packing(cfg.engine.weight_packing);
        let log = TrainerLog::to_file(&layout.trainer_log())?;
        let mut trainer = Trainer::new(
            policy,
            cfg.train_config(),
            cfg.sampling.temperature,
            cfg.sampling.max_new_tokens,
            cfg.run.seed,
            log,
        )?;

        let resumed = trainer.resume()?;
        let position: RunPosition = match &resumed {
            Some(dir) => serde_json::from_value(trainer.state().dataset_position.clone()).map_err(|e| {
                RunError::Resume(format!("{}: dataset_position: {e}", dir.join("trainer_state.json").display()))
            })?,
            None => RunPosition::default(),
        };
        let epochs_done = position.epochs_done;
        let metrics_path = layout.metrics();
        let mut past = Resumed { history: History::default(), elapsed_before: 0.0, last_train_size: None };
        if let Some(dir) = &resumed {
            // What the lost process logged after the checkpoint is done again: cut it.
            let mut cut = 0;
            if let Some(len) = position.metrics_bytes {
                cut += cut_back(&metrics_path, len)?;
            }
            if let Some(len) = position.trainer_log_bytes {
                cut_back(&layout.trainer_log(), len)?;
            }
            if metrics_path.is_file() {
                past = replay_metrics(&layout, epochs_done)?;
            }
            past.elapsed_before = position.elapsed_s.unwrap_or(past.elapsed_before);
            let within = position.epoch.as_ref().map_or(String::new(), |c| format!(", inside epoch {}", c.epoch));
            tracing::info!(
                epochs_done,
                step = trainer.state().global_step,
                metrics_bytes_cut = cut,
                checkpoint = %dir.display(),
                "resuming the run in {}{within}",
                layout.dir().display()
            );
        } else if metrics_path.is_file() {
            // Metrics without a checkpoint: a run that died before its first checkpoint. Keep
            // them beside the new run's rather than mixing the two.
            let aside = layout.metrics_set_aside(unix_secs());
            std::fs::rename(&metrics_path, &aside).map_err(at(&metrics_path))?;
            tracing::warn!(
                "{} has no checkpoint to resume; its metrics were moved to {}",
                layout.dir().display(),
                aside.display()
            );
        }
        let mut metrics = MetricsWriter::open(layout.dir())?;
        if resumed.is_none() {
            metrics.write(&Record::Run(RunRecord {
                name: cfg.run.name.clone(),
                schedule: cfg.schedule.kind.as_str().into(),
                seed: Some(cfg.run.seed),
                model: Some(base_name),
            }))?;
        }
        let board = match cfg.run.tensorboard {
            true => Some(RunBoard::create(&layout.tensorboard())?),
            false => None,
        };
        let config_path = layout.resolved_config();
        // Redacted: the run directory is shared and copied around; the token must not be in it.
        std::fs::write(&config_path, cfg.redacted().to_toml_string()?).map_err(at(&config_path))?;

        let (stopper, resumed_verdict) = EarlyStopping::replay(&cfg.schedule, &past.history);
        let trainer_step = trainer.state().global_step;
        // Resumed at the end of an epoch that improved: its best adapter may not have been
        // written before the process died (the checkpoint comes first). Writing it is idempotent.
        if resumed.is_some() && position.epoch.is_none() && resumed_verdict == Some(Verdict::Improved) {
            super::layout::save_adapter(trainer.policy(), &layout.best_adapter())?;
        }
        let schedule = Schedule::new(&cfg.schedule);
        let mut this = Self {
            encoder: ExampleEncoder::new(loaded.tokenizer),
            cfg,
            layout,
            trainer,
            dataset,
            rollouts,
            metrics,
            board,
            schedule,
            history: past.history,
            stopper,
            resumed_verdict,
            last_train_size: past.last_train_size,
            stop,
            epochs_done,
            last_checkpoint_step: if resumed.is_some() { trainer_step } else { 0 },
            resume_at: position.epoch,
            started: Instant::now(),
            elapsed_before: past.elapsed_before,
            published: None,
            live_sink: None,
        };
        this.publish()?;
        Ok(this)
    }
}

/// The epochs `1..=epochs_done` of the run's `metrics.jsonl`: the history schedules and early
/// stopping decide from, the run time so far and the last snapshot's size.
fn replay_metrics(layout: &RunLayout, epochs_done: usize) -> Result<Resumed, RunError> {
    let old = RunMetrics::load(layout.dir())?;
    let mut past = Resumed { history: History::default(), elapsed_before: 0.0, last_train_size: None };
    for e in old.epochs.into_iter().filter(|e| e.epoch <= epochs_done) {
        past.elapsed_before = e.elapsed_s.unwrap_or(past.elapsed_before);
        past.last_train_size = e.train_size.or(past.last_train_size);
        past.history.push(e);
    }
    Ok(past)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
